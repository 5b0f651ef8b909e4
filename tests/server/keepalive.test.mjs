// Server pings: a peer that answers stays, one that does not is dropped.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, connectRaw, health, isEvent, ms, publish, sleep, withServer } from './helpers.mjs';

const T = { timeout: 20000 };
const INTERVAL = 300;
const FAST_PINGS = { args: ['--ping-interval', String(INTERVAL)] };

test('ws_client_that_answers_pings_stays_connected', T, async () => {
  await withServer(FAST_PINGS, async (srv) => {
    const c = await connect(srv);
    await c.subscribe('alive');
    await sleep(ms(1800));
    assert.equal(c.ws.readyState, 1, `closed: ${JSON.stringify(c.queue.closedInfo)}`);
    assert.ok(c.pings >= 3, `expected a ping every ${INTERVAL} ms, got ${c.pings} in 1.8 s`);
    await publish(srv, { channel: 'alive', event: 'still', data: 1 });
    await c.next(isEvent('alive', 'still'));
  });
});

test('raw_client_that_answers_pings_stays_connected', T, async () => {
  await withServer(FAST_PINGS, async (srv) => {
    const raw = await connectRaw(srv, { autoPong: true });
    await sleep(ms(1800));
    assert.ok(raw.pings >= 3, `pings seen: ${raw.pings}`);
    await raw.barrier();
  });
});

test('raw_client_that_never_answers_pings_is_dropped_within_two_intervals', T, async () => {
  await withServer(FAST_PINGS, async (srv) => {
    const keeper = await connect(srv, { label: 'answers pings' });
    const started = Date.now();
    const silent = await connectRaw(srv, { autoPong: false, label: 'never answers' });
    // Dropped at the second tick after the first ping at the latest; allow
    // one more interval plus scheduling slack.
    const budget = ms(INTERVAL * 4 + 400);
    await silent.waitEnd(budget).catch((err) => {
      throw new Error(`${err.message}: the server kept a peer that never answered ${silent.pings} ping(s)`);
    });
    const elapsed = Date.now() - started;
    assert.ok(silent.pings >= 1, 'the server dropped the peer without ever pinging it');
    assert.ok(elapsed >= INTERVAL - 50, `dropped after only ${elapsed} ms, before a ping could have gone unanswered`);
    assert.equal(keeper.ws.readyState, 1, 'the answering client must stay');
    const h = await health(srv);
    assert.equal(h.connections, 1, JSON.stringify(h));
  });
});
