// Redis scaling through the binding: two Fastify apps sharing one redis-server deliver each
// other's broadcasts and answer cluster-wide queries; the seed's getEvents({redis}) job
// script publishes to clients of an app. Skipped when redis-server is not installed.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startRedis } from '../../server/redis.mjs';
import { connect, sleep, startApp } from './helpers.mjs';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

async function eventually(fn, want, what, ms = 5000) {
  const end = Date.now() + ms;
  let got;
  for (;;) {
    got = await fn();
    if (JSON.stringify(got) === JSON.stringify(want)) return got;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: got ${JSON.stringify(got)}`);
    await sleep(50);
  }
}

// redis-server is a required test dependency: without it this fails rather than skips.
describe('redis between two apps', () => {
  let redis;
  let a;
  let b;
  before(async () => {
    redis = await startRedis();
    a = await startApp({ redis: redis.url, redisPrefix: 'bind' });
    b = await startApp({ redis: redis.url, redisPrefix: 'bind' });
  });
  after(async () => {
    await Promise.all([a && a.app.close(), b && b.app.close()]);
    if (redis) await redis.stop();
  });

  test('broadcast_on_one_app_reaches_clients_of_the_other', async () => {
    const c = await connect(b.wsUrl);
    assert.equal((await c.subscribe('orders')).type, 'subscription_succeeded');
    await a.app.events.broadcast('orders', 'order.created', { orderId: 9 });
    const got = await c.waitFor((m) => m.event === 'order.created', 'order.created from the other app', 5000);
    assert.deepEqual(got.data, { orderId: 9 });
    assert.equal(await eventually(() => a.app.events.subscriberCount('orders'), 1, 'cluster-wide count'), 1);
    await eventually(async () => (await a.app.events.channels()).includes('orders'), true, 'cluster-wide channels');
    await c.close();
  });

  test('getEvents_job_script_publishes_to_app_clients', async () => {
    const c = await connect(b.wsUrl);
    await c.subscribe('jobs');
    const out = await new Promise((resolve, reject) => {
      execFile(
        process.execPath,
        [path.join(FIXTURES, 'get_events.mjs')],
        { timeout: 15000, env: { ...process.env, REDIS_URL: redis.url, VX_REDIS_PREFIX: 'bind' } },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      );
    });
    const got = await c.waitFor((m) => m.event === 'job.completed', 'job.completed', 5000);
    assert.deepEqual(got.data, { jobId: '123' });
    assert.equal(JSON.parse(out.trim().split('\n').pop()).same, true);
    await c.close();
  });
});
