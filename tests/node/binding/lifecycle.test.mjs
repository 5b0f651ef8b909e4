// Shutdown and standalone use: app.close() closes clients with 1001 and the process exits by
// itself; getEvents()/closeEvents() in scripts; a dedicated port with `listen`.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { eventsPlugin } from 'vxevents';
import { connect } from './helpers.mjs';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** Run a fixture; it must exit with 0 on its own within `ms`. Returns its last JSON line. */
function runFixture(name, ms = 10000) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(FIXTURES, name)], { timeout: ms }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${name} did not exit cleanly (${err.signal || err.code}):\n${stdout}\n${stderr}`));
        return;
      }
      const lines = stdout.trim().split('\n');
      resolve(JSON.parse(lines[lines.length - 1]));
    });
  });
}

test('app_close_sends_1001_promptly_and_process_exits_by_itself', async () => {
  const out = await runFixture('close_app.mjs');
  assert.equal(out.code, 1001);
  assert.ok(out.ms < 2000, `app.close() took ${out.ms} ms`);
  assert.equal(out.after, 'ECLOSED');
});

test('getEvents_closeEvents_script_exits_by_itself', async () => {
  const out = await runFixture('get_events.mjs');
  assert.deepEqual(out, { same: true, count: 0 });
});

test('getEvents_without_closeEvents_still_exits_by_itself', async () => {
  const out = await runFixture('forgot_close.cjs');
  assert.ok(out.port > 0);
  assert.deepEqual(out.channels, []);
});

test('listen_option_serves_on_a_dedicated_port', async () => {
  const app = Fastify();
  app.register(eventsPlugin({ path: '/ws', listen: { host: '127.0.0.1', port: 0 } }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const port = app.events.port;
    assert.ok(port > 0 && port !== app.server.address().port);
    const c = await connect(`ws://127.0.0.1:${port}/ws`);
    await c.subscribe('orders');
    await app.events.broadcast('orders', 'order.created', { orderId: 1 });
    const got = await c.waitFor((m) => m.event === 'order.created', 'order.created');
    assert.deepEqual(got.data, { orderId: 1 });
    const closing = c.closed;
    await app.close();
    assert.equal(await closing, 1001);
  } finally {
    await app.close();
  }
});

test('close_is_idempotent_and_later_calls_reject_with_ECLOSED', async () => {
  const app = Fastify();
  app.register(eventsPlugin());
  await app.ready();
  const events = app.events;
  await Promise.all([events.close(), events.close()]);
  await app.close();
  assert.equal(events.closed, true);
  await assert.rejects(events.broadcast('a', 'b', {}), (err) => err.code === 'ECLOSED');
  await assert.rejects(events.subscriberCount('a'), (err) => err.code === 'ECLOSED');
});

test('repeated_open_close_leaks_no_fds_or_threads', async () => {
  const { readdirSync } = await import('node:fs');
  const fds = () => readdirSync('/proc/self/fd').length;
  const threads = () => readdirSync('/proc/self/task').length;
  const cycle = async () => {
    const app = Fastify();
    app.register(eventsPlugin({ path: '/ws' }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const c = await connect(`ws://127.0.0.1:${app.server.address().port}/ws`);
    await c.subscribe('orders');
    await app.events.broadcast('orders', 'x', { i: 1 });
    await c.waitFor((m) => m.event === 'x', 'x');
    await app.close();
    await c.closed;
  };
  await cycle();
  const [f0, t0] = [fds(), threads()];
  for (let i = 0; i < 20; i++) await cycle();
  assert.ok(fds() <= f0 + 2, `fds grew from ${f0} to ${fds()}`);
  assert.equal(threads(), t0);
});
