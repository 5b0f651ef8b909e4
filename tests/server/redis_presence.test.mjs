// Presence across instances sharing one redis-server: one user on two instances is one
// member; member events are seen exactly once per real join/leave on every instance; a
// killed instance's members are removed by the survivors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, ms, nonce, startServer } from './helpers.mjs';
import { startRedis } from './redis.mjs';
import { SECRET, sign } from './sign.mjs';

const T = { timeout: 60000 };
const isReply = (ch) => (m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === ch;
const ids = (members) => members.map((m) => m.id).sort();

async function join(client, ch, member) {
  const cd = JSON.stringify(member);
  client.send({ type: 'subscribe', channel: ch, auth: sign(client.socketId, ch, cd), channel_data: cd });
  const r = await client.next(isReply(ch));
  assert.equal(r.type, 'subscription_succeeded', JSON.stringify(r));
  return r;
}

test('presence_is_cluster_wide_with_events_once_per_real_join_and_leave', T, async () => {
  const redis = await startRedis();
  const a = await startServer({ args: ['--redis', redis.url, '--auth-secret', SECRET] });
  const b = await startServer({ args: ['--redis', redis.url, '--auth-secret', SECRET] });
  try {
    const ch = `presence-room.${nonce()}`;
    const ann = { id: 'ann', info: { name: 'Ann' } };
    const bob = { id: 'bob', info: { name: 'Bob' } };
    const watcherA = await connect(a, { label: 'watcher on A' });
    const watcherB = await connect(b, { label: 'watcher on B' });
    await join(watcherA, ch, { id: 'wa', info: null });
    let r = await join(watcherB, ch, { id: 'wb', info: null });
    assert.deepEqual(ids(r.data.members), ['wa', 'wb']);
    await watcherA.next(isEvent(ch, 'member_added'));

    // Ann on A, then Ann again on B: one member_added, seen once on each instance.
    const annA = await connect(a);
    r = await join(annA, ch, ann);
    assert.deepEqual(ids(r.data.members), ['ann', 'wa', 'wb']);
    assert.deepEqual((await watcherA.next(isEvent(ch, 'member_added'))).data, ann);
    assert.deepEqual((await watcherB.next(isEvent(ch, 'member_added'))).data, ann);
    const annB = await connect(b);
    r = await join(annB, ch, ann);
    assert.deepEqual(ids(r.data.members), ['ann', 'wa', 'wb']);
    await watcherA.expectNone(isEvent(ch, 'member_added'), 300, 'member_added for a second connection on another instance');
    await watcherB.expectNone(isEvent(ch, 'member_added'), 50, 'member_added for a second connection');

    // Bob on B.
    const bobB = await connect(b);
    await join(bobB, ch, bob);
    assert.deepEqual((await watcherA.next(isEvent(ch, 'member_added'))).data, bob);

    // Ann leaves A: still on B, nothing. Leaves B: removed once everywhere.
    annA.close();
    await watcherB.expectNone(isEvent(ch, 'member_removed'), 300, 'member_removed while Ann is still on B');
    annB.send({ type: 'unsubscribe', channel: ch });
    assert.deepEqual((await watcherA.next(isEvent(ch, 'member_removed'))).data, ann);
    assert.deepEqual((await watcherB.next(isEvent(ch, 'member_removed'))).data, ann);
    await watcherA.expectNone(isEvent(ch, 'member_removed'), 300, 'a second member_removed');
  } finally {
    await Promise.allSettled([a.stop(), b.stop()]);
    await redis.stop();
  }
});

test('members_of_a_killed_instance_are_removed_by_the_survivors', T, async () => {
  const redis = await startRedis();
  const a = await startServer({ args: ['--redis', redis.url, '--auth-secret', SECRET] });
  const b = await startServer({ args: ['--redis', redis.url, '--auth-secret', SECRET] });
  try {
    const ch = `presence-crash.${nonce()}`;
    const watcher = await connect(a);
    await join(watcher, ch, { id: 'w', info: null });
    const doomed = await connect(b);
    await join(doomed, ch, { id: 'gone', info: { n: 1 } });
    await watcher.next(isEvent(ch, 'member_added'));
    const t0 = Date.now();
    b.proc.kill('SIGKILL');
    const removed = await watcher.next(isEvent(ch, 'member_removed'), ms(12000));
    assert.deepEqual(removed.data, { id: 'gone', info: { n: 1 } });
    assert.ok(Date.now() - t0 < ms(5000), `took ${Date.now() - t0} ms (bound 5 s: a 3.5 s window + a 1 s heartbeat)`);
  } finally {
    await a.stop();
    await b.stop().catch(() => {});
    await redis.stop();
  }
});
