'use strict';
// Where the prebuilt addon for this process lives, and what a source build needs: shared by
// the loader (native.cjs), `npx vxevents-build` and the prebuild script (scripts/).

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');

/** What a source build needs (also printed by scripts/build-addon.cjs). */
const PREREQUISITES =
  'CMake (>= 3.18), a C and C++ compiler, pkg-config and the development packages of libuv, ' +
  'wslay, hiredis, cJSON, OpenSSL, zlib and http-parser. Debian/Ubuntu: `apt-get install ' +
  'build-essential cmake pkg-config libuv1-dev libwslay-dev libhiredis-dev libcjson-dev ' +
  'libssl-dev zlib1g-dev libhttp-parser-dev`; Fedora: `dnf install gcc-c++ cmake pkgconf ' +
  'libuv-devel wslay-devel hiredis-devel cjson-devel openssl-devel zlib-devel ' +
  'http-parser-devel`; Alpine: `apk add build-base cmake pkgconf libuv-dev wslay-dev ' +
  'hiredis-dev cjson-dev openssl-dev zlib-dev http-parser-dev`';

function libc() {
  if (process.platform !== 'linux') return '';
  try {
    const report = process.report;
    const saved = report.excludeNetwork;
    report.excludeNetwork = true;
    const header = report.getReport().header;
    report.excludeNetwork = saved;
    return header.glibcVersionRuntime ? 'glibc' : 'musl';
  } catch {
    return fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
  }
}

/** { platform, arch, libc } of this process. */
function prebuildTag() {
  return { platform: process.platform, arch: process.arch, libc: libc() };
}

/** The prebuilt binary's path relative to the package root. */
function prebuildFile(tag) {
  const name = tag.libc ? `vxevents.${tag.libc}.node` : 'vxevents.node';
  return path.join('prebuilds', `${tag.platform}-${tag.arch}`, name);
}

function describe(tag) {
  return `${tag.platform}-${tag.arch}${tag.libc ? ` (${tag.libc})` : ''}`;
}

module.exports = { ROOT, PREREQUISITES, prebuildTag, prebuildFile, describe };
