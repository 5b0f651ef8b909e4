// Broadcasts per second through Redis (issue 13): two vxevents-server instances on one
// redis-server, a producer closed loop of /api/batch requests on A, one subscriber on B; the
// rate is broadcasts received on B per second of wall clock, and the Redis server's CPU per
// broadcast. Modes, interleaved: the channel streams (the PUB script: offset, XADD, PUBLISH),
// the same with --history-size 0 (the script without XADD), and optionally another binary
// (--old PATH: e.g. a build from before the streams, plain PUBLISH).
//
//   node bench/redis-streams.mjs [--broadcasts 20000] [--batch 100] [--rounds 2] [--old PATH]

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startRedis } from '../tests/server/redis.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const N = Number(arg('broadcasts', 20000));
const BATCH = Number(arg('batch', 100));
const ROUNDS = Number(arg('rounds', 2));
const NEW = process.env.VXEVENTS_SERVER || path.join(HERE, '..', 'build', 'vxevents-server');
const OLD = arg('old', null);
const KEY = 'bench-key-0123456789';

function server(bin, redisUrl, extra) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['--host', '127.0.0.1', '--port', '0', '--api-key', KEY, '--redis', redisUrl, ...extra],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ p, port: Number(m[1]) });
    });
    p.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

const cpuMs = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};

async function run(bin, extra) {
  const redis = await startRedis();
  const a = await server(bin, redis.url, extra);
  const b = await server(bin, redis.url, extra);
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${b.port}/ws`);
    let got = 0;
    let done;
    const all = new Promise((r) => { done = r; });
    await new Promise((r) => ws.on('open', r));
    ws.on('message', (d) => {
      const m = JSON.parse(d);
      if (m.type === 'subscription_succeeded') ws.emit('acked');
      if (m.type === 'event' && m.channel === 'bench' && ++got === N) done();
    });
    ws.send(JSON.stringify({ type: 'subscribe', channel: 'bench' }));
    await new Promise((r) => ws.once('acked', r));
    const batch = Array.from({ length: BATCH }, (_, i) => ({ channel: 'bench', event: 'e', data: { i, pad: 'x'.repeat(60) } }));
    const r0 = cpuMs(redis.proc.pid);
    const t0 = performance.now();
    for (let k = 0; k < N; k += BATCH) {
      const res = await fetch(`http://127.0.0.1:${a.port}/api/batch`, {
        method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ batch: batch.slice(0, Math.min(BATCH, N - k)) }),
      });
      if (res.status !== 200) throw new Error(`batch ${res.status} ${await res.text()}`);
    }
    await all;
    const s = (performance.now() - t0) / 1000;
    const redisMs = cpuMs(redis.proc.pid) - r0;
    ws.close();
    return { perS: Math.round(N / s), redisUsPerBroadcast: (redisMs * 1000) / N };
  } finally {
    a.p.kill('SIGTERM');
    b.p.kill('SIGTERM');
    await redis.stop();
  }
}

const modes = [
  ['streams (history 100)', NEW, []],
  ['script, no stream (history 0)', NEW, ['--history-size', '0']],
];
if (OLD) modes.push(['plain PUBLISH (--old)', OLD, []]);
const results = Object.fromEntries(modes.map(([m]) => [m, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, bin, extra] of modes) results[name].push(await run(bin, extra));
}
console.log(`| mode | broadcasts/s (${ROUNDS} runs) | Redis CPU µs per broadcast |`);
console.log('|---|---|---|');
for (const [name] of modes) {
  const rs = results[name];
  console.log(`| ${name} | ${rs.map((x) => x.perS.toLocaleString('en')).join(', ')} | ${rs.map((x) => x.redisUsPerBroadcast.toFixed(1)).join(', ')} |`);
}
