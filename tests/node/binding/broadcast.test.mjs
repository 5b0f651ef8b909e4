// Same-port WebSocket through the Fastify plugin, public channels and the manager API.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer } from 'ws';
import WebSocket from 'ws';
import { getEventsFromInstance } from 'vxevents';
import { connect, eventsOf, sleep, startApp } from './helpers.mjs';

describe('eventsPlugin on the app port', () => {
  let ctx;
  let other;
  before(async () => {
    ctx = await startApp({}, async (app) => {
      // Another WebSocket server on the same HTTP server, on its own path.
      other = new WebSocketServer({ noServer: true });
      other.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m}`)));
      app.server.on('upgrade', (req, socket, head) => {
        if (req.url === '/other') other.handleUpgrade(req, socket, head, (ws) => other.emit('connection', ws, req));
      });
      app.get('/who', async (request) => ({ same: request.events === app.events }));
    });
  });
  after(async () => {
    await ctx.app.close();
    other.close();
  });

  test('accepts_websocket_on_the_app_port_and_sends_connected', async () => {
    const c = await connect(ctx.wsUrl);
    assert.match(c.socketId, /^[A-Za-z0-9_-]{16,}$/);
    await c.close();
  });

  test('delivers_public_broadcast_to_subscriber', async () => {
    const c = await connect(ctx.wsUrl);
    const ack = await c.subscribe('announcements');
    assert.equal(ack.type, 'subscription_succeeded');
    await ctx.app.events.broadcast('announcements', 'new-feature', { title: 'Dark Mode Released!' });
    const got = await c.waitFor((m) => m.event === 'new-feature', 'new-feature');
    assert.deepEqual(got, {
      type: 'event',
      channel: 'announcements',
      event: 'new-feature',
      data: { title: 'Dark Mode Released!' },
      offset: 1, // the channel stream's position (DESIGN §12)
    });
    await c.close();
  });

  test('serializes_undefined_data_as_null', async () => {
    const c = await connect(ctx.wsUrl);
    await c.subscribe('nulls');
    await ctx.app.events.broadcast('nulls', 'e');
    const got = await c.waitFor((m) => m.event === 'e', 'e');
    assert.equal(got.data, null);
    await c.close();
  });

  test('broadcastToMany_reaches_each_channel', async () => {
    const a = await connect(ctx.wsUrl);
    const b = await connect(ctx.wsUrl);
    await a.subscribe('user.1');
    await b.subscribe('user.2');
    await ctx.app.events.broadcastToMany(['user.1', 'user.2', 'user.3'], 'notification', {
      message: 'System maintenance scheduled',
    });
    const ga = await a.waitFor((m) => m.event === 'notification', 'notification on user.1');
    const gb = await b.waitFor((m) => m.event === 'notification', 'notification on user.2');
    assert.equal(ga.channel, 'user.1');
    assert.equal(gb.channel, 'user.2');
    assert.deepEqual(gb.data, { message: 'System maintenance scheduled' });
    await Promise.all([a.close(), b.close()]);
  });

  test('broadcastExcept_skips_the_sender_socket', async () => {
    const sender = await connect(ctx.wsUrl);
    const other1 = await connect(ctx.wsUrl);
    await sender.subscribe('chat.room-1');
    await other1.subscribe('chat.room-1');
    await ctx.app.events.broadcastExcept('chat.room-1', 'message.sent', { text: 'Hello!' }, sender.socketId);
    await ctx.app.events.broadcast('chat.room-1', 'marker', null);
    await other1.waitFor((m) => m.event === 'marker', 'marker');
    await sender.waitFor((m) => m.event === 'marker', 'marker at sender');
    assert.equal(eventsOf(other1, 'chat.room-1', 'message.sent').length, 1);
    assert.equal(eventsOf(sender, 'chat.room-1', 'message.sent').length, 0);
    await assert.rejects(ctx.app.events.broadcastExcept('chat.room-1', 'x', {}), /socketId/);
    await Promise.all([sender.close(), other1.close()]);
  });

  test('answers_subscriberCount_hasSubscribers_and_channels', async () => {
    const a = await connect(ctx.wsUrl);
    const b = await connect(ctx.wsUrl);
    await a.subscribe('orders');
    await b.subscribe('orders');
    assert.equal(await ctx.app.events.subscriberCount('orders'), 2);
    assert.equal(await ctx.app.events.hasSubscribers('orders'), true);
    assert.equal(await ctx.app.events.subscriberCount('nobody-here'), 0);
    assert.equal(await ctx.app.events.hasSubscribers('nobody-here'), false);
    assert.ok((await ctx.app.events.channels()).includes('orders'));
    a.send({ type: 'unsubscribe', channel: 'orders' });
    await a.close();
    await b.close();
    let n = -1;
    for (let i = 0; i < 50 && n !== 0; i++) {
      n = await ctx.app.events.subscriberCount('orders');
      if (n) await sleep(20);
    }
    assert.equal(n, 0);
    assert.ok(!(await ctx.app.events.channels()).includes('orders'));
  });

  test('rejects_bad_channel_with_core_error_code', async () => {
    await assert.rejects(ctx.app.events.broadcast('bad channel!', 'e', {}), (err) => err.code === 'ECHANNEL');
    await assert.rejects(ctx.app.events.subscriberCount('bad channel!'), (err) => err.code === 'ECHANNEL');
    await assert.rejects(ctx.app.events.broadcast('ok', '', {}), (err) => err.code === 'EINVAL');
    await assert.rejects(ctx.app.events.broadcast(42, 'e', {}), TypeError);
  });

  test('exposes_the_same_manager_on_app_request_and_instance', async () => {
    assert.equal(getEventsFromInstance(ctx.app), ctx.app.events);
    const res = await fetch(`${ctx.base}/who`);
    assert.deepEqual(await res.json(), { same: true });
  });

  test('leaves_other_upgrade_paths_alone', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${ctx.port}/other`);
    const reply = await new Promise((resolve, reject) => {
      ws.on('open', () => ws.send('hi'));
      ws.on('message', (m) => resolve(m.toString()));
      ws.on('error', reject);
    });
    assert.equal(reply, 'echo:hi');
    ws.close();
    // And the events path still works next to it.
    const c = await connect(ctx.wsUrl);
    await c.close();
  });

  test('accepts_query_string_on_the_events_path', async () => {
    const c = await connect(`${ctx.wsUrl}?token=abc`);
    assert.ok(c.socketId);
    await c.close();
  });
});

describe('eventsPlugin without other upgrade listeners', () => {
  test('destroys_upgrades_for_unknown_paths_like_node_does', async () => {
    const ctx = await startApp();
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${ctx.port}/nope`);
      const outcome = await new Promise((resolve) => {
        ws.on('open', () => resolve('open'));
        ws.on('error', () => resolve('error'));
        ws.on('close', () => resolve('close'));
      });
      assert.notEqual(outcome, 'open');
    } finally {
      await ctx.app.close();
    }
  });
});
