#!/usr/bin/env bash
# Durable increments with wrk (Debian's `wrk`), one object and 100 objects,
# each on a fresh server and data folder; prints calls/s and the commit
# log's group commits (fsyncs, records per fsync, seconds in fsync) and the
# server's CPU time per call (user + system, from /proc).
#
#   loadtest/wrk/bench.sh                          # target/release/roost
#   BIN=/tmp/roost-old RUNS=3 loadtest/wrk/bench.sh
#   FLAGS="--log-group-delay 0" loadtest/wrk/bench.sh
#
# Every run is bounded (wrk -d); each server is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/roost}
LOAD=${LOAD:-target/release/roost-load}
RUNS=${RUNS:-1}
DURATION=${DURATION:-8s}
read -r -a flags <<<"${FLAGS:-}"
for run in $(seq 1 "$RUNS"); do
    for cell in one many; do
        dir=$(mktemp -d /tmp/roost-wrk.XXXXXX)
        port=$("$LOAD" free-port)
        "$BIN" serve --listen "127.0.0.1:$port" --data "$dir/data" ${flags[@]+"${flags[@]}"} >"$dir/log" 2>&1 &
        pid=$!
        "$LOAD" wait-ready --url "http://127.0.0.1:$port/healthz" --timeout 20s
        ticks0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        if [ "$cell" = one ]; then
            out=$(wrk -t1 -c64 -d"$DURATION" -s loadtest/wrk/one.lua "http://127.0.0.1:$port/v1/objects/counter/o0/call/increment")
        else
            out=$(wrk -t1 -c64 -d"$DURATION" -s loadtest/wrk/many.lua "http://127.0.0.1:$port")
        fi
        ticks=$(($(awk '{print $14 + $15}' "/proc/$pid/stat") - ticks0))
        metrics=$(curl -s "http://127.0.0.1:$port/metrics")
        kill -9 "$pid"; wait "$pid" 2>/dev/null || true
        rm -rf "$dir"
        echo "$out" | grep -q "Non-2xx" && { echo "run $run $cell: non-2xx answers" >&2; exit 1; }
        rate=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
        calls=$(echo "$out" | awk '/requests in/ {print $1}')
        echo "$metrics" | awk -v run="$run" -v cell="$cell" -v rate="$rate" \
            -v cpu="$(awk -v t="$ticks" -v n="$calls" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')" '
            /^roost_log_fsyncs_total / {f=$2} /^roost_log_records_total / {r=$2}
            /^roost_log_fsync_seconds_sum / {s=$2}
            END {printf "run %s %-4s %6d calls/s  %6d fsyncs  %.1f records/fsync  %.2f s in fsync  %s us CPU/call\n", run, cell, rate, f, (f ? r/f : 0), s, cpu}'
    done
done
