// Private and presence channels: POST /ws/auth as a Fastify route with the app's own
// request.user, tokens signed by the core, presence member events and presenceMembers().

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, eventsOf, postJson, SECRET, sleep, startApp } from './helpers.mjs';

// The seed's authorizer, verbatim apart from the package name.
async function authorizer(channel, request) {
  if (channel.type === 'public') {
    return { authorized: true };
  }
  const user = request.user;
  if (!user) {
    return { authorized: false, error: 'Not authenticated' };
  }
  if (channel.name.startsWith('private-user.')) {
    const channelUserId = channel.name.replace('private-user.', '');
    if (channelUserId !== user.id) {
      return { authorized: false, error: 'Access denied' };
    }
  }
  if (channel.type === 'presence') {
    return { authorized: true, member: { id: user.id, info: { name: user.name } } };
  }
  return { authorized: true };
}

// The app's own authentication: a header naming the user (stands in for a session).
async function withUsers(app) {
  app.decorateRequest('user', null);
  app.addHook('onRequest', async (request) => {
    const h = request.headers['x-user'];
    if (h) request.user = JSON.parse(h);
  });
}

const asUser = (user) => ({ 'x-user': JSON.stringify(user) });
const ALICE = { id: '123', name: 'Alice' };
const BOB = { id: '456', name: 'Bob' };

async function authFor(ctx, client, channel, user) {
  const res = await postJson(`${ctx.base}/ws/auth`, { socketId: client.socketId, channel }, user ? asUser(user) : {});
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

// Waits for the core's private/presence support (vx_sign, vx_presence_members).

describe('private and presence channels', () => {
  let ctx;
  before(async () => {
    ctx = await startApp({ authSecret: SECRET, authorizer }, withUsers);
  });
  after(() => ctx.app.close());

  test('subscribes_to_own_private_channel_with_token_from_auth_route', async () => {
    const c = await connect(ctx.wsUrl);
    const { auth, channel_data } = await authFor(ctx, c, 'private-user.123', ALICE);
    assert.match(auth, new RegExp(`^${c.socketId}:[0-9a-f]{64}$`));
    assert.equal(channel_data, undefined);
    const ack = await c.subscribe('private-user.123', { auth });
    assert.equal(ack.type, 'subscription_succeeded');
    await ctx.app.events.broadcast('private-user.123', 'notification', { message: 'You have a new message' });
    const got = await c.waitFor((m) => m.event === 'notification', 'notification');
    assert.deepEqual(got.data, { message: 'You have a new message' });
    await c.close();
  });

  test('refuses_other_users_private_channel_with_403', async () => {
    const c = await connect(ctx.wsUrl);
    const res = await postJson(`${ctx.base}/ws/auth`, { socketId: c.socketId, channel: 'private-user.999' }, asUser(ALICE));
    assert.equal(res.status, 403);
    assert.deepEqual(res.body, { error: 'Access denied' });
    await c.close();
  });

  test('refuses_unauthenticated_request_with_403', async () => {
    const res = await postJson(`${ctx.base}/ws/auth`, { socketId: 'abc', channel: 'private-x' });
    assert.equal(res.status, 403);
    assert.deepEqual(res.body, { error: 'Not authenticated' });
  });

  test('answers_null_auth_for_public_channels', async () => {
    const res = await postJson(`${ctx.base}/ws/auth`, { socketId: 'abc', channel: 'orders' });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { auth: null });
  });

  test('answers_400_on_a_bad_body', async () => {
    assert.equal((await postJson(`${ctx.base}/ws/auth`, { channel: 'private-x' }, asUser(ALICE))).status, 400);
    assert.equal((await postJson(`${ctx.base}/ws/auth`, { socketId: 'a', channel: 'bad name' }, asUser(ALICE))).status, 400);
    assert.equal((await postJson(`${ctx.base}/ws/auth`, '[1,2]', asUser(ALICE))).status, 400);
    assert.equal((await postJson(`${ctx.base}/ws/auth`, '{nope', asUser(ALICE))).status, 400);
  });

  test('answers_400_to_a_socket_id_the_core_refuses_before_any_authorizer', async () => {
    // The core's rule (vx_socket_id_valid): 1 to 64 of A-Z a-z 0-9 . - _. The route applies it
    // first, so a public channel or a refusing authorizer does not hide a bad id.
    const bad = ['a'.repeat(65), 'a b', 'id!', 'é'];
    for (const socketId of bad) {
      for (const [channel, headers] of [['orders', {}], ['private-x', {}], ['private-x', asUser(ALICE)]]) {
        const res = await postJson(`${ctx.base}/ws/auth`, { socketId, channel }, headers);
        assert.equal(res.status, 400, `${JSON.stringify(socketId)} on ${channel}`);
        assert.match(res.body.error, /socketId must be 1 to 64/);
      }
    }
    const ok = await postJson(`${ctx.base}/ws/auth`, { socketId: 'a'.repeat(64), channel: 'private-x' }, asUser(ALICE));
    assert.equal(ok.status, 200);
    assert.match(ok.body.auth, /^a{64}:[0-9a-f]{64}$/);
  });

  test('refuses_token_of_another_socket', async () => {
    const a = await connect(ctx.wsUrl);
    const b = await connect(ctx.wsUrl);
    const { auth } = await authFor(ctx, a, 'private-user.123', ALICE);
    const ack = await b.subscribe('private-user.123', { auth });
    assert.equal(ack.type, 'subscription_error');
    await Promise.all([a.close(), b.close()]);
  });

  test('tracks_presence_members_and_sends_member_events', async () => {
    const channel = 'presence-chat.room-1';
    const alice = await connect(ctx.wsUrl);
    const a = await authFor(ctx, alice, channel, ALICE);
    assert.deepEqual(JSON.parse(a.channel_data), { id: '123', info: { name: 'Alice' } });
    const ackA = await alice.subscribe(channel, { auth: a.auth, channel_data: a.channel_data });
    assert.equal(ackA.type, 'subscription_succeeded', JSON.stringify(ackA));

    const bob = await connect(ctx.wsUrl);
    const b = await authFor(ctx, bob, channel, BOB);
    const ackB = await bob.subscribe(channel, { auth: b.auth, channel_data: b.channel_data });
    assert.equal(ackB.type, 'subscription_succeeded', JSON.stringify(ackB));
    const ids = ackB.data.members.map((m) => m.id).sort();
    assert.deepEqual(ids, ['123', '456']);

    const added = await alice.waitFor((m) => m.event === 'member_added', 'member_added at alice');
    assert.deepEqual(added.data, { id: '456', info: { name: 'Bob' } });

    const members = await ctx.app.events.presenceMembers(channel);
    assert.deepEqual(
      members.sort((x, y) => x.id.localeCompare(y.id)),
      [
        { id: '123', info: { name: 'Alice' } },
        { id: '456', info: { name: 'Bob' } },
      ],
    );

    await bob.close();
    const removed = await alice.waitFor((m) => m.event === 'member_removed', 'member_removed at alice');
    assert.equal(removed.data.id, '456');
    let left = null;
    for (let i = 0; i < 50; i++) {
      left = await ctx.app.events.presenceMembers(channel);
      if (left.length === 1) break;
      await sleep(20);
    }
    assert.deepEqual(left, [{ id: '123', info: { name: 'Alice' } }]);
    assert.equal(eventsOf(alice, channel, 'member_added').length, 1);
    await alice.close();
  });
});

describe('auth route without authSecret', () => {
  test('answers_500_for_private_channels_when_no_secret', async () => {
    const ctx = await startApp({ authorizer }, withUsers);
    try {
      const res = await postJson(`${ctx.base}/ws/auth`, { socketId: 'abc', channel: 'private-user.123' }, asUser(ALICE));
      assert.equal(res.status, 500);
      assert.deepEqual(res.body, { error: 'authSecret is not configured' });
      const pub = await postJson(`${ctx.base}/ws/auth`, { socketId: 'abc', channel: 'orders' });
      assert.deepEqual(pub.body, { auth: null });
    } finally {
      await ctx.app.close();
    }
  });

  test('default_authorizer_refuses_private_channels', async () => {
    const ctx = await startApp({ authSecret: SECRET }, withUsers);
    try {
      const res = await postJson(`${ctx.base}/ws/auth`, { socketId: 'abc', channel: 'private-x' }, asUser(ALICE));
      assert.equal(res.status, 403);
    } finally {
      await ctx.app.close();
    }
  });
});
