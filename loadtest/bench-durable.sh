#!/usr/bin/env bash
# Durable-RPC benchmark: builds release binaries, starts `roost serve` on a
# free loopback port with a temporary data directory, runs the `durable`
# scenario for objects {1,100} x clients {1,16,128}, RUNS times each for
# DURATION, prints the medians and stops the server by its PID.
#
#   loadtest/bench-durable.sh                 # 3 runs of 5 s per cell
#   RUNS=1 DURATION=2s loadtest/bench-durable.sh
#   OBJECTS="1" CLIENTS="16" loadtest/bench-durable.sh
#   PRIO=1 loadtest/bench-durable.sh          # server and client at real-time
#                                             # priority (chrt -f 10), so other
#                                             # work on the machine (builds) does
#                                             # not delay their wake-ups
#
# Every loop is bounded: cells x RUNS runs, each capped by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
OBJECTS=${OBJECTS:-"1 100"}
CLIENTS=${CLIENTS:-"1 16 128"}
OUT=${OUT:-$(mktemp /tmp/roost-bench-durable.XXXXXX.jsonl)}

cargo build --release -q -p roost -p roost-load
BIN=target/release
RUN=()
if [ "${PRIO:-0}" = 1 ]; then RUN=(chrt -f 10); fi

DATA=$(mktemp -d /tmp/roost-bench-data.XXXXXX)
PORT=$("$BIN/roost-load" free-port)
URL="http://127.0.0.1:$PORT"
"${RUN[@]}" "$BIN/roost" serve --listen "127.0.0.1:$PORT" --data "$DATA" >"$DATA.log" 2>&1 &
SERVER_PID=$!
cleanup() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$DATA" "$DATA.log"
}
trap cleanup EXIT
"$BIN/roost-load" wait-ready --url "$URL/healthz" --timeout 15s

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB memory; server pid $SERVER_PID at $URL" >&2
echo "results: $OUT" >&2
for objects in $OBJECTS; do
    for clients in $CLIENTS; do
        for run in $(seq 1 "$RUNS"); do
            echo "objects=$objects clients=$clients run $run/$RUNS" >&2
            timeout 120 "${RUN[@]}" "$BIN/roost-load" --json --server-pid "$SERVER_PID" \
                --label "objects=$objects clients=$clients" \
                durable --url "$URL" --objects "$objects" --clients "$clients" \
                --duration "$DURATION" >>"$OUT"
        done
    done
done
"$BIN/roost-load" summarize --markdown \
    --figures calls_per_s,latency_p50_us,latency_p90_us,latency_p99_us,latency_max_us,errors,client_cpu_pct,server_cpu_pct,server_events_per_commit \
    "$OUT"
