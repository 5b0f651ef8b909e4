// The seed's job pattern through Redis (DESIGN §7 "Lifecycle edges"): getEvents({redis}) →
// broadcast → closeEvents(), within milliseconds, a hundred times in a row. Every broadcast
// must reach a `ws` subscriber of a separate vxevents-server exactly once, in order: close
// publishes what was accepted while the Redis connection was still starting. A query made
// right after getEvents() answers for the cluster, not the not-yet-connected local view; with
// Redis unreachable it fails with EUNAVAILABLE, and close reports what it could not publish.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closeEvents, getEvents } from 'vxevents';
import { connect, isEvent, ms, nonce, startServer } from '../../server/helpers.mjs';
import { freePort, startRedis } from '../../server/redis.mjs';

const T = { timeout: 120000 };

test('job_pattern_100_times_each_broadcast_reaches_a_server_subscriber_exactly_once', T, async () => {
  const redis = await startRedis();
  const prefix = `jobs${nonce()}`;
  const srv = await startServer({ args: ['--redis', redis.url, '--redis-prefix', prefix] });
  try {
    const ch = `jobs.${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch); // acknowledged once Redis confirmed the SUBSCRIBE
    const t0 = Date.now();
    for (let i = 0; i < 100; i++) {
      const events = await getEvents({ redis: redis.url, redisPrefix: prefix });
      await events.broadcast(ch, 'job.completed', { i });
      await closeEvents();
    }
    const took = Date.now() - t0;
    // A sentinel through Redis as well: the subscriber's Redis connection delivers in PUBLISH
    // order, and every close above returned after Redis acknowledged its PUBLISH, so a
    // duplicate of any of them would arrive before the sentinel.
    const last = await getEvents({ redis: redis.url, redisPrefix: prefix });
    await last.broadcast(ch, 'done', null);
    await closeEvents();
    const got = [];
    for (;;) {
      const m = await c.next((x) => x.type === 'event' && x.channel === ch, ms(5000), `event ${got.length}`);
      if (m.event === 'done') break;
      assert.equal(m.event, 'job.completed');
      got.push(m.data.i);
    }
    assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => i));
    console.log(`# 100 job cycles in ${took} ms`);
  } finally {
    await closeEvents().catch(() => {});
    await srv.stop();
    await redis.stop();
  }
});

test('query_right_after_getEvents_answers_for_the_cluster', T, async () => {
  const redis = await startRedis();
  const prefix = `q${nonce()}`;
  const srv = await startServer({ args: ['--redis', redis.url, '--redis-prefix', prefix] });
  try {
    const ch = `room.${nonce()}`;
    for (let k = 0; k < 3; k++) await (await connect(srv)).subscribe(ch);
    for (let i = 0; i < 20; i++) {
      const events = await getEvents({ redis: redis.url, redisPrefix: prefix });
      assert.equal(await events.subscriberCount(ch), 3);
      assert.equal(await events.hasSubscribers(ch), true);
      assert.ok((await events.channels()).includes(ch));
      await closeEvents();
    }
  } finally {
    await closeEvents().catch(() => {});
    await srv.stop();
    await redis.stop();
  }
});

test('unreachable_redis_queries_fail_with_EUNAVAILABLE_and_close_reports_unpublished', T, async () => {
  const url = `redis://127.0.0.1:${await freePort()}`; // nobody listens there
  const events = await getEvents({ redis: url, redisConnectTimeout: 300 });
  const t0 = Date.now();
  await assert.rejects(events.subscriberCount('a'), (err) => err.code === 'EUNAVAILABLE' && /Redis/.test(err.message));
  assert.ok(Date.now() - t0 < ms(3000), `took ${Date.now() - t0} ms`);
  await assert.rejects(events.hasSubscribers('a'), (err) => err.code === 'EUNAVAILABLE');
  await assert.rejects(events.channels(), (err) => err.code === 'EUNAVAILABLE');
  await assert.rejects(events.presenceMembers('presence-a'), (err) => err.code === 'EUNAVAILABLE');
  await events.broadcast('a', 'e', 1);
  await events.broadcastToMany(['a', 'b'], 'e', 2);
  await assert.rejects(closeEvents(), (err) => {
    assert.equal(err.code, 'EUNPUBLISHED');
    assert.equal(err.unpublished, 3);
    assert.match(err.message, /3 broadcasts/);
    return true;
  });
  assert.equal(events.closed, true);
});

test('a_query_fails_with_EUNAVAILABLE_when_redis_stalls_under_it_and_works_again_after', T, async () => {
  const redis = await startRedis();
  try {
    const events = await getEvents({ redis: redis.url, redisPrefix: `st${nonce()}`, redisConnectTimeout: 500 });
    assert.equal(await events.subscriberCount('a'), 0);
    redis.pause();
    const t0 = Date.now();
    await assert.rejects(events.subscriberCount('a'), (err) => err.code === 'EUNAVAILABLE');
    await assert.rejects(events.presenceMembers('presence-a'), (err) => err.code === 'EUNAVAILABLE');
    assert.ok(Date.now() - t0 < ms(3000), `took ${Date.now() - t0} ms`);
    redis.resume();
    assert.equal(await events.subscriberCount('a'), 0);
    await closeEvents();
  } finally {
    await closeEvents().catch(() => {});
    await redis.stop();
  }
});

test('a_broadcast_written_but_not_acknowledged_by_a_stalled_redis_is_reported_by_close', T, async () => {
  const redis = await startRedis();
  try {
    const events = await getEvents({ redis: redis.url, redisPrefix: `ack${nonce()}`, redisConnectTimeout: 500 });
    assert.equal(await events.subscriberCount('a'), 0); // connected and registered
    redis.pause();
    await events.broadcast('a', 'e', 1); // written to the socket; Redis cannot answer
    await assert.rejects(closeEvents(), (err) => err.code === 'EUNPUBLISHED' && err.unpublished === 1);
  } finally {
    redis.resume();
    await closeEvents().catch(() => {});
    await redis.stop();
  }
});

test('close_with_nothing_to_publish_does_not_wait_for_a_stalled_redis', T, async () => {
  const redis = await startRedis();
  try {
    const events = await getEvents({ redis: redis.url, redisPrefix: `idle${nonce()}` });
    assert.equal(await events.subscriberCount('a'), 0); // connected and registered
    redis.pause();
    const t0 = Date.now();
    await closeEvents(); // nothing held: resolves, and soon, although Redis answers nothing
    assert.ok(Date.now() - t0 < ms(1000), `close took ${Date.now() - t0} ms`);
  } finally {
    redis.resume();
    await closeEvents().catch(() => {});
    await redis.stop();
  }
});
