// The README's auth-flow example runs: the C host with its authorizer, and the client
// that fetches /ws/auth and subscribes to a private and a presence channel.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT, SERVER_BIN, plain } from './helpers.mjs';

const EXAMPLE_BIN = path.join(path.dirname(SERVER_BIN), 'vxevents-example-auth');

test('auth_flow_example_subscribes_private_and_presence', { timeout: 20000 }, async () => {
  const host = spawn(EXAMPLE_BIN, ['0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve, reject) => {
      let out = '';
      host.stdout.on('data', (d) => {
        out += d;
        const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
        if (m) resolve(Number(m[1]));
      });
      host.on('exit', (code) => reject(new Error(`example exited ${code}`)));
    });
    const { stdout } = await promisify(execFile)(
      process.execPath, [path.join(REPO_ROOT, 'examples/auth-client.mjs'), `http://127.0.0.1:${port}`, '7:Grace'],
      { timeout: 10000 },
    );
    // Without the channel-stream fields (offset, epoch: DESIGN §12), which this is not about.
    const lines = stdout.trim().split('\n').map((l) => { try { return JSON.stringify(plain(JSON.parse(l))); } catch { return l; } });
    assert.ok(lines.includes('{"type":"subscription_succeeded","channel":"private-user.7"}'), stdout);
    assert.ok(lines.includes('{"type":"subscription_succeeded","channel":"presence-lobby","data":{"members":[{"id":"7","info":{"name":"Grace"}}]}}'), stdout);
  } finally {
    host.kill('SIGTERM');
  }
});
