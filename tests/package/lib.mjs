// Helpers of the package tests: they build what a user installs (the npm tarball, the wheel,
// an installed C prefix) and use it from outside the checkout, as a new user would.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../server/helpers.mjs';

export { REPO_ROOT };
/** Everything the package tests make goes under build/package-test/<suite>. */
export function workDir(suite) {
  const dir = path.join(REPO_ROOT, 'build', 'package-test', suite);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Run a command to completion (bounded); throw with its output when it fails. */
export function run(cmd, args, { cwd = REPO_ROOT, env, timeout = 300_000, allowFail = false } = {}) {
  const r = spawnSync(cmd, args, {
    cwd, env: env || process.env, encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  const out = `${r.stdout || ''}${r.stderr || ''}`;
  if (r.status !== 0 && !allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited with ${r.status}:\n${out.slice(-6000)}`);
  }
  return { status: r.status, stdout: r.stdout || '', stderr: r.stderr || '', out };
}

/**
 * A PATH holding node, npm and npx and nothing else: no compiler, no cmake, no pkg-config, as
 * on an app server that only has Node. `extra` maps more names to executables.
 */
export function nodeOnlyPath(dir, extra = {}) {
  const bin = path.join(dir, 'node-only-bin');
  fs.mkdirSync(bin, { recursive: true });
  const which = (name) => run('sh', ['-c', `command -v ${name}`]).stdout.trim();
  const tools = { node: process.execPath, npm: which('npm'), npx: which('npx'), ...extra };
  for (const [name, target] of Object.entries(tools)) {
    fs.symlinkSync(fs.realpathSync(target), path.join(bin, name));
  }
  return bin;
}

/** Extract the fenced code blocks of a language from a Markdown file, with their headings. */
export function codeBlocks(markdownFile, lang) {
  const text = fs.readFileSync(markdownFile, 'utf8');
  const blocks = [];
  let heading = '';
  const re = /^(#{1,6}) (.*)$|^```(\w*)\n([\s\S]*?)^```$/gm;
  for (const m of text.matchAll(re)) {
    if (m[1]) heading = m[2];
    else if (m[3] === lang) blocks.push({ heading, code: m[4] });
  }
  return blocks;
}

/** The body of a Markdown section (from its heading to the next heading of any level <= its). */
export function section(markdownFile, heading) {
  const text = fs.readFileSync(markdownFile, 'utf8');
  const start = text.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`${markdownFile} has no section "## ${heading}"`);
  const rest = text.slice(start + heading.length + 5);
  const end = rest.search(/^## /m);
  return end < 0 ? rest : rest.slice(0, end);
}
