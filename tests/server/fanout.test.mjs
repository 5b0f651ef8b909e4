// Many connections at once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, health, isEvent, ms, publish, waitFor, withServer } from './helpers.mjs';

const T = { timeout: 30000 };
const N = 200;

test('200_connections_all_subscribe_and_all_receive_one_broadcast_exactly_once', T, async () => {
  await withServer(async (srv) => {
    const clients = await Promise.all(Array.from({ length: N }, (_, i) => connect(srv, { label: `client ${i}` })));
    assert.equal(new Set(clients.map((c) => c.socketId)).size, N);
    await Promise.all(clients.map((c) => c.subscribe('everyone')));
    assert.deepEqual(await health(srv), { status: 'ok', connections: N, channels: 1 });

    await publish(srv, { channel: 'everyone', event: 'hello', data: { to: 'all' } });
    await Promise.all(clients.map((c) => c.next(isEvent('everyone', 'hello', { to: 'all' }), ms(5000))));
    await Promise.all(clients.map((c) => c.expectNone((m) => m.type === 'event', 300, 'second delivery')));

    // Half leave; the next broadcast reaches exactly the other half.
    const leaving = clients.slice(0, N / 2);
    const staying = clients.slice(N / 2);
    for (const c of leaving) c.close(1000);
    await Promise.all(leaving.map((c) => c.waitClose()));
    await waitFor(() => health(srv), (h) => h.connections === N / 2, ms(3000), `${N / 2} connections`);
    await publish(srv, { channel: 'everyone', event: 'again', data: 2 });
    await Promise.all(staying.map((c) => c.next(isEvent('everyone', 'again'), ms(5000))));
    await Promise.all(staying.map((c) => c.expectNone((m) => m.type === 'event', 200, 'second delivery')));
  });
});

test('200_connections_on_200_channels_each_get_only_their_own_event', T, async () => {
  await withServer(async (srv) => {
    const clients = await Promise.all(Array.from({ length: N }, (_, i) => connect(srv, { label: `client ${i}` })));
    await Promise.all(clients.map((c, i) => c.subscribe(`own-${i}`)));
    for (let b = 0; b < N; b += 100) {
      const batch = [];
      for (let i = b; i < b + 100; i++) batch.push({ channel: `own-${i}`, event: 'mine', data: i });
      const res = await fetch(`${srv.url}/api/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${srv.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ batch }),
      });
      assert.equal(res.status, 200, await res.text());
    }
    await Promise.all(clients.map((c, i) => c.next(isEvent(`own-${i}`, 'mine', i), ms(5000))));
    await Promise.all(clients.map((c) => c.expectNone((m) => m.type === 'event', 200, 'someone else\'s event')));
  });
});
