#!/usr/bin/env bash
# Soak the server with connection churn for SECONDS (default 120); fails when memory keeps
# growing, something stays registered after all clients left, or a protocol error appears,
# or (with an ASan build) the server reports a leak at exit.
#   bash bench/soak.sh 600
#   VXEVENTS_SERVER=build-asan/vxevents-server ASAN_OPTIONS=quarantine_size_mb=1 bash bench/soak.sh 60
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-120}"
BIN="${VXEVENTS_SERVER:-build/vxevents-server}"
KEY="soak-$RANDOM$RANDOM"
SECRET="soak-secret-0123456789abcdef0123456789"
ulimit -n 8192 2>/dev/null || true
OUT=$(mktemp)
"$BIN" --host 127.0.0.1 --port 0 --api-key "$KEY" --auth-secret "$SECRET" >"$OUT" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; grep -E "Sanitizer|runtime error" "$OUT" || true; rm -f "$OUT"' EXIT
for _ in $(seq 50); do grep -q "listening on" "$OUT" && break; sleep 0.1; done
PORT=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$OUT")
node bench/soak.mjs --port "$PORT" --api-key "$KEY" --secret "$SECRET" --pid "$PID" --seconds "$SECONDS_RUN"
kill -TERM $PID
wait $PID
