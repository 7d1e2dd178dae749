#!/usr/bin/env bash
# Smoke run of every roost-load scenario against a fresh Roost, a few
# seconds each, so the load tester keeps working. Builds debug binaries,
# starts `roost serve` on a free loopback port with a temporary data
# directory, stops it by PID. Every scenario must pass.
#
# The last scenario, `crash`, runs a few kill -9 cycles of a server of its
# own (CRASH_CYCLES, 4 by default).
#
#   loadtest/smoke.sh            # SMOKE_SECS=3 by default
#   SMOKE_SECS=10 loadtest/smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."

SECS=${SMOKE_SECS:-3}
# The debug binaries (built here, CARGO_TARGET_DIR honoured), or SMOKE_PROFILE_DIR's.
PROFILE_DIR=${SMOKE_PROFILE_DIR:-${CARGO_TARGET_DIR:-target}/debug}
if [ -z "${SMOKE_PROFILE_DIR:-}" ]; then
    cargo build -q -p roost -p roost-load || exit 1
fi
LOAD="$PROFILE_DIR/roost-load"

DATA=$(mktemp -d /tmp/roost-smoke.XXXXXX)
PORT=$("$LOAD" free-port) || exit 1
URL="http://127.0.0.1:$PORT"
PID=""
start() {
    "$PROFILE_DIR/roost" serve --listen "127.0.0.1:$PORT" --data "$DATA/data" >>"$DATA/server.log" 2>&1 &
    PID=$!
    "$LOAD" wait-ready --url "$URL/healthz" --timeout 20s
}
stop() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
trap 'stop; rm -rf "$DATA"' EXIT
start || { echo "smoke: roost did not start"; tail -5 "$DATA/server.log"; exit 1; }

passed=0 failed=0 skipped=0
# scenario NAME ARGS...: runs one scenario; a 404 on the WebSocket upgrade means "not there yet".
scenario() {
    local name=$1
    shift
    echo "== $name: roost-load $*"
    if timeout 120 "$LOAD" --server-pid "$PID" "$@" >"$DATA/out" 2>"$DATA/err"; then
        cat "$DATA/out"
        passed=$((passed + 1))
    else
        cat "$DATA/out" "$DATA/err"
        echo "FAILED $name"
        failed=$((failed + 1))
    fi
}

scenario selfcheck selfcheck --duration "${SECS}s" --conns 50
scenario durable durable --url "$URL" --objects 4 --clients 8 --duration "${SECS}s"
scenario rooms rooms --url "$URL" --rooms 4 --clients 5 --rate 5 --duration "${SECS}s" --drain 2s
scenario fanout fanout --url "$URL" --docs 4 --clients 5 --rate 10 --duration "${SECS}s" --drain 2s
# A real editing trace (two agents typing concurrently), checked by every
# reader and, after the restart below, read back from storage.
TRACE=${TRACE_DIR:-/work/shared/data/editing-traces}/friendsforever.json.gz
TRACE_ARGS=(--url "$URL" --trace "$TRACE" --keystrokes 2000 --docs 2 --doc-prefix smoke-trace)
if [ -f "$TRACE" ]; then
    scenario trace trace "${TRACE_ARGS[@]}" --duration 60s --drain 5s
else
    echo "smoke: no editing trace at $TRACE (TRACE_DIR): trace skipped"
    skipped=$((skipped + 1))
fi
scenario fanout-prepend fanout --url "$URL" --docs 2 --clients 5 --rate 10 --duration "${SECS}s" --drain 2s --workload prepend
scenario fanout-random fanout --url "$URL" --docs 2 --clients 5 --rate 10 --duration "${SECS}s" --drain 2s --workload random
scenario connections connections --url "$URL" --conns 200 --docs 4 --sample 8 --idle 1s
scenario coldload-fill coldload --url "$URL" --doc smoke-cold --updates 500 --phase fill --timeout 20s
if [ "$(tail -1 "$DATA/err" 2>/dev/null)" = "" ] && grep -q fill_updates "$DATA/out" 2>/dev/null; then
    stop
    start || { echo "smoke: roost did not restart"; exit 1; }
    scenario coldload-measure coldload --url "$URL" --doc smoke-cold --updates 500 --phase measure --samples 2 --timeout 20s
    if [ -f "$TRACE" ]; then
        scenario trace-verify trace "${TRACE_ARGS[@]}" --verify
    fi
fi

# The crash suite starts, kill -9s and restarts its own server; its Yjs
# writer is the official y-websocket client, from tests/node's packages.
CRASH_ARGS=(crash --bin "$PROFILE_DIR/roost" --cycles "${CRASH_CYCLES:-4}" --progress-every 0)
if [ ! -d tests/node/node_modules/y-websocket ]; then
    echo "smoke: tests/node has no node_modules (npm ci there): the crash run goes without Yjs"
    CRASH_ARGS+=(--no-yjs)
fi
scenario crash "${CRASH_ARGS[@]}"

echo "smoke: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
