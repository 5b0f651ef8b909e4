'use strict';
// Loads the native addon, trying in order:
//   1. VXEVENTS_ADDON, when set (a path to a .node file: that one and no other);
//   2. the prebuilt binary shipped in the package for this platform, CPU and C library,
//      prebuilds/<platform>-<arch>/vxevents.<glibc|musl>.node (made by `npm run prebuild`);
//   3. a local source build, build-node/<config>/vxevents.node (made by `npx vxevents-build`
//      where no prebuilt binary fits, or by `npm run build:binding` in a checkout).
// Nothing is compiled or downloaded here; when none of them loads, the error says what was
// tried, why each failed and what to install to build from source.

const fs = require('node:fs');
const path = require('node:path');
const { ROOT, PREREQUISITES, prebuildTag, prebuildFile, describe } = require('./prebuilds.cjs');

function shipped() {
  const dir = path.join(ROOT, 'prebuilds');
  try {
    return fs.readdirSync(dir).flatMap((d) =>
      fs.readdirSync(path.join(dir, d)).filter((f) => f.endsWith('.node')).map((f) => `${d}/${f}`));
  } catch {
    return [];
  }
}

function load() {
  const tag = prebuildTag();
  const tried = [];
  const attempt = (file) => {
    try {
      return require(file);
    } catch (err) {
      tried.push(`${file}: ${err.message.split('\n')[0]}`);
      return null;
    }
  };

  if (process.env.VXEVENTS_ADDON) {
    const native = attempt(path.resolve(process.env.VXEVENTS_ADDON));
    if (native) return native;
  } else {
    const candidates = [path.join(ROOT, prebuildFile(tag))];
    for (const config of ['Release', 'RelWithDebInfo', 'Debug']) {
      candidates.push(path.join(ROOT, 'build-node', config, 'vxevents.node'));
    }
    for (const file of candidates) {
      if (!fs.existsSync(file)) continue;
      const native = attempt(file);
      if (native) return native;
    }
  }

  // Under Yarn Plug'n'Play a package left zipped (dependenciesMeta unplugged: false overriding
  // the package's preferUnplugged) has no file on disk for dlopen, and no source build helps.
  if (!process.env.VXEVENTS_ADDON && /\.zip[\\/]/.test(ROOT)) {
    const err = new Error(
      `vxevents: no native addon could be loaded for ${describe(tag)}: this copy of the package is ` +
        `inside a zip archive (${ROOT}), from which Node cannot load a native addon. Let Yarn ` +
        'unplug it: remove `unplugged: false` for vxevents from dependenciesMeta, or run ' +
        '`yarn unplug vxevents`.' + (tried.length ? ` Tried: ${tried.join('; ')}.` : ''),
    );
    err.code = 'ENOADDON';
    throw err;
  }

  const have = shipped();
  const err = new Error(
    `vxevents: no native addon could be loaded for ${describe(tag)}. ` +
      (process.env.VXEVENTS_ADDON
        ? 'VXEVENTS_ADDON names the addon to load. '
        : `This package ships prebuilt binaries for ${have.length ? have.join(', ') : 'no platform'} ` +
          'and has no local source build (build-node/Release/vxevents.node). ') +
      (tried.length ? `Tried: ${tried.join('; ')}. ` : '') +
      `To build it from source install ${PREREQUISITES}; then run \`npx vxevents-build\` ` +
      '(`pnpm exec vxevents-build`, `yarn vxevents-build`) in the app.',
  );
  err.code = 'ENOADDON';
  throw err;
}

module.exports = load();
