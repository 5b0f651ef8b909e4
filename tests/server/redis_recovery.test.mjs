// History and recovery across instances (DESIGN §7 last bullet, §12): a Redis Stream per
// channel, offsets assigned in Redis so every instance agrees, recovery on whichever
// instance a client reconnects to, catch-up after Redis blips, a new epoch after Redis
// lost its data, and SSE Last-Event-ID across instances.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { connect, ms, nonce, publish, publishBatch, startServer, waitFor } from './helpers.mjs';
import { startRedis } from './redis.mjs';

const T = { timeout: 60000 };

async function cluster(n, redis, extra = []) {
  const servers = [];
  for (let i = 0; i < n; i++) servers.push(await startServer({ args: ['--redis', redis.url, ...extra] }));
  return servers;
}

async function stopAll(servers, redis) {
  const results = await Promise.allSettled(servers.map((s) => s.stop()));
  if (redis) await redis.stop();
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

async function sub(c, channel, extra = {}) {
  c.send({ type: 'subscribe', channel, ...extra });
  return c.next((m) => (m.type === 'subscription_succeeded' || m.type === 'subscription_error') && m.channel === channel,
    ms(8000), `the answer to subscribe ${channel}`);
}

async function events(c, channel, n, timeout = ms(8000)) {
  const got = [];
  while (got.length < n) got.push(await c.next((m) => m.type === 'event' && m.channel === channel, timeout, `event ${got.length + 1} of ${n} on ${channel}`));
  return got;
}

async function batch(srv, channel, from, to) {
  const items = [];
  for (let i = from; i <= to; i++) items.push({ channel, event: 'n', data: { i } });
  for (let k = 0; k < items.length; k += 100) await publishBatch(srv, items.slice(k, k + 100));
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** One command to Redis over a plain socket (RESP), e.g. CLIENT KILL TYPE pubsub. */
function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (d) => { out += d; if (out.endsWith('\r\n')) { s.end(); resolve(out); } });
    s.on('error', reject);
    s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
  });
}

test('every_instance_agrees_on_offsets_and_a_client_dropped_on_A_recovers_on_B', T, async () => {
  const redis = await startRedis();
  const [a, b] = await cluster(2, redis);
  try {
    const ch = `xr.${nonce()}`;
    const onA = await connect(a);
    const onB = await connect(b);
    const ackA = await sub(onA, ch);
    const ackB = await sub(onB, ch);
    assert.deepEqual(ackA.data, ackB.data, 'one stream, one position');
    await batch(a, ch, 1, 3);
    await publish(b, { channel: ch, event: 'n', data: { i: 4 } });
    assert.deepEqual((await events(onA, ch, 4)).map((m) => m.offset), [1, 2, 3, 4]);
    assert.deepEqual((await events(onB, ch, 4)).map((m) => m.offset), [1, 2, 3, 4]);
    onA.destroy();
    await batch(a, ch, 5, 104); // 100 missed
    const again = await connect(b);
    const r = await sub(again, ch, { recover: { offset: 4, epoch: ackA.data.epoch } });
    assert.equal(r.recovered, true, JSON.stringify(r));
    const missed = await events(again, ch, 100);
    assert.deepEqual(missed.map((m) => m.offset), range(5, 104));
    assert.deepEqual(missed.map((m) => m.data.i), range(5, 104));
    await publish(a, { channel: ch, event: 'n', data: { i: 105 } });
    assert.deepEqual((await events(again, ch, 1)).map((m) => m.offset), [105]);
    await again.expectNone((m) => m.type === 'event', ms(300), 'a duplicate');
    // An instance that never followed the channel recovers from the stream too.
    const [c] = await cluster(1, redis);
    try {
      const late = await connect(c);
      const r2 = await sub(late, ch, { recover: { offset: 100, epoch: ackA.data.epoch } });
      assert.equal(r2.recovered, true);
      assert.deepEqual((await events(late, ch, 5)).map((m) => m.offset), range(101, 105));
    } finally {
      await c.stop();
    }
  } finally {
    await stopAll([a, b], redis);
  }
});

/** A 100/s sequence-numbered stream from A to subscribers on A and B through `blip`. */
async function streamThrough(blip) {
  const redis = await startRedis();
  const [a, b] = await cluster(2, redis);
  try {
    const ch = `seq.${nonce()}`;
    const subs = [await connect(a), await connect(a), await connect(b), await connect(b)];
    for (const s of subs) await sub(s, ch);
    let i = 0;
    let stop = false;
    const producer = (async () => {
      while (!stop) {
        await publish(a, { channel: ch, event: 'n', data: { i: ++i } });
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    await blip(redis);
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await producer;
    for (const s of subs) {
      const got = await events(s, ch, i, ms(15000));
      assert.deepEqual(got.map((m) => m.data.i), range(1, i), 'every message, in order');
      assert.deepEqual(got.map((m) => m.offset), range(1, i));
      await s.expectNone((m) => m.type === 'event', ms(300), 'a duplicate');
    }
    return i;
  } finally {
    await stopAll([a, b], redis);
  }
}

test('a_5s_SIGSTOP_of_redis_during_a_100_per_s_stream_loses_and_duplicates_nothing', T, async () => {
  const n = await streamThrough(async (redis) => {
    redis.pause();
    await new Promise((r) => setTimeout(r, 5000));
    redis.resume();
  });
  assert.ok(n > 300, `${n} messages`);
});

test('cutting_the_subscriber_connections_mid_stream_catches_up_exactly_once', T, async () => {
  await streamThrough(async (redis) => {
    for (let k = 0; k < 3; k++) {
      await redisCommand(redis.port, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
      await new Promise((r) => setTimeout(r, 400));
    }
  });
});

test('redis_restarted_empty_means_a_new_epoch_and_recovered_false', T, async () => {
  let redis = await startRedis();
  const port = redis.port;
  const [a, b] = await cluster(2, redis);
  try {
    const ch = `epoch.${nonce()}`;
    const onB = await connect(b);
    const ack = await sub(onB, ch);
    await batch(a, ch, 1, 3);
    await events(onB, ch, 3);
    await redis.stop();
    redis = await startRedis(port); // empty
    // Both instances are back once a broadcast from A reaches B's subscriber again.
    let k = 0;
    await waitFor(async () => {
      await publish(a, { channel: ch, event: 'after', data: { k: ++k } });
      try { await onB.next((m) => m.type === 'event' && m.event === 'after', 400); return true; } catch { return false; }
    }, (ok) => ok, ms(15000), 'delivery after the restart');
    const late = await connect(a);
    const r = await sub(late, ch, { recover: { offset: 3, epoch: ack.data.epoch } });
    assert.equal(r.recovered, false, JSON.stringify(r));
    assert.notEqual(r.data.epoch, ack.data.epoch);
    await late.expectNone((m) => m.type === 'event', ms(300), 'a replay');
  } finally {
    await stopAll([a, b], redis);
  }
});

/** A raw SSE stream (so a Last-Event-ID header can be sent): its parsed messages. */
function sseStream(port, query, headers = '') {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(`GET /events${query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n${headers}\r\n`);
    });
    const stream = { s, text: '', get messages() {
      const out = [];
      for (const block of stream.text.split('\n\n')) {
        const id = /^id: (.*)$/m.exec(block);
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (data) out.push({ id: id && id[1], msg: JSON.parse(data) });
      }
      return out;
    } };
    s.setEncoding('utf8');
    s.on('data', (d) => { stream.text += d; });
    s.once('data', () => resolve(stream));
    s.on('error', reject);
  });
}

test('sse_reconnecting_to_the_other_instance_with_last_event_id_gets_what_it_missed', T, async () => {
  const redis = await startRedis();
  const [a, b] = await cluster(2, redis, ['--sse-path', '/events']);
  try {
    const ch = `sse.${nonce()}`;
    const s1 = await sseStream(a.port, `?channels=${ch}`);
    await waitFor(async () => s1.messages, (m) => m.some((x) => x.msg.type === 'subscription_succeeded'), ms(5000), 'subscribed on A');
    await batch(a, ch, 1, 2);
    await waitFor(async () => s1.messages, (m) => m.filter((x) => x.msg.type === 'event' && x.msg.channel === ch).length === 2, ms(5000), 'two events');
    const lastId = s1.messages.filter((x) => x.msg.type === 'event').at(-1).id;
    assert.match(lastId, /^[0-9a-f]{8}-\d+$/);
    s1.s.destroy();
    await batch(b, ch, 3, 12); // missed, published on B
    const s2 = await sseStream(b.port, `?channels=${ch}`, `Last-Event-ID: ${lastId}\r\n`);
    try {
      await waitFor(async () => s2.messages, (m) => m.some((x) => x.msg.type === 'resumed'), ms(8000), 'resumed');
      const isCh = (x) => x.msg.type === 'event' && x.msg.channel === ch;
      await waitFor(async () => s2.messages, (m) => m.filter(isCh).length >= 10, ms(5000), 'the replay');
      const got = s2.messages;
      assert.deepEqual(got.find((x) => x.msg.type === 'resumed').msg, { type: 'resumed', recovered: true, replayed: 10 });
      assert.equal(got.find((x) => x.msg.type === 'subscription_succeeded').msg.recovered, true);
      assert.deepEqual(got.filter(isCh).map((x) => x.msg.data.i), range(3, 12));
      // The ids are the cluster's: the same epoch on both instances.
      assert.equal(got.filter(isCh)[0].id.split('-')[0], lastId.split('-')[0]);
    } finally {
      s2.s.destroy();
    }
  } finally {
    await stopAll([a, b], redis);
  }
});
