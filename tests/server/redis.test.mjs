// Several vxevents-server instances sharing a real redis-server.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, ms, nonce, publish, startServer, waitFor, plain } from './helpers.mjs';
import { startRedis } from './redis.mjs';

const T = { timeout: 60000 };

async function cluster(n, redis, extra = []) {
  const servers = [];
  for (let i = 0; i < n; i++) {
    servers.push(await startServer({ args: ['--redis', redis.url, '--log-level', 'info', ...extra] }));
  }
  return servers;
}

async function stopAll(servers, redis) {
  const results = await Promise.allSettled(servers.map((s) => s.stop()));
  if (redis) await redis.stop();
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

test('broadcast_on_one_instance_reaches_subscribers_on_all_exactly_once', T, async () => {
  const redis = await startRedis();
  const servers = await cluster(3, redis);
  try {
    const ch = `orders.${nonce()}`;
    const clients = [];
    for (const s of servers) for (let k = 0; k < 2; k++) clients.push(await connect(s));
    const outsider = await connect(servers[1]);
    for (const c of clients) await c.subscribe(ch);
    await outsider.subscribe(`other.${nonce()}`);
    for (let i = 0; i < 3; i++) {
      await publish(servers[i], { channel: ch, event: 'created', data: { from: i } });
      for (const c of clients) await c.next(isEvent(ch, 'created', { from: i }));
    }
    await Promise.all(clients.map((c) => c.expectNone(isEvent(ch, 'created'), 300, 'a duplicate')));
    await outsider.expectNone(() => true, 100, 'delivery to another channel');
  } finally {
    await stopAll(servers, redis);
  }
});

test('except_is_honoured_across_instances', T, async () => {
  const redis = await startRedis();
  const servers = await cluster(2, redis);
  try {
    const ch = `chat.${nonce()}`;
    const a = await connect(servers[0]);
    const b = await connect(servers[1]);
    const b2 = await connect(servers[1]);
    for (const c of [a, b, b2]) await c.subscribe(ch);
    await publish(servers[0], { channel: ch, event: 'said', data: 'hi', except: b.socketId });
    await a.next(isEvent(ch, 'said', 'hi'));
    await b2.next(isEvent(ch, 'said', 'hi'));
    await b.expectNone(isEvent(ch, 'said'), 300, 'delivery to the excluded socket on another instance');
  } finally {
    await stopAll(servers, redis);
  }
});

test('nothing_published_after_subscription_succeeded_is_missed', T, async () => {
  const redis = await startRedis();
  const servers = await cluster(2, redis);
  try {
    const b = await connect(servers[1]);
    for (let i = 0; i < 25; i++) {
      const ch = `fresh.${nonce()}`;
      await b.subscribe(ch); // resolves on subscription_succeeded
      await publish(servers[0], { channel: ch, event: 'first', data: i });
      await b.next(isEvent(ch, 'first', i), ms(2000));
    }
  } finally {
    await stopAll(servers, redis);
  }
});

test('redis_outage_keeps_local_delivery_and_delivers_the_backlog_once_after_restart', T, async () => {
  let redis = await startRedis();
  const port = redis.port;
  const servers = await cluster(2, redis);
  try {
    const ch = `outage.${nonce()}`;
    const a = await connect(servers[0]);
    const b = await connect(servers[1]);
    await a.subscribe(ch);
    await b.subscribe(ch);
    await publish(servers[0], { channel: ch, event: 'before', data: 0 });
    await b.next(isEvent(ch, 'before'));

    await redis.stop();
    for (let i = 1; i <= 3; i++) {
      const r = await publish(servers[0], { channel: ch, event: 'during', data: i });
      assert.equal(r.status, 200);
      await a.next(isEvent(ch, 'during', i)); // local delivery goes on
    }
    await new Promise((r) => setTimeout(r, 1500));
    redis = await startRedis(port);
    for (let i = 1; i <= 3; i++) await b.next(isEvent(ch, 'during', i), ms(15000));
    await b.expectNone(isEvent(ch, 'during'), 500, 'a duplicate of the backlog');
    await a.expectNone(isEvent(ch, 'during'), 100, 'the origin delivering twice');

    // Both directions work again.
    await waitFor(async () => {
      await publish(servers[1], { channel: ch, event: 'after', data: 1 });
      try { await a.next(isEvent(ch, 'after'), 300); return true; } catch { return false; }
    }, (ok) => ok, ms(10000), 'delivery from the second instance after the restart');
    const h = await fetch(`http://127.0.0.1:${servers[0].port}/health`);
    assert.equal(h.status, 200);
  } finally {
    await stopAll(servers, redis);
  }
});

test('bad_redis_url_is_a_clear_startup_error', T, async () => {
  const { spawnSync } = await import('node:child_process');
  const { SERVER_BIN } = await import('./helpers.mjs');
  const r = spawnSync(SERVER_BIN, ['--port', '0', '--redis', 'http://nope'], { encoding: 'utf8', timeout: 5000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /redis:\/\//);
});

test('sigterm_during_a_redis_outage_still_exits_0_promptly', T, async () => {
  const redis = await startRedis();
  const [srv] = await cluster(1, redis);
  const c = await connect(srv);
  await c.subscribe(`x.${nonce()}`);
  await redis.stop();
  await new Promise((r) => setTimeout(r, 500));
  const t0 = Date.now();
  const exit = await srv.stop();
  assert.equal(exit.code, 0);
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
});

test('event_names_needing_escapes_cross_instances_intact', T, async () => {
  const redis = await startRedis();
  const servers = await cluster(2, redis);
  try {
    const ch = `names.${nonce()}`;
    const b = await connect(servers[1]);
    await b.subscribe(ch);
    const name = 'quote" back\\slash\nline\ttab é 😀';
    await publish(servers[0], { channel: ch, event: name, data: { ok: true } });
    assert.deepEqual(plain(await b.next(isEvent(ch, name))), { type: 'event', channel: ch, event: name, data: { ok: true } });
  } finally {
    await stopAll(servers, redis);
  }
});

// The standalone server on SIGTERM publishes what it accepted, or says how much it could
// not: exit status 3 and a count on standard error (Redis never reachable here).
test('server_exits_3_naming_the_broadcasts_redis_never_acknowledged', { timeout: 30000 }, async () => {
  const { freePort } = await import('./redis.mjs');
  const srv = await startServer({ args: ['--redis', `redis://127.0.0.1:${await freePort()}`, '--redis-connect-timeout', '500'] });
  await publish(srv, { channel: 'nobody', event: 'held', data: 1 });
  await publish(srv, { channels: ['a', 'b'], event: 'held', data: 2 });
  const res = await srv.stop({ allowNonZero: true, timeoutMs: ms(8000) });
  assert.equal(res.code, 3, res.stderr);
  assert.match(res.stderr, /3 broadcast\(s\) could not be published to Redis/);
});
