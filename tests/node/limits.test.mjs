// --max-connections and --max-channels-per-connection.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, health, isEvent, ms, openWs, publish, waitFor, withServer } from './helpers.mjs';

const T = { timeout: 20000 };

test('connection_over_max_connections_gets_503', T, async () => {
  await withServer({ args: ['--max-connections', '3'] }, async (srv) => {
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connect(srv));
    await assert.rejects(openWs(srv.wsUrl), (err) => {
      assert.equal(err.statusCode, 503, err.message);
      return true;
    });
    // Health still answers while full.
    assert.equal((await health(srv)).connections, 3);
    clients[0].close(1000);
    await waitFor(() => health(srv), (h) => h.connections === 2, ms(3000), 'a free slot');
    const again = await openWs(srv.wsUrl);
    srv.track(again);
    await again.waitConnected();
  });
});

test('subscribe_over_max_channels_per_connection_gets_subscription_error', T, async () => {
  await withServer({ args: ['--max-channels-per-connection', '2'] }, async (srv) => {
    const c = await connect(srv);
    await c.subscribe('one');
    await c.subscribe('two');
    c.send({ type: 'subscribe', channel: 'three' });
    const m = await c.next();
    assert.equal(m.type, 'subscription_error', JSON.stringify(m));
    assert.equal(m.channel, 'three');
    // Re-subscribing to a channel it already has is not a new channel.
    c.send({ type: 'subscribe', channel: 'two' });
    await c.barrier();
    await c.expectNone((x) => x.type === 'subscription_error', 0, 'error for a channel already joined');
    await publish(srv, { channel: 'three', event: 'e', data: 1 });
    await c.expectNone((x) => x.type === 'event', 250, 'event on the refused channel');
    // Leaving one frees a slot.
    c.send({ type: 'unsubscribe', channel: 'one' });
    await c.barrier();
    await c.subscribe('three');
    await publish(srv, { channel: 'three', event: 'e', data: 2 });
    await c.next(isEvent('three', 'e', 2));
    // The limit is per connection: another connection still has its own.
    const d = await connect(srv);
    await d.subscribe('one');
    await d.subscribe('two');
  });
});
