// The first frame on every connection is the `connected` event carrying an
// unguessable, unique socket id.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, openWs, withServer } from './helpers.mjs';

const T = { timeout: 20000 };

test('first_message_is_connected_event_with_hex_socket_id', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv, { waitConnected: false });
    const first = await c.next(() => true, undefined, 'the first message');
    assert.equal(first.type, 'event', `first message: ${JSON.stringify(first)}`);
    assert.equal(first.event, 'connected');
    assert.equal(typeof first.data, 'object');
    assert.equal(typeof first.data.socketId, 'string');
    assert.match(first.data.socketId, /^[0-9a-fA-F]{16,}$/, 'socketId must be at least 16 hex characters');
    assert.equal(first.channel, undefined, 'the connected event belongs to no channel');
    await c.expectNone(() => true, 150, 'second unsolicited message');
  });
});

test('socket_ids_are_distinct_across_50_connections', T, async () => {
  await withServer(async (srv) => {
    const clients = await Promise.all(
      Array.from({ length: 50 }, (_, i) => connect(srv, { label: `client ${i}` })),
    );
    const ids = clients.map((c) => c.socketId);
    for (const id of ids) assert.match(id, /^[0-9a-fA-F]{16,}$/);
    assert.equal(new Set(ids.map((id) => id.toLowerCase())).size, 50, 'socket ids repeat');
  });
});

test('socket_id_is_not_reused_after_reconnect', T, async () => {
  await withServer(async (srv) => {
    const seen = new Set();
    for (let i = 0; i < 5; i++) {
      const c = await openWs(srv.wsUrl);
      await c.waitConnected();
      assert.ok(!seen.has(c.socketId), `socket id ${c.socketId} handed out twice`);
      seen.add(c.socketId);
      c.close(1000);
      await c.waitClose();
    }
  });
});
