// GET /metrics: the text is parsed with a real Prometheus text-format parser
// (parse-prometheus-text-format, a devDependency), and the values must move with
// what real clients do: connections by transport, subscriptions, broadcasts, the
// publish API's statuses, auth refusals, Redis connection state.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventSource } from 'eventsource';
import { api, connect, isEvent, ms, nonce, randomKey, waitFor, withServer } from './helpers.mjs';
import { scrape, value } from './prometheus.mjs';
import { startRedis } from './redis.mjs';
import { SECRET } from './sign.mjs';

const T = { timeout: 30000 };

function family(families, name) {
  const f = families.find((x) => x.name === name);
  assert.ok(f, `no metric family ${name}`);
  return f;
}

test('metrics_follow_connections_broadcasts_and_api_answers', T, async () => {
  await withServer(async (srv) => {
    const before = (await scrape(srv)).families;
    for (const t of ['ws', 'ws_deflate', 'sse'])
      assert.equal(value(before, 'vxevents_connections', { transport: t }), 0, t);
    assert.equal(family(before, 'vxevents_connections').type, 'GAUGE');
    assert.equal(family(before, 'vxevents_messages_out_total').type, 'COUNTER');
    assert.equal(family(before, 'vxevents_broadcast_fanout_seconds').type, 'HISTOGRAM');

    const ch = `m-${nonce()}`;
    // Two clients offer permessage-deflate (ws does by default), one does not; one SSE stream.
    const a = await connect(srv);
    const b = await connect(srv);
    const plain = await connect(srv, { wsOptions: { perMessageDeflate: false } });
    for (const c of [a, b, plain]) await c.subscribe(ch);
    const es = new EventSource(`${srv.url}/events`);
    await new Promise((resolve, reject) => {
      es.addEventListener('event', resolve, { once: true });
      es.onerror = reject;
    });
    try {
      const during = (await scrape(srv)).families;
      assert.equal(value(during, 'vxevents_connections', { transport: 'ws_deflate' }), 2);
      assert.equal(value(during, 'vxevents_connections', { transport: 'ws' }), 1);
      assert.equal(value(during, 'vxevents_connections', { transport: 'sse' }), 1);
      assert.equal(value(during, 'vxevents_subscriptions'), 3);
      assert.equal(value(during, 'vxevents_channels'), 1);
      assert.ok(value(during, 'vxevents_messages_in_total') >= 3, 'three subscribe messages');
      assert.ok(value(during, 'vxevents_bytes_in_total') > 0);

      const res = await api(srv, '/api/broadcast', { body: { channel: ch, event: 'e', data: { n: 1 } } });
      assert.equal(res.status, 200, res.text);
      for (const c of [a, b, plain]) await c.next(isEvent(ch, 'e'));
      const bad = await api(srv, '/api/broadcast', { body: { channel: ch, event: 'e' }, auth: `Bearer ${randomKey()}` });
      assert.equal(bad.status, 401);
      const invalid = await api(srv, '/api/broadcast', { body: { channel: ch } });
      assert.equal(invalid.status, 400);

      const after = (await scrape(srv)).families;
      const d = (name, labels) => value(after, name, labels) - value(during, name, labels);
      assert.equal(d('vxevents_api_requests_total', { code: '200' }), 1);
      assert.equal(d('vxevents_api_requests_total', { code: '401' }), 1);
      assert.equal(d('vxevents_api_requests_total', { code: '400' }), 1);
      assert.ok(d('vxevents_messages_out_total') >= 3, 'three deliveries at least');
      assert.ok(d('vxevents_bytes_out_total') > 0);
      const fan = family(after, 'vxevents_broadcast_fanout_seconds').metrics[0];
      const fanBefore = family(during, 'vxevents_broadcast_fanout_seconds').metrics[0];
      assert.equal(Number(fan.count) - Number(fanBefore.count), 1, 'one broadcast observed');
      assert.equal(Number(fan.buckets['+Inf']), Number(fan.count));
      assert.ok(Number(fan.sum) > 0 && Number(fan.sum) < 1, `fan-out sum ${fan.sum}`);
      // Buckets are cumulative.
      const counts = Object.values(fan.buckets).map(Number);
      for (let i = 1; i < counts.length; i++) assert.ok(counts[i] >= counts[i - 1]);
    } finally {
      es.close();
    }
    a.destroy();
    await waitFor(async () => value((await scrape(srv)).families, 'vxevents_connections', { transport: 'ws_deflate' }),
      (v) => v === 1, ms(3000), 'the closed client to leave the gauge');
  });
});

test('metrics_count_auth_refusals_by_reason', T, async () => {
  await withServer({ args: ['--auth-secret', SECRET] }, async (srv) => {
    const c = await connect(srv);
    const ask = async (msg) => {
      c.send(msg);
      await c.next((m) => m.type === 'subscription_error' && m.channel === msg.channel);
    };
    await ask({ type: 'subscribe', channel: 'private-a' });
    await ask({ type: 'subscribe', channel: 'private-b', auth: `${c.socketId}:${'0'.repeat(64)}` });
    await ask({ type: 'subscribe', channel: 'private-c', auth: `${'f'.repeat(32)}:${'0'.repeat(64)}` });
    await ask({ type: 'subscribe', channel: 'private-d', auth: 'nonsense' });
    const res = await api(srv, '/ws/auth', { body: { socketId: c.socketId, channel: 'private-x' }, auth: false });
    assert.equal(res.status, 403);
    const f = (await scrape(srv)).families;
    assert.equal(value(f, 'vxevents_auth_refusals_total', { reason: 'missing_token' }), 1);
    assert.equal(value(f, 'vxevents_auth_refusals_total', { reason: 'bad_signature' }), 1);
    assert.equal(value(f, 'vxevents_auth_refusals_total', { reason: 'other_socket' }), 1);
    assert.equal(value(f, 'vxevents_auth_refusals_total', { reason: 'malformed_token' }), 1);
    assert.equal(value(f, 'vxevents_auth_refusals_total', { reason: 'authorizer' }), 1);
    assert.equal(value(f, 'vxevents_auth_refusals_total', { reason: 'no_secret' }), 0);
  });
});

test('metrics_need_a_bearer_token_and_can_be_turned_off', T, async () => {
  // The API key guards /metrics by default; a wrong or missing one is 401.
  await withServer(async (srv) => {
    for (const auth of [undefined, `Bearer ${randomKey()}`, srv.apiKey]) {
      const res = await fetch(`${srv.url}/metrics`, { headers: auth ? { authorization: auth } : {} });
      assert.equal(res.status, 401, `authorization ${auth}`);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
    }
  });
  // Its own token: then the API key is not accepted for it.
  const token = randomKey();
  await withServer({ args: ['--metrics-token', token] }, async (srv) => {
    await scrape(srv, token);
    const res = await fetch(`${srv.url}/metrics`, { headers: { authorization: `Bearer ${srv.apiKey}` } });
    assert.equal(res.status, 401);
  });
  // No API key and no token: nothing to guard it with, so it is not served.
  await withServer({ apiKey: null }, async (srv) => {
    const res = await fetch(`${srv.url}/metrics`);
    assert.equal(res.status, 404);
    assert.match(await res.text(), /metrics token or an API key/);
  });
  // --metrics 0: off even with a token.
  await withServer({ args: ['--metrics', '0', '--metrics-token', token] }, async (srv) => {
    const res = await fetch(`${srv.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 404);
  });
});

test('metrics_show_redis_connected_and_reconnects', T, async () => {
  const redis = await startRedis();
  let again = null;
  try {
    await withServer({ args: ['--redis', redis.url] }, async (srv) => {
      const ready = (f) =>
        value(f, 'vxevents_redis_connected', { connection: 'commands' }) === 1 &&
        value(f, 'vxevents_redis_connected', { connection: 'subscriber' }) === 1;
      let f = await waitFor(async () => (await scrape(srv)).families, ready, ms(5000), 'Redis to connect');
      assert.equal(value(f, 'vxevents_redis_reconnects_total'), 0);
      assert.equal(value(f, 'vxevents_redis_backlog_bytes'), 0);
      assert.match((await scrape(srv)).text, /vxevents_info\{version="[^"]+",backplane="redis"\} 1/);
      await redis.stop();
      await waitFor(async () => (await scrape(srv)).families,
        (x) => value(x, 'vxevents_redis_connected', { connection: 'commands' }) === 0, ms(5000), 'the loss to show');
      again = await startRedis(redis.port);
      f = await waitFor(async () => (await scrape(srv)).families, ready, ms(10000), 'Redis to reconnect');
      assert.ok(value(f, 'vxevents_redis_reconnects_total') >= 2, 'both connections came back');
    });
  } finally {
    await redis.stop();
    if (again) await again.stop();
  }
  // Without Redis the Redis series are absent rather than a misleading 0.
  await withServer(async (srv) => {
    const f = (await scrape(srv)).families;
    assert.equal(f.find((x) => x.name === 'vxevents_redis_connected'), undefined);
  });
});
