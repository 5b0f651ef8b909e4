'use strict';
// Loads the compiled addon built by `npm install` (cmake-js, out dir build-node/).

const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const candidates = [
  process.env.VXEVENTS_ADDON,
  path.join(ROOT, 'build-node', 'Release', 'vxevents.node'),
  path.join(ROOT, 'build-node', 'Debug', 'vxevents.node'),
  path.join(ROOT, 'build-node', 'RelWithDebInfo', 'vxevents.node'),
].filter(Boolean);

let native = null;
let lastError = null;
for (const file of candidates) {
  try {
    native = require(file);
    break;
  } catch (err) {
    lastError = err;
  }
}
if (!native) {
  const err = new Error(
    `vxevents: the native addon is not built (looked in ${candidates.join(', ')}). ` +
      `Run \`npm install\` (or \`npm run build:binding\`) in the vxevents package. ` +
      `Last error: ${lastError && lastError.message}`,
  );
  err.code = 'ENOADDON';
  throw err;
}

module.exports = native;
