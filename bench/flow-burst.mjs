// Bursts through the Node binding: a Fastify app (tests/flow/app.mjs) awaits
// app.events.broadcast() N times in a loop to S `ws` subscribers (tests/flow/subscribers.mjs,
// two processes). Prints deliveries/s, the app's peak RSS, delivery latency (p50/p99/max of a
// sample: from the broadcast call to the subscriber), closes, and flow-control waits.
//
//   node bench/flow-burst.mjs [SUBSCRIBERS=500] [BROADCASTS=200000] [PAD=200]
//   VXEVENTS_ADDON=... to use a given build of the addon.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { child } from '../tests/flow/lib.mjs';

const FLOW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'tests', 'flow');
const [S, N, PAD] = [Number(process.argv[2] || 500), Number(process.argv[3] || 200000), Number(process.argv[4] || 200)];
const app = child('node', [path.join(FLOW, 'app.mjs')]);
const subs = [];
try {
  const { port } = await app.next(20_000, 'the app port');
  for (let k = 0; k < 2; k++) {
    subs.push(child('node', [path.join(FLOW, 'subscribers.mjs'), `ws://127.0.0.1:${port}/ws`, 'bench', String(S / 2), String(N)]));
  }
  for (const s of subs) await s.next(60_000, 'subscribers ready');
  const t0 = performance.now();
  app.send(`go ${N} ${PAD} stamp`);
  const prod = await app.next(1_800_000, 'the producer');
  const got = await Promise.all(subs.map((s) => s.next(1_800_000, 'the subscribers')));
  const wall = (performance.now() - t0) / 1000;
  const delivered = got.reduce((a, g) => a + g.min * g.count, 0);
  const out = {
    subscribers: S,
    broadcasts: N,
    pad: PAD,
    seconds: +wall.toFixed(1),
    deliveriesPerSec: Math.round(delivered / wall),
    complete: got.every((g) => g.reason === 'all' && g.outOfOrder === 0),
    closed: got.reduce((a, g) => a + g.closed.length, 0) + prod.stats.slowConsumerCloses,
    appPeakMiB: prod.hwmMiB,
    producerSeconds: +(prod.ms / 1000).toFixed(1),
    p50ms: Math.max(...got.map((g) => g.p50)),
    p99ms: Math.max(...got.map((g) => g.p99)),
    maxms: Math.max(...got.map((g) => g.max)),
    flowWaitMs: prod.stats.flowWaitMs,
    flowPausedMs: prod.stats.flowPausedMs,
    lagging: prod.stats.flowLagging,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
} finally {
  for (const s of subs) s.kill();
  app.kill();
}
