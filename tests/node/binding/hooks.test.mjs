// Host hooks: onConnect/onDisconnect/onClientEvent run on the JS thread; a throwing hook
// does not take the process down.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, postJson, SECRET, sleep, startApp } from './helpers.mjs';

async function until(pred, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('runs_onConnect_and_onDisconnect_with_the_socket_id', async () => {
  const seen = [];
  const ctx = await startApp({
    onConnect: (id) => seen.push(['connect', id]),
    onDisconnect: (id) => seen.push(['disconnect', id]),
  });
  try {
    const c = await connect(ctx.wsUrl);
    await until(() => seen.length >= 1, 'onConnect');
    assert.deepEqual(seen[0], ['connect', c.socketId]);
    await c.close();
    await until(() => seen.length >= 2, 'onDisconnect');
    assert.deepEqual(seen[1], ['disconnect', c.socketId]);
  } finally {
    await ctx.app.close();
  }
});

test('survives_a_throwing_hook', async () => {
  let calls = 0;
  const ctx = await startApp({
    onConnect: () => {
      calls++;
      throw new Error('boom');
    },
  });
  try {
    const a = await connect(ctx.wsUrl);
    const b = await connect(ctx.wsUrl);
    await until(() => calls === 2, 'both onConnect calls');
    await Promise.all([a.close(), b.close()]);
  } finally {
    await ctx.app.close();
  }
});

test(
  'reports_client_events_after_rebroadcasting_them',
  async () => {
    const got = [];
    const ctx = await startApp({
      authSecret: SECRET,
      authorizer: async () => ({ authorized: true }),
      onClientEvent: (e) => got.push(e),
    });
    try {
      const channel = 'private-room.1';
      const a = await connect(ctx.wsUrl);
      const b = await connect(ctx.wsUrl);
      for (const c of [a, b]) {
        const { body } = await postJson(`${ctx.base}/ws/auth`, { socketId: c.socketId, channel });
        assert.equal((await c.subscribe(channel, { auth: body.auth })).type, 'subscription_succeeded');
      }
      a.send({ type: 'message', channel, event: 'client-typing', data: { on: true } });
      const relayed = await b.waitFor((m) => m.event === 'client-typing', 'the relayed client event');
      assert.deepEqual(relayed.data, { on: true });
      await until(() => got.length === 1, 'onClientEvent');
      assert.deepEqual(got[0], { socketId: a.socketId, channel, event: 'client-typing', data: { on: true } });
      await Promise.all([a.close(), b.close()]);
    } finally {
      await ctx.app.close();
    }
  },
);
