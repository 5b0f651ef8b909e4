// Client events across instances: delivered once on the other instance with the same
// server-set marks as at the origin ("client":true and the sender's signed member id), and a
// reserved name is refused before it reaches Redis.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, nonce, startServer, plain } from './helpers.mjs';
import { startRedis } from './redis.mjs';
import { SECRET, sign } from './sign.mjs';

const T = { timeout: 60000 };
const isReply = (ch) => (m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === ch;

async function join(client, ch, member) {
  const cd = member === undefined ? undefined : JSON.stringify(member);
  client.send({ type: 'subscribe', channel: ch, auth: sign(client.socketId, ch, cd), channel_data: cd });
  const r = await client.next(isReply(ch));
  assert.equal(r.type, 'subscription_succeeded', JSON.stringify(r));
}

test('client_events_cross_instances_marked_with_the_sender_and_reserved_names_stay_refused', T, async () => {
  const redis = await startRedis();
  const a = await startServer({ args: ['--redis', redis.url, '--auth-secret', SECRET] });
  const b = await startServer({ args: ['--redis', redis.url, '--auth-secret', SECRET] });
  try {
    const pres = `presence-x.${nonce()}`;
    const priv = `private-y.${nonce()}`;
    const onA = await connect(a, { label: 'sender on A' });
    const onB = await connect(b, { label: 'receiver on B' });
    await join(onB, pres, { id: 'bob', info: null });
    await join(onA, pres, { id: 'ann', info: { n: 'Ann' } });
    await onB.next(isEvent(pres, 'member_added'));
    await join(onB, priv);
    await join(onA, priv);

    onA.send({ type: 'message', channel: pres, event: 'member_removed', data: { id: 'bob', info: null } });
    assert.match((await onA.next((m) => m.type === 'error')).error, /reserved event name/);
    onA.send({ type: 'message', channel: pres, event: 'typing', data: { on: true } });
    onA.send({ type: 'message', channel: priv, event: 'typing', data: { on: false } });
    assert.deepEqual(plain(await onB.next(isEvent(pres, 'typing'))),
      { type: 'event', channel: pres, event: 'typing', data: { on: true }, client: true, user_id: 'ann' });
    assert.deepEqual(plain(await onB.next(isEvent(priv, 'typing'))),
      { type: 'event', channel: priv, event: 'typing', data: { on: false }, client: true });
    await onB.expectNone(isEvent(pres, 'member_removed'), 300, 'a forged member_removed');
    await onA.expectNone(isEvent(pres, 'typing'), 50, 'an echo to the sender');
  } finally {
    await Promise.allSettled([a.stop(), b.stop()]);
    await redis.stop();
  }
});

test('a_client_event_redis_cannot_take_is_refused_to_the_sender_and_delivered_nowhere', T, async () => {
  const { freePort } = await import('./redis.mjs');
  const srv = await startServer({ args: ['--redis', `redis://127.0.0.1:${await freePort()}`, '--redis-backlog-max', '1024', '--auth-secret', SECRET] });
  try {
    const ch = `private-full.${nonce()}`;
    const a = await connect(srv);
    const b = await connect(srv);
    await join(a, ch);
    await join(b, ch);
    a.send({ type: 'message', channel: ch, event: 'big', data: 'x'.repeat(2000) });
    assert.match((await a.next((m) => m.type === 'error')).error, /client event not sent: .*backlog/);
    await b.expectNone(isEvent(ch, 'big'), 300, 'a refused client event');
    a.send({ type: 'message', channel: ch, event: 'small', data: 1 });
    assert.equal((await b.next(isEvent(ch, 'small'))).data, 1);
  } finally {
    await srv.stop({ allowNonZero: true, timeoutMs: 8000 });
  }
});
