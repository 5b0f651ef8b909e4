#!/usr/bin/env node
'use strict';
// `npx vxevents-build` (the package's bin): builds the addon from the shipped sources where no
// prebuilt binary fits (another CPU, musl, an older glibc). The package has no install script
// on purpose: with the prebuilt binary nothing needs to run at install time, and a script would
// make pnpm (ERR_PNPM_IGNORED_BUILDS) and npm's allowScripts refuse or warn for every user.
// When a prebuilt binary loads here it does nothing; otherwise it builds into build-node/ (what
// the loader tries second), and when the tools for that are missing it says which to install.
//
// VXEVENTS_BUILD_FROM_SOURCE=1 builds from source even when a prebuilt binary fits (the loader
// still prefers the prebuilt one unless VXEVENTS_ADDON points at build-node/Release/vxevents.node).

const fs = require('node:fs');
const path = require('node:path');
const { ROOT, prebuildTag, prebuildFile, describe } = require('../bindings-node/lib/prebuilds.cjs');
const { build, checkLoads, BuildError } = require('./build-addon.cjs');

function loads(file) {
  if (!fs.existsSync(file)) return false;
  try {
    checkLoads(file);
    return true;
  } catch (err) {
    console.error(`vxevents: ${path.relative(ROOT, file)} does not load here: ${err.message.split('\n')[1] || err.message}`);
    return false;
  }
}

function main() {
  const force = /^(1|true|yes)$/i.test(process.env.VXEVENTS_BUILD_FROM_SOURCE || '') ||
    process.env.npm_config_build_from_source === 'true';
  const tag = prebuildTag();
  if (!force) {
    if (loads(path.join(ROOT, prebuildFile(tag)))) return;
    if (loads(path.join(ROOT, 'build-node', 'Release', 'vxevents.node'))) return;
    console.error(`vxevents: no prebuilt binary for ${describe(tag)}; building the addon from source`);
  }
  const file = build('source');
  checkLoads(file);
  console.error(`vxevents: built ${path.relative(ROOT, file)}`);
}

try {
  main();
} catch (err) {
  if (!(err instanceof BuildError)) throw err;
  console.error(`vxevents: could not build the native addon: ${err.message}`);
  process.exit(1);
}
