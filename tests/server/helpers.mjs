// Shared helpers for the Node integration suite: they start the real
// `vxevents-server` binary on a loopback port, drive it with the `ws` client,
// with `fetch`, or with hand-written frames over a raw `net` socket, and fail
// the test when the server crashes, hangs on shutdown, or prints a sanitizer
// report.
//
// Every wait here is bounded: a helper that cannot get what it waits for
// rejects with an error that says what it saw instead.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
export const SERVER_BIN =
  process.env.VXEVENTS_SERVER || path.join(REPO_ROOT, 'build', 'vxevents-server');

// Sanitizer builds are slower; every timeout is scaled by this factor
// (VXEVENTS_TEST_SLOWDOWN, by default 2 when ASAN_OPTIONS is set, else 1).
export const SLOW = Number(process.env.VXEVENTS_TEST_SLOWDOWN || (process.env.ASAN_OPTIONS ? 2 : 1));
export const ms = (n) => Math.round(n * SLOW);

const READY_RE =
  /vxevents-server listening on (https?):\/\/([^\s:]+):(\d+) \(websocket path (\S+)\)/;

// Anything that looks like a report from ASan, LSan, UBSan, TSan or MSan.
export const SANITIZER_RE =
  /(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|MemorySanitizer|runtime error:)/;

export const sleep = (n) => new Promise((resolve) => setTimeout(resolve, n));

export function randomKey() {
  return randomBytes(18).toString('base64url');
}

/** A unique suffix so that events of one test can never match another's. */
export function nonce() {
  return randomBytes(6).toString('hex');
}

function tail(text, n = 4000) {
  return text.length > n ? `...${text.slice(-n)}` : text;
}

function describeMessages(list) {
  const shown = list
    .slice(0, 20)
    .map((m) => {
      const text = JSON.stringify(m);
      return text.length > 300 ? `${text.slice(0, 300)}...` : text;
    })
    .join('\n  ');
  const more = list.length > 20 ? `\n  ... and ${list.length - 20} more` : '';
  return list.length ? `\n  ${shown}${more}` : ' (none)';
}

// Servers still running; killed if the test process exits without stopping
// them (a failed assertion between start and stop, an uncaught error).
const live = new Set();

function killGroup(proc) {
  try {
    process.kill(-proc.pid, 'SIGKILL');
  } catch {
    try {
      proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

process.on('exit', () => {
  for (const proc of live) killGroup(proc);
});

/** SIGKILL a server's whole process group (after it exited: any leftovers). */
export function killServerGroup(server) {
  killGroup(server.proc);
}

/**
 * Start the server on 127.0.0.1 with an ephemeral port.
 *
 * opts.args     extra command-line arguments
 * opts.apiKey   the API key; a random one by default, `null` to start without
 * opts.env      extra environment variables
 * opts.readyTimeoutMs  how long to wait for the ready line (10 s)
 *
 * Resolves with { port, host, wsPath, url, wsUrl, apiKey, proc, stderr(),
 * stdout(), assertNoSanitizerReport(), stop() }.
 */
export async function startServer(opts = {}) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(
      `server binary not found at ${SERVER_BIN} (build it with \`make build\` or set VXEVENTS_SERVER)`,
    );
  }
  const apiKey = opts.apiKey === undefined ? randomKey() : opts.apiKey;
  const args = ['--host', '127.0.0.1', '--port', '0'];
  if (apiKey !== null) args.push('--api-key', apiKey);
  args.push(...(opts.args || []));

  const env = { ...process.env, ...(opts.env || {}) };
  // Never let a developer's own configuration leak into a test run.
  for (const name of Object.keys(env)) {
    if (/^VX_/.test(name) && !(opts.env && name in opts.env)) delete env[name];
  }
  delete env.PORT;

  // Its own process group, so that a kill after a hang also reaches anything
  // it started (a wrapper script's child, for instance).
  const proc = spawn(SERVER_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      live.delete(proc);
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  // Streams end after `exit` sometimes; keep both for the final check.
  const stderrDone = new Promise((resolve) => proc.stderr.on('close', resolve));
  const stdoutDone = new Promise((resolve) => proc.stdout.on('close', resolve));

  const readyTimeout = opts.readyTimeoutMs ?? ms(10000);
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      finish(new Error(`server printed no ready line within ${readyTimeout} ms.\nstdout: ${tail(stdout)}\nstderr: ${tail(stderr)}`));
    }, readyTimeout);
    function onData(chunk) {
      stdout += chunk;
      const m = READY_RE.exec(stdout);
      if (m) finish(null, { scheme: m[1], host: m[2], port: Number(m[3]), wsPath: m[4] });
    }
    function onExit(code, signal) {
      finish(new Error(`server exited (code ${code}, signal ${signal}) before it was ready.\nargs: ${args.join(' ')}\nstdout: ${tail(stdout)}\nstderr: ${tail(stderr)}`));
    }
    function onError(err) {
      finish(new Error(`cannot start ${SERVER_BIN}: ${err.message}`));
    }
    function finish(err, value) {
      clearTimeout(timer);
      proc.stdout.off('data', onData);
      proc.off('exit', onExit);
      proc.off('error', onError);
      // Keep draining stdout so the server can never block on a full pipe.
      proc.stdout.on('data', (c) => {
        stdout += c;
      });
      if (err) {
        killGroup(proc);
        reject(err);
      } else resolve(value);
    }
    proc.stdout.on('data', onData);
    proc.on('exit', onExit);
    proc.on('error', onError);
  });

  const { port, host, wsPath, scheme } = ready;
  const url = `${scheme}://127.0.0.1:${port}`;
  const server = {
    port,
    host,
    wsPath,
    url,
    tls: scheme === 'https',
    wsUrl: `${scheme === 'https' ? 'wss' : 'ws'}://127.0.0.1:${port}${wsPath}`,
    apiKey,
    proc,
    args,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    /** Throws if stderr so far holds a sanitizer report. */
    assertNoSanitizerReport() {
      if (SANITIZER_RE.test(stderr)) {
        throw new Error(`server stderr holds a sanitizer report:\n${tail(stderr, 12000)}`);
      }
    },
    /**
     * Send `signal` (SIGTERM) and wait up to timeoutMs for the process to exit.
     * If it does not, kill it with SIGKILL and throw. Also throws when stderr
     * holds a sanitizer report, and, unless opts.allowNonZero, when the exit
     * was not a clean 0.
     * Resolves with { code, signal, stderr }.
     */
    async stop(stopOpts = {}) {
      const signal = stopOpts.signal || 'SIGTERM';
      const timeoutMs = stopOpts.timeoutMs ?? ms(5000);
      const alreadyExited = exitInfo !== null;
      if (!alreadyExited) proc.kill(signal);
      let timer;
      const result = await Promise.race([
        exited,
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(null), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (result === null) {
        killGroup(proc);
        await exited;
        proc.stdout.destroy();
        proc.stderr.destroy();
        throw new Error(`server did not exit within ${timeoutMs} ms of ${signal}; killed it.\nstderr: ${tail(stderr)}`);
      }
      // Nothing it started may outlive it (and hold our pipes open).
      killGroup(proc);
      await Promise.race([Promise.all([stderrDone, stdoutDone]), sleep(1000)]);
      proc.stdout.destroy();
      proc.stderr.destroy();
      server.assertNoSanitizerReport();
      if (alreadyExited) {
        throw new Error(`server had already exited (code ${result.code}, signal ${result.signal}) before stop().\nstderr: ${tail(stderr)}`);
      }
      if (!stopOpts.allowNonZero && (result.code !== 0 || result.signal !== null)) {
        throw new Error(`server exited with code ${result.code}, signal ${result.signal} after ${signal} (expected 0).\nstderr: ${tail(stderr)}`);
      }
      return { ...result, stderr };
    },
  };
  return server;
}

/**
 * Run `fn(server)` against a fresh server and always stop it afterwards. The
 * stop checks (clean exit, no sanitizer report) fail the test too; if `fn`
 * failed as well, its error wins and the server's stderr is appended to it.
 */
export async function withServer(opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  const server = await startServer(opts);
  const clients = [];
  server.track = (c) => {
    clients.push(c);
    return c;
  };
  let failure = null;
  try {
    await fn(server);
  } catch (err) {
    failure = err;
  }
  for (const c of clients) c.destroy();
  try {
    await server.stop();
  } catch (stopErr) {
    if (!failure) throw stopErr;
    failure.message += `\n(and on stop: ${stopErr.message})`;
  }
  if (failure) {
    const err = server.stderr();
    if (err && failure instanceof Error && !failure.message.includes('stderr')) {
      failure.message += `\nserver stderr: ${tail(err, 2000)}`;
    }
    throw failure;
  }
}

// ---------------------------------------------------------------------------
// A queue of parsed messages with predicate waits, shared by both clients.

class MessageQueue {
  constructor(label) {
    this.label = label;
    this.items = [];
    this.all = [];
    this.waiters = new Set();
    this.closedInfo = null;
  }

  push(msg) {
    this.all.push(msg);
    for (const w of this.waiters) {
      if (w.pred(msg)) {
        this.waiters.delete(w);
        w.resolve(msg);
        return;
      }
    }
    this.items.push(msg);
  }

  markClosed(info) {
    this.closedInfo = info;
    for (const w of this.waiters) {
      this.waiters.delete(w);
      w.rejectClosed();
    }
  }

  next(pred = () => true, timeoutMs = ms(3000), what = 'a message') {
    const idx = this.items.findIndex(pred);
    if (idx >= 0) return Promise.resolve(this.items.splice(idx, 1)[0]);
    const describe = (why) =>
      new Error(`${this.label}: ${why} while waiting for ${what}; unconsumed messages:${describeMessages(this.items)}`);
    if (this.closedInfo) {
      return Promise.reject(describe(`connection already closed (${JSON.stringify(this.closedInfo)})`));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        pred,
        resolve: (m) => {
          clearTimeout(waiter.timer);
          resolve(m);
        },
        rejectClosed: () => {
          clearTimeout(waiter.timer);
          reject(describe(`connection closed (${JSON.stringify(this.closedInfo)})`));
        },
      };
      waiter.timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(describe(`nothing matched within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  async expectNone(pred, waitMs = ms(300), what = 'message') {
    await sleep(waitMs);
    const found = this.items.filter(pred);
    if (found.length) {
      throw new Error(`${this.label}: expected no ${what}, got:${describeMessages(found)}`);
    }
  }

  count(pred) {
    return this.items.filter(pred).length;
  }
}

// ---------------------------------------------------------------------------
// `ws` client.

/**
 * Open a WebSocket with the `ws` library and collect every text message as
 * parsed JSON. Resolves once the connection is open; rejects with
 * err.statusCode set when the handshake is refused.
 *
 * The object offers next(pred, timeoutMs), expectNone(pred, ms), send(obj),
 * subscribe(channel), barrier(), closed (a promise of {code, reason}),
 * waitClose(timeoutMs), close(), destroy(), and, after waitConnected(),
 * socketId.
 */
export async function openWs(url, opts = {}) {
  const ws = new WebSocket(url, { handshakeTimeout: ms(5000), ...(opts.wsOptions || {}) });
  const label = opts.label || 'ws client';
  const queue = new MessageQueue(label);
  const client = {
    ws,
    queue,
    label,
    socketId: null,
    errors: [],
    pings: 0,
    nonJson: [],
    binary: [],
  };
  let resolveClosed;
  client.closed = new Promise((resolve) => {
    resolveClosed = resolve;
  });
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      client.binary.push(data);
      queue.push({ __binary: data.toString('hex') });
      return;
    }
    const text = data.toString('utf8');
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      client.nonJson.push(text);
      msg = { __notJson: text };
    }
    queue.push(msg);
  });
  ws.on('ping', () => {
    client.pings += 1;
  });
  ws.on('error', (err) => {
    client.errors.push(err);
  });
  ws.on('close', (code, reason) => {
    const info = { code, reason: reason.toString('utf8') };
    queue.markClosed(info);
    resolveClosed(info);
  });

  await new Promise((resolve, reject) => {
    const onOpen = () => {
      cleanup();
      resolve();
    };
    const onUnexpected = (req, res) => {
      cleanup();
      const err = new Error(`${label}: handshake refused with HTTP ${res.statusCode}`);
      err.statusCode = res.statusCode;
      res.resume();
      ws.terminate();
      reject(err);
    };
    const onError = (err) => {
      cleanup();
      reject(err);
    };
    function cleanup() {
      ws.off('open', onOpen);
      ws.off('unexpected-response', onUnexpected);
      ws.off('error', onError);
    }
    ws.on('open', onOpen);
    ws.on('unexpected-response', onUnexpected);
    ws.on('error', onError);
  });

  client.next = (pred, timeoutMs, what) => queue.next(pred, timeoutMs, what);
  client.expectNone = (pred, waitMs, what) => queue.expectNone(pred, waitMs, what);
  client.send = (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  client.waitConnected = async () => {
    const first = await queue.next(() => true, ms(3000), 'the connected event');
    client.connectedMessage = first;
    if (first && first.type === 'event' && first.event === 'connected' && first.data) {
      client.socketId = first.data.socketId;
    } else {
      throw new Error(`${label}: first message is not the connected event: ${JSON.stringify(first)}`);
    }
    return first;
  };
  client.subscribe = (channel) => subscribeOn(client, channel);
  client.barrier = () => barrierOn(client);
  client.waitClose = (timeoutMs = ms(3000)) => withTimeout(client.closed, timeoutMs, `${label}: close`);
  client.close = (code, reason) => ws.close(code, reason);
  client.destroy = () => {
    if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
  };
  return client;
}

/** openWs() on the server's WebSocket path, waiting for the connected event. */
export async function connect(server, opts = {}) {
  const c = await openWs(opts.url || server.wsUrl, opts);
  if (server.track) server.track(c);
  if (opts.waitConnected !== false) await c.waitConnected();
  return c;
}

export function withTimeout(promise, timeoutMs, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

const isSubscriptionAnswer = (channel) => (m) =>
  (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === channel;

async function subscribeOn(client, channel) {
  client.send({ type: 'subscribe', channel });
  const answer = await client.next(isSubscriptionAnswer(channel), ms(3000), `the answer to subscribe ${channel}`);
  if (answer.type !== 'subscription_succeeded') {
    throw new Error(`${client.label}: subscribe ${channel} refused: ${JSON.stringify(answer)}`);
  }
  return answer;
}

/** Ping and wait for the pong: everything sent before it has been handled. */
async function barrierOn(client) {
  client.send({ type: 'ping' });
  await client.next((m) => m.type === 'pong', ms(3000), 'pong (barrier)');
}

/** A predicate for an event of `event` on `channel`, optionally with `data`. */
export function isEvent(channel, event, data) {
  return (m) =>
    m.type === 'event' &&
    m.channel === channel &&
    m.event === event &&
    (data === undefined || JSON.stringify(m.data) === JSON.stringify(data));
}

// ---------------------------------------------------------------------------
// HTTP API.

/**
 * fetch() wrapper: resolves with { status, headers, text, json } where json is
 * the parsed body or undefined.
 *
 * opts.method (POST), opts.auth (true: the server's key, a string: that key,
 * false: no header), opts.headers, opts.body (object → JSON, string → as is).
 */
export async function api(server, route, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  const auth = opts.auth === undefined ? true : opts.auth;
  if (auth === true) headers.authorization = `Bearer ${server.apiKey}`;
  else if (typeof auth === 'string') headers.authorization = auth;
  let body = opts.body;
  if (body !== undefined && typeof body !== 'string' && !(body instanceof Uint8Array)) {
    body = JSON.stringify(body);
  }
  if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(`${server.url}${route}`, {
    method: opts.method || 'POST',
    headers,
    body,
    signal: AbortSignal.timeout(opts.timeoutMs ?? ms(5000)),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** POST /api/broadcast; throws unless the answer is 200 {"success":true}. */
export async function publish(server, body) {
  const res = await api(server, '/api/broadcast', { body });
  if (res.status !== 200 || !res.json || res.json.success !== true) {
    throw new Error(`POST /api/broadcast ${JSON.stringify(body).slice(0, 200)} → ${res.status} ${res.text.slice(0, 500)}`);
  }
  return res;
}

/** POST /api/batch; throws unless the answer is 200 with the right count. */
export async function publishBatch(server, items) {
  const res = await api(server, '/api/batch', { body: { batch: items } });
  if (res.status !== 200 || !res.json || res.json.success !== true || res.json.count !== items.length) {
    throw new Error(`POST /api/batch (${items.length} items) → ${res.status} ${res.text.slice(0, 500)}`);
  }
  return res;
}

export async function health(server) {
  const res = await api(server, '/health', { method: 'GET', auth: false });
  if (res.status !== 200 || !res.json) {
    throw new Error(`GET /health → ${res.status} ${res.text.slice(0, 500)}`);
  }
  return res.json;
}

/** Poll `probe()` until `check(value)` holds; throws with the last value. */
export async function waitFor(probe, check, timeoutMs = ms(3000), what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await probe();
    if (check(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    }
    await sleep(25);
  }
}

// ---------------------------------------------------------------------------
// Raw TCP: plain HTTP requests and a hand-framed WebSocket client.

/**
 * Send `request` (a string or Buffer) on a fresh TCP connection and read the
 * answer until the server closes the connection, or until the whole body
 * announced by Content-Length has arrived. Resolves with
 * { status, statusLine, headers (lower-case names), body, raw, reset }.
 */
export function rawHttp(port, request, timeoutMs = ms(3000)) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let done = false;
    let reset = false;
    const timer = setTimeout(() => {
      if (tryParse(true)) return;
      finish(new Error(`no complete HTTP answer within ${timeoutMs} ms; got: ${JSON.stringify(buf.toString('latin1').slice(0, 500))}`));
    }, timeoutMs);
    function finish(err, value) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value);
    }
    function tryParse(atEnd) {
      const text = buf.toString('latin1');
      const headEnd = text.indexOf('\r\n\r\n');
      if (headEnd < 0) return false;
      const head = text.slice(0, headEnd).split('\r\n');
      const statusLine = head[0];
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
      if (!m) {
        finish(new Error(`not an HTTP status line: ${JSON.stringify(statusLine)}`));
        return true;
      }
      const headers = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const bodyBuf = buf.subarray(headEnd + 4);
      const status = Number(m[1]);
      const len = headers['content-length'] !== undefined ? Number(headers['content-length']) : null;
      let body;
      if (status === 101) {
        body = '';
      } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
        body = dechunk(bodyBuf);
        if (body === null) {
          if (!atEnd) return false;
          body = bodyBuf.toString('utf8');
        }
      } else if (len !== null) {
        if (bodyBuf.length < len && !atEnd) return false;
        body = bodyBuf.toString('utf8', 0, len);
      } else {
        // No length: the body runs to the end of the connection.
        if (!atEnd) return false;
        body = bodyBuf.toString('utf8');
      }
      finish(null, { status, statusLine, headers, body, raw: text, reset });
      return true;
    }
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      tryParse(false);
    });
    sock.on('end', () => tryParse(true) || finish(new Error(`connection closed before a complete answer; got: ${JSON.stringify(buf.toString('latin1').slice(0, 500))}`)));
    sock.on('error', (err) => {
      reset = true;
      if (!tryParse(true)) finish(new Error(`${err.code || err.message} before a complete answer; got: ${JSON.stringify(buf.toString('latin1').slice(0, 500))}`));
    });
    sock.on('connect', () => sock.write(request));
  });
}

/** Decode a complete chunked body, or return null while it is incomplete. */
function dechunk(buf) {
  const parts = [];
  let off = 0;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', off, 'latin1');
    if (lineEnd < 0) return null;
    const size = parseInt(buf.toString('latin1', off, lineEnd), 16);
    if (Number.isNaN(size)) return null;
    off = lineEnd + 2;
    if (size === 0) return Buffer.concat(parts).toString('utf8');
    if (buf.length < off + size + 2) return null;
    parts.push(buf.subarray(off, off + size));
    off += size + 2;
  }
}

export function wsAccept(key) {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

/**
 * Encode one client frame. opts: fin (true), rsv (0..7, placed in bits 4-6),
 * mask (true).
 */
export function encodeFrame(opcode, payload = Buffer.alloc(0), opts = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const fin = opts.fin === undefined ? true : opts.fin;
  const mask = opts.mask === undefined ? true : opts.mask;
  const rsv = opts.rsv || 0;
  let header;
  const len = data.length;
  if (len < 126) {
    header = Buffer.alloc(2);
    header[1] = len;
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = randomBytes(4);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

/**
 * A WebSocket client written over a raw socket, for what `ws` will not do:
 * never answering pings, sending unmasked or reserved-bit frames, or not
 * reading at all.
 *
 * opts.autoPong (false), opts.replyClose (true: echo a close frame),
 * opts.path, opts.headers (extra request headers).
 * Resolves after the 101; the object offers next/expectNone over parsed JSON
 * text frames, frames (all frames as {opcode, fin, length}), pings (count),
 * pongs (their payloads, latin1),
 * closeFrame ({code, reason} once a close frame arrived), ended (a promise
 * resolved when the TCP connection ends, with {error}), send(obj),
 * sendFrame(opcode, payload, opts), pause(), resume(), destroy().
 */
export function openRawWs(port, opts = {}) {
  const wsPath = opts.path || '/ws';
  const key = randomBytes(16).toString('base64');
  const label = opts.label || 'raw ws client';
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const queue = new MessageQueue(label);
    const client = {
      sock,
      queue,
      label,
      frames: [],
      pings: 0,
      pongs: [],
      closeFrame: null,
      bytesReceived: 0,
      textFrames: 0,
      protocolErrors: [],
    };
    let handshakeDone = false;
    let head = Buffer.alloc(0);
    let buf = Buffer.alloc(0);
    let fragments = null;
    let resolveEnded;
    client.ended = new Promise((r) => {
      resolveEnded = r;
    });
    let resolveCloseFrame;
    const closeFrameArrived = new Promise((r) => {
      resolveCloseFrame = r;
    });
    let endInfo = null;
    const endOnce = (info) => {
      if (endInfo) return;
      endInfo = info;
      queue.markClosed({ ...info, closeFrame: client.closeFrame });
      resolveEnded(info);
    };
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`${label}: no handshake answer within ${ms(5000)} ms`));
    }, ms(5000));

    function parseFrames() {
      for (;;) {
        if (buf.length < 2) return;
        const b0 = buf[0];
        const b1 = buf[1];
        let len = b1 & 0x7f;
        let off = 2;
        if (b1 & 0x80) client.protocolErrors.push('server frame is masked');
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        if (b1 & 0x80) off += 4;
        if (buf.length < off + len) return;
        const payload = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        const frame = { fin: !!(b0 & 0x80), rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, payload: Buffer.from(payload) };
        onFrame(frame);
      }
    }

    function onFrame(frame) {
      client.frames.push({ fin: frame.fin, opcode: frame.opcode, length: frame.payload.length });
      switch (frame.opcode) {
        case OP.PING:
          client.pings += 1;
          if (opts.autoPong && !sock.destroyed) sock.write(encodeFrame(OP.PONG, frame.payload));
          break;
        case OP.PONG:
          client.pongs.push(frame.payload.toString('latin1'));
          break;
        case OP.CLOSE: {
          const p = frame.payload;
          client.closeFrame = {
            code: p.length >= 2 ? p.readUInt16BE(0) : null,
            reason: p.length > 2 ? p.subarray(2).toString('utf8') : '',
          };
          resolveCloseFrame(client.closeFrame);
          // Answer like a well-behaved client unless told not to.
          if (opts.replyClose !== false && !client.sentClose && !sock.destroyed) {
            client.sentClose = true;
            sock.write(encodeFrame(OP.CLOSE, p.subarray(0, 2)));
          }
          break;
        }
        case OP.TEXT:
        case OP.BINARY:
        case OP.CONT: {
          if (frame.opcode !== OP.CONT) fragments = { opcode: frame.opcode, parts: [] };
          if (!fragments) {
            client.protocolErrors.push('continuation without a start');
            break;
          }
          fragments.parts.push(frame.payload);
          if (!frame.fin) break;
          const whole = Buffer.concat(fragments.parts);
          const opcode = fragments.opcode;
          fragments = null;
          if (opcode === OP.BINARY) {
            queue.push({ __binary: whole.toString('hex') });
            break;
          }
          client.textFrames += 1;
          const text = whole.toString('utf8');
          try {
            queue.push(JSON.parse(text));
          } catch {
            queue.push({ __notJson: text });
          }
          break;
        }
        default:
          client.protocolErrors.push(`unknown opcode ${frame.opcode}`);
      }
    }

    sock.on('data', (chunk) => {
      client.bytesReceived += chunk.length;
      if (!handshakeDone) {
        head = Buffer.concat([head, chunk]);
        const text = head.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = text.slice(0, end).split('\r\n');
        const status = Number((/^HTTP\/1\.1 (\d{3})/.exec(lines[0]) || [])[1]);
        const headers = {};
        for (const line of lines.slice(1)) {
          const i = line.indexOf(':');
          if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        clearTimeout(timer);
        if (status !== 101) {
          sock.destroy();
          const err = new Error(`${label}: handshake answered ${lines[0]}`);
          err.statusCode = status;
          reject(err);
          return;
        }
        if (headers['sec-websocket-accept'] !== wsAccept(key)) {
          sock.destroy();
          reject(new Error(`${label}: wrong Sec-WebSocket-Accept ${headers['sec-websocket-accept']}`));
          return;
        }
        handshakeDone = true;
        client.handshakeHeaders = headers;
        buf = head.subarray(end + 4);
        head = null;
        parseFrames();
        resolve(client);
        return;
      }
      buf = Buffer.concat([buf, chunk]);
      parseFrames();
    });
    sock.on('end', () => endOnce({ error: null }));
    sock.on('close', () => endOnce({ error: null }));
    sock.on('error', (err) => {
      if (!handshakeDone) {
        clearTimeout(timer);
        reject(err);
      }
      endOnce({ error: err.code || err.message });
    });
    sock.on('connect', () => {
      const extra = Object.entries(opts.headers || {})
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      sock.write(
        `GET ${wsPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
      );
    });

    client.next = (pred, timeoutMs, what) => queue.next(pred, timeoutMs, what);
    client.expectNone = (pred, waitMs, what) => queue.expectNone(pred, waitMs, what);
    client.sendFrame = (opcode, payload, frameOpts) => sock.write(encodeFrame(opcode, payload, frameOpts));
    client.send = (obj) => client.sendFrame(OP.TEXT, typeof obj === 'string' ? obj : JSON.stringify(obj));
    client.subscribe = (channel) => subscribeOn(client, channel);
    client.barrier = () => barrierOn(client);
    client.waitConnected = async () => {
      const first = await queue.next(() => true, ms(3000), 'the connected event');
      if (!(first && first.type === 'event' && first.event === 'connected')) {
        throw new Error(`${label}: first message is not the connected event: ${JSON.stringify(first)}`);
      }
      client.socketId = first.data && first.data.socketId;
      return first;
    };
    // The close frame, as soon as it arrives (without waiting for the TCP
    // connection to end); rejects if the connection ends without one.
    client.waitCloseFrame = (timeoutMs = ms(3000)) =>
      withTimeout(
        Promise.race([
          closeFrameArrived,
          client.ended.then(() => {
            if (client.closeFrame) return client.closeFrame;
            throw new Error(`${label}: the connection ended without a close frame (${JSON.stringify(endInfo)})`);
          }),
        ]),
        timeoutMs,
        `${label}: close frame`,
      );
    client.waitEnd = (timeoutMs = ms(3000)) => withTimeout(client.ended, timeoutMs, `${label}: end of connection`);
    client.pause = () => sock.pause();
    client.resume = () => sock.resume();
    client.destroy = () => sock.destroy();
  });
}

/** openRawWs() on a server, tracked for cleanup, connected event consumed. */
export async function connectRaw(server, opts = {}) {
  const c = await openRawWs(server.port, { path: server.wsPath, ...opts });
  if (server.track) server.track(c);
  if (opts.waitConnected !== false) await c.waitConnected();
  return c;
}

/**
 * A message without its channel-stream fields (DESIGN §12): an event's "offset", and the
 * "offset"/"epoch" of a subscription_succeeded's data (data itself goes when nothing else
 * is left in it). For tests about something else that compare whole messages; the history
 * tests (recovery*.test.mjs) check these fields themselves.
 */
export function plain(m) {
  if (!m || typeof m !== 'object') return m;
  const out = { ...m };
  if (out.type === 'event') delete out.offset;
  if (out.type === 'subscription_succeeded' && out.data && typeof out.data === 'object') {
    const { offset, epoch, ...rest } = out.data;
    if (Object.keys(rest).length) out.data = rest;
    else delete out.data;
  }
  return out;
}
