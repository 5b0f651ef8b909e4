// C consumers: `make install PREFIX=...` into a fresh prefix, then the README's C example
// compiled from outside the tree against that prefix with pkg-config (shared, and static
// through vxevents-static and `--static`), with find_package(vxevents) (shared and static), and
// with the README's own static link line. Each program runs (on a free port, not 3030).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { REPO_ROOT, codeBlocks, run, section, workDir } from './lib.mjs';

const README = path.join(REPO_ROOT, 'README.md');
let work;
let prefix;
let source;

function readmeProgram() {
  const blocks = codeBlocks(README, 'c').filter((b) => b.heading === 'The C API');
  assert.equal(blocks.length, 1, 'the README\'s "The C API" section has one C example');
  // The example as written, inside main(); it listens on 3030, which a test must not take.
  const body = blocks[0].code.replace('"0.0.0.0", 3030', '"127.0.0.1", 0');
  return `#include <stdlib.h>\n#include <vxevents.h>\n\nint main(void) {\n${body}  return 0;\n}\n`;
}

function needed(file) {
  return [...run('readelf', ['-d', file]).stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
}

function runs(exe, env = {}) {
  run(exe, [], { env: { ...process.env, ...env }, timeout: 30_000 });
}

describe('C consumers of an installed prefix', () => {
  before(() => {
    work = workDir('c');
    prefix = path.join(work, 'prefix');
    run('make', ['install', `BUILD=${path.join(work, 'build')}`, `PREFIX=${prefix}`,
      'CMAKE_FLAGS=-DVX_BUILD_TESTS=OFF'], { timeout: 600_000 });
    source = path.join(work, 'app.c');
    fs.writeFileSync(source, readmeProgram());
  });

  test('the prefix holds the libraries, the header, vxevents.pc and the CMake package', () => {
    for (const f of ['include/vxevents.h', 'lib/libvxevents.a', 'lib/libvxevents.so', 'bin/vxevents-server',
      'lib/pkgconfig/vxevents.pc', 'lib/pkgconfig/vxevents-static.pc',
      'lib/cmake/vxevents/vxevents-config.cmake', 'lib/cmake/vxevents/vxevents-config-version.cmake']) {
      assert.ok(fs.existsSync(path.join(prefix, f)), `${f} is not installed`);
    }
    const pc = fs.readFileSync(path.join(prefix, 'lib/pkgconfig/vxevents.pc'), 'utf8');
    assert.match(pc, /^Libs\.private: .*-lhiredis.*-lz/m);
  });

  test('pkg-config: shared, static (vxevents-static) and --static', () => {
    const env = { ...process.env, PKG_CONFIG_PATH: path.join(prefix, 'lib', 'pkgconfig') };
    const flags = (...a) => run('pkg-config', a, { env }).stdout.trim().split(/\s+/);
    const libdir = path.join(prefix, 'lib');

    const shared = path.join(work, 'app-pc-shared');
    run('cc', ['-o', shared, source, ...flags('--cflags', '--libs', 'vxevents'), `-Wl,-rpath,${libdir}`]);
    assert.ok(needed(shared).includes('libvxevents.so.0'));
    runs(shared);

    const stat = path.join(work, 'app-pc-static');
    run('cc', ['-o', stat, source, ...flags('--cflags', '--libs', 'vxevents-static')]);
    assert.ok(!needed(stat).some((n) => n.startsWith('libvxevents')), 'linked the archive');
    runs(stat);

    // --static: the archive's dependencies from Libs.private, the archive chosen with -Bstatic.
    const stat2 = path.join(work, 'app-pc-static2');
    const libs = flags('--static', '--libs', 'vxevents').filter((f) => f !== '-lvxevents');
    run('cc', ['-o', stat2, source, ...flags('--cflags', 'vxevents'), `-L${libdir}`,
      '-Wl,-Bstatic', '-lvxevents', '-Wl,-Bdynamic', ...libs]);
    assert.ok(!needed(stat2).some((n) => n.startsWith('libvxevents')));
    runs(stat2);
  });

  test('find_package(vxevents): vxevents::vxevents shared, and static with COMPONENTS static', () => {
    for (const kind of ['shared', 'static']) {
      const proj = path.join(work, `cmake-${kind}`);
      fs.mkdirSync(proj, { recursive: true });
      fs.copyFileSync(source, path.join(proj, 'app.c'));
      fs.writeFileSync(path.join(proj, 'CMakeLists.txt'), `cmake_minimum_required(VERSION 3.18)
project(app C)
find_package(vxevents 0.1 REQUIRED${kind === 'static' ? ' COMPONENTS static' : ''})
add_executable(app app.c)
target_link_libraries(app PRIVATE vxevents::vxevents)
`);
      run('cmake', ['-S', proj, '-B', path.join(proj, 'b'), `-DCMAKE_PREFIX_PATH=${prefix}`]);
      run('cmake', ['--build', path.join(proj, 'b')]);
      const exe = path.join(proj, 'b', 'app');
      const links = needed(exe).some((n) => n.startsWith('libvxevents'));
      assert.equal(links, kind === 'shared', `${kind}: ${needed(exe).join(' ')}`);
      runs(exe);
    }
  });

  test("the README's static link line links the archive", () => {
    const text = section(README, 'The C API');
    const m = text.match(/Link with `build\/libvxevents\.a` \(or `\.so`\) and `([^`]+)`/);
    assert.ok(m, 'the README names the libraries to link');
    const exe = path.join(work, 'app-readme');
    run('cc', ['-o', exe, source, `-I${path.join(prefix, 'include')}`, path.join(prefix, 'lib', 'libvxevents.a'),
      ...m[1].replace(/\s+/g, ' ').trim().split(' ')]);
    runs(exe);
  });
});
