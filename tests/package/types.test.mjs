// `tsc --strict` over every TypeScript/JavaScript sample of the README (extracted from its
// ```js blocks, so an edit to the README is checked; JavaScript without noImplicitAny) and of the seed (tests/package/samples/,
// transcribed with '@veloxts/events' read as 'vxevents'), plus code typed against the
// documented type names, from ESM and from CommonJS (module: nodenext), in a fresh app that
// installed the packed tarball — the declarations a user gets.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, codeBlocks, run, workDir } from './lib.mjs';

const SAMPLES = path.join(REPO_ROOT, 'tests', 'package', 'samples');
const BIN = path.join(REPO_ROOT, 'node_modules', '.bin');

function devVersion(name) {
  return JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
}

test('tsc --strict accepts every sample of the README and the seed, from ESM and CommonJS', () => {
  const work = workDir('types');
  const tarball = path.join(work, run('npm', ['pack', '--pack-destination', work], { timeout: 600_000 })
    .stdout.trim().split('\n').pop());
  const app = path.join(work, 'app');
  fs.mkdirSync(path.join(app, 'src'), { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'types-app', private: true, type: 'module' }));
  run('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball,
    `fastify@${devVersion('fastify')}`, `@types/node@${devVersion('@types/node')}`, `zod@${devVersion('zod')}`],
  { cwd: app });

  for (const f of fs.readdirSync(SAMPLES)) fs.copyFileSync(path.join(SAMPLES, f), path.join(app, 'src', f));
  const blocks = codeBlocks(path.join(REPO_ROOT, 'README.md'), 'js');
  assert.ok(blocks.length >= 4, `the README's js samples were found (${blocks.length})`);
  blocks.forEach((b, i) => {
    fs.writeFileSync(path.join(app, 'src', `readme-${i + 1}.ts`),
      `// README.md, section "${b.heading}"\n${b.code}\nexport {};\n`);
  });

  fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022',
      lib: ['es2022', 'dom'], types: ['node'], allowJs: true, checkJs: true, skipLibCheck: false,
      noUnusedLocals: false, exactOptionalPropertyTypes: false,
    },
    include: ['src'],
    exclude: ['src/**/*.js'],
  }, null, 2));
  // JavaScript has no annotations to give: strict, but a parameter without one is `any`.
  fs.writeFileSync(path.join(app, 'tsconfig.js.json'), JSON.stringify({
    extends: './tsconfig.json', compilerOptions: { noImplicitAny: false },
    include: ['src/**/*.js', 'src/**/*.d.ts'], exclude: [],
  }, null, 2));
  for (const project of ['tsconfig.json', 'tsconfig.js.json']) {
    const r = run(path.join(BIN, 'tsc'), ['-p', path.join(app, project)], { cwd: app, allowFail: true, timeout: 300_000 });
    assert.equal(r.status, 0, `${project}:\n${r.out}`);
  }
});
