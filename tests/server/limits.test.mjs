// --max-connections, --max-channels-per-connection, and the send-queue bound
// for what a peer makes the server send it (HTTP answers, pongs).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import {
  OP,
  connect,
  connectRaw,
  encodeFrame,
  health,
  isEvent,
  ms,
  openWs,
  publish,
  sleep,
  waitFor,
  withServer,
  withTimeout,
} from './helpers.mjs';

const T = { timeout: 20000 };

test('connection_over_max_connections_gets_503', T, async () => {
  await withServer({ args: ['--max-connections', '3'] }, async (srv) => {
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connect(srv));
    await assert.rejects(openWs(srv.wsUrl), (err) => {
      assert.equal(err.statusCode, 503, err.message);
      return true;
    });
    // Health still answers while full.
    assert.equal((await health(srv)).connections, 3);
    clients[0].close(1000);
    await waitFor(() => health(srv), (h) => h.connections === 2, ms(3000), 'a free slot');
    const again = await openWs(srv.wsUrl);
    srv.track(again);
    await again.waitConnected();
  });
});

test('subscribe_over_max_channels_per_connection_gets_subscription_error', T, async () => {
  await withServer({ args: ['--max-channels-per-connection', '2'] }, async (srv) => {
    const c = await connect(srv);
    await c.subscribe('one');
    await c.subscribe('two');
    c.send({ type: 'subscribe', channel: 'three' });
    const m = await c.next();
    assert.equal(m.type, 'subscription_error', JSON.stringify(m));
    assert.equal(m.channel, 'three');
    // Re-subscribing to a channel it already has is not a new channel.
    c.send({ type: 'subscribe', channel: 'two' });
    await c.barrier();
    await c.expectNone((x) => x.type === 'subscription_error', 0, 'error for a channel already joined');
    await publish(srv, { channel: 'three', event: 'e', data: 1 });
    await c.expectNone((x) => x.type === 'event', 250, 'event on the refused channel');
    // Leaving one frees a slot.
    c.send({ type: 'unsubscribe', channel: 'one' });
    await c.barrier();
    await c.subscribe('three');
    await publish(srv, { channel: 'three', event: 'e', data: 2 });
    await c.next(isEvent('three', 'e', 2));
    // The limit is per connection: another connection still has its own.
    const d = await connect(srv);
    await d.subscribe('one');
    await d.subscribe('two');
  });
});

// ---------------------------------------------------------------------------
// Bounds a peer controls: what a peer makes the server send it counts against
// --max-send-queue even when the peer never reads.

/** The server's resident memory in KiB. */
function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

/**
 * After a peer wrote everything it had (socket.writableLength is 0) or the
 * server stopped taking it, wait until the server's memory has not grown for
 * 500 ms; resolves with the last reading.
 */
async function settledRss(pid, sock, timeoutMs = ms(15000)) {
  const deadline = Date.now() + timeoutMs;
  let last = rssKiB(pid);
  let lastPending = sock.writableLength;
  let stableSince = Date.now();
  while (Date.now() < deadline) {
    await sleep(100);
    const now = rssKiB(pid);
    const pending = sock.writableLength;
    if (now > last || pending !== lastPending) stableSince = Date.now();
    last = Math.max(last, now);
    lastPending = pending;
    if (Date.now() - stableSince >= 500) return last;
  }
  return last;
}

// Freed memory held in ASan's quarantine would look like growth.
const QUIET_ASAN = process.env.ASAN_OPTIONS ? { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS}:quarantine_size_mb=0` } : {};

test('pipelined_requests_from_a_peer_that_never_reads_stay_within_the_send_queue_bound', T, async () => {
  await withServer({ args: ['--max-send-queue', '262144'], env: QUIET_ASAN }, async (srv) => {
    const N = 200000;
    const sock = net.connect({ host: '127.0.0.1', port: srv.port });
    await new Promise((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    srv.track(sock);
    sock.pause();
    const before = rssKiB(srv.proc.pid);
    sock.write(Buffer.from('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(N)));
    const peak = await settledRss(srv.proc.pid, sock);
    const grown = peak - before;
    // Before the bound: every answer (~33 MiB for 200,000) sat in the server.
    assert.ok(grown < 8 * 1024, `the server grew by ${grown} KiB for a peer that never reads`);
    assert.ok(sock.writableLength > 0, 'the server read every request without the answers being read');
    // Once the peer reads, every request is answered, in order.
    const STATUS = 'HTTP/1.1 200 OK';
    let answers = 0;
    let tailText = '';
    const all = new Promise((resolve, reject) => {
      sock.on('data', (d) => {
        // A status line may be split between chunks: keep what could start one.
        const text = tailText + d.toString('latin1');
        answers += text.split(STATUS).length - 1;
        tailText = text.slice(-(STATUS.length - 1));
        if (answers >= N) resolve();
      });
      sock.on('close', () => reject(new Error(`connection closed after ${answers} answers`)));
    });
    sock.resume();
    await withTimeout(all, ms(30000), `${N} answers (got ${answers})`);
    assert.equal(answers, N);
    sock.destroy();
  });
});

test('pings_from_a_peer_that_never_reads_stay_within_the_send_queue_bound', T, async () => {
  await withServer({ args: ['--max-send-queue', '65536'], env: QUIET_ASAN }, async (srv) => {
    const c = await connectRaw(srv);
    c.pause();
    const N = 200000;
    const before = rssKiB(srv.proc.pid);
    const frames = [];
    for (let i = 0; i < N; i++) {
      const tag = `${i}`.padStart(7, '0');
      frames.push(encodeFrame(OP.PING, Buffer.from(tag + 'p'.repeat(125 - tag.length))));
    }
    c.sock.write(Buffer.concat(frames));
    const peak = await settledRss(srv.proc.pid, c.sock);
    const grown = peak - before;
    // Before the bound: one 127-byte pong per ping (~25 MiB for 200,000).
    assert.ok(grown < 8 * 1024, `the server grew by ${grown} KiB for ${N} unread pongs`);
    // The peer reads again: the connection is healthy, and the last pong answers the last ping.
    c.resume();
    await c.subscribe('still-alive');
    const lastTag = `${N - 1}`.padStart(7, '0');
    assert.ok(c.pongs.length >= 1 && c.pongs.length <= N, `${c.pongs.length} pongs`);
    assert.equal(c.pongs.at(-1).slice(0, 7), lastTag, 'the last pong answers the last ping');
  });
});
