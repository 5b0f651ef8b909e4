// driver 'sse' through the Fastify plugin: GET /events handed to the core on the app's port,
// POST /events/subscribe running the app's authorizer with the real request (request.user).
//
// The apps here use forceCloseConnections: the `eventsource` client (undici) opens a spare
// connection without a request after close(), which Node's server.close() would otherwise
// wait on until headersTimeout (seen with a plain http server too, not a vxevents matter).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openStream, postJson, SECRET, startApp } from './helpers.mjs';

const asUser = (user) => ({ 'x-user': JSON.stringify(user) });

describe("driver 'sse' on the app port", () => {
  let ctx;
  before(async () => {
    ctx = await startApp(
      {
        driver: 'sse',
        path: '/events',
        authSecret: SECRET,
        heartbeatInterval: 15000,
        retryInterval: 3000,
        authorizer: async (channel, request) => {
          if (channel.type === 'public') return { authorized: true };
          const user = request.user;
          if (!user) return { authorized: false, error: 'Not authenticated' };
          if (channel.type === 'presence') return { authorized: true, member: { id: user.id, info: { name: user.name } } };
          return { authorized: true };
        },
      },
      async (app) => {
        app.decorateRequest('user', null);
        app.addHook('onRequest', async (request) => {
          const h = request.headers['x-user'];
          if (h) request.user = JSON.parse(h);
        });
      },
      { forceCloseConnections: true },
    );
  });
  after(() => ctx.app.close());

  test('streams_connected_with_connectionId_and_socketId', async () => {
    const es = openStream(`${ctx.base}/events`);
    try {
      const hello = await es.next((m) => m.name === 'connected', 'connected');
      assert.ok(hello.data.data.connectionId);
      assert.equal(hello.data.data.connectionId, hello.data.data.socketId);
    } finally {
      es.close();
    }
  });

  test('subscribes_public_channel_and_receives_broadcast', async () => {
    const es = openStream(`${ctx.base}/events`);
    try {
      const id = (await es.next((m) => m.name === 'connected', 'connected')).data.data.connectionId;
      const res = await postJson(`${ctx.base}/events/subscribe`, { connectionId: id, channel: 'orders' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body, { success: true });
      await ctx.app.events.broadcast('orders', 'order.created', { orderId: 1 });
      const got = await es.next((m) => m.name === 'order.created', 'order.created');
      assert.deepEqual(got.data, { type: 'event', channel: 'orders', event: 'order.created', data: { orderId: 1 }, offset: 1 });
      assert.deepEqual(es.mismatches, []);
      assert.equal(await ctx.app.events.subscriberCount('orders'), 1);
      const un = await postJson(`${ctx.base}/events/unsubscribe`, { connectionId: id, channel: 'orders' });
      assert.deepEqual(un.body, { success: true });
      assert.equal(await ctx.app.events.subscriberCount('orders'), 0);
    } finally {
      es.close();
    }
  });

  test('private_subscribe_sees_request_user_and_refuses_without_it', async () => {
    const es = openStream(`${ctx.base}/events`);
    try {
      const id = (await es.next((m) => m.name === 'connected', 'connected')).data.data.connectionId;
      const refused = await postJson(`${ctx.base}/events/subscribe`, { connectionId: id, channel: 'private-user.1' });
      assert.equal(refused.status, 403);
      assert.deepEqual(refused.body, { error: 'Not authenticated' });
      const ok = await postJson(
        `${ctx.base}/events/subscribe`,
        { connectionId: id, channel: 'private-user.1' },
        asUser({ id: '1', name: 'Ada' }),
      );
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      await ctx.app.events.broadcast('private-user.1', 'notification', { message: 'hi' });
      const got = await es.next((m) => m.name === 'notification', 'notification');
      assert.deepEqual(got.data.data, { message: 'hi' });
    } finally {
      es.close();
    }
  });

  test('presence_member_comes_from_the_authorizer', async () => {
    const es = openStream(`${ctx.base}/events`);
    try {
      const id = (await es.next((m) => m.name === 'connected', 'connected')).data.data.connectionId;
      const res = await postJson(
        `${ctx.base}/events/subscribe`,
        { connectionId: id, channel: 'presence-room', member: { id: 'forged' } },
        asUser({ id: '7', name: 'Grace' }),
      );
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(await ctx.app.events.presenceMembers('presence-room'), [{ id: '7', info: { name: 'Grace' } }]);
    } finally {
      es.close();
    }
  });

  test('answers_400_with_details_and_404_for_unknown_connection', async () => {
    const bad = await postJson(`${ctx.base}/events/subscribe`, { channel: 'bad name' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'Validation failed');
    assert.deepEqual(bad.body.details.map((d) => d.path).sort(), ['channel', 'connectionId']);
    const unknown = await postJson(`${ctx.base}/events/subscribe`, { connectionId: 'nope', channel: 'orders' });
    assert.equal(unknown.status, 404);
  });

  test('subscribes_public_channels_from_the_query_string', async () => {
    const es = openStream(`${ctx.base}/events?channels=news`);
    try {
      await es.next((m) => m.name === 'connected', 'connected');
      for (let i = 0; i < 100 && !(await ctx.app.events.hasSubscribers('news')); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await ctx.app.events.broadcast('news', 'headline', { t: 1 });
      const got = await es.next((m) => m.name === 'headline', 'headline');
      assert.deepEqual(got.data.data, { t: 1 });
    } finally {
      es.close();
    }
  });
});

describe("driver 'sse' on a dedicated port", () => {
  test('core_serves_stream_and_subscribe_with_authorizer_seeing_headers', async () => {
    const seen = [];
    const ctx = await startApp({
      driver: 'sse',
      path: '/events',
      authSecret: SECRET,
      listen: { host: '127.0.0.1', port: 0 },
      authorizer: async (channel, request) => {
        seen.push({ channel, auth: request.headers.authorization, body: request.body });
        return { authorized: request.headers.authorization === 'Bearer good' };
      },
    }, null, { forceCloseConnections: true });
    const base = `http://127.0.0.1:${ctx.app.events.port}`;
    const es = openStream(`${base}/events`);
    try {
      const id = (await es.next((m) => m.name === 'connected', 'connected')).data.data.connectionId;
      const no = await postJson(`${base}/events/subscribe`, { connectionId: id, channel: 'private-a' });
      assert.equal(no.status, 403);
      const yes = await postJson(
        `${base}/events/subscribe`,
        { connectionId: id, channel: 'private-a' },
        { authorization: 'Bearer good' },
      );
      assert.equal(yes.status, 200, JSON.stringify(yes.body));
      assert.deepEqual(seen[1].channel, { name: 'private-a', type: 'private' });
      assert.equal(seen[1].body.connectionId, id);
      await ctx.app.events.broadcast('private-a', 'ping', 1);
      assert.equal((await es.next((m) => m.name === 'ping', 'ping')).data.data, 1);
    } finally {
      es.close();
      await ctx.app.close();
    }
  });
});

describe('app.close() with SSE clients', () => {
  test('ends_open_streams_promptly', async () => {
    const ctx = await startApp({ driver: 'sse', path: '/events' });
    const res = await fetch(`${ctx.base}/events`);
    const reader = res.body.getReader();
    await reader.read();
    const t0 = Date.now();
    await ctx.app.close();
    // The stream ends (the core closed the connection).
    for (;;) {
      const { done } = await reader.read().catch(() => ({ done: true }));
      if (done) break;
    }
    assert.ok(Date.now() - t0 < 2000);
  });
});
