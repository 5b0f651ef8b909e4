#!/usr/bin/env bash
# Python binding tests: build and install the package into a fresh virtualenv with
# `pip install .` (scikit-build-core → CMake → the C core + vxevents._core), then run the
# pytest suite. Run from anywhere; CI calls `bash tests/python/run.sh` from the repo root.
# Needs python3 with venv support and the Python headers (Debian: python3-venv python3-dev).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${VX_PY_VENV:-$ROOT/build/python-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    echo "tests/python/run.sh: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv python3-dev)" >&2
    exit 1
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q "pytest>=7,<10" "websockets>=13,<18" "prometheus_client>=0.17,<1"
"${PIP[@]}" install -q --force-reinstall --no-deps "$ROOT"

# Run outside the source tree so `import vxevents` is the installed package. A hard time
# limit: a hang in the binding must fail the run, not stall CI. Exit status 5 (no tests
# collected) counts as failure.
cd "$ROOT/tests/python"
set +e
timeout -k 10 900 "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "tests/python/run.sh: no tests were collected" >&2
  exit 1
fi
exit "$rc"
