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

// Flags, environment variables and checks all come from the core's options table: a bad
// value is refused before start-up with a message naming the flag and what it allows.
test('bad_option_values_from_flags_or_environment_name_the_option', T, () => {
  const cases = [
    [['--max-payload', '5'], /--max-payload must be 64 to 1073741824, not '5'/],
    [['--max-send-queue', 'lots'], /--max-send-queue must be a whole number/],
    [['--compression', 'maybe'], /--compression must be 1 \(on\) or 0 \(off\)/],
    [['--log-level', 'loud'], /--log-level must be error, warn, info or debug/],
    [['--auth-secret', 'short'], /--auth-secret must be at least 32 characters \(got 5\)/],
    [['--redis', 'http://x'], /--redis must look like redis:\/\//],
    [['--path', 'ws'], /--path must start with '\/'/],
    [['--sse-path', '/ws'], /sse_path must differ from path/],
    [['--redis-prefix', 'p'.repeat(61)], /--redis-prefix must be 1 to 60 characters/],
    [['--port', '70000'], /--port must be a number from 0 to 65535/],
  ];
  for (const [args, want] of cases) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want, args.join(' '));
  }
  // A Redis URL may carry a password: a refused one is never repeated.
  const secret = run(['--redis', 'http://user:hunter2-secret@x']);
  assert.equal(secret.status, 2);
  assert.match(secret.stderr, /--redis must look like redis:\/\//);
  assert.ok(!secret.stderr.includes('hunter2'), secret.stderr);
  const env = spawnSync(SERVER_BIN, [], { encoding: 'utf8', timeout: ms(5000), env: { ...process.env, VX_MAX_CONNECTIONS: '0' } });
  assert.equal(env.status, 2, env.stderr);
  assert.match(env.stderr, /--max-connections must be 1 to 10000000, not '0'/);
});

test('help_lists_every_flag_with_its_environment_variable_and_default', T, () => {
  const r = run(['--help']);
  assert.equal(r.status, 0, r.stderr);
  for (const [flag, env] of [['--max-member-size', 'VX_MAX_MEMBER_SIZE'], ['--max-presence-members', 'VX_MAX_PRESENCE_MEMBERS'],
    ['--redis-backlog-max', 'VX_REDIS_BACKLOG_MAX'], ['--compression', 'VX_COMPRESSION'], ['--history-size', 'VX_HISTORY_SIZE'], ['--history-ttl', 'VX_HISTORY_TTL'], ['--history-max-bytes', 'VX_HISTORY_MAX_BYTES'],
    ['--log-level', 'VX_LOG_LEVEL'], ['--redis', 'VX_REDIS_URL']]) {
    assert.ok(r.stdout.includes(flag), `--help does not mention ${flag}`);
    assert.ok(r.stdout.includes(env), `--help does not mention ${env}`);
  }
  assert.match(r.stdout, /VX_MAX_PAYLOAD; default 1048576/);
});
