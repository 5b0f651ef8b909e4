// SIGTERM and SIGINT: every client is closed with 1001, the process exits 0.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, connectRaw, killServerGroup, ms, startServer, withTimeout } from './helpers.mjs';

const T = { timeout: 20000 };

async function shutdownWith(signal) {
  const srv = await startServer();
  const clients = [];
  try {
    for (let i = 0; i < 5; i++) {
      const c = await connect(srv, { label: `ws client ${i}` });
      if (i % 2) await c.subscribe(`room-${i}`);
      clients.push(c);
    }
    const raw = await connectRaw(srv, { label: 'raw client' });
    await raw.subscribe('room-raw');

    const stopped = srv.stop({ signal, timeoutMs: ms(5000) });
    stopped.catch(() => {}); // awaited below; do not let it go unhandled meanwhile
    const closes = await withTimeout(Promise.all(clients.map((c) => c.closed)), ms(5000), 'every ws client to be closed');
    for (const [i, info] of closes.entries()) {
      assert.equal(info.code, 1001, `ws client ${i} closed with ${JSON.stringify(info)}`);
    }
    await raw.waitEnd(ms(5000));
    assert.ok(raw.closeFrame, 'the raw client got no close frame');
    assert.equal(raw.closeFrame.code, 1001);
    const result = await stopped;
    assert.equal(result.code, 0);
    assert.equal(result.signal, null);
  } finally {
    for (const c of clients) c.destroy();
    if (srv.exitInfo === null) {
      killServerGroup(srv);
      await srv.exited;
    }
  }
}

test('sigterm_closes_every_client_with_1001_and_exits_0', T, async () => {
  await shutdownWith('SIGTERM');
});

test('sigint_closes_every_client_with_1001_and_exits_0', T, async () => {
  await shutdownWith('SIGINT');
});

test('sigterm_with_no_clients_exits_0_promptly', T, async () => {
  const srv = await startServer();
  const started = Date.now();
  const result = await srv.stop({ timeoutMs: ms(3000) });
  assert.equal(result.code, 0);
  assert.ok(Date.now() - started < ms(3000));
});
