// Operations through the Fastify plugin: app.events.metrics() returns the same Prometheus
// text the standalone server serves (parsed with parse-prometheus-text-format), so an app
// exposes it on a route of its own; allowedOrigins refuses other origins' upgrades with 403
// on the app's own port.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import WebSocket from 'ws';
import { connect, startApp } from './helpers.mjs';

function value(families, name, labels = {}) {
  const fam = families.find((f) => f.name === name);
  const want = JSON.stringify(Object.entries(labels).sort());
  const m = fam && fam.metrics.find((x) => JSON.stringify(Object.entries(x.labels || {}).sort()) === want);
  return m ? Number(m.value) : undefined;
}

test('metrics_on_the_apps_own_route_count_connections_and_broadcasts', async () => {
  const ctx = await startApp({}, async (app) => {
    app.get('/metrics', async (request, reply) =>
      reply.type('text/plain; version=0.0.4; charset=utf-8').send(await app.events.metrics()));
  });
  try {
    const clients = [];
    for (let i = 0; i < 3; i++) clients.push(await connect(ctx.wsUrl));
    for (const c of clients) await c.subscribe('ops-room');
    await ctx.app.events.broadcast('ops-room', 'tick', { n: 1 });
    for (const c of clients) await c.waitFor((m) => m.event === 'tick', 'tick');
    const res = await fetch(`${ctx.base}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0.0.4/);
    const f = parsePrometheus(text);
    const ws = value(f, 'vxevents_connections', { transport: 'ws' }) + value(f, 'vxevents_connections', { transport: 'ws_deflate' });
    assert.equal(ws, 3);
    assert.equal(value(f, 'vxevents_subscriptions'), 3);
    assert.equal(value(f, 'vxevents_channels'), 1);
    const fan = f.find((x) => x.name === 'vxevents_broadcast_fanout_seconds');
    assert.equal(fan.type, 'HISTOGRAM');
    assert.equal(Number(fan.metrics[0].count), 1);
    assert.equal(typeof (await ctx.app.events.metrics()), 'string');
    for (const c of clients) await c.close();
  } finally {
    await ctx.app.close();
  }
});

function tryWs(url, origin) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, origin ? { origin } : {});
    const t = setTimeout(() => reject(new Error(`no answer for ${origin}`)), 4000);
    ws.on('open', () => { clearTimeout(t); ws.terminate(); resolve('open'); });
    ws.on('unexpected-response', (req, res) => { clearTimeout(t); req.destroy(); resolve(res.statusCode); });
    ws.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

test('allowed_origins_array_refuses_other_pages_upgrades_with_403', async () => {
  const ctx = await startApp({ allowedOrigins: ['https://app.example.com', '*.example.org'] });
  try {
    assert.equal(await tryWs(ctx.wsUrl, 'https://app.example.com'), 'open');
    assert.equal(await tryWs(ctx.wsUrl, 'https://a.example.org'), 'open');
    assert.equal(await tryWs(ctx.wsUrl, undefined), 'open');
    assert.equal(await tryWs(ctx.wsUrl, 'https://evil-example.org'), 403);
    assert.equal(await tryWs(ctx.wsUrl, 'null'), 403);
  } finally {
    await ctx.app.close();
  }
  const { eventsPlugin } = await import('vxevents');
  assert.throws(() => eventsPlugin({ allowedOrigins: ['https://a.example.com/path'] }), /allowed_origins|allowedOrigins/);
  assert.throws(() => eventsPlugin({ allowedOrigins: [42] }), /allowedOrigins must be an array/);
});
