#!/usr/bin/env bash
# A short version of bench/run.sh for the test suite: 200 subscribers, ~2 s per scenario, both
# servers (one server process per kind, reused across its scenarios). Exits non-zero when a
# server does not start or dies, the generator fails to connect or subscribe, a run delivers
# nothing, or any connection sees a lost or duplicate message. Not a performance check.
#
#   bench/smoke.sh
#   SMOKE_SERVERS=node bench/smoke.sh     # only the Node peer (e.g. before the server is built)
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$BENCH/lib.sh"

SERVERS=${SMOKE_SERVERS:-vxevents node}
N=${SMOKE_CONNECTIONS:-200}
mkdir -p "$BENCH/build"
OUT="$BENCH/build/smoke-$$.jsonl"
: >"$OUT"

bench_prepare || exit 1

failed=0
for kind in $SERVERS; do
  logf="$BENCH/build/smoke-server-$kind.log"
  if ! server_start "$kind" "$logf"; then
    printf '{"label":"%s:start","error":"the server did not start (see %s)","exit":2}\n' "$kind" "$logf" >>"$OUT"
    continue
  fi
  common=(--connections "$N" --warmup 0.5 --duration 1.5 --drain 3 --setup-timeout 15)
  run_loadgen "$kind:closed" "$OUT" "${common[@]}" --mode closed --batch 1
  run_loadgen "$kind:burst" "$OUT" "${common[@]}" --mode closed --batch 50
  run_loadgen "$kind:paced" "$OUT" "${common[@]}" --mode paced --rate 20000
  run_loadgen "$kind:idle" "$OUT" --connections "$N" --idle --hold 0.5 --setup-timeout 15
  server_stop ||
    printf '{"label":"%s:shutdown","error":"the server died, or did not exit 0 within 5 s of SIGTERM","exit":2}\n' "$kind" >>"$OUT"
done

node "$BENCH/report.mjs" check "$OUT" || failed=1
rm -f "$OUT"
if [ "$failed" -ne 0 ]; then
  echo "bench smoke: FAILED (server logs in $BENCH/build/smoke-server-*.log)" >&2
fi
exit "$failed"
