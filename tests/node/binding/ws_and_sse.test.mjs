// One Fastify app serving WebSocket and the SSE fallback from one registration
// (driver 'ws' with `sse: { path }`): one instance, so one broadcast reaches a real `ws`
// client and a real `eventsource` client. Registering the plugin twice is refused with a
// message pointing to that option.
//
// Assumes the SSE wire where the event: field is the message's type (`event: event`,
// `event: subscription_succeeded`, ...); openStream (helpers.mjs) records by that field.
//
// forceCloseConnections: see sse.test.mjs (the eventsource client keeps a spare connection).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Fastify from 'fastify';
import { eventsPlugin } from 'vxevents';
import { connect, openStream, postJson, SECRET, startApp } from './helpers.mjs';

describe("driver 'ws' with sse: { path } on one app", () => {
  let ctx;
  before(async () => {
    ctx = await startApp(
      {
        driver: 'ws',
        path: '/ws',
        sse: { path: '/events' },
        authSecret: SECRET,
        heartbeatInterval: 15000,
        retryInterval: 2500,
        authorizer: async (channel, request) => ({
          authorized: channel.type === 'public' || request.headers['x-user'] === 'ada',
        }),
      },
      null,
      { forceCloseConnections: true },
    );
  });
  after(() => ctx.app.close());

  test('one_broadcast_reaches_a_ws_client_and_an_sse_client', async () => {
    const ws = await connect(ctx.wsUrl);
    const es = openStream(`${ctx.base}/events`);
    try {
      assert.equal((await ws.subscribe('orders')).type, 'subscription_succeeded');
      const hello = await es.next((m) => m.name === 'connected', 'the SSE connected message');
      const { connectionId } = hello.data.data;
      const sub = await postJson(`${ctx.base}/events/subscribe`, { connectionId, channel: 'orders' });
      assert.equal(sub.status, 200, JSON.stringify(sub.body));
      assert.equal(await ctx.app.events.subscriberCount('orders'), 2);

      await ctx.app.events.broadcast('orders', 'order.created', { orderId: 7 });
      const expected = { type: 'event', channel: 'orders', event: 'order.created', data: { orderId: 7 } };
      const atWs = await ws.waitFor((m) => m.event === 'order.created', 'order.created over WebSocket');
      const atSse = await es.next((m) => m.name === 'order.created', 'order.created over SSE');
      assert.deepEqual({ ...atWs, offset: undefined }, { ...expected, offset: undefined });
      assert.deepEqual({ ...atSse.data, offset: undefined }, { ...expected, offset: undefined });
      assert.deepEqual(es.mismatches, []);
    } finally {
      es.close();
      await ws.close();
    }
  });

  test('serves_both_routes_with_the_app_authorizer', async () => {
    const ws = await connect(ctx.wsUrl);
    const es = openStream(`${ctx.base}/events`);
    try {
      // WebSocket token route under the WebSocket path, SSE subscribe under the SSE path.
      assert.equal((await postJson(`${ctx.base}/ws/auth`, { socketId: ws.socketId, channel: 'private-a' })).status, 403);
      const token = await postJson(
        `${ctx.base}/ws/auth`,
        { socketId: ws.socketId, channel: 'private-a' },
        { 'x-user': 'ada' },
      );
      assert.equal(token.status, 200, JSON.stringify(token.body));
      assert.equal((await ws.subscribe('private-a', { auth: token.body.auth })).type, 'subscription_succeeded');

      const { connectionId } = (await es.next((m) => m.name === 'connected', 'connected')).data.data;
      const no = await postJson(`${ctx.base}/events/subscribe`, { connectionId, channel: 'private-a' });
      assert.equal(no.status, 403);
      const yes = await postJson(`${ctx.base}/events/subscribe`, { connectionId, channel: 'private-a' }, { 'x-user': 'ada' });
      assert.equal(yes.status, 200, JSON.stringify(yes.body));

      await ctx.app.events.broadcast('private-a', 'note', 'both');
      assert.equal((await ws.waitFor((m) => m.event === 'note', 'note over WebSocket')).data, 'both');
      assert.equal((await es.next((m) => m.name === 'note', 'note over SSE')).data.data, 'both');
    } finally {
      es.close();
      await ws.close();
    }
  });

  test('sends_the_configured_retry_interval_on_the_stream', async () => {
    const res = await fetch(`${ctx.base}/events`);
    const reader = res.body.getReader();
    try {
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /^text\/event-stream/);
      let text = '';
      while (!/\n\n/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
      assert.match(text, /^retry: 2500\n/m);
    } finally {
      await reader.cancel();
    }
  });
});

describe('registration', () => {
  test('sse_defaults_to_events_path', async () => {
    const ctx = await startApp({ sse: true }, null, { forceCloseConnections: true });
    const es = openStream(`${ctx.base}/events`);
    try {
      await es.next((m) => m.name === 'connected', 'connected on /events');
      await connect(ctx.wsUrl).then((c) => c.close());
    } finally {
      es.close();
      await ctx.app.close();
    }
  });

  test('refuses_a_second_registration_and_points_to_the_sse_option', async () => {
    const app = Fastify();
    app.register(eventsPlugin({ driver: 'ws', path: '/ws' }));
    app.register(eventsPlugin({ driver: 'sse', path: '/events' }));
    try {
      await assert.rejects(app.ready(), (err) => {
        assert.equal(err.code, 'EEXIST');
        assert.match(err.message, /registered twice/);
        assert.match(err.message, /sse: \{ path: '\/events' \}/);
        return true;
      });
    } finally {
      await app.close();
    }
  });

  test('validates_the_sse_option', () => {
    const bad = (opts, re) => assert.throws(() => eventsPlugin(opts), (err) => err.code === 'EINVAL' && re.test(err.message));
    bad({ sse: 'yes' }, /option sse must be true or an object/);
    bad({ sse: { path: 'events' } }, /option sse\.path must be an absolute URL path/);
    bad({ sse: { path: '/ws' } }, /sse\.path must differ from path/);
    bad({ sse: { heartbeatInterval: 1 } }, /unknown sse option "heartbeatInterval".*top-level/);
    bad({ driver: 'sse', sse: { path: '/x' } }, /with driver 'sse' the endpoint is path/);
    bad({ driver: ['ws', 'sse'] }, /driver: 'ws' with sse: \{ path: '\/events' \}/);
    assert.equal(typeof eventsPlugin({ sse: false }), 'function');
  });
});
