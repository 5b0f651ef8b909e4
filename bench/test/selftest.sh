#!/usr/bin/env bash
# Tests bench/build/loadgen itself against bench/test/fake-peer.mjs, a server that frames
# awkwardly on purpose (fragments with pings inside, 16- and 64-bit lengths, frames and HTTP
# answers cut into 1-byte pieces, chunked and Connection: close answers). Checks that clean runs
# report no loss, that injected losses and duplicates are reported (exit 3), that pongs echo
# pings, that client frames are masked, and that masked server frames and a wrong
# Sec-WebSocket-Accept are refused (exit 2). About 15 s. No server build needed.
#
#   bash bench/test/selftest.sh
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
make -s -C "$BENCH" build/loadgen || exit 1
LOADGEN="$BENCH/build/loadgen"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FP_PID=""
FP_PORT=""
passed=0
failed=0

fake_start() {
  node "$BENCH/test/fake-peer.mjs" "$@" >"$TMP/fake.out" 2>&1 &
  FP_PID=$!
  local i
  for i in $(seq 1 50); do
    FP_PORT=$(sed -n 's|.*:\([0-9][0-9]*\) (websocket path .*|\1|p' "$TMP/fake.out")
    [ -n "$FP_PORT" ] && return 0
    sleep 0.1
  done
  echo "selftest: fake peer did not start" >&2
  kill "$FP_PID" 2>/dev/null
  return 1
}

# fake_stop: prints the fake peer's closing stats line
fake_stop() {
  kill -TERM "$FP_PID" 2>/dev/null
  wait "$FP_PID" 2>/dev/null
  grep '^fake-peer:' "$TMP/fake.out" || true
}

# check NAME EXPECTED_EXIT JS_CONDITION_ON_r_AND_stats -- LOADGEN ARGS
check() {
  local name=$1 want=$2 cond=$3
  shift 4
  local rc=0 report stats
  report=$(timeout 60 "$LOADGEN" --url "ws://127.0.0.1:$FP_PORT/ws" --api-key k --quiet \
    --connections 20 --warmup 0.2 --duration 1 --label "$name" "$@") || rc=$?
  stats=$(fake_stop)
  if [ "$rc" != "$want" ]; then
    echo "FAIL $name: exit $rc, expected $want: $report $stats" >&2
    failed=$((failed + 1))
    return
  fi
  if ! REPORT="$report" STATS="$stats" node -e '
    const r = JSON.parse(process.env.REPORT);
    const s = Object.fromEntries((process.env.STATS.match(/(\w+)=(\d+)/g) || []).map((kv) => {
      const [k, v] = kv.split("="); return [k, Number(v)]; }));
    process.exit((function () { return '"$cond"'; })() ? 0 : 1);'; then
    echo "FAIL $name: condition ($cond) not met: $report $stats" >&2
    failed=$((failed + 1))
    return
  fi
  echo "ok   $name" >&2
  passed=$((passed + 1))
}

clean='r.lost === 0 && r.dup === 0 && r.delivered > 0 && s.bad_pongs === 0 && s.unmasked === 0 && s.pongs > 0 && r.server_pings === s.pongs'
for eb in 120 300 70000; do
  for b in 1 7; do
    fake_start || exit 1
    check "frames-envelope$eb-batch$b" 0 "$clean && r.api_reconnects > 0" -- --envelope-bytes "$eb" --batch "$b"
  done
done
fake_start || exit 1
check paced 0 "$clean" -- --mode paced --rate 4000 --batch 3
fake_start --drop-every 5 || exit 1
check reports-loss 3 'r.lost > 0 && r.conns_with_loss === 1 && r.dup === 0' -- --mode paced --rate 2000
fake_start --dup-every 5 || exit 1
check reports-duplicates 3 'r.dup > 0 && r.conns_with_dup === 1 && r.lost === 0' --
fake_start --drop-every 5 || exit 1
check closed-loop-stall-is-an-error 2 'r.error.includes("no broadcast completed")' -- --stall-timeout 1
fake_start --masked || exit 1
check refuses-masked-server-frames 2 'r.error.includes("masked")' --
fake_start --bad-accept || exit 1
check refuses-wrong-accept 2 'r.error.includes("Sec-WebSocket-Accept")' --

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
