#!/usr/bin/env bash
# Real editing, side by side: replays an editing trace (default the
# automerge-paper keystrokes) into DOCS documents, one writer per agent and
# READERS readers each, against Roost and each peer (y-websocket-server,
# Hocuspocus, y-sweet; installed into ~/.cache/roost-peers by
# scripts/peers/servers.sh). Per target and run: a fresh server, then
# `roost-load trace --find-max` (rate per writer from START_RATE, ×STEP per
# round, p99 bound MAX_P99, every reader's text checked each round); RUNS
# runs per target, alternating targets; medians and ratios at the end.
# With VERIFY=1 (default) Roost also replays the whole trace into one
# document, is restarted, and the document is read back and checked.
#
#   loadtest/bench-trace.sh
#   TARGETS="roost hocuspocus" RUNS=1 loadtest/bench-trace.sh
#   TRACE=/path/friendsforever.json.gz DOCS=10 READERS=4 loadtest/bench-trace.sh
#   ROOST_BIN=/tmp/roost-old loadtest/bench-trace.sh   # another Roost binary
#   WORKLOAD=prepend DOCS=10 CLIENTS=10 loadtest/bench-trace.sh   # fanout --find-max instead
#   WORKLOAD=prepend LOW=1 loadtest/bench-trace.sh      # fanout at 2/s per client: latency
#   STORAGE=1 KEYSTROKES=20000 loadtest/bench-trace.sh  # bytes stored per keystroke, per target
#
# Every run is bounded by `timeout` and --max-rounds; servers listen on
# 127.0.0.1 and are stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

CACHE=${ROOST_PEERS_CACHE:-$HOME/.cache/roost-peers}
TARGETS=${TARGETS:-"roost y-websocket hocuspocus y-sweet"}
TRACE=${TRACE:-${TRACE_DIR:-/work/shared/data/editing-traces}/automerge-paper.json.gz}
RUNS=${RUNS:-3}
DOCS=${DOCS:-10}
READERS=${READERS:-4}
START_RATE=${START_RATE:-50}
STEP=${STEP:-2}
MAX_P99=${MAX_P99:-250ms}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-10}
VERIFY=${VERIFY:-1}
# WORKLOAD=append|prepend|random: `fanout --find-max --workload` with DOCS x
# CLIENTS instead of the trace (LOW=1: one 20 s round at 2/s per client).
WORKLOAD=${WORKLOAD:-}
# STORAGE=1: per target, KEYSTROKES of the trace into one document at 700/s,
# 8 s idle (Roost compacts after 5 s), a clean stop, then the data folder's
# bytes per keystroke.
STORAGE=${STORAGE:-0}
KEYSTROKES=${KEYSTROKES:-20000}
CLIENTS=${CLIENTS:-10}
LOW=${LOW:-0}
YSWEET_VERSION=${YSWEET_VERSION:-0.9.1}
YSWEET="$CACHE/y-sweet/bin/y-sweet"
OUT=${OUT:-$(mktemp /tmp/roost-bench-trace.XXXXXX.jsonl)}
# Roost closes a socket that sends over 10,000 messages/s (1008): far above
# any typist, but a writer of this benchmark goes past it. Raised, so the
# find-max measures the server, not its flood limit.
export ROOST_ARGS=${ROOST_ARGS:---max-socket-messages-per-sec 1000000}
# y-sweet is compared only if already installed (its build takes long).
if [ ! -x "$YSWEET" ]; then
    TARGETS=${TARGETS//y-sweet/}
fi

# install_peers, start_server, stop_server, log.
# shellcheck source=scripts/peers/servers.sh
source "$REPO/scripts/peers/servers.sh"

WORK=$(mktemp -d /tmp/roost-bench-trace.XXXXXX)
trap 'stop_server; rm -rf "$WORK"' EXIT

install_peers || exit 1
cargo build --release -q -p roost -p roost-load || exit 1
LOAD="$REPO/target/release/roost-load"
[ -f "$TRACE" ] || { log "no trace at $TRACE"; exit 1; }
log "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); trace $TRACE; results in $OUT"

if [ "$STORAGE" = 1 ]; then
    for target in $TARGETS; do
        data="$WORK/$target-storage"
        port=$("$LOAD" free-port)
        start_server "$target" "$port" "$data" || continue
        timeout 300 "$LOAD" trace --url "$URL" --protocol "$PROTOCOL" --trace "$TRACE" --docs 1 \
            --keystrokes "$KEYSTROKES" --rate 700 --duration 200s ${TARGET_ARGS[@]+"${TARGET_ARGS[@]}"} |
            grep -E '^  (sent|text_mismatches) ' | tr -s ' ' | sed "s/^/[peers] $target storage run:/" >&2
        sleep 8
        stop_server
        bytes=$(du -sb "$data" --exclude=server.log | cut -f1)
        echo "$target: $bytes bytes stored for $KEYSTROKES keystrokes: $((bytes / KEYSTROKES)) bytes per keystroke"
    done
    exit 0
fi

for run in $(seq 1 "$RUNS"); do
    for target in $TARGETS; do
        data="$WORK/$target-$run"
        port=$("$LOAD" free-port)
        start_server "$target" "$port" "$data" || continue
        log "$target run $run/$RUNS (pid $SERVER_PID), load average $(cut -d' ' -f1-3 /proc/loadavg)"
        : >"$WORK/rounds.jsonl"
        if [ -z "$WORKLOAD" ]; then
            SCENARIO=(trace --trace "$TRACE" --docs "$DOCS" --readers "$READERS" --step "$STEP" --find-max)
            KEEP=trace-max
        elif [ "$LOW" = 1 ]; then
            SCENARIO=(fanout --workload "$WORKLOAD" --docs "$DOCS" --clients "$CLIENTS")
            KEEP=fanout
        else
            SCENARIO=(fanout --workload "$WORKLOAD" --docs "$DOCS" --clients "$CLIENTS" --step "$STEP"
                --find-max --refine 2)
            KEEP=fanout-max
        fi
        if [ "$LOW" = 1 ]; then
            RATE_ARGS=(--rate 2 --duration 20s)
        else
            RATE_ARGS=(--rate "$START_RATE" --max-p99 "$MAX_P99" --duration "$DURATION" --max-rounds "$ROUNDS")
        fi
        timeout $((ROUNDS * 120)) "$LOAD" --json --label "$target" --server-pid "$SERVER_PID" \
            "${SCENARIO[@]}" --url "$URL" --protocol "$PROTOCOL" "${RATE_ARGS[@]}" \
            ${TARGET_ARGS[@]+"${TARGET_ARGS[@]}"} >>"$WORK/rounds.jsonl" ||
            log "$target: ${SCENARIO[0]} run failed (see above)"
        grep "\"scenario\":\"$KEEP\"" "$WORK/rounds.jsonl" >>"$OUT" || true
        grep -o 'stopped: [^"]*' "$WORK/rounds.jsonl" | sed "s/^/[peers] $target: /" >&2 || true
        stop_server
    done
done

if [ "$VERIFY" = 1 ] && [ -z "$WORKLOAD" ] && wants roost; then
    data="$WORK/roost-verify"
    port=$("$LOAD" free-port)
    ARGS=(trace --trace "$TRACE" --docs 1 --readers 2 --doc-prefix whole --rate 5000 --duration 600s --drain 20s)
    if start_server roost "$port" "$data" && timeout 900 "$LOAD" "${ARGS[@]}" --url "$URL" >"$WORK/whole.txt"; then
        grep -E 'sent |keystrokes_per_s|text_mismatches|latency_p99' "$WORK/whole.txt" | sed 's/^/[peers] roost whole trace: /' >&2
        stop_server
        start_server roost "$port" "$data" &&
            timeout 120 "$LOAD" "${ARGS[@]}" --url "$URL" --verify | sed 's/^/[peers] roost after a restart: /' >&2 ||
            log "roost: the whole trace was NOT read back after a restart"
    else
        log "roost: the whole-trace replay failed"
    fi
    stop_server
fi

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
"$LOAD" compare --baseline roost "$OUT"
echo "raw results: $OUT"
