#!/usr/bin/env bash
# Two Roost builds side by side, alternating in one window: for each of RUNS
# rounds, each binary in turn gets a fresh data directory on a free loopback
# port and runs the same cells — durable RPC (100 objects x 64 clients, and
# 1 x 64) and Yjs fan-out (10 docs x 10 clients at 50 updates/s) — then the
# medians per binary are printed. Every run is bounded; servers stop by PID.
#
#   OLD=/path/to/old/roost NEW=target/release/roost loadtest/bench-side-by-side.sh
#   RUNS=3 DURATION=8s (defaults); LOAD=path to roost-load (default: target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?set OLD to the baseline roost binary}"
NEW=${NEW:-target/release/roost}
LOAD=${LOAD:-target/release/roost-load}
RUNS=${RUNS:-3}
DURATION=${DURATION:-8s}
OUT=${OUT:-$(mktemp /tmp/roost-side-by-side.XXXXXX.jsonl)}
echo "old $OLD, new $NEW; load average $(cut -d' ' -f1-3 /proc/loadavg); results: $OUT" >&2
for run in $(seq 1 "$RUNS"); do
    for which in old new; do
        bin=$OLD; [ "$which" = new ] && bin=$NEW
        data=$(mktemp -d /tmp/roost-sbs.XXXXXX)
        port=$("$LOAD" free-port)
        "$bin" serve --listen "127.0.0.1:$port" --data "$data" >"$data.log" 2>&1 &
        pid=$!
        "$LOAD" wait-ready --url "http://127.0.0.1:$port/healthz" --timeout 20s
        for cell in "100 64" "1 64"; do
            set -- $cell
            timeout 120 "$LOAD" --json --server-pid "$pid" --label "$which durable $1x$2" \
                durable --url "http://127.0.0.1:$port" --objects "$1" --clients "$2" --duration "$DURATION" >>"$OUT"
        done
        timeout 120 "$LOAD" --json --server-pid "$pid" --label "$which fanout 10x10@50" \
            fanout --url "http://127.0.0.1:$port" --docs 10 --clients 10 --rate 50 --duration "$DURATION" >>"$OUT"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rm -rf "$data" "$data.log"
    done
done
"$LOAD" summarize --markdown --figures calls_per_s,delivered_per_s,latency_p50_us,latency_p99_us,server_rss_bytes "$OUT"
