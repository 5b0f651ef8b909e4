// A fleet of real `ws` subscribers for the flow-control tests (tests/flow/*.test.mjs and the
// burst bench): opens COUNT connections to URL, subscribes each to CHANNEL, prints
// {"ready":true} once every subscription succeeded, then checks that every connection
// receives events with data.i = 0, 1, 2, ... EXPECT-1 in order. Prints one JSON line with
// the outcome when all have EXPECT events, when one is closed, or on SIGTERM.
//
//   node subscribers.mjs URL CHANNEL COUNT EXPECT
//
// Messages are checked without JSON.parse (the i is found in the raw frame text) so that a
// 100-million-delivery run is bounded by the server, not by this process. When events carry
// "t" (Date.now() at the broadcast call), the outcome has latency percentiles of a sample
// (every 16th event of every connection).
import WebSocket from 'ws';

const [url, channel, count, expect] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
const clients = [];
let ready = 0;
let done = 0;
let finished = false;
const started = Date.now();
let firstAt = 0;

function report(reason) {
  if (finished) return;
  finished = true;
  const got = clients.map((c) => c.next);
  const out = {
    reason,
    count,
    expect,
    complete: got.filter((n) => n === expect).length,
    min: Math.min(...got),
    max: Math.max(...got),
    outOfOrder: clients.reduce((a, c) => a + c.bad, 0),
    closed: clients.filter((c) => c.closeCode !== null).map((c) => c.closeCode),
    ms: firstAt ? Date.now() - firstAt : 0,
    ...latency(),
    rssMiB: Math.round(process.memoryUsage().rss / 1048576),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  for (const c of clients) c.ws.terminate();
  setTimeout(() => process.exit(0), 50);
}

const EVENT = Buffer.from('"type":"event"');
const I = Buffer.from('"i":');
const T = Buffer.from('"t":');
const lat = [];

function latency() {
  if (!lat.length) return {};
  lat.sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
  return { p50: p(0.5), p99: p(0.99), max: lat[lat.length - 1] };
}

function numberAt(buf, at) {
  let n = 0;
  for (let p = at; p < buf.length; p++) {
    const d = buf[p] - 48;
    if (d < 0 || d > 9) break;
    n = n * 10 + d;
  }
  return n;
}

for (let k = 0; k < count; k++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const c = { ws, next: 0, bad: 0, closeCode: null, subscribed: false };
  clients.push(c);
  ws.on('message', (buf) => {
    if (!c.subscribed) {
      const text = buf.toString();
      if (text.includes('"connected"')) ws.send(JSON.stringify({ type: 'subscribe', channel }));
      else if (text.includes('subscription_succeeded')) {
        c.subscribed = true;
        if (++ready === count) process.stdout.write(JSON.stringify({ ready: true, ms: Date.now() - started }) + '\n');
      }
      return;
    }
    if (buf.indexOf(EVENT) < 0) return;
    if (!firstAt) firstAt = Date.now();
    const n = numberAt(buf, buf.indexOf(I) + 4);
    if ((n & 15) === 0) {
      const t = buf.indexOf(T);
      if (t >= 0) lat.push(Date.now() - numberAt(buf, t + 4));
    }
    if (n !== c.next) c.bad++;
    c.next = n + 1;
    if (c.next === expect && ++done === count) report('all');
  });
  ws.on('close', (code) => {
    c.closeCode = code;
    if (!finished) report(`closed ${code}`);
  });
  ws.on('error', () => {});
}
process.on('SIGTERM', () => report('SIGTERM'));
