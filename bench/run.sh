#!/usr/bin/env bash
# Runs every benchmark scenario against vxevents-server AND the pure-Node peer in one run, then
# prints the comparison table. Each scenario gets a fresh server process.
#
#   bench/run.sh                      # all scenarios, both servers, ~4 minutes
#   VXEVENTS_SERVER=path/to/binary bench/run.sh
#
# Environment:
#   VXEVENTS_SERVER   server binary (default build/vxevents-server, relative to the repo root)
#   BENCH_SERVERS     which servers, in order (default "vxevents node")
#   BENCH_SCENARIOS   subset of scenario names (default: all, see below)
#   BENCH_DURATION    measured seconds per scenario (default 10)
#   BENCH_WARMUP      unmeasured seconds before it (default 2)
#   BENCH_PIN         1 (default): server on CPU 0, generator on CPU 1; 0: no pinning
#   BENCH_OUT         JSON-lines results file (default bench/build/results-DATE.jsonl)
#   BENCH_STRICT      1: exit non-zero when a vxevents target is missed, too
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$BENCH/lib.sh"

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
SERVERS=${BENCH_SERVERS:-vxevents node}
mkdir -p "$BENCH/build"
OUT=${BENCH_OUT:-$BENCH/build/results-$(date +%Y%m%d-%H%M%S).jsonl}
: >"$OUT"

# name | generator arguments. All: 1 channel, ~120-byte delivered envelopes.
#   closed-*  closed loop, one broadcast outstanding: every delivery is its own write
#   burst-*   closed loop, /api/batch of 50: 50 frames per connection per loop iteration (corking)
#   paced-*   50,000 deliveries/s at a steady rate; judged on p99 latency
#   idle-10k  10,000 subscribed idle connections; judged on server RSS per connection
SCENARIOS=(
  "closed-1k|--connections 1000 --mode closed --batch 1"
  "closed-5k|--connections 5000 --mode closed --batch 1"
  "burst-1k|--connections 1000 --mode closed --batch 50"
  "burst-5k|--connections 5000 --mode closed --batch 50"
  "paced-1k|--connections 1000 --mode paced --rate 50000"
  "paced-5k|--connections 5000 --mode paced --rate 50000"
  "idle-10k|--connections 10000 --idle --hold 3"
)

bench_prepare || exit 1
for kind in $SERVERS; do
  if [ "$kind" = vxevents ] && [ ! -x "$VXEVENTS_SERVER" ]; then
    log "bench: no vxevents server at $VXEVENTS_SERVER; build it first (or set VXEVENTS_SERVER, or BENCH_SERVERS=node)"
    exit 1
  fi
done

# Run a private copy, so a rebuild of build/ during the run cannot mix two builds in one table.
case " $SERVERS " in
  *" vxevents "*)
    cp "$VXEVENTS_SERVER" "$BENCH/build/vxevents-server.under-test" || exit 1
    log "bench: vxevents server $VXEVENTS_SERVER (modified $(stat -c %y "$VXEVENTS_SERVER" | cut -c1-19)," \
      "sha256 $(sha256sum "$VXEVENTS_SERVER" | cut -c1-16)), run from a copy"
    VXEVENTS_SERVER="$BENCH/build/vxevents-server.under-test"
    ;;
esac
log "bench: $(nproc) cores, $(uname -srm); pinning: ${PIN_SERVER[*]:-none} / ${PIN_LOADGEN[*]:-none}"
log "bench: results -> $OUT"
failed=0
for entry in "${SCENARIOS[@]}"; do
  name=${entry%%|*}
  args=${entry#*|}
  if [ -n "${BENCH_SCENARIOS:-}" ] && ! printf ' %s ' "$BENCH_SCENARIOS" | grep -q " $name "; then
    continue
  fi
  for kind in $SERVERS; do
    logf="$BENCH/build/server-$kind-$name.log"
    if ! server_start "$kind" "$logf"; then
      printf '{"label":"%s:%s","error":"server did not start","exit":2}\n' "$kind" "$name" >>"$OUT"
      failed=1
      continue
    fi
    # shellcheck disable=SC2086 # args is a list of words on purpose
    run_loadgen "$kind:$name" "$OUT" $args --duration "$DURATION" --warmup "$WARMUP" || failed=1
    if ! server_stop; then
      printf '{"label":"%s:%s-shutdown","error":"the server died, or did not exit 0 within 5 s of SIGTERM","exit":2}\n' "$kind" "$name" >>"$OUT"
      failed=1
    fi
  done
done

echo
echo "Results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${DURATION} s per scenario, $OUT):"
echo
node "$BENCH/report.mjs" table "$OUT"
if [ "${BENCH_STRICT:-0}" = 1 ] && node "$BENCH/report.mjs" table "$OUT" | grep -q MISSED; then
  failed=1
fi
exit "$failed"
