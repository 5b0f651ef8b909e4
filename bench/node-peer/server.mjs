#!/usr/bin/env node
// A pure-Node peer of vxevents-server, used as the comparison point of bench/run.sh.
//
// It speaks the same wire protocol (public channels only) and serves the same HTTP API, and it is
// written the way typical Node broadcast servers are: an `http` server plus a `ws`
// WebSocketServer, a Map of channel -> Set of sockets, and on every broadcast one
// `JSON.stringify` of the envelope and one `ws.send` per recipient. It deliberately does NOT
// serialize once and share the frame, because the point is to measure what the C core saves over
// the common Node pattern.
//
//   node server.mjs [--host H] [--port P] [--path /ws] [--api-key K] [--ping-interval MS]
//                   [--max-payload BYTES]
//
// Prints `vxevents-server listening on http://HOST:PORT (websocket path PATH)` when ready, like
// the real server, so the benchmark scripts treat both alike (`--port 0` picks a free port).

import http from 'node:http';
import crypto from 'node:crypto';
import { WebSocketServer } from 'ws';

function parseArgs(argv) {
  const env = process.env;
  const opts = {
    host: env.VX_HOST || '0.0.0.0',
    port: Number(env.VX_PORT || env.PORT || 3030),
    path: env.VX_PATH || '/ws',
    apiKey: env.VX_API_KEY || null,
    pingInterval: Number(env.VX_PING_INTERVAL || 30000),
    maxPayload: Number(env.VX_MAX_PAYLOAD || 1048576),
  };
  const need = (i, flag) => {
    if (i + 1 >= argv.length) {
      process.stderr.write(`node-peer: ${flag} needs a value\n`);
      process.exit(2);
    }
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--host': opts.host = need(i, a); i++; break;
      case '--port': opts.port = Number(need(i, a)); i++; break;
      case '--path': opts.path = need(i, a); i++; break;
      case '--api-key': opts.apiKey = need(i, a); i++; break;
      case '--ping-interval': opts.pingInterval = Number(need(i, a)); i++; break;
      case '--max-payload': opts.maxPayload = Number(need(i, a)); i++; break;
      case '--help':
        process.stdout.write('usage: node server.mjs [--host H] [--port P] [--path /ws] [--api-key K] ' +
          '[--ping-interval MS] [--max-payload BYTES]\n');
        process.exit(0);
        break;
      default:
        process.stderr.write(`node-peer: unknown option ${a}\n`);
        process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    process.stderr.write('node-peer: --port must be 0..65535\n');
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const CHANNEL_RE = /^[A-Za-z0-9_\-=@,.;:/]{1,200}$/;
const MAX_BATCH = 100;

/** channel name -> Set of sockets subscribed to it */
const channels = new Map();
/** all open sockets */
const sockets = new Set();

function sendJson(ws, obj) {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(obj));
}

function subscribe(ws, channel) {
  if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
    sendJson(ws, { type: 'subscription_error', channel: String(channel ?? ''), error: 'Invalid channel name' });
    return;
  }
  if (channel.startsWith('private-') || channel.startsWith('presence-')) {
    sendJson(ws, { type: 'subscription_error', channel, error: 'Channel authorization is not supported' });
    return;
  }
  let set = channels.get(channel);
  if (!set) {
    set = new Set();
    channels.set(channel, set);
  }
  set.add(ws);
  ws.vxChannels.add(channel);
  sendJson(ws, { type: 'subscription_succeeded', channel });
}

function unsubscribe(ws, channel) {
  const set = channels.get(channel);
  if (set) {
    set.delete(ws);
    if (set.size === 0) channels.delete(channel);
  }
  ws.vxChannels.delete(channel);
}

function onClientMessage(ws, raw, isBinary) {
  let msg;
  try {
    msg = JSON.parse(isBinary ? raw.toString('utf8') : raw.toString());
  } catch {
    sendJson(ws, { type: 'error', error: 'Invalid JSON' });
    return;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    sendJson(ws, { type: 'error', error: 'Message must be a JSON object' });
    return;
  }
  switch (msg.type) {
    case 'subscribe':
      if (msg.channel === undefined) sendJson(ws, { type: 'error', error: 'Missing channel' });
      else subscribe(ws, msg.channel);
      break;
    case 'unsubscribe':
      if (typeof msg.channel !== 'string') sendJson(ws, { type: 'error', error: 'Missing channel' });
      else unsubscribe(ws, msg.channel);
      break;
    case 'ping':
      sendJson(ws, { type: 'pong' });
      break;
    default:
      sendJson(ws, { type: 'error', error: `Unknown message type: ${String(msg.type)}` });
  }
}

/** Returns [] when `b` is a valid broadcast body, else a list of {path, message}. */
function validateBroadcast(b, prefix) {
  const details = [];
  if (b === null || typeof b !== 'object' || Array.isArray(b)) {
    details.push({ path: prefix || '', message: 'must be an object' });
    return details;
  }
  const p = (name) => (prefix ? `${prefix}.${name}` : name);
  if (b.channel !== undefined && b.channels !== undefined) {
    details.push({ path: p('channel'), message: 'give either channel or channels, not both' });
  } else if (b.channel !== undefined) {
    if (typeof b.channel !== 'string' || !CHANNEL_RE.test(b.channel)) {
      details.push({ path: p('channel'), message: 'must be a valid channel name' });
    }
  } else if (b.channels !== undefined) {
    if (!Array.isArray(b.channels) || b.channels.length === 0) {
      details.push({ path: p('channels'), message: 'must be a non-empty array of channel names' });
    } else {
      b.channels.forEach((c, i) => {
        if (typeof c !== 'string' || !CHANNEL_RE.test(c)) {
          details.push({ path: `${p('channels')}[${i}]`, message: 'must be a valid channel name' });
        }
      });
    }
  } else {
    details.push({ path: p('channel'), message: 'channel or channels is required' });
  }
  if (typeof b.event !== 'string' || b.event.length === 0) {
    details.push({ path: p('event'), message: 'must be a non-empty string' });
  }
  if (b.except !== undefined && typeof b.except !== 'string') {
    details.push({ path: p('except'), message: 'must be a socket id string' });
  }
  return details;
}

/** The typical Node pattern: one JSON.stringify and one ws.send per recipient. */
function broadcast(b) {
  const names = b.channel !== undefined ? [b.channel] : b.channels;
  const data = b.data === undefined ? null : b.data;
  const seen = names.length > 1 ? new Set() : null;
  for (const channel of names) {
    const set = channels.get(channel);
    if (!set) continue;
    for (const ws of set) {
      if (b.except !== undefined && ws.vxSocketId === b.except) continue;
      if (seen) {
        if (seen.has(ws)) continue;
        seen.add(ws);
      }
      if (ws.readyState === ws.OPEN) {
        ws.send(JSON.stringify({ type: 'event', channel, event: b.event, data }));
      }
    }
  }
}

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

function readBody(req, limit, cb) {
  const chunks = [];
  let size = 0;
  let tooBig = false;
  req.on('data', (chunk) => {
    if (tooBig) return;
    size += chunk.length;
    if (size > limit) {
      tooBig = true;
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => cb(tooBig ? null : Buffer.concat(chunks)));
}

function handleApi(req, res, kind) {
  if (!opts.apiKey) return reply(res, 404, { error: 'Not Found' });
  if (req.method !== 'POST') return reply(res, 405, { error: 'Method Not Allowed' });
  if (req.headers.authorization !== `Bearer ${opts.apiKey}`) {
    return reply(res, 401, { error: 'Unauthorized' });
  }
  readBody(req, opts.maxPayload, (buf) => {
    if (buf === null) return reply(res, 413, { error: 'Payload Too Large' });
    let body;
    try {
      body = JSON.parse(buf.toString('utf8'));
    } catch {
      return reply(res, 400, { error: 'Validation failed', details: [{ path: '', message: 'body is not valid JSON' }] });
    }
    if (kind === 'broadcast') {
      const details = validateBroadcast(body, '');
      if (details.length) return reply(res, 400, { error: 'Validation failed', details });
      broadcast(body);
      return reply(res, 200, { success: true });
    }
    if (body === null || typeof body !== 'object' || !Array.isArray(body.batch)) {
      return reply(res, 400, { error: 'Validation failed', details: [{ path: 'batch', message: 'must be an array' }] });
    }
    if (body.batch.length > MAX_BATCH) {
      return reply(res, 400, { error: 'Validation failed', details: [{ path: 'batch', message: `at most ${MAX_BATCH} items` }] });
    }
    const details = [];
    body.batch.forEach((b, i) => details.push(...validateBroadcast(b, `batch[${i}]`)));
    if (details.length) return reply(res, 400, { error: 'Validation failed', details });
    for (const b of body.batch) broadcast(b);
    return reply(res, 200, { success: true, count: body.batch.length });
  });
}

const server = http.createServer((req, res) => {
  const url = req.url.split('?')[0];
  if (url === '/health') {
    if (req.method !== 'GET') return reply(res, 405, { error: 'Method Not Allowed' });
    return reply(res, 200, { status: 'ok', connections: sockets.size, channels: channels.size });
  }
  if (url === '/api/broadcast') return handleApi(req, res, 'broadcast');
  if (url === '/api/batch') return handleApi(req, res, 'batch');
  if (url === opts.path) return reply(res, 426, { error: 'Upgrade Required' });
  return reply(res, 404, { error: 'Not Found' });
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;

const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayload, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const url = req.url.split('?')[0];
  if (url !== opts.path) {
    socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  // ws answers 400 on a bad handshake and 426 on a wrong Sec-WebSocket-Version by itself.
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

wss.on('connection', (ws) => {
  ws.vxSocketId = crypto.randomBytes(16).toString('hex');
  ws.vxChannels = new Set();
  ws.vxAlive = true;
  sockets.add(ws);
  ws.on('pong', () => { ws.vxAlive = true; });
  ws.on('message', (raw, isBinary) => onClientMessage(ws, raw, isBinary));
  ws.on('error', () => {});
  ws.on('close', () => {
    sockets.delete(ws);
    for (const c of ws.vxChannels) {
      const set = channels.get(c);
      if (set) {
        set.delete(ws);
        if (set.size === 0) channels.delete(c);
      }
    }
    ws.vxChannels.clear();
    if (stopping && sockets.size === 0) process.exit(0);
  });
  sendJson(ws, { type: 'event', event: 'connected', data: { socketId: ws.vxSocketId } });
});

const pingTimer = setInterval(() => {
  for (const ws of sockets) {
    if (!ws.vxAlive) {
      ws.terminate();
      continue;
    }
    ws.vxAlive = false;
    ws.ping();
  }
}, opts.pingInterval);
pingTimer.unref();

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const ws of sockets) ws.close(1001, 'server shutting down');
  server.close();
  server.closeAllConnections?.();
  // Give the close frames a moment to leave, but never hang on a peer that does not answer.
  if (sockets.size === 0) process.exit(0);
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  process.stdout.write(`vxevents-server listening on http://${opts.host}:${port} (websocket path ${opts.path})\n`);
});
