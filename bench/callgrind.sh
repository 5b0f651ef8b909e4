#!/usr/bin/env bash
# Instructions per delivery on the broadcast path (vx__hub_deliver: the fan-out into send
# queues; vx__conn_flush_all: the writev corking), counted by callgrind — repeatable whatever
# else the machine is doing, so two builds can be compared in one run on a busy machine.
#
#   bench/callgrind.sh SERVER [SERVER...]        e.g. an old build and build/vxevents-server
#   CG_BATCH="1 50" CG_CONNECTIONS=200 bench/callgrind.sh ...
#
# Prints one line per server and batch size: instructions, deliveries, instructions/delivery.
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$BENCH/lib.sh"
bench_prepare >/dev/null || exit 1
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
N=${CG_CONNECTIONS:-200}
OUTDIR="$BENCH/build/callgrind"
mkdir -p "$OUTDIR"
for srv in "$@"; do
  for batch in ${CG_BATCH:-1 50}; do
    tag="$(basename "$(dirname "$srv")")-$(basename "$srv")-b$batch"
    out="$OUTDIR/$tag.out"
    log="$OUTDIR/$tag.log"
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
      --toggle-collect=vx__hub_deliver --toggle-collect=vx__conn_flush_all \
      "$srv" --host 127.0.0.1 --port 0 --api-key k --ping-interval 0 --sse-path '' >"$log" 2>&1 &
    vpid=$!
    port=""
    for _ in $(seq 1 150); do
      port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
      [ -n "$port" ] && break
      sleep 0.2
    done
    if [ -z "$port" ]; then echo "$tag: the server did not start (see $log)"; kill "$vpid"; continue; fi
    json=$("$BENCH/build/loadgen" --url "ws://127.0.0.1:$port/ws" --api-key k --connections "$N" \
      --mode closed --batch "$batch" --duration 6 --warmup 1 --drain 10 --setup-timeout 60 \
      --stall-timeout 30 --quiet)
    kill -TERM "$vpid"
    wait "$vpid"
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    del=$(printf '%s' "$json" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s.trim().split("\n").pop()).delivered_total))')
    printf '%-40s batch %-3s instructions %-12s deliveries %-9s per delivery %s\n' "$srv" "$batch" "$ir" "$del" \
      "$(awk -v a="$ir" -v b="$del" 'BEGIN { printf "%.1f", a / b }')"
  done
done
