// Real Velox for the binding suite: @veloxts/core, validation and router are not on the npm
// registry, so they come as tarballs in shared/velox/ (next to the repository: ../shared from
// a clone, ../../shared from a worktree; VELOX_PACKAGES overrides). They are installed with
// zod and typescript from the npm registry into build/velox-app/, once: a stamp of the
// tarballs' hashes and the pinned versions makes reruns skip npm entirely. typescript and
// @types/node are there for the type test.
//
// The seed's samples import '@veloxts/events', the API vxevents reproduces, so this
// repository is linked there under that name (what `npm i @veloxts/events@npm:vxevents`
// would do): the samples run byte for byte.

import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const VELOX_DIR = path.join(ROOT, 'build', 'velox-app');
const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'velox');
const PACKAGES = ['core', 'validation', 'router'];
const VERSION = '0.6.98';
const FROM_NPM = ['zod@3.25.76', 'typescript@5.9.3', '@types/node@20.19.43'];

function findTarballs() {
  const want = (dir) => PACKAGES.map((p) => path.join(dir, `veloxts-${p}-${VERSION}.tgz`));
  const candidates = [];
  if (process.env.VELOX_PACKAGES) candidates.push(process.env.VELOX_PACKAGES);
  for (let dir = ROOT; ; dir = path.dirname(dir)) {
    candidates.push(path.join(dir, 'shared', 'velox'));
    if (path.dirname(dir) === dir) break;
  }
  candidates.push('/work/shared/velox'); // the machine's shared folder, for clones elsewhere
  for (const dir of candidates) {
    const files = want(dir);
    if (files.every((f) => fs.existsSync(f))) return files;
  }
  throw new Error(
    `the Velox tarballs (veloxts-{${PACKAGES.join(',')}}-${VERSION}.tgz) were not found in ${candidates.join(', ')}; ` +
      'set VELOX_PACKAGES to their folder',
  );
}

function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 16 << 20, ...opts }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/**
 * Installs Velox into build/velox-app/ unless the stamp says it is there already, links
 * this repository as '@veloxts/events' and copies the sample apps into build/velox-app/app/
 * (they must live there for '@veloxts/core' to resolve). Returns the folder.
 */
export async function installVelox() {
  const tarballs = findTarballs();
  const stamp = JSON.stringify({
    tarballs: tarballs.map((f) => createHash('sha256').update(fs.readFileSync(f)).digest('hex')),
    npm: FROM_NPM,
  });
  const stampFile = path.join(VELOX_DIR, '.installed');
  if (!fs.existsSync(stampFile) || fs.readFileSync(stampFile, 'utf8') !== stamp) {
    // Installed next to the target and renamed into place, so an interrupted install never
    // leaves a folder that looks complete.
    const tmp = `${VELOX_DIR}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: 'velox-app', private: true, type: 'module' }));
    try {
      await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...tarballs, ...FROM_NPM], {
        cwd: tmp,
        timeout: 240000,
      });
      fs.writeFileSync(path.join(tmp, '.installed'), stamp);
      fs.rmSync(VELOX_DIR, { recursive: true, force: true });
      fs.renameSync(tmp, VELOX_DIR);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  const link = path.join(VELOX_DIR, 'node_modules', '@veloxts', 'events');
  let target = null;
  try {
    target = fs.readlinkSync(link);
  } catch {
    // absent
  }
  if (target !== ROOT) {
    fs.rmSync(link, { recursive: true, force: true });
    fs.symlinkSync(ROOT, link, 'dir');
  }
  const appDir = path.join(VELOX_DIR, 'app');
  fs.mkdirSync(appDir, { recursive: true });
  for (const f of fs.readdirSync(FIXTURES)) fs.copyFileSync(path.join(FIXTURES, f), path.join(appDir, f));
  return VELOX_DIR;
}

/**
 * Runs build/velox-app/app/<name> (port 0) and resolves once it printed the address it
 * listens on. `stop()` sends SIGTERM (Velox's own graceful shutdown) and resolves with the
 * exit {code, signal}.
 */
export function startVeloxApp(name, env = {}) {
  const proc = spawn(process.execPath, [path.join(VELOX_DIR, 'app', name)], {
    cwd: VELOX_DIR,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 10 s: ${out}`)), 10000);
    const scan = (d) => {
      out += d;
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout.on('data', scan);
    proc.stderr.on('data', scan);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before listening: ${out}`));
    });
  });
  return {
    proc,
    port,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const r = await exited;
      clearTimeout(timer);
      return r;
    },
  };
}

/** Runs the typescript installed with Velox on a project folder (tsconfig.json in it). */
export function tsc(project) {
  return run(process.execPath, [path.join(VELOX_DIR, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], {
    timeout: 120000,
  });
}
