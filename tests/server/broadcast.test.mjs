// Subscribing, and delivery of events published through the HTTP API.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api, connect, isEvent, nonce, publish, publishBatch, withServer, plain } from './helpers.mjs';

const T = { timeout: 20000 };

test('subscribe_answers_subscription_succeeded_with_the_channel', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    c.send({ type: 'subscribe', channel: 'orders' });
    const m = await c.next();
    assert.deepEqual(plain(m), { type: 'subscription_succeeded', channel: 'orders' });
  });
});

test('broadcast_reaches_every_subscriber_exactly_once_and_nobody_else', T, async () => {
  await withServer(async (srv) => {
    const ch = `orders-${nonce()}`;
    const subs = await Promise.all([0, 1, 2, 3].map((i) => connect(srv, { label: `subscriber ${i}` })));
    for (const s of subs) await s.subscribe(ch);
    const bystander = await connect(srv, { label: 'not subscribed' });
    const other = await connect(srv, { label: 'other channel' });
    await other.subscribe(`${ch}-other`);

    const data = { orderId: 17, items: ['a', 'b'], nested: { ok: true, n: null } };
    await publish(srv, { channel: ch, event: 'order.created', data });

    for (const s of subs) {
      const m = await s.next(isEvent(ch, 'order.created'), undefined, 'the event');
      assert.deepEqual(plain(m), { type: 'event', channel: ch, event: 'order.created', data });
    }
    const anyEvent = (m) => m.type === 'event';
    await Promise.all([
      ...subs.map((s) => s.expectNone(anyEvent, 250, 'second event')),
      bystander.expectNone(anyEvent, 250, 'event for a channel it never joined'),
      other.expectNone(anyEvent, 250, 'event of another channel'),
    ]);
  });
});

test('broadcast_carries_any_json_data_unchanged', T, async () => {
  await withServer(async (srv) => {
    const ch = `data-${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    const values = [
      'plain string with "quotes" and \\ and ünïcödé ✓',
      12345.5,
      -0.25,
      true,
      null,
      [1, [2, [3]], { a: [] }],
      { deep: { deeper: { deepest: 'x'.repeat(2000) } } },
    ];
    for (const [i, data] of values.entries()) {
      await publish(srv, { channel: ch, event: `e${i}`, data });
    }
    for (const [i, data] of values.entries()) {
      const m = await c.next(isEvent(ch, `e${i}`));
      assert.deepEqual(m.data, data, `data of event e${i}`);
    }
  });
});

test('nul_characters_in_data_or_event_are_never_silently_truncated', T, async () => {
  await withServer(async (srv) => {
    const ch = `nul-${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    // Either refused with 400 or delivered exactly as sent; a shortened
    // value would be a different message than the publisher sent.
    const cases = [
      { channel: ch, event: 'nul-data', data: 'before\u0000after' },
      { channel: ch, event: 'nul-data-deep', data: { k: ['a\u0000b'] } },
      { channel: ch, event: 'ev\u0000ent', data: 1 },
    ];
    for (const body of cases) {
      const res = await api(srv, '/api/broadcast', { body });
      if (res.status === 400) continue;
      assert.equal(res.status, 200, res.text);
      const m = await c.next((x) => x.type === 'event', undefined, `the event for ${JSON.stringify(body)}`);
      assert.deepEqual(plain(m), { type: 'event', channel: ch, event: body.event, data: body.data }, `sent ${JSON.stringify(body)}`);
    }
  });
});

test('broadcast_to_channels_list_delivers_per_channel_in_order', T, async () => {
  await withServer(async (srv) => {
    const a = `a-${nonce()}`;
    const b = `b-${nonce()}`;
    const onA = await connect(srv, { label: 'on a' });
    const onB = await connect(srv, { label: 'on b' });
    const onBoth = await connect(srv, { label: 'on a and b' });
    await onA.subscribe(a);
    await onB.subscribe(b);
    await onBoth.subscribe(a);
    await onBoth.subscribe(b);

    await publish(srv, { channels: [a, b], event: 'multi', data: { n: 1 } });
    await publish(srv, { channels: [a, b], event: 'multi', data: { n: 2 } });

    for (const n of [1, 2]) {
      assert.deepEqual(plain((await onA.next((m) => m.type === 'event'))), { type: 'event', channel: a, event: 'multi', data: { n } });
      assert.deepEqual(plain((await onB.next((m) => m.type === 'event'))), { type: 'event', channel: b, event: 'multi', data: { n } });
    }
    const both = [];
    for (let i = 0; i < 4; i++) both.push(await onBoth.next((m) => m.type === 'event'));
    assert.deepEqual(
      both.map((m) => `${m.channel === a ? 'a' : m.channel === b ? 'b' : m.channel}:${m.data.n}`),
      ['a:1', 'b:1', 'a:2', 'b:2'],
    );
    await Promise.all([onA, onB, onBoth].map((c) => c.expectNone((m) => m.type === 'event', 250)));
  });
});

test('batch_delivers_every_item_in_order', T, async () => {
  await withServer(async (srv) => {
    const a = `ba-${nonce()}`;
    const b = `bb-${nonce()}`;
    const onA = await connect(srv, { label: 'on a' });
    const onBoth = await connect(srv, { label: 'on both' });
    await onA.subscribe(a);
    await onBoth.subscribe(a);
    await onBoth.subscribe(b);
    const items = [];
    for (let i = 0; i < 30; i++) items.push({ channel: i % 3 === 2 ? b : a, event: `step`, data: { i } });
    const res = await publishBatch(srv, items);
    assert.deepEqual(res.json, { success: true, count: 30 });

    const wantA = items.filter((it) => it.channel === a).map((it) => it.data.i);
    const gotA = [];
    for (let k = 0; k < wantA.length; k++) gotA.push((await onA.next((m) => m.type === 'event')).data.i);
    assert.deepEqual(gotA, wantA);
    const gotBoth = [];
    for (let k = 0; k < items.length; k++) gotBoth.push((await onBoth.next((m) => m.type === 'event')).data.i);
    assert.deepEqual(gotBoth, items.map((it) => it.data.i));
    await Promise.all([onA, onBoth].map((c) => c.expectNone((m) => m.type === 'event', 200)));
  });
});

test('events_from_successive_requests_arrive_in_publish_order', T, async () => {
  await withServer(async (srv) => {
    const ch = `seq-${nonce()}`;
    const c = await connect(srv);
    await c.subscribe(ch);
    for (let i = 0; i < 50; i++) await publish(srv, { channel: ch, event: 'tick', data: i });
    const got = [];
    for (let i = 0; i < 50; i++) got.push((await c.next(isEvent(ch, 'tick'))).data);
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => i));
  });
});
