#!/usr/bin/env node
'use strict';
// Builds the Node addon with CMake directly (no cmake-js: nothing to install but CMake and a
// compiler, and nothing downloaded — Node's C headers come from the node-api-headers package
// when it is installed, else from Node's own include/node, and napi.h from node-addon-api).
//
//   node scripts/build-addon.cjs --dev        build-node/Release/vxevents.node, warnings are
//                                             errors, the -dev packages' shared libraries
//                                             (npm run build:binding, make test-binding)
//   node scripts/build-addon.cjs --source     the same without -Werror: what `npx vxevents-build`
//                                             runs where no prebuilt binary fits (scripts/install.cjs)
//   node scripts/build-addon.cjs --prebuild   prebuilds/<platform>-<arch>/vxevents.<libc>.node:
//                                             every dependency but Node's own libuv, OpenSSL and
//                                             zlib linked in from PIC archives
//                                             (scripts/static-deps.sh), checked to load with
//                                             every symbol bound (npm run prebuild)

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const { PREREQUISITES, prebuildTag, prebuildFile } = require('../bindings-node/lib/prebuilds.cjs');

class BuildError extends Error {}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.error) throw new BuildError(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new BuildError(`${cmd} ${args.join(' ')} exited with ${r.status}`);
  return r;
}

function findHeaders() {
  let napiC = null;
  try {
    napiC = path.join(path.dirname(require.resolve('node-api-headers/package.json', { paths: [ROOT] })), 'include');
  } catch {
    const own = path.resolve(path.dirname(process.execPath), '..', 'include', 'node');
    if (fs.existsSync(path.join(own, 'node_api.h'))) napiC = own;
  }
  if (!napiC || !fs.existsSync(path.join(napiC, 'node_api.h'))) {
    throw new BuildError(
      "Node's C headers (node_api.h) were not found: neither the node-api-headers package nor " +
        `${path.resolve(path.dirname(process.execPath), '..', 'include', 'node')} (the official ` +
        'Node.js builds ship it; distribution packages: nodejs-dev / libnode-dev). ' +
        '`npm install node-api-headers` in the app also works.',
    );
  }
  let napiCxx;
  try {
    napiCxx = path.dirname(require.resolve('node-addon-api/napi.h', { paths: [ROOT] }));
  } catch {
    throw new BuildError('the node-addon-api package (napi.h) is not installed next to vxevents');
  }
  return { napiC, napiCxx };
}

function checkTools() {
  const missing = [];
  if (!have('cmake')) missing.push('cmake');
  if (!have('cc') && !have('gcc') && !have('clang')) missing.push('a C compiler');
  if (!have('c++') && !have('g++') && !have('clang++')) missing.push('a C++ compiler');
  if (!have('pkg-config') && !have('pkgconf')) missing.push('pkg-config');
  if (missing.length) {
    throw new BuildError(`${missing.join(', ')} not found on PATH. A source build needs ${PREREQUISITES}.`);
  }
}

/**
 * Configure and build bindings-node into `out`. Returns the path of the .node file.
 * mode: 'dev' | 'source' | 'prebuild'.
 */
function build(mode, { out, depsPrefix } = {}) {
  checkTools();
  const { napiC, napiCxx } = findHeaders();
  out = out || path.join(ROOT, mode === 'prebuild' ? path.join('build', 'prebuild-node') : 'build-node');
  // A tree configured by cmake-js (earlier versions of this package) is started afresh.
  const cache = path.join(out, 'CMakeCache.txt');
  if (fs.existsSync(cache) && /CMAKE_JS_VERSION/.test(fs.readFileSync(cache, 'utf8'))) {
    fs.rmSync(out, { recursive: true, force: true });
  }
  const libOut = path.join(out, 'Release');
  const args = ['-S', ROOT, '-B', out, '-DCMAKE_BUILD_TYPE=Release', '-DVX_NODE=ON',
    `-DNODE_API_INCLUDE_DIR=${napiC}`, `-DNODE_ADDON_API_INCLUDE_DIR=${napiCxx}`,
    `-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=${libOut}`, `-DVX_WERROR=${mode === 'source' ? 'OFF' : 'ON'}`];
  if (have('ninja') && !fs.existsSync(path.join(out, 'Makefile'))) args.push('-G', 'Ninja');
  if (mode === 'prebuild') args.push('-DVX_STATIC_DEPS=ON', `-DVX_DEPS_PREFIX=${depsPrefix}`);
  else args.push('-DVX_STATIC_DEPS=OFF');
  const conf = spawnSync('cmake', args, { encoding: 'utf8' });
  if (conf.status !== 0) {
    const log = `${conf.stdout || ''}${conf.stderr || ''}`.trim().split('\n').slice(-15).join('\n');
    throw new BuildError(`CMake could not configure the addon:\n${log}\n\nA source build needs ${PREREQUISITES}.`);
  }
  const jobs = String(Math.max(1, (os.availableParallelism ? os.availableParallelism() : os.cpus().length)));
  run('cmake', ['--build', out, '--target', 'vxevents_node', '--parallel', jobs],
    { stdio: mode === 'source' ? ['ignore', 'ignore', 'inherit'] : 'inherit' });
  const file = path.join(libOut, 'vxevents.node');
  if (!fs.existsSync(file)) throw new BuildError(`the build did not produce ${file}`);
  return file;
}

/** Load `file` in a fresh Node with every symbol bound at load time (LD_BIND_NOW). */
function checkLoads(file) {
  const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(file)});
    if (typeof a.version !== 'string') throw new Error('no version export');`],
  { env: { ...process.env, LD_BIND_NOW: '1' }, encoding: 'utf8' });
  if (r.status !== 0) throw new BuildError(`${file} does not load with every symbol bound:\n${r.stderr}`);
}

/** The shared libraries the prebuilt addon may need: the C library's own parts only. */
const ALLOWED_NEEDED = /^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|ld-linux-[\w-]+\.so\.\d)$/;

function neededOf(file) {
  const r = spawnSync('readelf', ['-d', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new BuildError(`readelf -d ${file} failed`);
  return [...r.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
}

function glibcNeeded(file) {
  const r = spawnSync('objdump', ['-T', file], { encoding: 'utf8' });
  const versions = [...(r.stdout || '').matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [+m[1], +m[2]]);
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const v = versions.pop();
  return v ? `${v[0]}.${v[1]}` : null;
}

function prebuild() {
  if (process.platform !== 'linux') throw new BuildError('prebuilt binaries are made on Linux only');
  const sd = spawnSync('bash', [path.join(ROOT, 'scripts', 'static-deps.sh')],
    { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (sd.status !== 0) throw new BuildError('scripts/static-deps.sh failed');
  const depsPrefix = sd.stdout.trim().split('\n').pop();
  const built = build('prebuild', { depsPrefix });
  const bad = neededOf(built).filter((n) => !ALLOWED_NEEDED.test(n));
  if (bad.length) throw new BuildError(`the prebuilt addon still needs ${bad.join(', ')}`);
  checkLoads(built);
  const dest = path.join(ROOT, prebuildFile(prebuildTag()));
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  // strip: the debug information is most of the size and nobody debugs a prebuilt binary.
  run('strip', ['--strip-unneeded', '-o', dest, built]);
  checkLoads(dest);
  const kib = Math.round(fs.statSync(dest).size / 1024);
  console.log(`prebuilt ${path.relative(ROOT, dest)} (${kib} KiB, needs ${neededOf(dest).join(' ')}; ` +
    `glibc >= ${glibcNeeded(dest)})`);
  return dest;
}

module.exports = { build, prebuild, checkLoads, neededOf, glibcNeeded, BuildError, PREREQUISITES };

if (require.main === module) {
  const mode = (process.argv[2] || '--dev').replace(/^--/, '');
  try {
    if (mode === 'prebuild') prebuild();
    else if (mode === 'dev' || mode === 'source') console.log(build(mode));
    else throw new BuildError(`unknown mode --${mode} (--dev, --source or --prebuild)`);
  } catch (err) {
    if (!(err instanceof BuildError)) throw err;
    console.error(`vxevents: ${err.message}`);
    process.exit(1);
  }
}
