// Channel streams through the Fastify plugin (DESIGN §12): publish() resolves to the
// offset a broadcast got, history() reads a channel's stream, and a browser-like client
// that keeps the last offset/epoch per channel and resubscribes with `recover` (the
// README's Recovery code) gets what it missed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, startApp } from './helpers.mjs';

describe('channel streams from Node', () => {
  let ctx;
  before(async () => {
    ctx = await startApp({ historySize: 50 });
  });
  after(async () => {
    await ctx.app.close();
  });

  test('publish_resolves_to_the_offset_and_epoch', async () => {
    const c = await connect(ctx.wsUrl);
    const ack = await c.subscribe('node.orders');
    const r1 = await ctx.app.events.publish('node.orders', 'n', { i: 1 });
    const r2 = await ctx.app.events.publish('node.orders', 'n', { i: 2 });
    assert.deepEqual(r1, { offset: 1, epoch: ack.data.epoch });
    assert.equal(r2.offset, 2);
    const got = await c.waitFor((m) => m.type === 'event' && m.offset === 2, 'offset 2');
    assert.deepEqual(got.data, { i: 2 });
    await assert.rejects(ctx.app.events.publish('bad name', 'n', 1), (e) => e.code === 'ECHANNEL');
    await c.close();
  });

  test('history_reads_the_stream_with_since_and_limit', async () => {
    for (let i = 1; i <= 60; i++) await ctx.app.events.broadcast('node.h', 'n', { i });
    const h = await ctx.app.events.history('node.h', { since: 20, limit: 5 });
    assert.equal(h.offset, 60);
    assert.equal(h.complete, true);
    assert.deepEqual(h.events.map((e) => e.offset), [21, 22, 23, 24, 25]);
    assert.deepEqual(h.events[0], { type: 'event', channel: 'node.h', event: 'n', data: { i: 21 }, offset: 21 });
    const all = await ctx.app.events.history('node.h');
    assert.equal(all.events.length, 50); // historySize
    assert.equal(all.complete, false); // 1..10 are no longer kept
    await assert.rejects(ctx.app.events.history('node.h', { since: -1 }), /since must be a non-negative integer/);
    await assert.rejects(ctx.app.events.history('node.h', { limit: 1.5 }), /limit must be a non-negative integer/);
    await assert.rejects(ctx.app.events.history('bad name'), (e) => e.code === 'ECHANNEL');
  });

  test('a_client_keeping_offset_and_epoch_recovers_after_a_drop', async () => {
    // The client side of README "Recovery".
    const positions = new Map();
    const track = (m) => {
      if (m.type === 'subscription_succeeded' && m.data) positions.set(m.channel, { offset: m.data.offset, epoch: m.data.epoch });
      if (m.type === 'event' && m.offset) positions.get(m.channel).offset = m.offset;
    };
    let c = await connect(ctx.wsUrl);
    c.ws.on('message', (d) => track(JSON.parse(d.toString())));
    track(await c.subscribe('node.room'));
    await ctx.app.events.broadcast('node.room', 'n', { i: 1 });
    await c.waitFor((m) => m.type === 'event' && m.data.i === 1, 'event 1');
    await c.close();
    for (let i = 2; i <= 6; i++) await ctx.app.events.broadcast('node.room', 'n', { i });
    c = await connect(ctx.wsUrl);
    const ack = await c.subscribe('node.room', { recover: positions.get('node.room') });
    assert.equal(ack.recovered, true);
    for (let i = 2; i <= 6; i++) await c.waitFor((m) => m.type === 'event' && m.data.i === i, `event ${i}`);
    assert.deepEqual(c.messages.filter((m) => m.type === 'event' && m.channel === 'node.room').map((m) => m.offset), [2, 3, 4, 5, 6]);
    await c.close();
  });
});
