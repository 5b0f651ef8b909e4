// Flow control through the Fastify plugin (issue: a producer's burst never costs healthy
// clients their connection). Real processes: the app (tests/flow/app.mjs) awaits
// app.events.broadcast() in a loop; real `ws` subscribers in two other processes
// (tests/flow/subscribers.mjs) check that every one of them gets every event, in order.

import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { child } from '../../flow/lib.mjs';
import { connect, startApp } from './helpers.mjs';

const FLOW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'flow');
// The scenario of the issue: 500 subscribers, 200,000 awaited broadcasts of a 200-byte pad.
const [SUBS, N] = (process.env.VX_FLOW_BURST || '500,200000').split(',').map(Number);

describe('flow control through the plugin', () => {
  test('200000_awaited_broadcasts_reach_500_ws_subscribers_all_in_order_none_closed', { timeout: 600_000 }, async () => {
    const app = child('node', [path.join(FLOW, 'app.mjs')]);
    const subs = [];
    try {
      const { port } = await app.next(20_000, 'the app port');
      for (let k = 0; k < 2; k++) {
        subs.push(child('node', [path.join(FLOW, 'subscribers.mjs'), `ws://127.0.0.1:${port}/ws`, 'bench', String(SUBS / 2), String(N)]));
      }
      for (const s of subs) assert.equal((await s.next(60_000, 'subscribers ready')).ready, true);
      app.send(`go ${N} 200`);
      const prod = await app.next(540_000, 'the producer loop');
      const got = await Promise.all(subs.map((s) => s.next(540_000, 'the subscribers')));
      for (const g of got) {
        assert.equal(g.reason, 'all', JSON.stringify(g));
        assert.equal(g.complete, SUBS / 2);
        assert.equal(g.outOfOrder, 0);
        assert.deepEqual(g.closed, []);
      }
      assert.equal(prod.stats.slowConsumerCloses, 0);
      assert.equal(prod.stats.connections, SUBS);
      // memory: the app's peak RSS stays under 200 MiB (it was 259-1,013 MiB unpaced)
      assert.ok(prod.hwmMiB < 200, `app peak RSS ${prod.hwmMiB} MiB`);
      // paced: the loop waited for capacity, and took most of the delivery time (it was
      // 742 ms for a delivery that takes tens of seconds)
      assert.ok(prod.stats.flowWaits > 0 && prod.stats.flowWaitMs > 0, JSON.stringify(prod.stats));
      const slowest = Math.max(...got.map((g) => g.ms));
      assert.ok(prod.ms > slowest / 2, `producer ${prod.ms} ms, delivery ${slowest} ms`);
      process.stdout.write(`# burst: producer ${prod.ms} ms, delivery ${slowest} ms, app peak RSS ${prod.hwmMiB} MiB, waited ${prod.stats.flowWaitMs} ms\n`);
    } finally {
      for (const s of subs) s.kill();
      app.kill();
    }
  });

  // One subscriber that never reads: the core's queue fills, broadcast() Promises stay
  // pending (in order) and resolve once it reads again.
  test('broadcast_promises_pend_while_the_core_is_full_and_resolve_in_call_order', { timeout: 60_000 }, async () => {
    const ctx = await startApp({ maxCommandQueue: 65536 });
    let sock;
    try {
      sock = await stalledSubscriber(ctx.port, 'slow');
      const pad = 'x'.repeat(8000);
      const order = [];
      const all = [];
      for (let i = 0; i < 3000; i++) all.push(ctx.app.events.broadcast('slow', 'e', { i, pad }).then(() => order.push(i)));
      // nothing reads: the kernel buffers, then the send queue, then the command queue fill up
      // until the core ran out of room and the client's buffers are full: nothing more is accepted
      const deadline = Date.now() + 20_000;
      let st;
      let last = -1;
      for (;;) {
        await new Promise((r) => setTimeout(r, 250));
        st = await ctx.app.events.stats();
        if ((st.flowWaits > 0 && order.length === last) || Date.now() > deadline) break;
        last = order.length;
      }
      assert.ok(st.flowWaits > 0, 'the core never ran out of room');
      const before = order.length;
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(order.length < 3000, `all resolved while nobody read (${order.length})`);
      assert.equal(order.length, before, 'Promises kept resolving while the client did not read');
      // the client reads again: everything resolves, in call order, and arrives, in order
      const got = countEvents(sock);
      sock.resume();
      await Promise.all(all);
      assert.deepEqual(order, [...Array(3000).keys()]);
      const n = await got.until(3000, 30_000);
      assert.equal(n.count, 3000);
      assert.equal(n.bad, 0);
      st = await ctx.app.events.stats();
      assert.equal(st.slowConsumerCloses, 0);
    } finally {
      sock?.destroy();
      await ctx.app.close();
    }
  });

  test('close_rejects_the_broadcasts_still_waiting_and_refuses_new_ones', { timeout: 60_000 }, async () => {
    const ctx = await startApp({ maxCommandQueue: 65536 });
    const sock = await stalledSubscriber(ctx.port, 'slow');
    const pad = 'x'.repeat(8000);
    const results = [];
    for (let i = 0; i < 3000; i++) {
      results.push(ctx.app.events.broadcast('slow', 'e', { i, pad }).then(() => 'ok', (e) => e.code));
    }
    const deadline = Date.now() + 20_000;
    while ((await ctx.app.events.stats()).flowWaits === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await ctx.app.close();
    assert.ok(Date.now() - t0 < 10_000, 'close waited for a client that never reads');
    const codes = await Promise.all(results);
    assert.ok(codes.includes('ok'));
    assert.ok(codes.includes('ECLOSED'), 'some broadcasts were waiting');
    assert.deepEqual([...new Set(codes)].sort(), ['ECLOSED', 'ok']);
    // accepted ones first, refused ones after: never a gap
    assert.equal(codes.indexOf('ECLOSED'), codes.lastIndexOf('ok') + 1);
    await assert.rejects(ctx.app.events.broadcast('slow', 'e', {}), { code: 'ECLOSED' });
    sock.destroy();
  });
});

/** A raw WebSocket client subscribed to `channel` that then stops reading (socket paused). */
async function stalledSubscriber(port, channel) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
             'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  let seen = '';
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no connected message: ${seen}`)), 5000);
    sock.on('data', function onData(d) {
      seen += d.toString('latin1');
      if (seen.includes('"connected"')) {
        const payload = Buffer.from(JSON.stringify({ type: 'subscribe', channel }));
        const mask = Buffer.from([1, 2, 3, 4]);
        const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
        sock.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      }
      if (seen.includes('subscription_succeeded')) {
        clearTimeout(t);
        sock.off('data', onData);
        sock.pause();
        resolve();
      }
    });
  });
  return sock;
}

/** Count event frames with data.i in order on a raw socket (text frames, server unmasked). */
function countEvents(sock) {
  let buf = Buffer.alloc(0);
  const st = { count: 0, bad: 0 };
  let waiter = null;
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) break;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) break; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) break;
      const text = buf.subarray(off, off + len).toString();
      buf = buf.subarray(off + len);
      const m = /"type":"event".*"i":(\d+)/.exec(text);
      if (m) {
        if (Number(m[1]) !== st.count) st.bad++;
        st.count++;
      }
      if (waiter && st.count >= waiter.n) waiter.resolve(st);
    }
  });
  return {
    until(n, ms) {
      if (st.count >= n) return Promise.resolve(st);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`got ${st.count} of ${n} events`)), ms);
        waiter = { n, resolve: (v) => { clearTimeout(t); resolve(v); } };
      });
    },
  };
}
