// --log-format json: every line on standard error, the core's and the server's own, is one
// JSON object with level, time (RFC 3339) and message, plus socket_id / channel when the line
// is about them. Text stays the default.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, startServer } from './helpers.mjs';
import { SECRET } from './sign.mjs';

const T = { timeout: 20000 };

test('log_format_json_writes_one_object_per_line_with_fields', T, async () => {
  const srv = await startServer({ args: ['--log-format', 'json', '--log-level', 'info', '--auth-secret', SECRET,
    '--allowed-origins', 'https://app.example.com'] });
  let stderr;
  try {
    const c = await connect(srv);
    c.send({ type: 'subscribe', channel: 'private-orders', auth: `${c.socketId}:${'0'.repeat(64)}` });
    await c.next((m) => m.type === 'subscription_error');
    await fetch(`${srv.url}/events`, { headers: { origin: 'https://evil.example.com' } }).then((r) => r.text());
    c.destroy();
  } finally {
    ({ stderr } = await srv.stop());
  }
  const lines = stderr.split('\n').filter(Boolean);
  assert.ok(lines.length >= 3, stderr);
  const recs = lines.map((l) => { try { return JSON.parse(l); } catch { assert.fail(`not JSON: ${l}`); } });
  for (const r of recs) {
    assert.ok(['error', 'warn', 'info', 'debug'].includes(r.level), JSON.stringify(r));
    assert.match(r.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(!Number.isNaN(Date.parse(r.time)));
    assert.equal(typeof r.message, 'string');
  }
  const refused = recs.find((r) => /subscription refused/.test(r.message));
  assert.ok(refused, stderr);
  assert.match(refused.socket_id, /^[0-9a-f]{32}$/);
  assert.equal(refused.channel, 'private-orders');
  assert.ok(recs.some((r) => /origin https:\/\/evil\.example\.com/.test(r.message)), stderr);
  assert.ok(recs.some((r) => r.level === 'info' && /SIGTERM received/.test(r.message)), 'the server\'s own line too');
});

test('log_format_text_is_the_default_and_bad_values_stop_startup', T, async () => {
  const srv = await startServer({ args: ['--log-level', 'info'] });
  const { stderr } = await srv.stop();
  assert.match(stderr, /^vxevents-server: info: SIGTERM received, closing connections$/m);
  await assert.rejects(startServer({ args: ['--log-format', 'yaml'] }), /--log-format must be text or json, not 'yaml'/);
});
