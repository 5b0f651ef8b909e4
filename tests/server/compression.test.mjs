// permessage-deflate: negotiated with clients that offer it, a broadcast compressed once and
// shared, compressed client messages inflated, bad compressed data refused.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import zlib from 'node:zlib';
import WebSocket from 'ws';
import { isEvent, ms, nonce, publish, withServer, plain } from './helpers.mjs';

const T = { timeout: 20000 };

function openWsRaw(url, options) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    const msgs = [];
    ws.on('message', (d) => msgs.push(JSON.parse(d)));
    ws.msgs = msgs;
    ws.next = async (pred, timeout = ms(3000)) => {
      const t0 = Date.now();
      while (Date.now() - t0 < timeout) {
        const i = msgs.findIndex(pred);
        if (i >= 0) return msgs.splice(i, 1)[0];
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`no matching message; got ${JSON.stringify(msgs).slice(0, 300)}`);
    };
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

test('deflate_is_negotiated_and_large_messages_both_ways_arrive_intact', T, async () => {
  await withServer(async (srv) => {
    const ch = `z.${nonce()}`;
    // threshold 0: the client compresses even its small subscribe message.
    const ws = await openWsRaw(srv.wsUrl, { perMessageDeflate: { threshold: 0 } });
    try {
      assert.match(ws.extensions, /permessage-deflate/);
      await ws.next((m) => m.event === 'connected');
      ws.send(JSON.stringify({ type: 'subscribe', channel: ch }));
      assert.deepEqual(plain(await ws.next((m) => m.type === 'subscription_succeeded')), { type: 'subscription_succeeded', channel: ch });
      const data = { rows: Array.from({ length: 300 }, (_, i) => ({ i, name: `row number ${i}`, ok: i % 2 === 0 })) };
      await publish(srv, { channel: ch, event: 'big', data });
      await publish(srv, { channel: ch, event: 'small', data: 1 });
      assert.deepEqual((await ws.next(isEvent(ch, 'big'))).data, data);
      assert.equal((await ws.next(isEvent(ch, 'small'))).data, 1);
    } finally {
      ws.close();
    }
  });
});

// A raw client offering the extension sees the compressed bytes themselves.
function rawDeflateClient(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => {
      sock.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n');
    });
    sock.buf = Buffer.alloc(0);
    sock.head = null;
    sock.frames = [];
    sock.on('data', (d) => {
      sock.buf = Buffer.concat([sock.buf, d]);
      if (!sock.head) {
        const i = sock.buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        sock.head = sock.buf.subarray(0, i).toString();
        sock.buf = sock.buf.subarray(i + 4);
        resolve(sock);
      }
      for (;;) {
        if (sock.buf.length < 2) return;
        let len = sock.buf[1] & 0x7f;
        let hl = 2;
        if (len === 126) { if (sock.buf.length < 4) return; len = sock.buf.readUInt16BE(2); hl = 4; }
        else if (len === 127) { if (sock.buf.length < 10) return; len = Number(sock.buf.readBigUInt64BE(2)); hl = 10; }
        if (sock.buf.length < hl + len) return;
        sock.frames.push({ b0: sock.buf[0], payload: sock.buf.subarray(hl, hl + len) });
        sock.buf = sock.buf.subarray(hl + len);
      }
    });
    sock.on('error', reject);
  });
}

function maskedFrame(b0, payload) {
  const mask = Buffer.from([1, 2, 3, 4]);
  const body = Buffer.from(payload.map((x, i) => x ^ mask[i & 3]));
  return Buffer.concat([Buffer.from([b0, 0x80 | payload.length]), mask, body]);
}

test('a_broadcast_goes_out_compressed_with_rsv1_and_inflates_to_the_same_json', T, async () => {
  await withServer(async (srv) => {
    const ch = `zr.${nonce()}`;
    const sock = await rawDeflateClient(srv.port);
    try {
      assert.match(sock.head, /Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover/);
      const sub = Buffer.from(JSON.stringify({ type: 'subscribe', channel: ch }));
      sock.write(maskedFrame(0x81, sub));
      const text = 'abcdefgh '.repeat(400);
      await new Promise((r) => setTimeout(r, 100));
      await publish(srv, { channel: ch, event: 'long', data: { text } });
      const t0 = Date.now();
      let frame;
      while (!(frame = sock.frames.find((f) => f.b0 & 0x40)) && Date.now() - t0 < ms(3000)) await new Promise((r) => setTimeout(r, 10));
      assert.ok(frame, 'no compressed frame arrived');
      assert.equal(frame.b0, 0xc1); // FIN + RSV1 + text
      const json = zlib
        .inflateRawSync(Buffer.concat([frame.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
        .toString();
      assert.deepEqual(plain(JSON.parse(json)), { type: 'event', channel: ch, event: 'long', data: { text } });
      assert.ok(frame.payload.length < json.length / 10, `${frame.payload.length} compressed bytes for ${json.length}`);
      // Small control replies stay plain.
      assert.ok(sock.frames.some((f) => f.b0 === 0x81));
      // Garbage with RSV1 set is refused with 1007.
      sock.write(maskedFrame(0xc1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01])));
      const t1 = Date.now();
      let close;
      while (!(close = sock.frames.find((f) => (f.b0 & 0x0f) === 8)) && Date.now() - t1 < ms(3000)) await new Promise((r) => setTimeout(r, 10));
      assert.ok(close, 'no close frame');
      assert.equal(close.payload.readUInt16BE(0), 1007);
    } finally {
      sock.destroy();
    }
  });
});

test('compression_can_be_switched_off', T, async () => {
  await withServer({ args: ['--compression', '0'] }, async (srv) => {
    const ws = await openWsRaw(srv.wsUrl, { perMessageDeflate: true });
    try {
      assert.equal(ws.extensions, '');
    } finally {
      ws.close();
    }
  });
});
