#!/usr/bin/env bash
# Cold-load benchmark: how long the first client after a restart takes to
# hold a Yjs document of U stored updates, with the server's default flags.
# "Never compacted": the document is filled and the server killed with
# kill -9 right after the last acknowledged update, so the quiet-time
# compaction alarm (--ydoc-compact-after, 5 s) never ran; the restarted
# server is measured at once (the overdue alarm is still seconds away).
# What the log holds then is bounded by the defaults: a snapshot every
# --ydoc-snapshot-rows (2,000) updates or 4 MiB. U defaults to 9,999, the
# worst case for a 10,000-update document (1,999 updates after the newest
# snapshot; 10,000 itself lands on a snapshot). "After compaction": the
# `compact` call, a clean stop, a restart, measured again.
# Each round uses a fresh document: fill, kill -9, restart, measure (never
# compacted), compact, stop, restart, measure (after compaction). Prints
# every round and the medians.
#
#   loadtest/bench-coldload.sh                  # 3 rounds of 9,999 updates
#   ROUNDS=1 UPDATES=2000 loadtest/bench-coldload.sh
#   SERVER_ARGS="--ydoc-snapshot-rows 100000000" loadtest/bench-coldload.sh  # no snapshots at all
#
# Every step is bounded by `timeout`; the server is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
UPDATES=${UPDATES:-9999}
# Extra server flags (default: none, the defaults are what is measured).
SERVER_ARGS=${SERVER_ARGS:-}
OUT=${OUT:-$(mktemp /tmp/roost-bench-coldload.XXXXXX.jsonl)}

cargo build --release -q -p roost -p roost-load
BIN=target/release
DATA=$(mktemp -d /tmp/roost-bench-data.XXXXXX)
PORT=$("$BIN/roost-load" free-port)
URL="http://127.0.0.1:$PORT"
SERVER_PID=""

start() {
    # shellcheck disable=SC2086 # SERVER_ARGS is split into flags on purpose
    "$BIN/roost" serve --listen "127.0.0.1:$PORT" --data "$DATA" $SERVER_ARGS >>"$DATA.log" 2>&1 &
    SERVER_PID=$!
    "$BIN/roost-load" wait-ready --url "$URL/healthz" --timeout 30s
}
stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
kill9() {
    kill -9 "$SERVER_PID" 2>/dev/null || true
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
    # The fill ends with a sync round trip: every update is applied and
    # acknowledged (durable) when it returns.
    timeout 300 "$BIN/roost-load" coldload --url "$URL" --doc "$doc" --updates "$UPDATES" --phase fill --json >/dev/null
    kill9
    start
    timeout 120 "$BIN/roost-load" coldload --url "$URL" --doc "$doc" --updates "$UPDATES" --phase measure --label "never compacted (kill -9)" --json | tee -a "$OUT"
    timeout 60 curl -sf -X POST -H 'content-type: application/json' -d '{}' "$URL/v1/objects/ydoc/$doc/call/compact" >/dev/null
    stop
    start
    timeout 120 "$BIN/roost-load" coldload --url "$URL" --doc "$doc" --updates "$UPDATES" --phase measure --label "after compaction" --json | tee -a "$OUT"
    stop
done
echo "$(uptime)" >&2
"$BIN/roost-load" summarize "$OUT"
