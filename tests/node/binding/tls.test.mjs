// listen: { tls } in the Node binding: a Fastify app whose events are served by the core on
// a dedicated TLS port (PEM text or file paths), reached with `ws` (its ca option) and over
// https with fetch-free node:https; rediss:// to a TLS-only redis-server. Certificates are made
// for the run with the openssl CLI (tests/server/certs.mjs).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { after, before, test } from 'node:test';
import Fastify from 'fastify';
import { eventsPlugin, getEvents, closeEvents } from 'vxevents';
import { certDir, makeCa, makeCert, pem } from '../../server/certs.mjs';
import { startRedis } from '../../server/redis.mjs';
import { connect } from './helpers.mjs';

let d;
let ca;
let srv;
before(() => {
  d = certDir();
  ca = makeCa(d);
  srv = makeCert(d, ca, 'srv');
});
after(() => d.rm());

function get(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: readFileSync(ca.cert), timeout: 5000, ...opts }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

test('listen.tls with PEM text (cert, key as a Buffer): wss:// and https on the dedicated port', async () => {
  const app = Fastify();
  app.register(eventsPlugin({ path: '/ws', listen: { port: 0, tls: { cert: pem(srv.cert), key: readFileSync(srv.key) } } }));
  await app.ready();
  try {
    const port = app.events.port;
    const c = await connect(`wss://localhost:${port}/ws`, 3000, { ca: readFileSync(ca.cert) });
    const ch = `n-${Date.now()}`;
    assert.equal((await c.subscribe(ch)).type, 'subscription_succeeded');
    await app.events.broadcast(ch, 'hello', { over: 'wss' });
    const m = await c.waitFor((x) => x.event === 'hello', 'the broadcast over wss');
    assert.deepEqual(m.data, { over: 'wss' });
    const h = await get(`https://localhost:${port}/health`);
    assert.equal(h.status, 200);
    assert.equal(JSON.parse(h.body).connections, 1);
    await c.close();
  } finally {
    await app.close();
  }
});

test('listen.tls with file paths and ca: clients need a certificate; getEvents too', async () => {
  const client = makeCert(d, ca, 'client', { client: true });
  const events = await getEvents({ listen: { port: 0, tls: { cert: srv.cert, key: srv.key, ca: ca.cert } } });
  try {
    const url = `https://localhost:${events.port}/health`;
    await assert.rejects(get(url));
    const ok = await get(url, { cert: readFileSync(client.cert), key: readFileSync(client.key) });
    assert.equal(ok.status, 200);
    assert.equal((await events.stats()).tlsErrors, 1);
  } finally {
    await closeEvents(events);
  }
});

test('rediss: two Node instances share a TLS-only redis-server', { timeout: 30000 }, async () => {
  const redisCert = makeCert(d, ca, 'redis');
  const redis = await startRedis(0, { tls: { cert: redisCert.cert, key: redisCert.key, ca: ca.cert } });
  const apps = [];
  try {
    for (let i = 0; i < 2; i++) {
      const app = Fastify();
      app.register(eventsPlugin({ path: '/ws', redis: redis.url, redisTlsCa: ca.cert }));
      await app.listen({ host: '127.0.0.1', port: 0 });
      apps.push(app);
    }
    const c = await connect(`ws://127.0.0.1:${apps[1].server.address().port}/ws`);
    const ch = `r-${Date.now()}`;
    assert.equal((await c.subscribe(ch)).type, 'subscription_succeeded');
    await apps[0].events.broadcast(ch, 'across', 1);
    await c.waitFor((x) => x.event === 'across', 'the broadcast through rediss', 5000);
    await c.close();
  } finally {
    for (const app of apps) await app.close();
    await redis.stop();
  }
});
