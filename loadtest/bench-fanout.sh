#!/usr/bin/env bash
# Yjs fan-out benchmark (issue 5's figures): for 1 doc x 50 clients,
# 10 x 10 and 100 x 5, `fanout --find-max` raises the per-client update rate
# (x STEP per round) until delivery falls behind or p99 exceeds MAX_P99, then
# halves the gap between the best passing and the failed rate twice; then
# 10 x 10 at 2 updates/s per client measures latency at a low rate. Each
# cell runs RUNS times against a fresh `roost serve` (own data directory,
# stopped by PID); medians are printed at the end, with the server's own
# commit-log fsync latency (the floor under every durable update).
#
#   loadtest/bench-fanout.sh                     # RUNS=3, 5 s rounds
#   RUNS=1 CELLS="10x10" loadtest/bench-fanout.sh
#   ROOST=/tmp/roost-old loadtest/bench-fanout.sh  # another server binary
#   SERVER_ARGS="--ydoc-compact-after 5s" loadtest/bench-fanout.sh  # server flags
#
# Every run is bounded by `timeout` and --max-rounds.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
MAX_P99=${MAX_P99:-250ms}
STEP=${STEP:-1.5}
CELLS=${CELLS:-"1x50 10x10 100x5 low"}
OUT=${OUT:-$(mktemp /tmp/roost-bench-fanout.XXXXXX.jsonl)}

cargo build --release -q -p roost -p roost-load
BIN=target/release
ROOST=${ROOST:-$BIN/roost}
SERVER_PID=""
DATA=""

start() {
    DATA=$(mktemp -d /tmp/roost-bench-data.XXXXXX)
    PORT=$("$BIN/roost-load" free-port)
    URL="http://127.0.0.1:$PORT"
    # shellcheck disable=SC2086 # SERVER_ARGS is split into flags on purpose
    "$ROOST" serve --listen "127.0.0.1:$PORT" --data "$DATA" ${SERVER_ARGS:-} >"$DATA.log" 2>&1 &
    SERVER_PID=$!
    "$BIN/roost-load" wait-ready --url "$URL/healthz" --timeout 15s
}
stop() {
    if [ -n "$SERVER_PID" ]; then
        # The server's commit-log fsync latency over the run, from /metrics.
        curl -sf "$URL/metrics" | awk -v label="$1" '
            /^roost_log_fsync_seconds_bucket/ { split($1, a, "\""); le[n] = a[2]; c[n++] = $2 }
            /^roost_log_fsync_seconds_sum/ { sum = $2 }
            /^roost_log_fsync_seconds_count/ { cnt = $2 }
            /^roost_wal_checkpoint_seconds_sum/ { bs = $2 }
            /^roost_wal_checkpoint_seconds_count/ { bc = $2 }
            /^roost_wal_checkpoint_stall_seconds_sum/ { ss = $2 }
            /^roost_wal_checkpoint_stall_seconds_count/ { sc = $2 }
            END {
                # WAL checkpoints: in the background, and on the object (a stall).
                printf "%s: WAL checkpoints in the background %d (%.0f ms in all), on the object %d (%.0f ms in all)\n", label, bc, bs * 1000, sc, ss * 1000
                if (cnt == 0) exit
                p50 = p99 = ""
                for (i = 0; i < n; i++) {
                    if (p50 == "" && c[i] >= cnt * 0.5) p50 = le[i]
                    if (p99 == "" && c[i] >= cnt * 0.99) p99 = le[i]
                }
                printf "%s: server log fsyncs %d, mean %.3f ms, p50 <= %s s, p99 <= %s s\n", label, cnt, sum / cnt * 1000, p50, p99
            }' >&2 || true
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        rm -rf "$DATA" "$DATA.log"
        SERVER_PID=""
    fi
}
trap 'stop cleanup' EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB memory; $(uptime)" >&2
echo "results: $OUT" >&2
for cell in $CELLS; do
    for run in $(seq 1 "$RUNS"); do
        start
        case "$cell" in
        1x50) docs=1 clients=50 rate=40 ;;
        10x10) docs=10 clients=10 rate=20 ;;
        100x5) docs=100 clients=5 rate=10 ;;
        low) docs=10 clients=10 rate=2 ;;
        *) echo "unknown cell $cell" >&2; exit 2 ;;
        esac
        echo "$cell run $run/$RUNS" >&2
        if [ "$cell" = low ]; then
            timeout 120 "$BIN/roost-load" --json --server-pid "$SERVER_PID" --label "10x10 @2/s" \
                fanout --url "$URL" --docs 10 --clients 10 --rate 2 --duration 20s >>"$OUT"
        else
            timeout 600 "$BIN/roost-load" --json --server-pid "$SERVER_PID" --label "$cell" \
                fanout --url "$URL" --docs "$docs" --clients "$clients" --rate "$rate" \
                --duration "$DURATION" --find-max --max-p99 "$MAX_P99" --step "$STEP" --max-rounds 10 \
                | grep '"scenario":"fanout-max"' >>"$OUT"
        fi
        stop "$cell run $run"
    done
done
echo "$(uptime)" >&2
"$BIN/roost-load" summarize --markdown "$OUT"
