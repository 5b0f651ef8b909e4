// examples/deploy: the systemd unit passes `systemd-analyze verify` (with ExecStart pointed
// at the binary under test), and the Dockerfile keeps its promises (Debian slim, a non-root
// user, a health check on /health).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, SERVER_BIN } from './helpers.mjs';

const DEPLOY = path.join(REPO_ROOT, 'examples', 'deploy');

test('systemd_unit_passes_systemd_analyze_verify', () => {
  const which = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' });
  assert.equal(which.status, 0,
    'systemd-analyze is not installed, so the unit cannot be verified: apt-get install -y systemd (it is in .ci/run)');
  const unit = fs.readFileSync(path.join(DEPLOY, 'vxevents.service'), 'utf8');
  for (const opt of ['DynamicUser=yes', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'LimitNOFILE=']) {
    assert.ok(unit.includes(opt), `the unit sets ${opt}`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-unit-'));
  try {
    const file = path.join(dir, 'vxevents.service');
    fs.writeFileSync(file, unit.replaceAll('/usr/local/bin/vxevents-server', path.resolve(SERVER_BIN)));
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8', timeout: 30000 });
    assert.equal(r.status, 0, `systemd-analyze verify failed:\n${r.stdout}${r.stderr}`);
    assert.equal(r.stderr.split('\n').filter((l) => l.includes('vxevents.service')).join('\n'), '',
      'no warning about the unit');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dockerfile_is_debian_slim_non_root_with_a_health_check_on_health', () => {
  const df = fs.readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8');
  const froms = [...df.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
  assert.ok(froms.length >= 1 && froms.every((f) => /^debian:[a-z]+-slim$/.test(f)), `FROM ${froms}`);
  const users = [...df.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
  assert.ok(users.length && !/^(root|0)(:|$)/.test(users.at(-1)), `last USER ${users.at(-1)}`);
  assert.match(df, /^HEALTHCHECK .*\n?.*\/health/m);
  assert.match(df, /ENTRYPOINT \["\/usr\/local\/bin\/vxevents-server"\]/);
  // Both are referenced from the README.
  const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  assert.match(readme, /examples\/deploy\/Dockerfile/);
  assert.match(readme, /examples\/deploy\/vxevents\.service/);
});
