#!/usr/bin/env bash
# Side-by-side run: Roost against y-websocket-server (@y/websocket-server,
# LevelDB persistence), Hocuspocus (SQLite extension) and y-sweet (its
# filesystem store, with an auth key so clients go through its token
# handshake). Installs the peers into a cache folder outside the repo (npm
# for the Node servers; `cargo install y-sweet`, niced, for y-sweet), starts
# each server on a free loopback port with a temporary data directory, runs
# the same roost-load scenarios against each (fanout at a fixed rate,
# fanout --find-max, idle connections, cold load after a restart), stops
# every server by PID, and prints each figure with Roost's ratio to each peer.
#
#   scripts/peers/run.sh                      # all targets, default sizes
#   TARGETS="y-websocket hocuspocus" scripts/peers/run.sh
#   DURATION=5s CONNS=1000 scripts/peers/run.sh
#
# Environment: ROOST_PEERS_CACHE (default ~/.cache/roost-peers), TARGETS,
# DURATION (fanout run length), DOCS, CLIENTS, RATE, CONNS, CONN_DOCS,
# UPDATES (coldload), FIND_MAX (1: run fanout --find-max, 0: skip),
# FIND_DOCS, FIND_CLIENTS, FIND_RATE (first round's rate), FIND_DURATION
# (per round), FIND_ROUNDS, YSWEET_VERSION, OUT (JSON lines file). Every run
# is bounded by `timeout`; only 127.0.0.1 is used.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

CACHE=${ROOST_PEERS_CACHE:-$HOME/.cache/roost-peers}
TARGETS=${TARGETS:-"roost y-websocket hocuspocus y-sweet"}
DURATION=${DURATION:-10s}
DOCS=${DOCS:-10}
CLIENTS=${CLIENTS:-10}
RATE=${RATE:-20}
CONNS=${CONNS:-2000}
CONN_DOCS=${CONN_DOCS:-20}
UPDATES=${UPDATES:-5000}
FIND_MAX=${FIND_MAX:-1}
FIND_DOCS=${FIND_DOCS:-10}
FIND_CLIENTS=${FIND_CLIENTS:-10}
FIND_RATE=${FIND_RATE:-5}
FIND_DURATION=${FIND_DURATION:-5s}
FIND_ROUNDS=${FIND_ROUNDS:-10}
YSWEET_VERSION=${YSWEET_VERSION:-0.9.1}
YSWEET="$CACHE/y-sweet/bin/y-sweet"
OUT=${OUT:-$(mktemp /tmp/roost-peers.XXXXXX.jsonl)}

# install_peers, start_server, stop_server, log.
# shellcheck source=scripts/peers/servers.sh
source "$REPO/scripts/peers/servers.sh"

WORK=$(mktemp -d /tmp/roost-peers-run.XXXXXX)
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# run_load TARGET SCENARIO ARGS...: one roost-load run, its JSON line appended
# to $OUT (FILE=path sends it elsewhere).
run_load() {
    local target=$1
    shift
    if ! timeout "${LIMIT:-300}" "$LOAD" --json --label "$target" --server-pid "$SERVER_PID" "$@" \
        ${TARGET_ARGS[@]+"${TARGET_ARGS[@]}"} >>"${FILE:-$OUT}"; then
        log "$target: roost-load $1 failed (see above); continuing"
    fi
}

# --- main -------------------------------------------------------------------
install_peers || exit 1
cargo build --release -q -p roost -p roost-load || exit 1
LOAD="$REPO/target/release/roost-load"
log "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; node $(node --version 2>/dev/null || echo none); y-sweet $("$YSWEET" version 2>/dev/null || echo none); load average $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"

for target in $TARGETS; do
    data="$WORK/$target"
    port=$("$LOAD" free-port)
    start_server "$target" "$port" "$data" || continue
    log "$target (pid $SERVER_PID) at $URL"

    log "$target: fanout docs=$DOCS clients=$CLIENTS rate=$RATE for $DURATION"
    run_load "$target" fanout --url "$URL" --protocol "$PROTOCOL" \
        --docs "$DOCS" --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION"

    if [ "$FIND_MAX" = 1 ]; then
        # Every round's report goes to a side file; only the maximum joins $OUT
        # (rounds at different rates would each make their own table).
        log "$target: fanout --find-max docs=$FIND_DOCS clients=$FIND_CLIENTS from $FIND_RATE/s, $FIND_DURATION per round"
        : >"$WORK/findmax.jsonl"
        FILE="$WORK/findmax.jsonl" LIMIT=$((FIND_ROUNDS * 60)) run_load "$target" fanout --find-max \
            --url "$URL" --protocol "$PROTOCOL" --docs "$FIND_DOCS" --clients "$FIND_CLIENTS" \
            --rate "$FIND_RATE" --duration "$FIND_DURATION" --max-rounds "$FIND_ROUNDS"
        grep '"scenario":"fanout-max"' "$WORK/findmax.jsonl" >>"$OUT" || true
        grep -o 'stopped: [^"]*' "$WORK/findmax.jsonl" | sed "s/^/[peers] $target: find-max /" >&2 || true
    fi

    log "$target: connections conns=$CONNS docs=$CONN_DOCS"
    run_load "$target" connections --url "$URL" --protocol "$PROTOCOL" \
        --conns "$CONNS" --docs "$CONN_DOCS" --idle 2s

    log "$target: coldload fill updates=$UPDATES"
    if timeout 300 "$LOAD" --label "$target" coldload --url "$URL" --protocol "$PROTOCOL" \
        --doc coldload --updates "$UPDATES" --phase fill ${TARGET_ARGS[@]+"${TARGET_ARGS[@]}"} >/dev/null; then
        # Let asynchronous persistence (LevelDB, debounced stores) settle, then
        # restart (y-sweet stores every loaded document on its SIGINT).
        sleep 3
        stop_server
        start_server "$target" "$port" "$data" || continue
        log "$target: coldload measure after restart"
        run_load "$target" coldload --url "$URL" --protocol "$PROTOCOL" \
            --doc coldload --updates "$UPDATES" --phase measure --samples 3 --timeout 20s
    else
        log "$target: coldload fill failed; skipping the measure phase"
    fi
    stop_server
done

echo
echo "Roost against peers (medians; ratio = roost / peer; (↑) marks figures where higher is better)"
"$LOAD" compare --baseline roost "$OUT"
echo "raw results: $OUT"
