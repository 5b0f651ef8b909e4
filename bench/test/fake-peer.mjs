#!/usr/bin/env node
// A deliberately awkward server for testing bench/build/loadgen itself (not a benchmark peer).
//
// It speaks the vxevents protocol over raw TCP with a hand-made WebSocket framing, so it can do
// what a well-behaved server library would not do on purpose:
//   - the 101 response and the `connected` frame leave in one write; `subscription_succeeded`
//     and a ping leave together (several frames per read, data right after the handshake);
//   - every delivered event is framed one of several ways by its sequence number: one frame,
//     or three fragments with a ping between them (control frames inside a fragmented message);
//   - the bytes of each API request's deliveries are cut into random pieces, some of one byte,
//     written with pauses, so frames and headers are split across reads;
//   - HTTP answers alternate between Content-Length, chunked, and Connection: close.
// It checks that every client frame is masked and that each pong echoes its ping's payload.
//
//   node fake-peer.mjs [--drop-every K] [--dup-every K] [--masked] [--bad-accept]
//
// --drop-every K: connection 0 does not get sequence numbers divisible by K (loss detection).
// --dup-every K: connection 0 gets sequence numbers divisible by K twice (duplicate detection).
// --masked: server frames are masked (a protocol violation the client must refuse).
// --bad-accept: a wrong Sec-WebSocket-Accept (the client must refuse the handshake).
// Prints the usual ready line; on SIGTERM prints `fake-peer: pongs=N bad_pongs=N unmasked=N
// ...` and exits 0.

import net from 'node:net';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const num = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : 0;
};
const dropEvery = num('--drop-every');
const dupEvery = num('--dup-every');
const masked = flag('--masked');
const badAccept = flag('--bad-accept');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const stats = { pongs: 0, badPongs: 0, unmasked: 0, subscribes: 0, requests: 0, events: 0 };
const subscribers = []; // sockets in subscription order; index 0 is the one losses hit
let requestNo = 0;

function frame(op, payload, fin = true) {
  const len = payload.length;
  let head;
  if (len < 126) head = Buffer.from([(fin ? 0x80 : 0) | op, len]);
  else if (len <= 0xffff) {
    head = Buffer.alloc(4);
    head[0] = (fin ? 0x80 : 0) | op;
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = (fin ? 0x80 : 0) | op;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  if (!masked) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([head, key, body]);
}
const text = (obj) => frame(1, Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj)));

/** Writes buf in random pieces (some of one byte) with pauses, keeping order per socket. */
function choppy(sock, buf) {
  const pieces = [];
  let off = 0;
  while (off < buf.length) {
    const r = Math.random();
    const n = r < 0.2 ? 1 : r < 0.5 ? 1 + Math.floor(Math.random() * 16) : 1 + Math.floor(Math.random() * 4096);
    pieces.push(buf.subarray(off, off + n));
    off += n;
  }
  sock.vxQueue = (sock.vxQueue || Promise.resolve()).then(async () => {
    for (const p of pieces) {
      if (sock.destroyed) return;
      sock.write(p);
      if (Math.random() < 0.1) await new Promise((res) => setTimeout(res, 1));
      else await new Promise((res) => setImmediate(res));
    }
  });
}

function deliveryBytes(sock, envelope, seq) {
  const payload = Buffer.from(envelope);
  if (seq % 3 !== 1 || payload.length < 3) return text(envelope);
  // three fragments with a ping between the first two
  const a = Math.floor(payload.length / 3);
  const b = Math.floor((2 * payload.length) / 3);
  const ping = Buffer.from(`p${seq}`);
  sock.vxPings.push(`p${seq}`);
  return Buffer.concat([
    frame(1, payload.subarray(0, a), false),
    frame(9, ping),
    frame(0, payload.subarray(a, b), false),
    frame(0, payload.subarray(b), true),
  ]);
}

function broadcast(items) {
  const per = subscribers.map(() => []);
  for (const it of items) {
    const envelope = JSON.stringify({ type: 'event', channel: it.channel, event: it.event, data: it.data });
    const seq = it.data && typeof it.data.bs === 'number' ? it.data.bs : 0;
    subscribers.forEach((s, i) => {
      if (i === 0 && dropEvery && seq % dropEvery === 0) return;
      per[i].push(deliveryBytes(s, envelope, seq));
      if (i === 0 && dupEvery && seq % dupEvery === 0) per[i].push(text(envelope));
      stats.events++;
    });
  }
  subscribers.forEach((s, i) => choppy(s, Buffer.concat(per[i])));
}

function httpAnswer(sock, status, obj) {
  const body = JSON.stringify(obj);
  const n = requestNo++;
  const mode = n % 3;
  if (mode === 0) {
    sock.write(`HTTP/1.1 ${status} X\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  } else if (mode === 1) {
    const half = Math.floor(body.length / 2);
    const c1 = body.slice(0, half);
    const c2 = body.slice(half);
    choppy(sock, Buffer.from(`HTTP/1.1 ${status} X\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `${c1.length.toString(16)}\r\n${c1}\r\n${c2.length.toString(16)}\r\n${c2}\r\n0\r\n\r\n`));
  } else {
    sock.vxQueue = (sock.vxQueue || Promise.resolve()).then(() => {
      sock.end(`HTTP/1.1 ${status} X\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }
}

function onWsData(sock) {
  while (sock.vxBuf.length >= 2) {
    const b = sock.vxBuf;
    const op = b[0] & 0x0f;
    const isMasked = (b[1] & 0x80) !== 0;
    let len = b[1] & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return;
      len = Number(b.readBigUInt64BE(2));
      off = 10;
    }
    if (isMasked) off += 4;
    if (b.length < off + len) return;
    const payload = Buffer.from(b.subarray(off, off + len));
    if (isMasked) {
      const key = b.subarray(off - 4, off);
      for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
    } else {
      stats.unmasked++;
    }
    sock.vxBuf = b.subarray(off + len);
    if (op === 10) {
      const want = sock.vxPings.shift();
      if (want !== undefined && want === payload.toString()) stats.pongs++;
      else stats.badPongs++;
    } else if (op === 1) {
      const msg = JSON.parse(payload.toString());
      if (msg.type === 'subscribe') {
        stats.subscribes++;
        subscribers.push(sock);
        sock.vxPings.push('hello');
        choppy(sock, Buffer.concat([text({ type: 'subscription_succeeded', channel: msg.channel }), frame(9, Buffer.from('hello'))]));
      }
    } else if (op === 8) {
      sock.end();
    }
  }
}

function onHttpRequest(sock, head, body) {
  const [line] = head.split('\r\n');
  const [method, path] = line.split(' ');
  stats.requests++;
  let parsed;
  try {
    parsed = JSON.parse(body.toString());
  } catch {
    return httpAnswer(sock, 400, { error: 'Validation failed' });
  }
  if (method === 'POST' && path === '/api/broadcast') {
    broadcast([parsed]);
    return httpAnswer(sock, 200, { success: true });
  }
  if (method === 'POST' && path === '/api/batch') {
    broadcast(parsed.batch);
    return httpAnswer(sock, 200, { success: true, count: parsed.batch.length });
  }
  return httpAnswer(sock, 404, { error: 'Not Found' });
}

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  sock.vxBuf = Buffer.alloc(0);
  sock.vxWs = false;
  sock.vxPings = [];
  sock.on('error', () => {});
  sock.on('close', () => {
    const i = subscribers.indexOf(sock);
    if (i >= 0) subscribers.splice(i, 1);
  });
  sock.on('data', (d) => {
    sock.vxBuf = Buffer.concat([sock.vxBuf, d]);
    if (sock.vxWs) return onWsData(sock);
    for (;;) {
      const end = sock.vxBuf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = sock.vxBuf.subarray(0, end).toString();
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head);
      if (key) {
        sock.vxBuf = sock.vxBuf.subarray(end + 4);
        sock.vxWs = true;
        let accept = crypto.createHash('sha1').update(key[1] + GUID).digest('base64');
        if (badAccept) accept = accept.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
        const id = crypto.randomBytes(16).toString('hex');
        sock.write(Buffer.concat([
          Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept:  ${accept}\r\n\r\n`),
          text({ type: 'event', event: 'connected', data: { socketId: id } }),
        ]));
        return onWsData(sock);
      }
      const cl = /content-length:\s*(\d+)/i.exec(head);
      const len = cl ? Number(cl[1]) : 0;
      if (sock.vxBuf.length < end + 4 + len) return;
      const body = sock.vxBuf.subarray(end + 4, end + 4 + len);
      sock.vxBuf = sock.vxBuf.subarray(end + 4 + len);
      onHttpRequest(sock, head, body);
    }
  });
});

process.on('SIGTERM', () => {
  process.stdout.write(`fake-peer: pongs=${stats.pongs} bad_pongs=${stats.badPongs} unmasked=${stats.unmasked} ` +
    `subscribes=${stats.subscribes} requests=${stats.requests} events=${stats.events}\n`);
  process.exit(0);
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`vxevents-server listening on http://127.0.0.1:${server.address().port} (websocket path /ws)\n`);
});
