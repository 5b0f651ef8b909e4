// Soak: connection churn against a running vxevents-server for a while, checking that the
// server's memory settles and that it keeps serving. Clients connect, subscribe to random
// public/private/presence channels (signing tokens with the shared secret), send client
// events, get broadcasts through the HTTP API, and disconnect — some cleanly, some by
// dropping the socket. Bounded in time and in connections; loopback only.
//
//   node bench/soak.mjs --port P --api-key K --secret S --pid PID [--seconds 120] [--clients 300]
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const port = Number(arg('port'));
const apiKey = arg('api-key');
const secret = arg('secret');
const pid = Number(arg('pid'));
const seconds = Number(arg('seconds', 120));
const maxClients = Number(arg('clients', 300));
if (!port || !apiKey || !secret || !pid) {
  console.error('usage: node bench/soak.mjs --port P --api-key K --secret S --pid PID [--seconds N] [--clients N]');
  process.exit(2);
}

const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const sign = (id, ch, cd) =>
  `${id}:${createHmac('sha256', secret).update(cd === undefined ? `${id}:${ch}` : `${id}:${ch}:${cd}`).digest('hex')}`;
const pick = (a) => a[Math.floor(Math.random() * a.length)];
const channels = Array.from({ length: 50 }, (_, i) => pick(['', 'private-', 'presence-']) + `soak.${i}`);

let live = 0;
let opened = 0;
let received = 0;
let errors = 0;
const deadline = Date.now() + seconds * 1000;

function client() {
  live++;
  opened++;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  let id = null;
  const lifetime = 200 + Math.random() * 3000;
  ws.on('message', (raw) => {
    received++;
    const m = JSON.parse(raw);
    if (m.type === 'error') errors++;
    if (m.event !== 'connected') return;
    id = m.data.socketId;
    for (let k = 0; k < 1 + Math.floor(Math.random() * 4); k++) {
      const ch = pick(channels);
      if (ch.startsWith('presence-')) {
        const cd = JSON.stringify({ id: `u${Math.floor(Math.random() * 40)}`, info: { n: 1 } });
        ws.send(JSON.stringify({ type: 'subscribe', channel: ch, auth: sign(id, ch, cd), channel_data: cd }));
      } else if (ch.startsWith('private-')) {
        ws.send(JSON.stringify({ type: 'subscribe', channel: ch, auth: sign(id, ch) }));
        ws.send(JSON.stringify({ type: 'message', channel: ch, event: 'typing', data: { x: 1 } }));
      } else {
        ws.send(JSON.stringify({ type: 'subscribe', channel: ch }));
      }
    }
    setTimeout(() => (Math.random() < 0.3 ? ws.terminate() : ws.close()), lifetime);
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    live--;
    if (Date.now() < deadline) setTimeout(client, Math.random() * 50);
  });
}

async function publishLoop() {
  while (Date.now() < deadline) {
    const batch = Array.from({ length: 20 }, () => ({ channel: pick(channels), event: 'tick', data: { t: Date.now() } }));
    const r = await fetch(`http://127.0.0.1:${port}/api/batch`, {
      method: 'POST', headers: { authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ batch }),
    });
    if (r.status !== 200) throw new Error(`publish answered ${r.status}`);
    await new Promise((r2) => setTimeout(r2, 20));
  }
}

const samples = [];
for (let i = 0; i < maxClients; i++) client();
const sampler = setInterval(() => samples.push(rss()), 1000);
await publishLoop();
clearInterval(sampler);
while (live > 0) await new Promise((r) => setTimeout(r, 100));
const health = await (await fetch(`http://127.0.0.1:${port}/health`)).json();
const third = Math.max(1, Math.floor(samples.length / 3));
const mid = Math.max(...samples.slice(third, 2 * third));
const end = Math.max(...samples.slice(2 * third));
console.log(JSON.stringify({ seconds, connections_opened: opened, messages_received: received, protocol_errors: errors,
  rss_mid_max_mib: +(mid / 1048576).toFixed(1), rss_end_max_mib: +(end / 1048576).toFixed(1), health }));
// Memory must settle: the last third may not exceed the middle third by more than 10 %
// (+2 MiB of allocator noise), and everything must be gone once the clients are.
const ok = end <= mid * 1.1 + 2 * 1048576 && health.connections === 0 && health.channels === 0 && errors === 0;
console.log(ok ? 'soak: ok' : 'soak: FAILED');
process.exit(ok ? 0 : 1);
