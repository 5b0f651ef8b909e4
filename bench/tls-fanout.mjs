// Fan-out with TLS vs without, same run: one vxevents-server per mode (plain, then TLS on
// the same flags), N subscribed `ws` clients on one channel, a closed loop of /api/batch
// requests (B events each; the next once every client got the previous batch). The figure
// is deliveries per CPU-second of the server process (utime+stime from /proc), which the
// client's own speed does not change; the rate is shown too.
//
//   node bench/tls-fanout.mjs [--connections 500] [--batch 50] [--seconds 8] [--rounds 2]
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = process.env.VXEVENTS_SERVER || path.join(ROOT, 'build', 'vxevents-server');
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const N = arg('connections', 500);
const B = arg('batch', 50);
const SECONDS = arg('seconds', 8);
const ROUNDS = arg('rounds', 2);
const KEY = 'bench-key-0123456789';

const dir = mkdtempSync(path.join(os.tmpdir(), 'vx-bench-tls-'));
const sh = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: 'ignore' });
sh('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'key.pem',
  '-out', 'cert.pem', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1');
const ca = readFileSync(path.join(dir, 'cert.pem'));

function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; /* clock ticks: USER_HZ is 100 on Linux */
}

async function run(tls) {
  const args = ['--host', '127.0.0.1', '--port', '0', '--api-key', KEY, '--max-connections', String(N + 100),
    '--compression', '0', '--ping-interval', '0'];
  if (tls) args.push('--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem'));
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on https?:\/\/[^:]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
  const scheme = tls ? 'wss' : 'ws';
  let got = 0;
  let want = 0;
  let wake = null;
  const clients = [];
  for (let i = 0; i < N; i++) {
    const ws = new WebSocket(`${scheme}://localhost:${port}/ws`, { ca, perMessageDeflate: false });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.on('message', (data) => {
      if (data.length > 60 && data.includes('"bench"')) {
        got++;
        if (wake && got >= want) wake();
      } else if (data.includes('subscription_succeeded')) ws.emit('subscribed');
    });
    const sub = new Promise((r) => ws.once('subscribed', r));
    ws.send(JSON.stringify({ type: 'subscribe', channel: 'bench' }));
    await sub;
    clients.push(ws);
  }
  const agent = tls ? new https.Agent({ keepAlive: true, ca }) : new http.Agent({ keepAlive: true });
  const body = JSON.stringify({ batch: Array.from({ length: B }, (_, i) => ({ channel: 'bench', event: 'bench', data: { i, pad: 'x'.repeat(40) } })) });
  const post = () => new Promise((resolve, reject) => {
    const req = (tls ? https : http).request({ host: 'localhost', port, path: '/api/batch', method: 'POST', agent,
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`batch: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
  const round = async () => {
    const t0 = process.hrtime.bigint();
    const c0 = cpuSeconds(proc.pid);
    const g0 = got;
    while (Number(process.hrtime.bigint() - t0) / 1e9 < SECONDS) {
      want = got + N * B;
      const arrived = new Promise((r) => { wake = r; });
      await post();
      if (got < want) await arrived;
      wake = null;
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    return { deliveries: got - g0, secs, cpu: cpuSeconds(proc.pid) - c0 };
  };
  await round(); // warm-up (1/4 of the time would do; a full one keeps the code simple)
  const r = await round();
  for (const ws of clients) ws.terminate();
  agent.destroy();
  proc.kill('SIGTERM');
  await new Promise((resolve) => proc.on('exit', resolve));
  return r;
}

const rows = [];
for (let i = 0; i < ROUNDS; i++) {
  for (const tls of [false, true]) {
    const r = await run(tls);
    rows.push({ mode: tls ? 'tls' : 'plain', ...r });
    console.log(`${tls ? 'tls  ' : 'plain'}  ${N} conns × batch ${B}: ${Math.round(r.deliveries / r.secs)} deliveries/s, ` +
      `server CPU ${r.cpu.toFixed(2)} s in ${r.secs.toFixed(1)} s, ${Math.round(r.deliveries / r.cpu)} deliveries per CPU-second`);
  }
}
const per = (m) => rows.filter((r) => r.mode === m).reduce((a, r) => a + r.deliveries, 0) /
  rows.filter((r) => r.mode === m).reduce((a, r) => a + r.cpu, 0);
console.log(`\nsummary: plain ${Math.round(per('plain'))}, tls ${Math.round(per('tls'))} deliveries per server CPU-second ` +
  `(tls/plain ${(per('tls') / per('plain')).toFixed(2)})`);
rmSync(dir, { recursive: true, force: true });
