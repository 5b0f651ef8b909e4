// History and recovery on one instance (DESIGN §12): events carry their channel's offset,
// subscription_succeeded the stream's position {offset, epoch}, and a subscribe with
// recover {offset, epoch} gets every event it missed, in order, then live ones — or
// recovered:false and nothing when that cannot be complete.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, ms, nonce, publish, publishBatch, startServer, withServer } from './helpers.mjs';
import { SECRET, sign } from './sign.mjs';

const T = { timeout: 40000 };

/** Subscribe (with `extra`: recover, auth) and return the answer. */
async function sub(c, channel, extra = {}) {
  c.send({ type: 'subscribe', channel, ...extra });
  return c.next((m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === channel,
    ms(5000), `the answer to subscribe ${channel}`);
}

/** The next `n` events of `channel` on `c`. */
async function events(c, channel, n) {
  const got = [];
  while (got.length < n) got.push(await c.next((m) => m.type === 'event' && m.channel === channel, ms(5000), `event ${got.length + 1} of ${n} on ${channel}`));
  return got;
}

async function batch(srv, channel, from, to) {
  const items = [];
  for (let i = from; i <= to; i++) items.push({ channel, event: 'n', data: { i } });
  for (let k = 0; k < items.length; k += 100) await publishBatch(srv, items.slice(k, k + 100));
}

test('events_carry_offsets_and_the_ack_the_stream_position', T, async () => {
  await withServer(async (srv) => {
    const ch = `pos.${nonce()}`;
    const c = await connect(srv);
    const ack = await sub(c, ch);
    assert.equal(ack.data.offset, 0);
    assert.match(ack.data.epoch, /^[0-9a-f]{8}$/);
    assert.equal(ack.recovered, undefined, 'no recover asked, nothing said');
    await batch(srv, ch, 1, 3);
    assert.deepEqual((await events(c, ch, 3)).map((m) => [m.offset, m.data.i]), [[1, 1], [2, 2], [3, 3]]);
    // broadcastToMany: each channel counts on its own.
    const other = `pos2.${nonce()}`;
    await sub(c, other);
    await publish(srv, { channels: [ch, other], event: 'both', data: 1 });
    assert.equal((await events(c, ch, 1))[0].offset, 4);
    assert.equal((await events(c, other, 1))[0].offset, 1);
    // A second subscriber sees the same position.
    const d = await connect(srv);
    const ack2 = await sub(d, ch);
    assert.deepEqual(ack2.data, { offset: 4, epoch: ack.data.epoch });
  });
});

test('drop_broadcast_100_reconnect_with_recover_gets_exactly_those_then_live', T, async () => {
  await withServer(async (srv) => {
    const ch = `drop.${nonce()}`;
    const a = await connect(srv);
    const ack = await sub(a, ch);
    await batch(srv, ch, 1, 5);
    const seen = await events(a, ch, 5);
    const last = seen.at(-1).offset;
    a.destroy();
    await batch(srv, ch, 6, 105); // missed: 100
    const b = await connect(srv);
    const r = await sub(b, ch, { recover: { offset: last, epoch: ack.data.epoch } });
    assert.equal(r.recovered, true, JSON.stringify(r));
    assert.equal(r.data.offset, 105);
    const missed = await events(b, ch, 100);
    assert.deepEqual(missed.map((m) => m.offset), Array.from({ length: 100 }, (_, i) => 6 + i));
    assert.deepEqual(missed.map((m) => m.data.i), Array.from({ length: 100 }, (_, i) => 6 + i));
    await publish(srv, { channel: ch, event: 'n', data: { i: 106 } });
    assert.deepEqual((await events(b, ch, 1)).map((m) => m.offset), [106]);
    await b.expectNone((m) => m.type === 'event', ms(200), 'a duplicate');
  });
});

test('recovery_while_a_producer_keeps_broadcasting_has_no_gap_and_no_duplicate', T, async () => {
  // A small history so the replay is long relative to it would not be the point: the
  // defaults, with a producer racing the reconnect.
  await withServer({ args: ['--history-size', '2000'] }, async (srv) => {
    const ch = `race.${nonce()}`;
    const a = await connect(srv);
    const ack = await sub(a, ch);
    await batch(srv, ch, 1, 10);
    await events(a, ch, 10);
    a.destroy();
    let next = 11;
    let stop = false;
    const producer = (async () => {
      while (!stop) {
        const items = [];
        for (let k = 0; k < 20; k++) items.push({ channel: ch, event: 'n', data: { i: next++ } });
        await publishBatch(srv, items);
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 100)); // some are missed
    const b = await connect(srv);
    const r = await sub(b, ch, { recover: { offset: 10, epoch: ack.data.epoch } });
    assert.equal(r.recovered, true);
    await new Promise((resolve) => setTimeout(resolve, 150)); // and some arrive during the replay
    stop = true;
    await producer;
    const total = next - 1;
    const got = await events(b, ch, total - 10);
    assert.deepEqual(got.map((m) => m.offset), Array.from({ length: total - 10 }, (_, i) => 11 + i));
    assert.deepEqual(got.map((m) => m.data.i), Array.from({ length: total - 10 }, (_, i) => 11 + i));
    await b.expectNone((m) => m.type === 'event', ms(200), 'a duplicate');
  });
});

test('recover_says_false_and_replays_nothing_when_it_cannot_be_complete', T, async () => {
  await withServer({ args: ['--history-size', '10'] }, async (srv) => {
    const ch = `gone.${nonce()}`;
    const a = await connect(srv);
    const ack = await sub(a, ch);
    await batch(srv, ch, 1, 30); // offset 1..20 are no longer kept
    await events(a, ch, 30);
    for (const recover of [
      { offset: 5, epoch: ack.data.epoch }, // too old: 6 is gone
      { offset: 25, epoch: 'deadbeef' }, // another epoch
      { offset: 99, epoch: ack.data.epoch }, // from the future
    ]) {
      const b = await connect(srv);
      const r = await sub(b, ch, { recover });
      assert.equal(r.recovered, false, JSON.stringify(recover));
      assert.deepEqual(r.data, { offset: 30, epoch: ack.data.epoch });
      await b.expectNone((m) => m.type === 'event', ms(200), 'a replay');
      b.destroy();
    }
    // The edge: offset 20 needs 21.., all kept.
    const c = await connect(srv);
    const r = await sub(c, ch, { recover: { offset: 20, epoch: ack.data.epoch } });
    assert.equal(r.recovered, true);
    assert.deepEqual((await events(c, ch, 10)).map((m) => m.offset), [21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
    // Nothing missed: recovered, nothing replayed.
    const d = await connect(srv);
    const r2 = await sub(d, ch, { recover: { offset: 30, epoch: ack.data.epoch } });
    assert.equal(r2.recovered, true);
    await d.expectNone((m) => m.type === 'event', ms(200), 'a replay');
  });
});

test('a_restarted_instance_has_a_new_epoch_and_recovers_nothing', T, async () => {
  const ch = `restart.${nonce()}`;
  let epoch;
  const first = await startServer();
  try {
    const a = await connect(first);
    epoch = (await sub(a, ch)).data.epoch;
    await batch(first, ch, 1, 3);
    await events(a, ch, 3);
    a.destroy();
  } finally {
    await first.stop();
  }
  const second = await startServer();
  try {
    await batch(second, ch, 1, 2);
    const b = await connect(second);
    const r = await sub(b, ch, { recover: { offset: 1, epoch } });
    assert.equal(r.recovered, false);
    assert.notEqual(r.data.epoch, epoch);
    await b.expectNone((m) => m.type === 'event', ms(200), 'a replay');
  } finally {
    await second.stop();
  }
});

test('bad_recover_fields_get_a_clear_subscription_error', T, async () => {
  await withServer(async (srv) => {
    const c = await connect(srv);
    for (const recover of [5, 'x', [], { offset: -1, epoch: 'e' }, { offset: 1.5, epoch: 'e' }, { offset: '1', epoch: 'e' },
      { epoch: 'e' }, { offset: 1 }, { offset: 1, epoch: 7 }, { offset: 1, epoch: '' }, { offset: 1, epoch: 'x'.repeat(33) }]) {
      const ch = `bad.${nonce()}`;
      const r = await sub(c, ch, { recover });
      assert.equal(r.type, 'subscription_error', JSON.stringify(recover));
      assert.match(r.error, /recover/);
    }
    // The connection is still usable.
    const ok = await sub(c, `fine.${nonce()}`);
    assert.equal(ok.type, 'subscription_succeeded');
  });
});

test('private_recover_needs_auth_as_usual_and_replays_with_it', T, async () => {
  await withServer({ args: ['--auth-secret', SECRET] }, async (srv) => {
    const ch = `private-rec.${nonce()}`;
    const a = await connect(srv);
    const ack = await sub(a, ch, { auth: sign(a.socketId, ch) });
    a.destroy();
    await batch(srv, ch, 1, 3);
    const b = await connect(srv);
    const refused = await sub(b, ch, { recover: { offset: 0, epoch: ack.data.epoch } });
    assert.equal(refused.type, 'subscription_error');
    await b.expectNone((m) => m.type === 'event', ms(200), 'a replay without auth');
    const r = await sub(b, ch, { auth: sign(b.socketId, ch), recover: { offset: 0, epoch: ack.data.epoch } });
    assert.equal(r.recovered, true);
    assert.deepEqual((await events(b, ch, 3)).map((m) => m.offset), [1, 2, 3]);
  });
});

test('a_large_replay_is_paced_and_does_not_close_the_client_as_slow', T, async () => {
  // 400 events of ~8 KiB = 3.2 MiB to replay, with a 256 KiB send queue bound.
  await withServer({ args: ['--history-size', '400', '--history-max-bytes', String(8 << 20), '--max-send-queue', String(256 << 10)] }, async (srv) => {
    const ch = `big.${nonce()}`;
    const a = await connect(srv);
    const ack = await sub(a, ch);
    a.destroy();
    const pad = 'x'.repeat(8000);
    const items = [];
    for (let i = 1; i <= 400; i++) items.push({ channel: ch, event: 'n', data: { i, pad } });
    for (let k = 0; k < items.length; k += 50) await publishBatch(srv, items.slice(k, k + 50));
    const b = await connect(srv);
    const r = await sub(b, ch, { recover: { offset: 0, epoch: ack.data.epoch } });
    assert.equal(r.recovered, true);
    const got = await events(b, ch, 400);
    assert.deepEqual(got.map((m) => m.offset), Array.from({ length: 400 }, (_, i) => i + 1));
    assert.equal(b.ws.readyState, 1, 'still open');
  });
});
