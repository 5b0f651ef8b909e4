// rediss://: instances sharing a real redis-server that listens with TLS only (its
// --tls-port), with certificates made for the run: broadcasts and presence across
// instances, the CA check and the host-name check, client certificates for
// tls-auth-clients, and a Redis restart on the same port.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { certDir, makeCa, makeCert } from './certs.mjs';
import { connect, isEvent, ms, nonce, publish, startServer, waitFor, withTimeout } from './helpers.mjs';
import { startRedis } from './redis.mjs';

const T = { timeout: 60000 };
let d;
let ca;
let redisCert;
let client;
before(() => {
  d = certDir();
  ca = makeCa(d);
  redisCert = makeCert(d, ca, 'redis');
  client = makeCert(d, ca, 'vx-client', { client: true });
});
after(() => d.rm());

const redisTls = (extra = {}) => ({ tls: { cert: redisCert.cert, key: redisCert.key, ca: ca.cert, ...extra } });

async function stopAll(servers, redis) {
  const results = await Promise.allSettled(servers.map((s) => s.stop()));
  if (redis) await redis.stop();
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

function waitStderr(server, re, timeoutMs = ms(10000)) {
  let onData;
  return withTimeout(new Promise((resolve) => {
    onData = () => {
      if (re.test(server.stderr())) resolve();
    };
    server.proc.stderr.on('data', onData);
    onData();
  }), timeoutMs, `${re} in the server's stderr`).finally(() => server.proc.stderr.off('data', onData));
}

test('rediss: a broadcast on one instance reaches subscribers on the other, through a TLS-only Redis with client certificates', T, async () => {
  const redis = await startRedis(0, redisTls({ authClients: 'yes', clientCert: client.cert, clientKey: client.key }));
  assert.match(redis.url, /^rediss:\/\/localhost:/);
  const args = ['--redis', redis.url, '--redis-tls-ca', ca.cert, '--redis-tls-cert', client.cert,
    '--redis-tls-key', client.key, '--log-level', 'info'];
  const servers = [await startServer({ args }), await startServer({ args })];
  try {
    await Promise.all(servers.map((s) => waitStderr(s, /redis: TLS to localhost established \(TLSv1\.3\)/)));
    const ch = `orders.${nonce()}`;
    const a = await connect(servers[0]);
    const b = await connect(servers[1]);
    await a.subscribe(ch);
    await b.subscribe(ch);
    for (let i = 0; i < 2; i++) {
      await publish(servers[i], { channel: ch, event: 'created', data: { from: i } });
      await a.next(isEvent(ch, 'created', { from: i }));
      await b.next(isEvent(ch, 'created', { from: i }));
    }
    // A broadcast bigger than one TLS record, and many at once (pipelined PUBLISHes).
    const big = 'y'.repeat(100000);
    await publish(servers[0], { channel: ch, event: 'big', data: big });
    await b.next(isEvent(ch, 'big', big), ms(5000));
    await Promise.all(Array.from({ length: 200 }, (_, i) => publish(servers[1], { channel: ch, event: 'n', data: i })));
    for (let i = 0; i < 200; i++) await a.next(isEvent(ch, 'n', i), ms(5000));

    // Redis goes away and comes back on the same port: the instances reconnect over TLS.
    const port = redis.port;
    await redis.stop();
    const again = await startRedis(port, redisTls({ authClients: 'yes', clientCert: client.cert, clientKey: client.key }));
    try {
      await waitFor(async () => {
        await publish(servers[0], { channel: ch, event: 'back', data: 1 });
        return b.next(isEvent(ch, 'back', 1), 300).then(() => true, () => false);
      }, (ok) => ok, ms(15000), 'a broadcast across instances after Redis restarted');
    } finally {
      await stopAll(servers, again);
    }
  } catch (err) {
    await stopAll(servers, redis).catch(() => {});
    throw err;
  }
});

test('rediss: a Redis certificate from an unknown CA, or for another name, is refused and said so', T, async () => {
  const redis = await startRedis(0, redisTls());
  const other = makeCa(d, 'other', 'another CA');
  const wrongName = makeCert(d, ca, 'elsewhere', { names: 'DNS:elsewhere.example' });
  const misnamed = await startRedis(0, { tls: { cert: wrongName.cert, key: wrongName.key, ca: ca.cert } });
  const servers = [];
  const start = async (url, more) => {
    const s = await startServer({ args: ['--redis', url, '--log-level', 'info', ...more] });
    servers.push(s);
    return s;
  };
  try {
    const s1 = await start(redis.url, ['--redis-tls-ca', other.cert]);
    await waitStderr(s1, /redis: TLS to localhost: handshake failed: certificate verification: (unable to get local issuer certificate|self-signed certificate in certificate chain)/);
    const s2 = await start(misnamed.url, ['--redis-tls-ca', ca.cert]);
    await waitStderr(s2, /redis: TLS to localhost: handshake failed: certificate verification: hostname mismatch/);
    // An IP address in the URL is checked against the certificate's IP names.
    const s3 = await start(redis.url.replace('localhost', '127.0.0.1'), ['--redis-tls-ca', ca.cert]);
    await waitStderr(s3, /redis: TLS to 127\.0\.0\.1 established/);
    // With verification off (for tests only) the unknown CA is accepted.
    const s4 = await start(redis.url, ['--redis-tls-ca', other.cert, '--redis-tls-verify', '0']);
    await waitStderr(s4, /redis: TLS to localhost established/);
    const ch = `v.${nonce()}`;
    const c = await connect(s3);
    await c.subscribe(ch);
    await publish(s4, { channel: ch, event: 'e', data: 1 });
    await c.next(isEvent(ch, 'e', 1), ms(5000));
  } finally {
    await misnamed.stop();
    await stopAll(servers, redis);
  }
});
