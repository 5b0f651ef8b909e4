// A connection that stops reading is cut off at --max-send-queue instead of
// growing the server's memory; it holds the others back for --slow-consumer-ms at most
// (300 ms here: flow control waits that long for the only other client before cutting it loose).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { OP, connect, connectRaw, encodeFrame, health, isEvent, ms, publishBatch, waitFor, withServer } from './helpers.mjs';

const T = { timeout: 45000 };

/**
 * The most a paused loopback connection can hold in kernel buffers: the
 * reader's largest receive buffer plus the writer's largest send buffer.
 * Past that, everything unsent sits in the server's own queue.
 */
function kernelBufferCeiling() {
  const max = (file) => {
    try {
      return Number(readFileSync(file, 'utf8').trim().split(/\s+/)[2]);
    } catch {
      return NaN;
    }
  };
  const sum = max('/proc/sys/net/ipv4/tcp_rmem') + max('/proc/sys/net/ipv4/tcp_wmem');
  return Number.isFinite(sum) && sum > 0 ? sum : 10 * 1024 * 1024;
}

test('slow_consumer_is_closed_with_1008_while_fast_subscriber_gets_every_event', T, async () => {
  await withServer({ args: ['--max-send-queue', '65536', '--slow-consumer-ms', '300'] }, async (srv) => {
    const ch = 'firehose';
    const fast = await connect(srv, { label: 'fast subscriber' });
    await fast.subscribe(ch);
    const slow = await connectRaw(srv, { label: 'slow subscriber' });
    await slow.subscribe(ch);
    slow.pause();

    // Publish 8 KiB events in batches of 4 (32 KiB a request, under the
    // fast subscriber's 64 KiB queue) until more has been published than
    // the kernel can possibly buffer for the paused socket, plus 4 MiB.
    const PAD = 'x'.repeat(8192);
    const PER_BATCH = 4;
    const budgetBytes = Math.min(kernelBufferCeiling() + 4 * 1024 * 1024, 48 * 1024 * 1024);
    const deadline = Date.now() + ms(25000);
    let published = 0;
    while (published * 8192 < budgetBytes && Date.now() < deadline) {
      const items = [];
      for (let i = 0; i < PER_BATCH; i++) items.push({ channel: ch, event: 'bulk', data: { seq: published++, pad: PAD } });
      await publishBatch(srv, items);
    }
    assert.ok(published * 8192 >= budgetBytes, `published only ${published} events before the deadline`);

    // The fast subscriber got every event, in order, once.
    for (let i = 0; i < published; i++) {
      const m = await fast.next(isEvent(ch, 'bulk'), ms(5000), `event #${i}`);
      assert.equal(m.data.seq, i);
    }
    await fast.expectNone(isEvent(ch, 'bulk'), 100, 'duplicate');
    assert.equal(fast.ws.readyState, 1, 'the fast subscriber must not be closed');

    // The slow one: read what the kernel held; then the connection must end,
    // short of the full stream, with 1008 if the close frame made it.
    slow.resume();
    await slow.waitEnd(ms(10000));
    const events = slow.textFrames - 1; // minus subscription_succeeded
    assert.ok(events < published, `the slow consumer received all ${published} events: nothing was cut off`);
    assert.ok(slow.closeFrame, `no close frame after ${events} of ${published} events`);
    assert.equal(slow.closeFrame.code, 1008, `close frame ${JSON.stringify(slow.closeFrame)}`);
    await waitFor(() => health(srv), (h) => h.connections === 1, ms(3000), 'the slow connection to be gone from /health');
  });
});

// Pongs do not count toward the slow-consumer bound (a waiting pong is replaced
// by the next one instead), and they do not keep the close frame out: a
// subscriber that pings all the time but never reads is still closed with 1008.
test('slow_consumer_that_keeps_pinging_is_still_closed_with_1008', T, async () => {
  await withServer({ args: ['--max-send-queue', '65536', '--slow-consumer-ms', '300'] }, async (srv) => {
    const ch = 'firehose-pings';
    const slow = await connectRaw(srv, { label: 'pinging slow subscriber' });
    await slow.subscribe(ch);
    slow.pause();
    const PAD = 'x'.repeat(8192);
    const budgetBytes = Math.min(kernelBufferCeiling() + 4 * 1024 * 1024, 48 * 1024 * 1024);
    const deadline = Date.now() + ms(25000);
    const pings = Buffer.concat(Array.from({ length: 200 }, (_, i) => encodeFrame(OP.PING, `p${i}`)));
    let published = 0;
    while (published * 8192 < budgetBytes && Date.now() < deadline) {
      slow.sock.write(pings);
      const items = [];
      for (let i = 0; i < 4; i++) items.push({ channel: ch, event: 'bulk', data: { seq: published++, pad: PAD } });
      await publishBatch(srv, items);
    }
    slow.resume();
    await slow.waitEnd(ms(10000));
    assert.ok(slow.closeFrame, 'no close frame');
    assert.equal(slow.closeFrame.code, 1008, JSON.stringify(slow.closeFrame));
    assert.ok(slow.pongs.length > 0, 'no pong at all');
    await waitFor(() => health(srv), (h) => h.connections === 0, ms(3000), 'the slow connection to be gone');
  });
});
