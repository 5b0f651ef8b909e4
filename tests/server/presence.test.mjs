// Presence channels and client events over the standalone server. The member is the
// signed channel_data; tokens are signed here with Node's crypto.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, connectRaw, isEvent, ms, nonce, publish, withServer, plain } from './helpers.mjs';
import { SECRET, sign } from './sign.mjs';

const T = { timeout: 30000 };
const withAuthServer = (fn, extra = []) => withServer({ args: ['--auth-secret', SECRET, ...extra] }, fn);
const isReply = (ch) => (m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === ch;
const byId = (a, b) => String(a.id).localeCompare(String(b.id));

async function join(client, ch, member) {
  const cd = JSON.stringify(member);
  client.send({ type: 'subscribe', channel: ch, auth: sign(client.socketId, ch, cd), channel_data: cd });
  return client.next(isReply(ch));
}

test('presence_members_dedupe_users_and_member_events_fire_once', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `presence-chat.${nonce()}`;
    const alice = { id: 'u1', info: { name: 'Alice' } };
    const bob = { id: 'u2', info: { name: 'Bob' } };
    const a1 = await connect(srv, { label: 'alice tab 1' });
    const a2 = await connect(srv, { label: 'alice tab 2' });
    const b = await connect(srv, { label: 'bob' });

    let r = await join(a1, ch, alice);
    assert.deepEqual(plain(r), { type: 'subscription_succeeded', channel: ch, data: { members: [alice] } });

    r = await join(b, ch, bob);
    assert.equal(r.type, 'subscription_succeeded');
    assert.deepEqual(r.data.members.sort(byId), [alice, bob]);
    assert.deepEqual(plain(await a1.next(isEvent(ch, 'member_added'))), { type: 'event', channel: ch, event: 'member_added', data: bob });
    await b.expectNone(isEvent(ch, 'member_added'), 150, 'member_added for oneself');

    // Alice's second tab: not a new member, nobody hears of it.
    r = await join(a2, ch, alice);
    assert.deepEqual(r.data.members.sort(byId), [alice, bob]);
    await b.expectNone(isEvent(ch, 'member_added'), 200, 'member_added for a second connection of a present user');

    // Alice closes one tab: still present.
    a1.close();
    await a1.waitClose();
    await b.expectNone(isEvent(ch, 'member_removed'), 250, 'member_removed while another tab is open');

    // The last tab unsubscribes: removed, once.
    a2.send({ type: 'unsubscribe', channel: ch });
    assert.deepEqual(plain(await b.next(isEvent(ch, 'member_removed'))), { type: 'event', channel: ch, event: 'member_removed', data: alice });
    await b.expectNone(isEvent(ch, 'member_removed'), 200, 'a second member_removed');

    // The client's own `data` is never identity.
    const c = await connect(srv, { label: 'impostor' });
    const cd = JSON.stringify({ id: 'u3', info: {} });
    c.send({ type: 'subscribe', channel: ch, auth: sign(c.socketId, ch, cd), channel_data: cd, data: { id: 'u1', name: 'Alice' } });
    r = await c.next(isReply(ch));
    assert.deepEqual(r.data.members.map((m) => m.id).sort(), ['u2', 'u3']);
  });
});

test('presence_refusals', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `presence-room.${nonce()}`;
    const c = await connect(srv);
    const cd = JSON.stringify({ id: 'u1', info: { name: 'A' } });
    const cases = [
      ['no channel_data', { channel: ch, auth: sign(c.socketId, ch) }],
      ['channel_data altered after signing', { channel: ch, auth: sign(c.socketId, ch, cd), channel_data: cd.replace('"A"', '"B"') }],
      ['channel_data signed for another channel', { channel: ch, auth: sign(c.socketId, `${ch}x`, cd), channel_data: cd }],
      ['channel_data not JSON', { channel: ch, auth: sign(c.socketId, ch, 'nope'), channel_data: 'nope' }],
      ['channel_data without id', { channel: ch, auth: sign(c.socketId, ch, '{"info":1}'), channel_data: '{"info":1}' }],
      ['channel_data as an object', { channel: ch, auth: sign(c.socketId, ch, cd), channel_data: JSON.parse(cd) }],
      ['oversized channel_data', (() => { const big = JSON.stringify({ id: 'u', info: 'x'.repeat(5000) }); return { channel: ch, auth: sign(c.socketId, ch, big), channel_data: big }; })()],
    ];
    for (const [what, msg] of cases) {
      c.send({ type: 'subscribe', ...msg });
      const r = await c.next(isReply(ch));
      assert.equal(r.type, 'subscription_error', `${what}: ${JSON.stringify(r)}`);
    }
    // channelData is accepted as a synonym.
    c.send({ type: 'subscribe', channel: ch, auth: sign(c.socketId, ch, cd), channelData: cd });
    assert.equal((await c.next(isReply(ch))).type, 'subscription_succeeded');
  });
});

test('dropped_client_without_close_frame_leaves_presence_after_ping_timeout', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `presence-live.${nonce()}`;
    const watcher = await connect(srv, { label: 'watcher' });
    await join(watcher, ch, { id: 'w', info: null });
    // A raw client that never answers pings and never closes.
    const ghost = await connectRaw(srv, { label: 'ghost', autoPong: false });
    const cd = JSON.stringify({ id: 'ghost', info: null });
    ghost.send({ type: 'subscribe', channel: ch, auth: sign(ghost.socketId, ch, cd), channel_data: cd });
    await ghost.next(isReply(ch));
    assert.deepEqual((await watcher.next(isEvent(ch, 'member_added'))).data, { id: 'ghost', info: null });
    const removed = await watcher.next(isEvent(ch, 'member_removed'), ms(5000));
    assert.deepEqual(removed.data, { id: 'ghost', info: null });
  }, ['--ping-interval', '300']);
});

test('client_events_reach_others_not_sender_and_only_on_private_channels', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `private-chat.${nonce()}`;
    const pub = `public.${nonce()}`;
    const a = await connect(srv, { label: 'a' });
    const b = await connect(srv, { label: 'b' });
    const outsider = await connect(srv, { label: 'outsider' });
    for (const c of [a, b]) {
      c.send({ type: 'subscribe', channel: ch, auth: sign(c.socketId, ch) });
      assert.equal((await c.next(isReply(ch))).type, 'subscription_succeeded');
      await c.subscribe(pub);
    }
    a.send({ type: 'message', channel: ch, event: 'typing', data: { text: 'héllo', n: [1, 2] } });
    assert.deepEqual(plain(await b.next(isEvent(ch, 'typing'))), { type: 'event', channel: ch, event: 'typing', data: { text: 'héllo', n: [1, 2] }, client: true });
    await a.expectNone(isEvent(ch, 'typing'), 200, 'echo to the sender');
    await outsider.expectNone(isEvent(ch, 'typing'), 50, 'delivery to a non-subscriber');

    const isErr = (m) => m.type === 'error';
    a.send({ type: 'message', channel: pub, event: 'spam', data: 1 });
    assert.match((await a.next(isErr)).error, /private and presence/);
    await b.expectNone(isEvent(pub, 'spam'), 150, 'client event on a public channel');

    outsider.send({ type: 'message', channel: ch, event: 'intrude', data: 1 });
    assert.match((await outsider.next(isErr)).error, /subscribed/);
    await b.expectNone(isEvent(ch, 'intrude'), 150, 'client event from a non-subscriber');
  });
});

test('client_events_are_rate_limited_per_connection', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `private-burst.${nonce()}`;
    const a = await connect(srv);
    const b = await connect(srv);
    for (const c of [a, b]) {
      c.send({ type: 'subscribe', channel: ch, auth: sign(c.socketId, ch) });
      await c.next(isReply(ch));
    }
    for (let i = 0; i < 20; i++) a.send({ type: 'message', channel: ch, event: 'tick', data: i });
    const err = await a.next((m) => m.type === 'error');
    assert.match(err.error, /rate limit/);
    await a.barrier();
    await b.barrier();
    let got = 0;
    while (true) {
      try { await b.next(isEvent(ch, 'tick'), 100); got++; } catch { break; }
    }
    assert.ok(got >= 5 && got <= 6, `delivered ${got} of 20 with a limit of 5/s`);
  }, ['--client-events-per-sec', '5']);
});

test('server_broadcast_on_presence_channel_reaches_members', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `presence-news.${nonce()}`;
    const a = await connect(srv);
    await join(a, ch, { id: 1, info: { n: 'one' } });
    await publish(srv, { channel: ch, event: 'headline', data: 'x' });
    await a.next(isEvent(ch, 'headline', 'x'));
  });
});

// Presence identity comes from the server only: a subscriber must not be able to send
// something that looks like the server's own member_added/member_removed/connected/
// subscription_* (member lists are built from those), and a client event is marked on the
// wire with the sender's signed member id.
test('client_events_cannot_forge_server_events_and_carry_the_signed_sender', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `presence-room.${nonce()}`;
    const a = await connect(srv, { label: 'mallory' });
    const b = await connect(srv, { label: 'victim' });
    await join(a, ch, { id: 'mallory', info: { n: 'M' } });
    await join(b, ch, { id: 'bob', info: null });
    await a.next(isEvent(ch, 'member_added')); // bob joined
    const forged = ['member_added', 'member_removed', 'connected', 'subscription_succeeded', 'subscription_error', 'subscription_count', 'resumed', 'vx:offset'];
    for (const event of forged) {
      a.send({ type: 'message', channel: ch, event, data: { id: 'ceo', info: { n: 'The CEO' } } });
      const err = await a.next((m) => m.type === 'error');
      assert.match(err.error, /reserved event name/, event);
    }
    await a.barrier();
    await b.barrier();
    for (const event of forged) await b.expectNone(isEvent(ch, event), 20, `forged ${event}`);
    // Near misses are ordinary client events, and every client event says who sent it.
    a.send({ type: 'message', channel: ch, event: 'member_added_by_hand', data: { id: 'ceo' } });
    assert.deepEqual(plain(await b.next(isEvent(ch, 'member_added_by_hand'))),
      { type: 'event', channel: ch, event: 'member_added_by_hand', data: { id: 'ceo' }, client: true, user_id: 'mallory' });
    // A server broadcast carries neither mark.
    await publish(srv, { channel: ch, event: 'notice', data: 1 });
    assert.deepEqual(plain(await b.next(isEvent(ch, 'notice'))), { type: 'event', channel: ch, event: 'notice', data: 1 });
  });
});

test('numeric_member_ids_are_the_user_id_of_their_client_events', T, async () => {
  await withAuthServer(async (srv) => {
    const ch = `presence-num.${nonce()}`;
    const a = await connect(srv);
    const b = await connect(srv);
    await join(a, ch, { id: 42, info: null });
    await join(b, ch, { id: 7, info: null });
    a.send({ type: 'message', channel: ch, event: 'wave', data: null });
    const got = await b.next(isEvent(ch, 'wave'));
    assert.equal(got.user_id, 42);
    assert.equal(got.client, true);
  });
});
