#!/usr/bin/env bash
# Cold-load benchmark: how long the first client after a restart takes to
# hold a Yjs document of U stored updates, before compaction (the document
# is a log of U updates: snapshots are disabled with --ydoc-snapshot-rows)
# and after it (the `compact` call merged the log into one snapshot).
# Each round uses a fresh document: fill, restart, measure (before),
# compact, restart, measure (after). Prints every round and the medians.
#
#   loadtest/bench-coldload.sh                  # 3 rounds of 10,000 updates
#   ROUNDS=1 UPDATES=2000 loadtest/bench-coldload.sh
#
# Every step is bounded by `timeout`; the server is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
UPDATES=${UPDATES:-10000}
OUT=${OUT:-$(mktemp /tmp/roost-bench-coldload.XXXXXX.jsonl)}

cargo build --release -q -p roost -p roost-load
BIN=target/release
DATA=$(mktemp -d /tmp/roost-bench-data.XXXXXX)
PORT=$("$BIN/roost-load" free-port)
URL="http://127.0.0.1:$PORT"
SERVER_PID=""

start() {
    "$BIN/roost" serve --listen "127.0.0.1:$PORT" --data "$DATA" \
        --ydoc-snapshot-rows 100000000 >>"$DATA.log" 2>&1 &
    SERVER_PID=$!
    "$BIN/roost-load" wait-ready --url "$URL/healthz" --timeout 30s
}
stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
cleanup() {
    stop
    rm -rf "$DATA" "$DATA.log"
}
trap cleanup EXIT

echo "machine: $(nproc) cores; $(uptime)" >&2
echo "results: $OUT" >&2
for round in $(seq 1 "$ROUNDS"); do
    doc="cold-$round-$RANDOM"
    start
    timeout 300 "$BIN/roost-load" coldload --url "$URL" --doc "$doc" --updates "$UPDATES" --phase fill --json >/dev/null
    stop
    start
    timeout 120 "$BIN/roost-load" coldload --url "$URL" --doc "$doc" --updates "$UPDATES" --phase measure --label "before compaction" --json | tee -a "$OUT"
    timeout 60 curl -sf -X POST -H 'content-type: application/json' -d '{}' "$URL/v1/objects/ydoc/$doc/call/compact" >/dev/null
    stop
    start
    timeout 120 "$BIN/roost-load" coldload --url "$URL" --doc "$doc" --updates "$UPDATES" --phase measure --label "after compaction" --json | tee -a "$OUT"
    stop
done
echo "$(uptime)" >&2
"$BIN/roost-load" summarize "$OUT"
