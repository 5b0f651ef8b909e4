// `except` in a broadcast leaves out one socket, and only that one.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, isEvent, nonce, publish, publishBatch, withServer, plain } from './helpers.mjs';

const T = { timeout: 20000 };

test('broadcast_except_skips_exactly_that_socket', T, async () => {
  await withServer(async (srv) => {
    const ch = `room-${nonce()}`;
    const clients = await Promise.all([0, 1, 2, 3].map((i) => connect(srv, { label: `client ${i}` })));
    for (const c of clients) await c.subscribe(ch);
    const skipped = clients[1];

    await publish(srv, { channel: ch, event: 'said', data: { text: 'hi' }, except: skipped.socketId });
    for (const c of clients) {
      if (c === skipped) continue;
      assert.deepEqual(plain(await c.next(isEvent(ch, 'said'))), { type: 'event', channel: ch, event: 'said', data: { text: 'hi' } });
    }
    await Promise.all(clients.map((c) => c.expectNone(isEvent(ch, 'said'), 250, 'second or excluded delivery')));

    // The skipped socket is still subscribed: the next broadcast reaches it.
    await publish(srv, { channel: ch, event: 'said-again', data: 2 });
    for (const c of clients) await c.next(isEvent(ch, 'said-again', 2));
  });
});

test('broadcast_except_unknown_socket_id_reaches_everyone', T, async () => {
  await withServer(async (srv) => {
    const ch = `room-${nonce()}`;
    const clients = await Promise.all([0, 1].map((i) => connect(srv, { label: `client ${i}` })));
    for (const c of clients) await c.subscribe(ch);
    await publish(srv, { channel: ch, event: 'x', data: 1, except: '0123456789abcdef0123456789abcdef' });
    for (const c of clients) await c.next(isEvent(ch, 'x'));
    await Promise.all(clients.map((c) => c.expectNone(isEvent(ch, 'x'), 200, 'duplicate')));
  });
});

test('except_applies_per_item_in_batch_and_to_every_listed_channel', T, async () => {
  await withServer(async (srv) => {
    const a = `ea-${nonce()}`;
    const b = `eb-${nonce()}`;
    const skipped = await connect(srv, { label: 'skipped' });
    const kept = await connect(srv, { label: 'kept' });
    for (const c of [skipped, kept]) {
      await c.subscribe(a);
      await c.subscribe(b);
    }
    await publishBatch(srv, [
      { channels: [a, b], event: 'one', data: 1, except: skipped.socketId },
      { channel: a, event: 'two', data: 2 },
    ]);
    await kept.next(isEvent(a, 'one'));
    await kept.next(isEvent(b, 'one'));
    await kept.next(isEvent(a, 'two'));
    await skipped.next(isEvent(a, 'two'));
    await skipped.expectNone((m) => m.type === 'event' && m.event === 'one', 250, 'excluded event');
    assert.equal(kept.queue.count((m) => m.type === 'event'), 0);
  });
});
