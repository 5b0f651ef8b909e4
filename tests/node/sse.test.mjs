// Server-Sent Events on the standalone server, driven by the maintained `eventsource`
// client and by raw HTTP where the bytes themselves are the point.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { EventSource } from 'eventsource';
import { connect, health, isEvent, ms, nonce, publish, waitFor, withServer } from './helpers.mjs';

const T = { timeout: 30000 };

function openStream(srv, query = '') {
  const es = new EventSource(`http://127.0.0.1:${srv.port}/events${query}`);
  const got = [];
  const waiters = [];
  const push = (name) => (e) => {
    const item = { name, id: e.lastEventId, data: JSON.parse(e.data) };
    got.push(item);
    for (const w of [...waiters]) if (w.pred(item)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(item); }
  };
  for (const n of ['connected', 'subscription_succeeded', 'subscription_error', 'member_added', 'member_removed']) {
    es.addEventListener(n, push(n));
  }
  es.listen = (name) => es.addEventListener(name, push(name));
  es.got = got;
  es.next = (pred, timeout = ms(3000)) => {
    const have = got.find(pred);
    if (have) { got.splice(got.indexOf(have), 1); return Promise.resolve(have); }
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (v) => { clearTimeout(t); got.splice(got.indexOf(v), 1); resolve(v); } };
      const t = setTimeout(() => { waiters.splice(waiters.indexOf(w), 1); reject(new Error(`no matching SSE message; got ${JSON.stringify(got)}`)); }, timeout);
      waiters.push(w);
    });
  };
  return es;
}

const post = (srv, route, body) =>
  fetch(`http://127.0.0.1:${srv.port}/events/${route}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body),
  });

test('sse_stream_connects_subscribes_and_receives_events_with_ids', T, async () => {
  await withServer(async (srv) => {
    const ch = `orders.${nonce()}`;
    const es = openStream(srv);
    try {
      const hello = await es.next((m) => m.name === 'connected');
      assert.equal(hello.data.type, 'event');
      assert.equal(hello.data.data.connectionId, hello.data.data.socketId);
      assert.match(hello.data.data.connectionId, /^[0-9a-f]{32}$/);
      const r = await post(srv, 'subscribe', { connectionId: hello.data.data.connectionId, channel: ch });
      assert.equal(r.status, 200);
      assert.deepEqual(await r.json(), { success: true });
      await es.next((m) => m.name === 'subscription_succeeded' && m.data.channel === ch);
      es.listen('order.created');
      await publish(srv, { channel: ch, event: 'order.created', data: { orderId: 7, note: 'a\nb' } });
      await publish(srv, { channel: ch, event: 'order.created', data: { orderId: 8 } });
      const e1 = await es.next((m) => m.name === 'order.created' && m.data.data.orderId === 7);
      const e2 = await es.next((m) => m.name === 'order.created' && m.data.data.orderId === 8);
      assert.deepEqual(e1.data, { type: 'event', channel: ch, event: 'order.created', data: { orderId: 7, note: 'a\nb' } });
      assert.ok(Number(e2.id) > Number(e1.id), `ids ${e1.id} then ${e2.id}`);

      const u = await post(srv, 'unsubscribe', { connectionId: hello.data.data.connectionId, channel: ch });
      assert.equal(u.status, 200);
      await publish(srv, { channel: ch, event: 'order.created', data: { orderId: 9 } });
      await assert.rejects(es.next((m) => m.name === 'order.created' && m.data.data.orderId === 9, 300));
    } finally {
      es.close();
    }
  });
});

test('sse_query_channels_subscribe_at_once_and_ws_and_sse_get_the_same_broadcast', T, async () => {
  await withServer(async (srv) => {
    const ch = `mixed.${nonce()}`;
    const es = openStream(srv, `?channels=${encodeURIComponent(ch)},private-no`);
    const ws = await connect(srv);
    try {
      await es.next((m) => m.name === 'subscription_succeeded' && m.data.channel === ch);
      await es.next((m) => m.name === 'subscription_error' && m.data.channel === 'private-no');
      await ws.subscribe(ch);
      es.listen('tick');
      await publish(srv, { channel: ch, event: 'tick', data: [1, 'two', null] });
      const viaSse = await es.next((m) => m.name === 'tick');
      const viaWs = await ws.next(isEvent(ch, 'tick'));
      assert.deepEqual(viaSse.data, viaWs);
    } finally {
      es.close();
    }
  });
});

test('sse_subscribe_validation_unknown_connection_and_private_refusal', T, async () => {
  await withServer(async (srv) => {
    const es = openStream(srv);
    try {
      const id = (await es.next((m) => m.name === 'connected')).data.data.connectionId;
      let r = await post(srv, 'subscribe', { channel: 'x' });
      assert.equal(r.status, 400);
      let b = await r.json();
      assert.equal(b.error, 'Validation failed');
      assert.deepEqual(b.details.map((d) => d.path), ['connectionId']);
      r = await post(srv, 'subscribe', { connectionId: id, channel: 'bad name' });
      assert.equal(r.status, 400);
      assert.equal((await r.json()).details[0].path, 'channel');
      r = await post(srv, 'subscribe', '{"connectionId":');
      assert.equal(r.status, 400);
      r = await post(srv, 'subscribe', { connectionId: 'ffffffffffffffffffffffffffffffff', channel: 'x' });
      assert.equal(r.status, 404);
      assert.match((await r.json()).error, /connectionId/);
      r = await post(srv, 'subscribe', { connectionId: id, channel: 'private-secret', member: { id: 'forged' } });
      assert.equal(r.status, 403);
      r = await fetch(`http://127.0.0.1:${srv.port}/events/subscribe`);
      assert.equal(r.status, 405);
    } finally {
      es.close();
    }
  });
});

// Raw HTTP: headers that defeat buffering, retry first, heartbeat comments.
function rawStream(port, path) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`);
    });
    sock.text = '';
    sock.on('data', (d) => { sock.text += d.toString('utf8'); });
    sock.on('error', reject);
    resolve(sock);
  });
}

test('sse_headers_retry_value_and_heartbeat_are_sent', T, async () => {
  await withServer({ args: ['--heartbeat-interval', '200', '--retry-interval', '1234'] }, async (srv) => {
    const sock = await rawStream(srv.port, '/events');
    try {
      await waitFor(async () => sock.text, (t) => (t.match(/: heartbeat\n\n/g) || []).length >= 2, ms(3000), 'two heartbeats');
      const [head, body] = sock.text.split('\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 200/);
      assert.match(head, /\r\nContent-Type: text\/event-stream/i);
      assert.match(head, /\r\nCache-Control: no-cache/i);
      assert.match(head, /\r\nX-Accel-Buffering: no/i);
      assert.ok(body.startsWith('retry: 1234\n\nevent: connected\ndata: {'), JSON.stringify(body.slice(0, 80)));
    } finally {
      sock.destroy();
    }
  });
});

test('sse_client_gone_is_unsubscribed_and_uncounted', T, async () => {
  await withServer(async (srv) => {
    const ch = `gone.${nonce()}`;
    const sock = await rawStream(srv.port, `/events?channels=${ch}`);
    await waitFor(async () => sock.text, (t) => t.includes('subscription_succeeded'), ms(3000), 'subscription');
    assert.equal((await health(srv)).connections, 1);
    sock.destroy();
    await waitFor(() => health(srv), (h) => h.connections === 0 && h.channels === 0, ms(3000), 'the stream to be gone');
  });
});

test('five_hundred_concurrent_streams_each_receive_one_broadcast', { timeout: 60000 }, async () => {
  await withServer(async (srv) => {
    const ch = `crowd.${nonce()}`;
    const socks = [];
    try {
      for (let i = 0; i < 500; i++) socks.push(await rawStream(srv.port, `/events?channels=${ch}`));
      await waitFor(async () => socks.filter((s) => s.text.includes('subscription_succeeded')).length, (n) => n === 500, ms(10000), '500 subscriptions');
      await publish(srv, { channel: ch, event: 'all', data: { n: 1 } });
      await waitFor(async () => socks.filter((s) => s.text.includes('event: all\n')).length, (n) => n === 500, ms(10000), '500 deliveries');
      for (const s of socks) assert.equal(s.text.split('event: all\n').length - 1, 1);
    } finally {
      for (const s of socks) s.destroy();
    }
  });
});

test('sse_streams_end_cleanly_on_shutdown', T, async () => {
  const { startServer } = await import('./helpers.mjs');
  const srv = await startServer();
  const sock = await rawStream(srv.port, '/events');
  await waitFor(async () => sock.text, (t) => t.includes('event: connected'), ms(3000), 'connected');
  const ended = new Promise((r) => sock.on('close', r));
  const exit = await srv.stop();
  await ended;
  assert.equal(exit.code, 0);
});
