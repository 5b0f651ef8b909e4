// Flow control on vxevents-server: a producer's burst through the publish API never costs
// healthy clients their connection; a client that stops reading is closed with 1008
// within bounded memory and holds the others back only briefly; a request that cannot be
// taken within --publish-wait is answered 503 with Retry-After and delivered nowhere.
// Real processes: the server, a fleet of `ws` subscribers (tests/flow/subscribers.mjs),
// raw WebSocket clients that stop reading.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { child } from '../flow/lib.mjs';
import { REPO_ROOT, api, connectRaw, ms, withServer, withTimeout } from './helpers.mjs';

const SUBSCRIBERS = path.join(REPO_ROOT, 'tests', 'flow', 'subscribers.mjs');
const ASAN = Boolean(process.env.ASAN_OPTIONS);
// The scenario: 500 subscribers, 2,000 requests of 100 broadcasts (smaller under ASan).
const [SUBS, REQUESTS] = (process.env.VX_FLOW_BATCH || (ASAN ? '100,200' : '500,2000')).split(',').map(Number);
const PAD = 'x'.repeat(200);

const peakMiB = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

async function metric(srv, name) {
  const res = await api(srv, '/metrics', { method: 'GET' });
  assert.equal(res.status, 200, res.text);
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(res.text);
  assert.ok(m, `${name} not in /metrics`);
  return Number(m[1]);
}

/** POST the batch; on 503 wait Retry-After and post it again (a 503 batch went nowhere). */
async function postBatch(srv, items, counts) {
  for (;;) {
    const res = await api(srv, '/api/batch', { body: { batch: items }, timeoutMs: 60_000 });
    if (res.status === 200) return;
    assert.equal(res.status, 503, res.text);
    counts.retried++;
    await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('retry-after') || 1)));
  }
}

async function stream(srv, channel, requests, from = 0) {
  const counts = { retried: 0 };
  const t0 = performance.now();
  for (let r = 0; r < requests; r++) {
    const items = [];
    for (let k = 0; k < 100; k++) items.push({ channel, event: 'e', data: { i: from + r * 100 + k, pad: PAD } });
    await postBatch(srv, items, counts);
  }
  return { ms: performance.now() - t0, ...counts };
}

test('api_batch_2000x100_reaches_500_subscribers_all_in_order_none_closed', { timeout: 600_000 }, async () => {
  await withServer({}, async (srv) => {
    const subs = [0, 1].map(() => child('node', [SUBSCRIBERS, srv.wsUrl, 'bench', String(SUBS / 2), String(REQUESTS * 100)]));
    try {
      for (const s of subs) assert.equal((await s.next(60_000, 'subscribers ready')).ready, true);
      const prod = await stream(srv, 'bench', REQUESTS);
      const got = await Promise.all(subs.map((s) => s.next(540_000, 'the subscribers')));
      for (const g of got) {
        assert.equal(g.reason, 'all', JSON.stringify(g));
        assert.equal(g.outOfOrder, 0);
        assert.deepEqual(g.closed, []);
      }
      assert.equal(await metric(srv, 'vxevents_slow_consumer_closes_total'), 0);
      const paused = await metric(srv, 'vxevents_flow_paused_seconds_total');
      const peak = peakMiB(srv.proc.pid);
      if (!ASAN) assert.ok(peak < 200, `server peak RSS ${peak} MiB`);
      process.stdout.write(`# batch: ${Math.round(prod.ms)} ms, ${prod.retried} retried, paused ${paused} s, server peak ${Math.round(peak)} MiB\n`);
    } finally {
      for (const s of subs) s.kill();
    }
  });
});

test('a_client_that_stops_reading_among_200_is_closed_1008_and_the_others_get_everything', { timeout: 300_000 }, async () => {
  const readers = ASAN ? 50 : 200;
  const requests = ASAN ? 150 : 300;
  await withServer({ args: ['--slow-consumer-ms', '3000'] }, async (srv) => {
    // the same stream twice, to the same readers: first with nobody stalled (the baseline)
    const fleet = child('node', [SUBSCRIBERS, srv.wsUrl, 'firehose', String(readers), String(2 * requests * 100)]);
    try {
      assert.equal((await fleet.next(60_000, 'readers ready')).ready, true);
      const base = await stream(srv, 'firehose', requests);
      const stalled = await connectRaw(srv, { label: 'stalled subscriber' });
      await stalled.subscribe('firehose');
      stalled.pause();
      const rss0 = peakMiB(srv.proc.pid);
      // once the server gave up on it, the stalled client reads again: its close frame waits
      // behind what it never read, and the server cuts the socket 10 s after the close
      let cut = false;
      const watch = (async () => {
        while (!cut) {
          if ((await metric(srv, 'vxevents_slow_consumer_closes_total')) >= 1) {
            cut = true;
            stalled.resume();
          } else await new Promise((r) => setTimeout(r, 200));
        }
      })();
      const withStalled = await stream(srv, 'firehose', requests, requests * 100);
      const got = await fleet.next(120_000, 'the readers');
      assert.equal(got.reason, 'all', JSON.stringify(got));
      assert.equal(got.complete, readers);
      assert.equal(got.outOfOrder, 0);
      // the stalled one: closed 1008
      try {
        await withTimeout(watch, ms(10000), 'the slow-consumer close');
      } finally {
        cut = true;
      }
      assert.equal(await metric(srv, 'vxevents_slow_consumer_closes_total'), 1);
      await stalled.waitEnd(ms(20000));
      assert.equal(stalled.closeFrame?.code, 1008, JSON.stringify(stalled.closeFrame));
      // bounded memory: its queue was cut at --max-send-queue (1 MiB)
      const grew = peakMiB(srv.proc.pid) - rss0;
      if (!ASAN) assert.ok(grew < 32, `server peak RSS grew by ${grew} MiB`); // ASan keeps freed memory in quarantine
      // the producer was held back about --slow-consumer-ms (3 s), not until the end
      const dip = withStalled.ms - base.ms;
      process.stdout.write(`# stalled: baseline ${Math.round(base.ms)} ms, with a stalled reader ${Math.round(withStalled.ms)} ms\n`);
      assert.ok(dip < 3000 + ms(3000), `the producer took ${Math.round(dip)} ms longer`);
      assert.equal(withStalled.retried, 0);
    } finally {
      fleet.kill();
    }
  });
});

test('a_publish_request_without_capacity_waits_publish_wait_then_503_and_is_delivered_nowhere', { timeout: 120_000 }, async () => {
  // The only client stops reading and may hold broadcasts back for a minute: requests park,
  // then get 503 after --publish-wait.
  await withServer({ args: ['--publish-wait', '300', '--slow-consumer-ms', '60000', '--max-command-queue', '65536'] }, async (srv) => {
    const slow = await connectRaw(srv, { label: 'only subscriber, not reading' });
    await slow.subscribe('parked');
    slow.pause();
    let accepted = 0;
    let refused = null;
    const pad = 'y'.repeat(8000);
    for (let r = 0; r < 2000 && !refused; r++) {
      const items = [];
      for (let k = 0; k < 10; k++) items.push({ channel: 'parked', event: 'e', data: { i: r * 10 + k, pad } });
      const t0 = performance.now();
      const res = await api(srv, '/api/batch', { body: { batch: items }, timeoutMs: 10_000 });
      if (res.status === 200) accepted++;
      else refused = { ...res, waited: performance.now() - t0 };
    }
    assert.ok(refused, 'every request was taken although nobody read');
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.match(refused.json.error, /flow control/);
    assert.ok(refused.waited >= 250, `answered after ${refused.waited} ms`);
    assert.ok(await metric(srv, 'vxevents_flow_refused_total') >= 1);
    // the client reads again: exactly the accepted batches arrive, none of the refused one
    slow.resume();
    const want = accepted * 10;
    for (let i = 0; i < want; i++) {
      const m = await slow.next((x) => x.type === 'event' && x.event === 'e', ms(10000), `event ${i}`);
      assert.equal(m.data.i, i);
    }
    await slow.expectNone((x) => x.type === 'event' && x.event === 'e', 500);
    // and the API takes requests again
    const ok = await api(srv, '/api/broadcast', { body: { channel: 'parked', event: 'after', data: 1 } });
    assert.equal(ok.status, 200);
  });
});
