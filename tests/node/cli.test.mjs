// Command-line behaviour that needs no running server.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { SANITIZER_RE, SERVER_BIN, ms, startServer } from './helpers.mjs';

const T = { timeout: 20000 };

function run(args) {
  const r = spawnSync(SERVER_BIN, args, { encoding: 'utf8', timeout: ms(5000) });
  assert.ok(!SANITIZER_RE.test(r.stderr || ''), `sanitizer report: ${r.stderr}`);
  return r;
}

test('version_flag_prints_a_version_and_exits_0', T, () => {
  const r = run(['--version']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\d+\.\d+\.\d+/);
});

test('help_flag_lists_the_options_and_exits_0', T, () => {
  const r = run(['--help']);
  assert.equal(r.status, 0, r.stderr);
  for (const flag of ['--host', '--port', '--path', '--api-key', '--ping-interval', '--max-payload', '--max-send-queue', '--max-connections', '--max-channels-per-connection']) {
    assert.ok(r.stdout.includes(flag), `--help does not mention ${flag}`);
  }
});

test('ready_line_reports_the_real_ephemeral_port', T, async () => {
  const srv = await startServer();
  try {
    assert.ok(srv.port > 0 && srv.port < 65536);
    assert.equal(srv.host, '127.0.0.1');
    assert.equal(srv.wsPath, '/ws');
    const res = await fetch(`${srv.url}/health`);
    assert.equal(res.status, 200);
  } finally {
    await srv.stop();
  }
});

test('port_in_use_fails_with_non_zero_exit', T, async () => {
  const first = await startServer();
  try {
    const r = spawnSync(SERVER_BIN, ['--host', '127.0.0.1', '--port', String(first.port)], { encoding: 'utf8', timeout: ms(5000) });
    assert.equal(r.error, undefined, 'the second server must give up, not hang');
    assert.notEqual(r.status, 0);
    assert.ok(!SANITIZER_RE.test(r.stderr || ''), r.stderr);
  } finally {
    await first.stop();
  }
});
