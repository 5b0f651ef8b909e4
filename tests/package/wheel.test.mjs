// The Python wheel as a user gets it: scripts/build-wheel.sh (static core and dependencies,
// auditwheel's manylinux tag), installed with --no-index into a fresh venv, proven
// self-contained (auditwheel show, ldd of the extension), running examples/worker.py with a
// real WebSocket client receiving its progress, and its typed options checked with mypy.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { ms, openWs, withTimeout } from '../server/helpers.mjs';
import { REPO_ROOT, run, workDir } from './lib.mjs';

const PYTHON = process.env.PYTHON || 'python3';
let work;
let wheel;
let venv;
let tools;

describe('the Python wheel', () => {
  before(() => {
    work = workDir('wheel');
    wheel = run('bash', [path.join(REPO_ROOT, 'scripts', 'build-wheel.sh'), path.join(work, 'dist')],
      { timeout: 600_000 }).stdout.trim().split('\n').pop();
    tools = path.join(REPO_ROOT, 'build', 'wheel-tools', 'bin');
    venv = path.join(work, 'venv');
    run(PYTHON, ['-m', 'venv', venv]);
    run(path.join(venv, 'bin', 'python'), ['-m', 'pip', 'install', '-q', '--disable-pip-version-check',
      '--no-index', wheel]);
  });

  test('is tagged manylinux and auditwheel finds no external shared library', () => {
    assert.match(path.basename(wheel), /^vxevents-[\d.]+-cp\d+-cp\d+-manylinux_2_\d+_x86_64\.whl$/);
    const show = run(path.join(tools, 'auditwheel'), ['show', wheel]).stdout.replace(/\s+/g, ' ');
    assert.match(show, /is consistent with the following platform tag: "manylinux_2_\d+_x86_64"/, show);
    assert.doesNotMatch(show, /external shared librar(y|ies)\b(?! in)/i, show);
    const listing = run('unzip', ['-l', wheel]).stdout;
    assert.doesNotMatch(listing, /\.libs\//, 'nothing bundled: the extension is linked statically');
    assert.match(listing, /LICENSE/);
  });

  test('the installed extension needs nothing but the C library', () => {
    const site = run(path.join(venv, 'bin', 'python'), ['-c',
      'import vxevents._core as c; print(c.__file__)'], { cwd: work }).stdout.trim();
    const ldd = run('ldd', [site]).stdout;
    const libs = [...ldd.matchAll(/^\s*(\S+\.so[.\d]*)/gm)].map((m) => m[1]);
    const foreign = libs.filter((l) => !/^(linux-vdso|libc|libm|libdl|libpthread|librt|ld-linux)[-.\w]*$/.test(path.basename(l)));
    assert.deepEqual(foreign, [], ldd);
  });

  test('examples/worker.py runs from the installed wheel and a client receives its job', async () => {
    const child = spawn(path.join(venv, 'bin', 'python'),
      [path.join(REPO_ROOT, 'examples', 'worker.py'), '--port', '0', '--steps', '3', '--delay', '0.01', '--wait', '10'],
      { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const port = await withTimeout(new Promise((resolve, reject) => {
        child.stdout.once('data', (d) => resolve(Number(String(d).match(/:(\d+)\/ws/)[1])));
        child.once('exit', (code) => reject(new Error(`worker.py exited with ${code}: ${stderr}`)));
      }), ms(15000), 'worker.py to listen');
      const client = await openWs(`ws://127.0.0.1:${port}/ws`, { label: 'client' });
      await client.waitConnected();
      await client.subscribe('jobs.demo');
      const done = await client.next((m) => m.event === 'job.finished', ms(10000), 'job.finished');
      assert.deepEqual(done.data, { jobId: 'demo', ok: true });
      assert.equal(await withTimeout(exited, ms(15000), 'worker.py to exit'), 0, stderr);
      client.destroy();
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('mypy accepts the documented options and rejects a misspelt or mistyped one', () => {
    const py = path.join(venv, 'bin', 'python');
    run(py, ['-m', 'pip', 'install', '-q', '--disable-pip-version-check', 'mypy>=1.10,<3']);
    const good = path.join(work, 'typed_ok.py');
    fs.writeFileSync(good, `import vxevents

def authorize(channel: vxevents.Channel, request: vxevents.AuthRequest) -> bool:
    return channel.type == "public"

server = vxevents.events_plugin(auth_secret="x" * 32, authorizer=authorize, ping_interval=30000,
                                driver="ws", path="/ws", log_level="info")
events = vxevents.get_events(redis="redis://127.0.0.1:6379", redis_prefix="vx")
n: int = events.subscriber_count("orders")
`);
    const r = run(py, ['-m', 'mypy', '--strict', '--no-incremental', good], { cwd: work, allowFail: true });
    assert.equal(r.status, 0, r.out);
    const bad = path.join(work, 'typed_bad.py');
    fs.writeFileSync(bad, `import vxevents

events = vxevents.get_events(rediss="redis://127.0.0.1:6379")
server = vxevents.events_plugin(ping_interval="30s", driver="websocket")
`);
    const b = run(py, ['-m', 'mypy', '--strict', '--no-incremental', bad], { cwd: work, allowFail: true });
    assert.notEqual(b.status, 0, b.out);
    assert.match(b.out, /Unexpected keyword argument "rediss"/, b.out);
    assert.match(b.out, /"ping_interval" to "events_plugin" has incompatible type "str"/, b.out);
    assert.match(b.out, /"driver" to "events_plugin" has incompatible type/, b.out);
  });
});
