// vxevents/client (client/index.mjs) against the real vxevents-server: connection states,
// public/private/presence subscriptions (tokens from a real HTTP auth endpoint), client events,
// reconnect after a cut connection (through a TCP relay) and after a server restart on the same
// port, recovery with no gap and no duplicate, recovered:false after history was lost, the
// keep-alive noticing a dead connection, and the SSE fallback.

import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { createClient } from '../../client/index.mjs';
import { ms, nonce, publish, startServer, withServer, withTimeout } from './helpers.mjs';
import { startRelay } from './relay.mjs';
import { SECRET, sign } from './sign.mjs';

const T = { timeout: 60000 };

/** The next emission of `event` on `emitter` (client or subscription), bounded. */
function once(emitter, event, what = event, timeoutMs = ms(5000)) {
  return withTimeout(
    new Promise((resolve) => {
      const fn = (...args) => {
        emitter.off(event, fn);
        resolve(args);
      };
      emitter.on(event, fn);
    }),
    timeoutMs,
    what,
  );
}

/** Poll a synchronous condition (state kept by the client), bounded. */
async function until(check, what, timeoutMs = ms(5000)) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function newClient(url, opts = {}) {
  return createClient({ url, WebSocket, EventSource, minDelay: 50, maxDelay: 200, ...opts });
}

/**
 * A real HTTP auth endpoint as an app would run it: reads {socketId, channel}, requires the
 * `X-User: id:name` header (a stand-in for the app's session), signs with the server's secret.
 */
async function startAuthServer() {
  const seen = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      let b;
      try {
        b = JSON.parse(body);
      } catch {
        res.writeHead(400).end('{"error":"bad body"}');
        return;
      }
      seen.push({ body: b, headers: req.headers });
      const user = req.headers['x-user'];
      if (!user || typeof b.socketId !== 'string' || typeof b.channel !== 'string') {
        res.writeHead(403, { 'content-type': 'application/json' }).end('{"error":"forbidden"}');
        return;
      }
      const [id, name] = user.split(':');
      const answer = {};
      if (b.channel.startsWith('presence-')) {
        answer.channel_data = JSON.stringify({ id, info: { name } });
        answer.auth = sign(b.socketId, b.channel, answer.channel_data);
      } else {
        answer.auth = sign(b.socketId, b.channel);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/auth`, seen, close: () => new Promise((r) => srv.close(r)) };
}

/** Collect the events of a subscription, checking offsets are consecutive (no gap, no dup). */
function collect(sub) {
  const got = [];
  sub.onAny((event, data, meta) => got.push({ event, data, offset: meta.offset }));
  return got;
}

test('client_connects_subscribes_and_receives_events', T, async () => {
  await withServer({}, async (server) => {
    const client = newClient(server.url);
    const states = [];
    client.on('state_change', (s) => states.push(s.current));
    try {
      await once(client, 'connected', 'connected');
      assert.match(client.socketId, /^[0-9a-f]{32}$/);
      assert.deepEqual(states, ['connecting', 'connected']);
      const ch = `news-${nonce()}`;
      const sub = client.subscribe(ch);
      assert.equal(client.subscribe(ch), sub, 'subscribe is idempotent');
      const [ok] = await once(sub, 'subscription_succeeded');
      assert.equal(ok.recovered, false);
      const named = once(sub, 'created');
      const got = collect(sub);
      await publish(server, { channel: ch, event: 'created', data: { n: 1 } });
      const [data, meta] = await named;
      assert.deepEqual(data, { n: 1 });
      assert.equal(meta.channel, ch);
      assert.equal(meta.offset, 1);
      assert.deepEqual(got, [{ event: 'created', data: { n: 1 }, offset: 1 }]);

      sub.unsubscribe();
      assert.equal(client.channel(ch), undefined);
      // after unsubscribe nothing more arrives: a second channel's event acts as the barrier
      const other = client.subscribe(`other-${nonce()}`);
      await once(other, 'subscription_succeeded');
      const barrier = once(other, 'x');
      await publish(server, { channel: ch, event: 'created', data: { n: 2 } });
      await publish(server, { channel: other.channel, event: 'x', data: 1 });
      await barrier;
      assert.equal(got.length, 1);

      assert.throws(() => other.trigger('typing', {}), /private- or presence-/);
    } finally {
      client.disconnect();
    }
    assert.equal(client.state, 'disconnected');
  });
});

test('client_private_and_presence_auth_members_and_client_events', T, async () => {
  const auth = await startAuthServer();
  try {
    await withServer({ args: ['--auth-secret', SECRET] }, async (server) => {
      const ada = newClient(server.url, { authEndpoint: auth.url, authHeaders: { 'X-User': 'u1:Ada' } });
      const bob = newClient(server.url, { authEndpoint: auth.url, authHeaders: () => ({ 'X-User': 'u2:Bob' }) });
      const nobody = newClient(server.url, { authEndpoint: auth.url });
      try {
        await Promise.all([once(ada, 'connected'), once(bob, 'connected'), once(nobody, 'connected')]);

        const priv = `private-${nonce()}`;
        const p = ada.subscribe(priv);
        await once(p, 'subscription_succeeded');
        const req = auth.seen.find((s) => s.body.channel === priv);
        assert.deepEqual(req.body, { socketId: ada.socketId, channel: priv });
        assert.equal(req.headers['content-type'], 'application/json');

        // refused by the endpoint: subscription_error, the connection stays
        const refused = nobody.subscribe(priv);
        const [err] = await once(refused, 'subscription_error');
        assert.match(err.error, /403/);
        assert.equal(nobody.state, 'connected');

        const room = `presence-${nonce()}`;
        const a = ada.subscribe(room);
        await once(a, 'subscription_succeeded');
        assert.deepEqual(a.me, { id: 'u1', info: { name: 'Ada' } });
        assert.deepEqual([...a.members], [['u1', { name: 'Ada' }]]);

        const added = once(a, 'member_added');
        const b = bob.subscribe(room);
        const [bOk] = await once(b, 'subscription_succeeded');
        assert.deepEqual(bOk.members.map((m) => m.id).sort(), ['u1', 'u2']);
        assert.deepEqual((await added)[0], { id: 'u2', info: { name: 'Bob' } });
        assert.deepEqual([...a.members.keys()].sort(), ['u1', 'u2']);
        assert.deepEqual([...b.members.keys()].sort(), ['u1', 'u2']);

        // a client event from Bob reaches Ada marked with Bob's signed id, not back to Bob
        const typing = once(a, 'typing');
        assert.equal(b.trigger('typing', { on: true }), true);
        const [data, meta] = await typing;
        assert.deepEqual(data, { on: true });
        assert.equal(meta.client, true);
        assert.equal(meta.user_id, 'u2');

        const removed = once(a, 'member_removed');
        b.unsubscribe();
        assert.deepEqual((await removed)[0].id, 'u2');
        assert.deepEqual([...a.members.keys()], ['u1']);
      } finally {
        ada.disconnect();
        bob.disconnect();
        nobody.disconnect();
      }
    });
  } finally {
    await auth.close();
  }
});

test('client_reconnects_through_a_cut_relay_and_recovers_without_gap_or_duplicate', T, async () => {
  const auth = await startAuthServer();
  try {
    await withServer({ args: ['--auth-secret', SECRET] }, async (server) => {
      const relay = await startRelay(server.port);
      const client = newClient(relay.url, { authEndpoint: auth.url, authHeaders: { 'X-User': 'u1:Ada' } });
      try {
        await once(client, 'connected');
        const pub = client.subscribe(`feed-${nonce()}`);
        const priv = client.subscribe(`private-${nonce()}`);
        await Promise.all([once(pub, 'subscription_succeeded'), once(priv, 'subscription_succeeded')]);
        const gotPub = collect(pub);
        const gotPriv = collect(priv);
        const firstId = client.socketId;

        let n = 0;
        const send = async (k) => {
          for (let i = 0; i < k; i++) {
            n++;
            await publish(server, { channel: pub.channel, event: 'e', data: { n } });
            await publish(server, { channel: priv.channel, event: 'e', data: { n } });
          }
        };
        await send(5);
        await until(() => gotPub.length === 5 && gotPriv.length === 5, 'the first 5 events');

        const disconnected = once(client, 'disconnected');
        const recovered = [once(pub, 'subscription_succeeded'), once(priv, 'subscription_succeeded')];
        relay.cut();
        await disconnected;
        await send(10); // published while the client is away
        const [[rp], [rq]] = await Promise.all(recovered);
        assert.equal(rp.recovered, true);
        assert.equal(rq.recovered, true);
        assert.notEqual(client.socketId, firstId);
        await send(5);
        await until(() => gotPub.length === 20 && gotPriv.length === 20, '20 events on each channel');
        for (const got of [gotPub, gotPriv]) {
          assert.deepEqual(got.map((e) => e.data.n), Array.from({ length: 20 }, (_, i) => i + 1));
          assert.deepEqual(got.map((e) => e.offset), Array.from({ length: 20 }, (_, i) => i + 1));
        }
      } finally {
        client.disconnect();
        await relay.close();
      }
    });
  } finally {
    await auth.close();
  }
});

test('client_keepalive_notices_a_dead_connection_and_reconnects', T, async () => {
  await withServer({}, async (server) => {
    const relay = await startRelay(server.port);
    const client = newClient(relay.url, { pingInterval: 200, pongTimeout: 300 });
    try {
      await once(client, 'connected');
      const sub = client.subscribe(`k-${nonce()}`);
      await once(sub, 'subscription_succeeded');
      const got = collect(sub);
      const disconnected = once(client, 'disconnected', 'disconnected after an unanswered ping', ms(3000));
      relay.hold(true); // the TCP connection stays up, nothing gets through
      const [info] = await disconnected;
      assert.equal(info.code, 4000);
      relay.cut();
      relay.hold(false);
      const again = once(sub, 'subscription_succeeded');
      await publish(server, { channel: sub.channel, event: 'e', data: 1 });
      const [ok] = await again;
      assert.equal(ok.recovered, true);
      await until(() => got.length === 1, 'the event published while away');
    } finally {
      client.disconnect();
      await relay.close();
    }
  });
});

test('client_after_a_restart_that_lost_history_says_recovered_false', T, async () => {
  let server = await startServer();
  const port = server.port;
  const client = newClient(server.url);
  try {
    await once(client, 'connected');
    const sub = client.subscribe(`r-${nonce()}`);
    await once(sub, 'subscription_succeeded');
    const got = collect(sub);
    await publish(server, { channel: sub.channel, event: 'e', data: 1 });
    await until(() => got.length === 1, 'the first event');

    const disconnected = once(client, 'disconnected');
    await server.stop();
    await disconnected;
    const again = once(sub, 'subscription_succeeded', 'resubscribed after the restart', ms(10000));
    server = await startServer({ args: ['--port', String(port)], apiKey: server.apiKey });
    const [ok] = await again;
    assert.equal(ok.recovered, false, 'a fresh in-memory stream cannot replay');
    assert.equal(client.state, 'connected');
    await publish(server, { channel: sub.channel, event: 'e', data: 2 });
    await until(() => got.length === 2, 'the event after the restart');
    assert.deepEqual(got.map((e) => e.data), [1, 2]);
    assert.equal(got[1].offset, 1, 'the new epoch counts from 1 again and is not dropped as a duplicate');
  } finally {
    client.disconnect();
    await server.stop();
  }
});

test('client_falls_back_to_sse_when_websocket_fails', T, async () => {
  await withServer({}, async (server) => {
    // a WebSocket path the server does not serve: the upgrade fails, SSE takes over
    const client = newClient(server.url, { path: '/no-websocket-here' });
    try {
      const [info] = await once(client, 'connected');
      assert.equal(info.transport, 'sse');
      assert.match(client.socketId, /^[0-9a-f]{32}$/);
      const sub = client.subscribe(`s-${nonce()}`);
      await once(sub, 'subscription_succeeded');
      const ev = once(sub, 'hello');
      await publish(server, { channel: sub.channel, event: 'hello', data: { via: 'sse' } });
      assert.deepEqual((await ev)[0], { via: 'sse' });
    } finally {
      client.disconnect();
    }
  });
});

test('client_without_any_transport_fails', T, async () => {
  const client = createClient({ url: 'http://127.0.0.1:9', WebSocket: null, EventSource: null, transports: ['ws'], autoConnect: false });
  const failed = once(client, 'failed');
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    client.connect();
    const [info] = await failed;
    assert.match(info.reason, /no transport/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test('client_over_sse_resumes_after_a_cut_with_last_event_id', T, async () => {
  await withServer({}, async (server) => {
    const relay = await startRelay(server.port);
    const client = newClient(relay.url, { transports: ['sse'] });
    try {
      const [info] = await once(client, 'connected');
      assert.equal(info.transport, 'sse');
      const sub = client.subscribe(`sse-${nonce()}`);
      await once(sub, 'subscription_succeeded');
      const got = collect(sub);
      for (let n = 1; n <= 3; n++) await publish(server, { channel: sub.channel, event: 'e', data: n });
      await until(() => got.length === 3, 'the first 3 events');
      const disconnected = once(client, 'disconnected');
      const again = once(sub, 'subscription_succeeded', 'resubscribed over SSE', ms(10000));
      relay.cut();
      await disconnected;
      for (let n = 4; n <= 8; n++) await publish(server, { channel: sub.channel, event: 'e', data: n });
      const [ok] = await again;
      assert.equal(ok.recovered, true);
      await publish(server, { channel: sub.channel, event: 'e', data: 9 });
      await until(() => got.length === 9, '9 events');
      assert.deepEqual(got.map((e) => e.data), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    } finally {
      client.disconnect();
      await relay.close();
    }
  });
});

test('client_uses_the_global_websocket_of_node_experimental_websocket', T, async () => {
  await withServer({}, async (server) => {
    // a separate Node with the browser-like global WebSocket and no `ws` passed in
    const script = `
      import { createClient } from ${JSON.stringify(new URL('../../client/index.mjs', import.meta.url).href)};
      const timer = setTimeout(() => { console.log('timeout'); process.exit(1); }, ${ms(8000)});
      const client = createClient({ url: process.env.URL, transports: ['ws'] });
      client.on('connected', (s) => console.log('connected', s.transport));
      const sub = client.subscribe(process.env.CH);
      sub.on('subscription_succeeded', async () => {
        await fetch(process.env.URL + '/api/broadcast', { method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'Bearer ' + process.env.KEY },
          body: JSON.stringify({ channel: process.env.CH, event: 'hi', data: { ok: 1 } }) });
      });
      sub.on('hi', (data, meta) => { console.log('hi', JSON.stringify(data), meta.offset); clearTimeout(timer); client.disconnect(); });
    `;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', '--input-type=module', '-e', script], {
      env: { ...process.env, URL: server.url, KEY: server.apiKey, CH: `g-${nonce()}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await withTimeout(new Promise((r) => child.on('exit', r)), ms(10000), 'the child to exit');
    assert.equal(code, 0, `stdout: ${out}\nstderr: ${err}`);
    assert.equal(out, 'connected ws\nhi {"ok":1} 1\n');
  });
});

test('client_gives_up_after_max_retries_with_backoff_and_says_failed', T, async () => {
  // a port nobody listens on (a listener opened and closed)
  const relay = await startRelay(9);
  const url = relay.url;
  await relay.close();
  const client = newClient(url, { transports: ['ws', 'sse'], maxRetries: 3, minDelay: 40, maxDelay: 100, jitter: 0 });
  const states = [];
  client.on('state_change', (s) => states.push(s.current));
  const started = Date.now();
  const [info] = await once(client, 'failed', 'failed after 3 retries');
  assert.match(info.reason, /too many retries/);
  // 4 rounds (each ws, then sse at once), waits of 40, 80, 100 ms between them
  assert.deepEqual(states, ['connecting', 'disconnected', 'connecting', 'disconnected', 'connecting', 'disconnected', 'connecting', 'disconnected', 'failed']);
  assert.ok(Date.now() - started >= 220, `backoff waited ${Date.now() - started} ms`);
  client.disconnect();
});
