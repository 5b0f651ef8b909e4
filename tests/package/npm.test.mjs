// The npm package as a user gets it: `npm pack` (whose prepack makes the prebuilt addon), then
// the tarball installed into fresh apps — by npm with --ignore-scripts, by pnpm without
// approving any build and by Yarn Berry in Plug'n'Play mode with scripts disabled, each with
// nothing but Node (and the package manager) on PATH — and used for real: a manager
// serving WebSocket on a port, a `ws` client receiving a broadcast. The tarball's contents,
// the prebuilt addon's links and the type declarations (attw) are checked too.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openWs, withTimeout, ms } from '../server/helpers.mjs';
import { REPO_ROOT, nodeOnlyPath, run, workDir } from './lib.mjs';

const BIN = path.join(REPO_ROOT, 'node_modules', '.bin');
// Yarn Berry from the npm registry (a pinned devDependency), run by Node: no corepack download.
const YARN = path.join(REPO_ROOT, 'node_modules', '@yarnpkg', 'cli-dist', 'bin', 'yarn.js');
let work;
let tarball;
let files;

// What the app does with the installed package: both entry points, then a manager on a
// dedicated port that broadcasts once the test says its client is subscribed.
const APP = `
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import plugin, { getEvents, closeEvents, version } from 'vxevents';
const cjs = createRequire(import.meta.url)('vxevents');
if (cjs.eventsPlugin !== plugin || cjs.version !== version) throw new Error('ESM and CJS entries differ');
const { createClient } = await import('vxevents/client');
if (typeof createClient !== 'function') throw new Error('vxevents/client has no createClient');
const events = await getEvents({ listen: { host: '127.0.0.1', port: 0 } });
console.log(JSON.stringify({ port: events.port, version }));
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line === 'go') break;
}
await events.broadcast('orders', 'order.created', { orderId: 1 });
await closeEvents();
lines.close();
`;

async function useInstalled(appDir, env, [cmd, ...args] = [process.execPath, 'app.mjs']) {
  fs.writeFileSync(path.join(appDir, 'app.mjs'), APP);
  const child = spawn(cmd, args, { cwd: appDir, env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const first = await withTimeout(new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(JSON.parse(String(d).split('\n')[0])));
      child.once('exit', (code) => reject(new Error(`the app exited with ${code}: ${stderr}`)));
    }), ms(10000), 'the app to listen');
    assert.equal(first.version, JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'))).version);
    const client = await openWs(`ws://127.0.0.1:${first.port}/ws`, { label: 'client' });
    await client.waitConnected();
    await client.subscribe('orders');
    child.stdin.write('go\n');
    const msg = await client.next((m) => m.event === 'order.created', ms(5000), 'the broadcast');
    assert.deepEqual(msg.data, { orderId: 1 });
    assert.equal(await withTimeout(exited, ms(10000), 'the app to exit'), 0, stderr);
    client.destroy();
  } finally {
    child.kill('SIGKILL');
  }
}

function freshApp(name) {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  return dir;
}

/**
 * A fresh Yarn Berry project in Plug'n'Play mode with install scripts disabled, everything Yarn
 * keeps (cache, global folder, rc file) inside it, the registry npm uses here, and an env whose
 * PATH has only node and yarn. `meta` becomes the app's dependenciesMeta.
 */
function yarnApp(name, meta) {
  const dir = freshApp(name);
  if (meta) {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ ...pkg, dependenciesMeta: meta }));
  }
  const registry = run('npm', ['config', 'get', 'registry']).stdout.trim();
  fs.writeFileSync(path.join(dir, '.yarnrc.yml'), [
    'nodeLinker: pnp', 'enableScripts: false', 'enableTelemetry: false', 'enableGlobalCache: false',
    'globalFolder: ./.yarn/global', `npmRegistryServer: ${JSON.stringify(registry)}`, ''].join('\n'));
  fs.writeFileSync(path.join(dir, 'yarn.lock'), ''); // the project root is here, not the checkout
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(YARN_|COREPACK_)/i.test(k)));
  Object.assign(env, { HOME: dir, PATH: nodeOnlyPath(dir, { yarn: YARN }) });
  const r = run('yarn', ['add', `vxevents@file:${tarball}`], { cwd: dir, env, allowFail: true });
  assert.equal(r.status, 0, r.out);
  assert.doesNotMatch(r.out, /YN0001|YN0007|YN0009/, r.out); // no error, no build to run or that failed
  assert.ok(fs.existsSync(path.join(dir, '.pnp.cjs')) && !fs.existsSync(path.join(dir, 'node_modules')), r.out);
  return { dir, env };
}

describe('the npm package', () => {
  before(() => {
    work = workDir('npm');
    const out = run('npm', ['pack', '--pack-destination', work], { timeout: 600_000 }).stdout.trim().split('\n').pop();
    tarball = path.join(work, out);
    files = run('tar', ['-tzf', tarball]).stdout.trim().split('\n').map((f) => f.replace(/^package\//, ''));
  });
  after(() => {});

  test('the tarball holds what runs, the sources of the fallback build and the legal files, nothing else', () => {
    for (const f of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'prebuilds/linux-x64/vxevents.glibc.node',
      'bindings-node/index.d.ts', 'bindings-node/index.d.mts', 'bindings-node/lib/index.cjs',
      'bindings-node/lib/index.mjs', 'bindings-node/lib/native.cjs', 'bindings-node/src/addon.cc',
      'libvxevents/include/vxevents.h', 'libvxevents/src/hub.c', 'CMakeLists.txt', 'scripts/install.cjs']) {
      assert.ok(files.includes(f), `${f} is missing from the tarball`);
    }
    const stray = files.filter((f) =>
      /^(tests|bench|fuzz|\.ci|bindings-python|examples|build[^/]*|dist|node_modules|build-node)\//.test(f) ||
      /\.(tgz|tar\.gz|whl|o|a|so)$/.test(f));
    assert.deepEqual(stray, []);
    const pkg = JSON.parse(run('tar', ['-xzOf', tarball, 'package/package.json']).stdout);
    assert.equal(pkg.private, undefined);
    assert.equal(pkg.license, 'MIT');
    assert.ok(pkg.repository && pkg.repository.url);
    assert.ok(!pkg.scripts.install && !pkg.scripts.postinstall && !pkg.scripts.preinstall,
      'an install script makes pnpm fail (ERR_PNPM_IGNORED_BUILDS) and npm warn');
    assert.deepEqual(Object.keys(pkg.dependencies).sort(), ['fastify-plugin', 'node-addon-api']);
    assert.match(run('tar', ['-xzOf', tarball, 'package/LICENSE']).stdout, /^MIT License/);
  });

  test('npm install --ignore-scripts into a fresh app with only Node on PATH, then serve and broadcast', async () => {
    const app = freshApp('npm-app');
    const env = { ...process.env, PATH: nodeOnlyPath(app), npm_config_cache: process.env.npm_config_cache };
    run('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: app, env });
    await useInstalled(app, env);
  });

  test('the prebuilt addon links none of its C dependencies as shared libraries and binds every symbol', () => {
    const addon = path.join(work, 'npm-app', 'node_modules', 'vxevents', 'prebuilds', 'linux-x64', 'vxevents.glibc.node');
    const ldd = run('ldd', [addon]).stdout;
    assert.doesNotMatch(ldd, /lib(uv|wslay|hiredis|cjson|http_parser|z|crypto|ssl|stdc\+\+)\.so/, ldd);
    assert.doesNotMatch(ldd, /not found/, ldd);
    run(process.execPath, ['-e', `require(${JSON.stringify(addon)})`], { env: { ...process.env, LD_BIND_NOW: '1' } });
  });

  test('pnpm add of the tarball succeeds without approving builds, with only Node on PATH', async () => {
    const app = freshApp('pnpm-app');
    const env = { ...process.env, PATH: nodeOnlyPath(app, { pnpm: path.join(BIN, 'pnpm') }) };
    const r = run('pnpm', ['add', tarball], { cwd: app, env, allowFail: true });
    assert.equal(r.status, 0, r.out);
    assert.doesNotMatch(r.out, /IGNORED_BUILDS|approve-builds/, r.out);
    await useInstalled(app, env);
  });

  test('yarn add (Berry, Plug\'n\'Play, no scripts) with only Node on PATH, then `yarn node` serves and broadcasts', async () => {
    const { dir, env } = yarnApp('yarn-pnp-app');
    // preferUnplugged: the package is extracted to disk, where dlopen can read the prebuilt addon.
    const unplugged = fs.readdirSync(path.join(dir, '.yarn', 'unplugged')).filter((d) => d.startsWith('vxevents-'));
    assert.equal(unplugged.length, 1);
    assert.ok(fs.existsSync(path.join(dir, '.yarn', 'unplugged', unplugged[0], 'node_modules', 'vxevents',
      'prebuilds', 'linux-x64', 'vxevents.glibc.node')));
    await useInstalled(dir, env, ['yarn', 'node', 'app.mjs']);
  });

  test('under Yarn Plug\'n\'Play with the package forced zipped, the error says to unplug it', () => {
    const { dir, env } = yarnApp('yarn-pnp-zipped', { vxevents: { unplugged: false } });
    assert.ok(!fs.existsSync(path.join(dir, '.yarn', 'unplugged')) ||
      !fs.readdirSync(path.join(dir, '.yarn', 'unplugged')).some((d) => d.startsWith('vxevents-')));
    const r = run('yarn', ['node', '-e', "require('vxevents')"], { cwd: dir, env, allowFail: true });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /ENOADDON/);
    assert.match(r.stderr, /inside a zip archive/);
    assert.match(r.stderr, /yarn unplug vxevents/);
    assert.doesNotMatch(r.stderr, /npx vxevents-build/);
  });

  test('without a prebuilt binary or a local build, the error names what to install', () => {
    const app = path.join(work, 'npm-app');
    const pb = path.join(app, 'node_modules', 'vxevents', 'prebuilds');
    fs.renameSync(pb, `${pb}.away`);
    try {
      const r = run(process.execPath, ['-e', "require('vxevents')"], { cwd: app, allowFail: true });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /ENOADDON/);
      assert.match(r.stderr, /no native addon could be loaded for linux-x64 \(glibc\)/);
      assert.match(r.stderr, /apt-get install build-essential cmake pkg-config libuv1-dev/);
      assert.match(r.stderr, /npx vxevents-build/);
    } finally {
      fs.renameSync(`${pb}.away`, pb);
    }
  });

  test('the type declarations resolve exactly under every module resolution (attw)', () => {
    const r = run(path.join(BIN, 'attw'), [tarball, '--format', 'table-flipped', '--exclude-entrypoints', 'client'], { allowFail: true });
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /No problems found/, r.out);
    // vxevents/client is ESM only (a browser module): checked without the CommonJS resolutions
    const c = run(path.join(BIN, 'attw'), [tarball, '--format', 'table-flipped', '--entrypoints', 'client', '--profile', 'esm-only'], { allowFail: true });
    assert.equal(c.status, 0, c.out);
    // eslint-disable-next-line no-control-regex
    assert.match(c.out.replace(/\x1b\[[0-9;]*m/g, ''), /"vxevents\/client"\s*│\s*🟢 \(ESM\)\s*│\s*🟢\s*│/u, c.out);
  });
});
