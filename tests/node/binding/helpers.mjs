// Helpers for the binding suite: a real Fastify app on 127.0.0.1 (port 0) with the
// vxevents plugin, and real `ws` and `eventsource` clients that record every message. Every
// wait is bounded and says what it saw when it gives up.

import Fastify from 'fastify';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { eventsPlugin } from 'vxevents';

export const SECRET = 'test-secret-that-is-at-least-32-characters-long';
export const sleep = (n) => new Promise((resolve) => setTimeout(resolve, n));

/** Start a Fastify app with eventsPlugin(options); `setup(app)` runs before listen. */
export async function startApp(options = {}, setup = null, fastifyOptions = {}) {
  const app = Fastify(fastifyOptions);
  if (setup) await setup(app);
  app.register(eventsPlugin({ driver: 'ws', path: '/ws', ...options }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address();
  return { app, port, base: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws` };
}

/** A WebSocket client that records messages; resolves once `connected` arrived. */
export async function connect(url, timeout = 3000, wsOptions = {}) {
  const ws = new WebSocket(url, wsOptions);
  const client = {
    ws,
    messages: [],
    waiters: [],
    socketId: null,
    closeCode: null,
    closed: null,
    send(obj) {
      ws.send(JSON.stringify(obj));
    },
    /** Resolve with the first message (seen or future) matching `pred`. */
    waitFor(pred, what = 'a matching message', ms = 3000) {
      const seen = client.messages.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          client.waiters = client.waiters.filter((w) => w.pred !== pred);
          reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(client.messages)}`));
        }, ms);
        client.waiters.push({ pred, resolve, timer });
      });
    },
    async subscribe(channel, extra = {}) {
      client.send({ type: 'subscribe', channel, ...extra });
      return client.waitFor(
        (m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === channel,
        `the answer to subscribing ${channel}`,
      );
    },
    close() {
      ws.close();
      return client.closed;
    },
  };
  client.closed = new Promise((resolve) => {
    ws.on('close', (code) => {
      client.closeCode = code;
      resolve(code);
    });
  });
  ws.on('error', () => {});
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    client.messages.push(msg);
    for (const w of [...client.waiters]) {
      if (w.pred(msg)) {
        clearTimeout(w.timer);
        client.waiters = client.waiters.filter((x) => x !== w);
        w.resolve(msg);
      }
    }
  });
  const hello = await client.waitFor((m) => m.event === 'connected', 'the connected message', timeout);
  client.socketId = hello.data.socketId;
  return client;
}

/** POST JSON and return {status, body}. */
export async function postJson(url, body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

/** Events received so far on `channel` named `event`. */
export function eventsOf(client, channel, event) {
  return client.messages.filter((m) => m.type === 'event' && m.channel === channel && m.event === event);
}

/**
 * An `eventsource` client that records every message; `es.next(pred)` waits for one.
 * The SSE event: field is the message's type (event, subscription_succeeded, ...); `name` is
 * the application's event name for channel events and the type otherwise. A message whose
 * event: field is not its type is recorded in es.mismatches.
 */
export function openStream(url) {
  const es = new EventSource(url);
  const got = [];
  const waiters = [];
  es.mismatches = [];
  const push = (type) => (e) => {
    const data = JSON.parse(e.data);
    if (data.type !== type) es.mismatches.push({ field: type, data });
    const item = { name: type === 'event' ? data.event : type, data };
    got.push(item);
    for (const w of [...waiters]) {
      if (w.pred(item)) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(item);
      }
    }
  };
  for (const t of ['event', 'subscription_succeeded', 'subscription_error']) es.addEventListener(t, push(t));
  es.got = got;
  es.next = (pred, what = 'a matching SSE message', ms = 3000) => {
    const have = got.find(pred);
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      w.timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(got)}`));
      }, ms);
      waiters.push(w);
    });
  };
  return es;
}
