// Redis faults across vxevents-server instances (DESIGN §7): a Redis stall (SIGSTOP) reaps
// nobody; an
// instance that was reaped anyway (its own process stalled past the liveness window) comes
// back with its counts and members and the member_added it owes; a killed instance is
// reaped within the promised 5 s (measured); a broadcast refused with 503 because the
// backlog is full is delivered nowhere. Cluster-wide answers are read through a getEvents()
// instance of this process, which asks Redis.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closeEvents, getEvents } from 'vxevents';
import { api, connect, isEvent, ms, nonce, sleep, startServer } from '../../server/helpers.mjs';
import { freePort, startRedis } from '../../server/redis.mjs';
import { SECRET, sign } from '../../server/sign.mjs';

const T = { timeout: 120000 };
const isReply = (ch) => (m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === ch;
const ids = (members) => members.map((m) => m.id).sort();

async function join(client, ch, member) {
  const cd = JSON.stringify(member);
  client.send({ type: 'subscribe', channel: ch, auth: sign(client.socketId, ch, cd), channel_data: cd });
  const r = await client.next(isReply(ch));
  assert.equal(r.type, 'subscription_succeeded', JSON.stringify(r));
  return r;
}

/** Poll `fn` until it returns `want` (JSON-equal); a query may fail while Redis recovers. */
async function until(fn, want, what, timeoutMs = ms(5000)) {
  const end = Date.now() + timeoutMs;
  let got;
  for (;;) {
    try {
      got = await fn();
    } catch (err) {
      got = `${err.code}: ${err.message}`;
    }
    if (JSON.stringify(got) === JSON.stringify(want)) return Date.now();
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: got ${JSON.stringify(got)}`);
    await sleep(50);
  }
}

/** Two servers A and B, each with a presence member and public subscribers (1 on A, 2 on B). */
async function twoInstances(redis, prefix) {
  const args = ['--redis', redis.url, '--redis-prefix', prefix, '--auth-secret', SECRET];
  const a = await startServer({ args });
  const b = await startServer({ args });
  const pres = `presence-room.${nonce()}`;
  const pub = `orders.${nonce()}`;
  const onA = await connect(a, { label: 'ann on A' });
  const onB = await connect(b, { label: 'bob on B' });
  await join(onA, pres, { id: 'ann', info: null });
  await join(onB, pres, { id: 'bob', info: null });
  await onA.next(isEvent(pres, 'member_added', { id: 'bob', info: null }));
  await onA.subscribe(pub);
  for (let i = 0; i < 2; i++) await (await connect(b)).subscribe(pub);
  const observer = await getEvents({ redis: redis.url, redisPrefix: prefix });
  const view = async () => ({
    count: await observer.subscriberCount(pub),
    members: ids(await observer.presenceMembers(pres)),
  });
  const whole = { count: 3, members: ['ann', 'bob'] };
  await until(view, whole, 'the cluster view before the fault');
  return { a, b, onA, onB, pres, pub, view, whole };
}

test('redis_stall_of_7s_reaps_nobody_and_the_cluster_view_stays_whole', T, async () => {
  const redis = await startRedis();
  const t = await twoInstances(redis, `stall${nonce()}`);
  try {
    redis.pause();
    // The stall itself: longer than the 3.5 s liveness window (and than the 5 s of the issue,
    // which reaped B only when its last heartbeat happened to fall early enough).
    await sleep(7000);
    redis.resume();
    const back = Date.now();
    await until(t.view, t.whole, 'the cluster view after the stall');
    // Past a full window and a beat after the stall: still whole, and nobody was told that
    // a live member left.
    while (Date.now() - back < 5500) {
      assert.deepEqual(await t.view(), t.whole);
      await sleep(250);
    }
    assert.equal(t.onA.queue.count(isEvent(t.pres, 'member_removed')), 0, 'member_removed on A for a live member');
    assert.equal(t.onB.queue.count(isEvent(t.pres, 'member_removed')), 0, 'member_removed on B for a live member');
  } finally {
    await closeEvents().catch(() => {});
    await Promise.allSettled([t.a.stop(), t.b.stop()]);
    await redis.stop();
  }
});

test('an_instance_stalled_past_the_window_is_reaped_then_re_registers_with_the_member_added_it_owes', T, async () => {
  const redis = await startRedis();
  const t = await twoInstances(redis, `self${nonce()}`);
  try {
    t.b.proc.kill('SIGSTOP');
    // B looks dead: reaped, bob removed for A's clients, B's counts gone.
    const removed = await t.onA.next(isEvent(t.pres, 'member_removed', { id: 'bob', info: null }), ms(8000));
    assert.ok(removed);
    await until(t.view, { count: 1, members: ['ann'] }, 'B reaped');
    t.b.proc.kill('SIGCONT');
    const resumed = Date.now();
    // B notices at its next beat and registers again: bob is added back for everyone.
    await t.onA.next(isEvent(t.pres, 'member_added', { id: 'bob', info: null }), ms(5000));
    const whole = await until(t.view, t.whole, 'the cluster view after B re-registered');
    console.log(`# B whole again ${whole - resumed} ms after SIGCONT`);
    assert.ok(whole - resumed < ms(3000), `took ${whole - resumed} ms`);
    // B's own client saw the removal from Redis too, and is owed the same member_added.
    await t.onB.next(isEvent(t.pres, 'member_added', { id: 'bob', info: null }), ms(3000));
  } finally {
    t.b.proc.kill('SIGCONT');
    await closeEvents().catch(() => {});
    await Promise.allSettled([t.a.stop(), t.b.stop()]);
    await redis.stop();
  }
});

test('a_killed_instance_is_reaped_within_5s_measured_over_3_kills', T, async () => {
  const redis = await startRedis();
  const prefix = `reap${nonce()}`;
  const args = ['--redis', redis.url, '--redis-prefix', prefix, '--auth-secret', SECRET];
  const a = await startServer({ args });
  const doomed = [];
  try {
    const ch = `presence-reap.${nonce()}`;
    const watcher = await connect(a);
    await join(watcher, ch, { id: 'w', info: null });
    const took = [];
    for (let i = 0; i < 3; i++) {
      const b = await startServer({ args });
      doomed.push(b);
      const c = await connect(b);
      await join(c, ch, { id: `gone${i}`, info: null });
      await watcher.next(isEvent(ch, 'member_added', { id: `gone${i}`, info: null }));
      const t0 = Date.now();
      b.proc.kill('SIGKILL');
      await watcher.next(isEvent(ch, 'member_removed', { id: `gone${i}`, info: null }), ms(10000));
      took.push(Date.now() - t0);
    }
    console.log(`# reaped after ${took.join(', ')} ms`);
    for (const t of took) assert.ok(t <= ms(5000), `reaped after ${t} ms (promise: within 5 s)`);
  } finally {
    await a.stop();
    for (const b of doomed) await b.stop().catch(() => {});
    await redis.stop();
  }
});

test('a_broadcast_refused_with_503_for_a_full_backlog_is_delivered_nowhere', T, async () => {
  // Redis unreachable: every broadcast waits in the backlog (16 MiB) until it is full.
  const srv = await startServer({ args: ['--redis', `redis://127.0.0.1:${await freePort()}`] });
  try {
    const ch = `watched.${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    // Fill it to the last bytes with ever smaller broadcasts (to a channel nobody watches).
    let r;
    for (const size of [900 * 1024, 64 * 1024, 4096, 256, 16]) {
      const filler = JSON.stringify({ channel: 'filler', event: 'f', data: 'x'.repeat(size) });
      for (let i = 0; i < 100; i++) {
        r = await api(srv, '/api/broadcast', { body: filler });
        if (r.status !== 200) break;
      }
      assert.equal(r.status, 503, r.text);
    }
    // Now broadcasts that cannot fit: each refused with 503, and delivered nowhere, the
    // instance's own subscriber included (a publisher retrying a 503 must not duplicate).
    for (let i = 0; i < 20; i++) {
      r = await api(srv, '/api/broadcast', { body: { channel: ch, event: 'refused', data: 'y'.repeat(200) } });
      assert.equal(r.status, 503, r.text);
    }
    await c.barrier(); // anything delivered before the answers would have arrived by now
    assert.equal(c.queue.count(isEvent(ch, 'refused')), 0, 'refused broadcasts delivered locally');
  } finally {
    // The accepted fillers never reached Redis: the server says so with exit status 3.
    const res = await srv.stop({ timeoutMs: ms(8000), allowNonZero: true });
    assert.equal(res.code, 3, res.stderr);
  }
});

test('a_batch_that_does_not_fit_the_backlog_is_refused_whole_and_delivered_nowhere', T, async () => {
  // Redis unreachable and a small backlog: a batch whose first item would fit but whose
  // whole does not is refused as one (503, Retry-After), so a retry cannot duplicate it.
  const srv = await startServer({ args: ['--redis', `redis://127.0.0.1:${await freePort()}`, '--redis-backlog-max', '4096'] });
  try {
    const ch = `batch.${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    const r = await api(srv, '/api/batch', { body: { batch: [
      { channel: ch, event: 'first', data: 'small' },
      { channel: 'elsewhere', event: 'second', data: 'z'.repeat(5000) },
    ] } });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.headers.get('retry-after'), '1');
    await c.barrier();
    assert.equal(c.queue.count(isEvent(ch, 'first')), 0, 'the first item of a refused batch was delivered');
    // What fits is accepted and delivered here at once.
    const ok = await api(srv, '/api/batch', { body: { batch: [{ channel: ch, event: 'fits', data: 1 }] } });
    assert.equal(ok.status, 200, ok.text);
    await c.next(isEvent(ch, 'fits'));
  } finally {
    const res = await srv.stop({ timeoutMs: ms(8000), allowNonZero: true });
    assert.equal(res.code, 3, res.stderr); /* 'fits' never reached Redis */
  }
});
