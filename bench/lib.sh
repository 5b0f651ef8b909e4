# Shared by bench/run.sh and bench/smoke.sh (sourced, not run).
#
# Expects BENCH (this directory) to be set. Provides:
#   bench_prepare               build bench/build/loadgen, install the Node peer's deps, raise
#                               the fd limit that the servers inherit
#   server_cmd KIND             the command line of server KIND (vxevents | node)
#   server_start KIND LOGFILE   start it on 127.0.0.1, port 0; sets SRV_PID and SRV_PORT
#   server_stop                 SIGTERM, wait (bounded), report a bad exit; returns 1 on one
#   run_loadgen LABEL OUT ARGS  run the generator against the started server, append its JSON
#                               line to OUT; returns the generator's exit code

ROOT=$(cd "$BENCH/.." && pwd)
VXEVENTS_SERVER=${VXEVENTS_SERVER:-build/vxevents-server}
case "$VXEVENTS_SERVER" in
  /*) ;;
  *) VXEVENTS_SERVER="$ROOT/$VXEVENTS_SERVER" ;;
esac
BENCH_API_KEY=${BENCH_API_KEY:-bench-key-$$-$RANDOM}
LOADGEN="$BENCH/build/loadgen"
SRV_PID=""
SRV_PORT=""
SRV_KIND=""

# Pin the server to CPU 0 and the generator to CPU 1 when there are two or more cores, so the
# two never share a core and neither migrates. BENCH_PIN=0 turns it off.
if [ "${BENCH_PIN:-1}" = 1 ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOADGEN=(taskset -c 1)
else
  PIN_SERVER=()
  PIN_LOADGEN=()
fi

log() { printf '%s\n' "$*" >&2; }

bench_prepare() {
  make -s -C "$BENCH" build/loadgen >&2 || { log "bench: building the load generator failed"; return 1; }
  if [ ! -d "$BENCH/node-peer/node_modules/ws" ]; then
    log "bench: installing the Node peer's dependencies (npm ci in bench/node-peer)"
    (cd "$BENCH/node-peer" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
      { log "bench: npm ci in bench/node-peer failed"; return 1; }
  fi
  # Servers inherit this shell's limit; the generator raises its own.
  ulimit -Hn 65536 2>/dev/null || true
  ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
  return 0
}

server_cmd() {
  case "$1" in
    vxevents) printf '%s\n' "$VXEVENTS_SERVER" ;;
    node) printf '%s\n' "node $BENCH/node-peer/server.mjs" ;;
    *) return 1 ;;
  esac
}

server_start() {
  local kind=$1 logf=$2
  SRV_KIND=$kind
  case "$kind" in
    vxevents)
      if [ ! -x "$VXEVENTS_SERVER" ]; then
        log "bench: no vxevents server at $VXEVENTS_SERVER (build it first, or set VXEVENTS_SERVER)"
        return 1
      fi
      "${PIN_SERVER[@]}" "$VXEVENTS_SERVER" --host 127.0.0.1 --port 0 --api-key "$BENCH_API_KEY" \
        >"$logf" 2>&1 &
      ;;
    node)
      "${PIN_SERVER[@]}" node "$BENCH/node-peer/server.mjs" --host 127.0.0.1 --port 0 \
        --api-key "$BENCH_API_KEY" >"$logf" 2>&1 &
      ;;
    *)
      log "bench: unknown server kind $kind"
      return 1
      ;;
  esac
  SRV_PID=$!
  SRV_PORT=""
  local i
  for i in $(seq 1 100); do # at most 10 s
    SRV_PORT=$(sed -n 's|^vxevents-server listening on http://[^ ]*:\([0-9][0-9]*\) (websocket path .*|\1|p' "$logf" | head -n 1)
    [ -n "$SRV_PORT" ] && break
    if ! kill -0 "$SRV_PID" 2>/dev/null; then
      log "bench: $kind server exited before it was ready; its output:"
      sed 's/^/  | /' "$logf" >&2
      SRV_PID=""
      return 1
    fi
    sleep 0.1
  done
  if [ -z "$SRV_PORT" ]; then
    log "bench: $kind server printed no ready line within 10 s; its output:"
    sed 's/^/  | /' "$logf" >&2
    kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
    return 1
  fi
  return 0
}

# Stops the started server with SIGTERM (the documented shutdown) and checks it exits 0 within
# 5 s. Returns 1 when it had already died, or did not exit cleanly.
server_stop() {
  [ -n "$SRV_PID" ] || return 0
  local pid=$SRV_PID rc=0 i
  SRV_PID=""
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    rc=$?
    log "bench: the $SRV_KIND server (pid $pid) had died before it was stopped (status $rc)"
    return 1
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "bench: the $SRV_KIND server (pid $pid) did not exit within 5 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  wait "$pid" 2>/dev/null && rc=0 || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "bench: the $SRV_KIND server exited with status $rc after SIGTERM (expected 0)"
    return 1
  fi
  return 0
}

# run_loadgen LABEL OUTFILE [loadgen args...]: the URL, key and server pid are filled in.
run_loadgen() {
  local label=$1 out=$2
  shift 2
  local line rc=0
  line=$("${PIN_LOADGEN[@]}" "$LOADGEN" --url "ws://127.0.0.1:$SRV_PORT/ws" \
    --api-key "$BENCH_API_KEY" --server-pid "$SRV_PID" --label "$label" "$@") || rc=$?
  line=$(printf '%s\n' "$line" | grep '^{' | tail -n 1)
  if [ -n "$line" ]; then
    printf '%s\n' "$line" >>"$out"
  else
    printf '{"label":"%s","error":"the generator printed no report (exit %d)","exit":%d}\n' \
      "$label" "$rc" "$rc" >>"$out"
  fi
  return "$rc"
}
