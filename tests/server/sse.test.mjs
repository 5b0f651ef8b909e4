// Server-Sent Events on the standalone server, driven by the maintained `eventsource`
// client and by raw HTTP where the bytes themselves are the point.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { EventSource } from 'eventsource';
import { connect, health, isEvent, ms, nonce, publish, waitFor, withServer, withTimeout, plain } from './helpers.mjs';

const T = { timeout: 30000 };

// The SSE event: field is the message's type (DESIGN §5), as a client written for
// @veloxts/events expects: it listens for 'event' and switches on message.event. Every item
// keeps that field (`type`) and, for channel events, the application's name as `name`.
const SSE_TYPES = ['event', 'subscription_succeeded', 'subscription_error', 'resumed'];
function openStream(srv, query = '') {
  const es = new EventSource(`http://127.0.0.1:${srv.port}/events${query}`);
  const got = [];
  const waiters = [];
  es.mismatches = [];
  const push = (type) => (e) => {
    const data = JSON.parse(e.data);
    if (data.type !== type) es.mismatches.push({ field: type, data });
    const item = { type, name: type === 'event' ? data.event : type, id: e.lastEventId, data };
    got.push(item);
    for (const w of [...waiters]) if (w.pred(item)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(item); }
  };
  for (const t of SSE_TYPES) es.addEventListener(t, push(t));
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
      await publish(srv, { channel: ch, event: 'order.created', data: { orderId: 7, note: 'a\nb' } });
      await publish(srv, { channel: ch, event: 'order.created', data: { orderId: 8 } });
      const e1 = await es.next((m) => m.name === 'order.created' && m.data.data.orderId === 7);
      const e2 = await es.next((m) => m.name === 'order.created' && m.data.data.orderId === 8);
      assert.deepEqual(plain(e1.data), { type: 'event', channel: ch, event: 'order.created', data: { orderId: 7, note: 'a\nb' } });
      assert.equal(e1.type, 'event');
      const [tag1, seq1] = e1.id.split('-');
      const [tag2, seq2] = e2.id.split('-');
      assert.match(tag1, /^[0-9a-f]{8}$/);
      assert.equal(tag1, tag2);
      assert.ok(Number(seq2) > Number(seq1), `ids ${e1.id} then ${e2.id}`);

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
      await publish(srv, { channel: ch, event: 'tick', data: [1, 'two', null] });
      const viaSse = await es.next((m) => m.name === 'tick');
      const viaWs = await ws.next(isEvent(ch, 'tick'));
      assert.deepEqual(viaSse.data, viaWs);
      assert.deepEqual(es.mismatches, []);
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
      assert.ok(body.startsWith('retry: 1234\n\nevent: event\ndata: {"type":"event","event":"connected"'), JSON.stringify(body.slice(0, 80)));
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
      const all = '"event":"all"';
      await waitFor(async () => socks.filter((s) => s.text.includes(all)).length, (n) => n === 500, ms(10000), '500 deliveries');
      for (const s of socks) assert.equal(s.text.split(all).length - 1, 1);
    } finally {
      for (const s of socks) s.destroy();
    }
  });
});

test('sse_streams_end_cleanly_on_shutdown', T, async () => {
  const { startServer } = await import('./helpers.mjs');
  const srv = await startServer();
  const sock = await rawStream(srv.port, '/events');
  await waitFor(async () => sock.text, (t) => t.includes('"event":"connected"'), ms(3000), 'connected');
  const ended = new Promise((r) => sock.on('close', r));
  const exit = await srv.stop();
  await ended;
  assert.equal(exit.code, 0);
});

// Resume: a stream that reconnects with Last-Event-ID gets what it missed, in order.
function readEvents(sock) {
  const out = [];
  for (const block of sock.text.split('\n\n')) {
    const id = /^id: (.*)$/m.exec(block);
    const ev = /^event: (.*)$/m.exec(block);
    const data = /^data: (.*)$/m.exec(block);
    if (!ev || !data) continue;
    const msg = JSON.parse(data[1]);
    // The event: field must be the message's type; `event` here is the application's
    // name for channel events and the type otherwise.
    assert.equal(ev[1], msg.type, `event: field of ${data[1]}`);
    out.push({ id: id && id[1], event: msg.type === 'event' ? msg.event : msg.type, data: msg });
  }
  return out;
}

function rawStreamWith(port, path, headers = '') {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => {
      sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`);
    });
    sock.text = '';
    sock.on('data', (d) => { sock.text += d.toString('utf8'); });
    sock.on('error', reject);
    resolve(sock);
  });
}

test('sse_stream_reconnecting_with_last_event_id_gets_what_it_missed', T, async () => {
  await withServer(async (srv) => {
    const ch = `resume.${nonce()}`;
    const other = `other.${nonce()}`;
    let s1 = await rawStreamWith(srv.port, `/events?channels=${ch}`);
    await waitFor(async () => s1.text, (t) => t.includes('subscription_succeeded'), ms(3000), 'subscription');
    await publish(srv, { channel: ch, event: 'n', data: 1 });
    await waitFor(async () => readEvents(s1), (e) => e.some((x) => x.event === 'n'), ms(3000), 'event 1');
    const lastId = readEvents(s1).find((x) => x.event === 'n').id;
    s1.destroy();
    // Missed while away: two on our channel, one elsewhere.
    await publish(srv, { channel: ch, event: 'n', data: 2 });
    await publish(srv, { channel: other, event: 'n', data: 'not mine' });
    await publish(srv, { channel: ch, event: 'n', data: 3 });
    const s2 = await rawStreamWith(srv.port, `/events?channels=${ch}`, `Last-Event-ID: ${lastId}\r\n`);
    try {
      await waitFor(async () => readEvents(s2), (e) => e.some((x) => x.event === 'resumed'), ms(3000), 'resumed');
      const evs = readEvents(s2);
      assert.deepEqual(evs.filter((x) => x.event === 'n').map((x) => x.data.data), [2, 3]);
      assert.deepEqual(evs.find((x) => x.event === 'resumed').data, { type: 'resumed', recovered: true, replayed: 2 });
      // Live events follow the replay.
      await publish(srv, { channel: ch, event: 'n', data: 4 });
      await waitFor(async () => readEvents(s2), (e) => e.filter((x) => x.event === 'n').length === 3, ms(3000), 'live after replay');
    } finally {
      s2.destroy();
    }
    // An id from another instance (or a garbled one) is not resumable: said so, nothing replayed.
    const s3 = await rawStreamWith(srv.port, `/events?channels=${ch}&lastEventId=deadbeef-1`);
    try {
      await waitFor(async () => readEvents(s3), (e) => e.some((x) => x.event === 'resumed'), ms(3000), 'resumed');
      assert.deepEqual(readEvents(s3).find((x) => x.event === 'resumed').data, { type: 'resumed', recovered: false, replayed: 0 });
    } finally {
      s3.destroy();
    }
  });
});

// A TCP relay between the client and the server whose connections the test can cut, so
// that the maintained EventSource client reconnects by itself (with Last-Event-ID).
function relay(targetPort) {
  const pairs = new Set();
  const server = net.createServer((down) => {
    const up = net.connect({ host: '127.0.0.1', port: targetPort });
    const pair = { up, down };
    pairs.add(pair);
    down.pipe(up);
    up.pipe(down);
    const end = () => { up.destroy(); down.destroy(); pairs.delete(pair); };
    up.on('error', end); down.on('error', end); up.on('close', end); down.on('close', end);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port,
    cut() { for (const p of [...pairs]) { p.up.destroy(); p.down.destroy(); } },
    close() { this.cut(); server.close(); },
  })));
}

test('eventsource_reconnects_by_itself_and_misses_nothing', T, async () => {
  await withServer({ args: ['--retry-interval', '300'] }, async (srv) => {
    const ch = `auto.${nonce()}`;
    const r = await relay(srv.port);
    const es = openStream({ port: r.port }, `?channels=${ch}`);
    try {
      await es.next((m) => m.name === 'subscription_succeeded' && m.data.channel === ch);
      await publish(srv, { channel: ch, event: 'n', data: 1 });
      await es.next((m) => m.name === 'n' && m.data.data === 1);
      r.cut();
      await waitFor(() => health(srv), (h) => h.connections === 0, ms(3000), 'the stream to be gone');
      await publish(srv, { channel: ch, event: 'n', data: 2 }); // missed while disconnected
      await publish(srv, { channel: ch, event: 'n', data: 3 });
      const resumed = await es.next((m) => m.name === 'resumed', ms(5000));
      assert.equal(resumed.data.recovered, true);
      assert.equal(resumed.data.replayed, 2);
      await es.next((m) => m.name === 'n' && m.data.data === 2);
      await es.next((m) => m.name === 'n' && m.data.data === 3);
      await publish(srv, { channel: ch, event: 'n', data: 4 });
      await es.next((m) => m.name === 'n' && m.data.data === 4);
      assert.equal(es.got.filter((m) => m.name === 'n').length, 0, `duplicates: ${JSON.stringify(es.got)}`);
      assert.deepEqual(es.mismatches, []);
    } finally {
      es.close();
      r.close();
    }
  });
});

test('resume_beyond_the_history_says_it_did_not_recover', T, async () => {
  await withServer({ args: ['--history-size', '2'] }, async (srv) => {
    const ch = `short.${nonce()}`;
    const s1 = await rawStreamWith(srv.port, `/events?channels=${ch}`);
    await waitFor(async () => s1.text, (t) => t.includes('subscription_succeeded'), ms(3000), 'subscription');
    await publish(srv, { channel: ch, event: 'n', data: 0 });
    await waitFor(async () => readEvents(s1), (e) => e.some((x) => x.event === 'n'), ms(3000), 'event 0');
    const lastId = readEvents(s1).find((x) => x.event === 'n').id;
    s1.destroy();
    for (let i = 1; i <= 3; i++) await publish(srv, { channel: ch, event: 'n', data: i });
    const s2 = await rawStreamWith(srv.port, `/events?channels=${ch}`, `Last-Event-ID: ${lastId}\r\n`);
    try {
      await waitFor(async () => readEvents(s2), (e) => e.some((x) => x.event === 'resumed'), ms(3000), 'resumed');
      const evs = readEvents(s2);
      // Like a WebSocket recover (DESIGN §12): not complete, so nothing is replayed.
      assert.deepEqual(evs.filter((x) => x.event === 'n').map((x) => x.data.data), []);
      assert.deepEqual(evs.find((x) => x.event === 'resumed').data, { type: 'resumed', recovered: false, replayed: 0 });
    } finally {
      s2.destroy();
    }
  });
});

// A client written for @veloxts/events: one listener for 'event', a switch on message.event.
// It must see its connectionId and every channel event without knowing their names, and no
// SSE message may be named after an application event.
test('sse_event_field_is_the_message_type_so_one_listener_sees_every_event', T, async () => {
  await withServer(async (srv) => {
    const ch = `typed.${nonce()}`;
    const es = new EventSource(`http://127.0.0.1:${srv.port}/events`);
    const seen = [];
    let connectionId;
    const connected = new Promise((resolve) => {
      es.addEventListener('event', (e) => {
        const m = JSON.parse(e.data);
        switch (m.event) {
          case 'connected': connectionId = m.data.connectionId; resolve(); break;
          default: seen.push({ id: e.lastEventId, m });
        }
      });
    });
    const acked = new Promise((resolve) => es.addEventListener('subscription_succeeded', (e) => resolve(JSON.parse(e.data))));
    const appNamed = [];
    for (const name of ['connected', 'order.created', 'order.shipped']) es.addEventListener(name, () => appNamed.push(name));
    try {
      await withTimeout(connected, ms(3000), 'connected via the event listener');
      assert.match(connectionId, /^[0-9a-f]{32}$/);
      const r = await post(srv, 'subscribe', { connectionId, channel: ch });
      assert.equal(r.status, 200);
      assert.deepEqual(plain(await withTimeout(acked, ms(3000), 'subscription_succeeded')), { type: 'subscription_succeeded', channel: ch });
      await publish(srv, { channel: ch, event: 'order.created', data: { n: 1 } });
      await publish(srv, { channel: ch, event: 'order.shipped', data: { n: 2 } });
      await waitFor(async () => seen.length, (n) => n === 2, ms(3000), 'two channel events');
      assert.deepEqual(seen.map((s) => plain(s.m)), [
        { type: 'event', channel: ch, event: 'order.created', data: { n: 1 } },
        { type: 'event', channel: ch, event: 'order.shipped', data: { n: 2 } },
      ]);
      assert.ok(seen.every((s) => /^[0-9a-f]{8}-\d+$/.test(s.id)), JSON.stringify(seen));
      assert.deepEqual(appNamed, []);
    } finally {
      es.close();
    }
  });
});
