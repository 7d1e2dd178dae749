#!/usr/bin/env bash
# Side-by-side run: Roost against y-websocket-server (@y/websocket-server,
# LevelDB persistence) and Hocuspocus (SQLite extension). Installs the peers
# into a cache folder outside the repo, starts each server on a free loopback
# port with a temporary data directory, runs the same roost-load scenarios
# against each, stops every server by PID, and prints each figure with
# Roost's ratio to each peer.
#
#   scripts/peers/run.sh                      # all targets, default sizes
#   TARGETS="y-websocket hocuspocus" scripts/peers/run.sh
#   DURATION=5s CONNS=1000 scripts/peers/run.sh
#
# Environment: ROOST_PEERS_CACHE (default ~/.cache/roost-peers), TARGETS,
# DURATION (fanout run length), DOCS, CLIENTS, RATE, CONNS, CONN_DOCS,
# UPDATES (coldload), OUT (JSON lines file). Every run is bounded by
# `timeout`; only 127.0.0.1 is used.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

CACHE=${ROOST_PEERS_CACHE:-$HOME/.cache/roost-peers}
TARGETS=${TARGETS:-"roost y-websocket hocuspocus"}
DURATION=${DURATION:-10s}
DOCS=${DOCS:-10}
CLIENTS=${CLIENTS:-10}
RATE=${RATE:-20}
CONNS=${CONNS:-2000}
CONN_DOCS=${CONN_DOCS:-20}
UPDATES=${UPDATES:-5000}
OUT=${OUT:-$(mktemp /tmp/roost-peers.XXXXXX.jsonl)}

log() { echo "[peers] $*" >&2; }

# --- install the peers (outside the repo) -----------------------------------
install_peers() {
    mkdir -p "$CACHE"
    if ! cmp -s "$REPO/scripts/peers/package.json" "$CACHE/package.json" || [ ! -d "$CACHE/node_modules/@hocuspocus/server" ]; then
        log "installing peers into $CACHE"
        cp "$REPO/scripts/peers/package.json" "$CACHE/package.json"
        (cd "$CACHE" && timeout 900 npm install --no-audit --no-fund --loglevel=error) || {
            log "npm install failed"
            return 1
        }
    fi
}

# --- servers ----------------------------------------------------------------
SERVER_PID=""
URL=""
PROTOCOL=""

# start_server TARGET PORT DATA_DIR: starts it in the background, sets SERVER_PID/URL/PROTOCOL.
start_server() {
    local target=$1 port=$2 data=$3
    mkdir -p "$data"
    case "$target" in
    roost)
        "$REPO/target/release/roost" serve --listen "127.0.0.1:$port" --data "$data/roost" >>"$data/server.log" 2>&1 &
        SERVER_PID=$!
        URL="http://127.0.0.1:$port"
        PROTOCOL=roost
        ;;
    y-websocket)
        (cd "$CACHE" && HOST=127.0.0.1 PORT=$port YPERSISTENCE="$data/leveldb" exec node node_modules/@y/websocket-server/src/server.js) >>"$data/server.log" 2>&1 &
        SERVER_PID=$!
        URL="ws://127.0.0.1:$port"
        PROTOCOL=y-websocket
        ;;
    hocuspocus)
        (cd "$CACHE" && PORT=$port DB="$data/hocuspocus.sqlite" NODE_PATH="$CACHE/node_modules" exec node "$REPO/scripts/peers/hocuspocus-server.cjs") >>"$data/server.log" 2>&1 &
        SERVER_PID=$!
        URL="ws://127.0.0.1:$port"
        PROTOCOL=hocuspocus
        ;;
    *)
        log "unknown target $target"
        return 1
        ;;
    esac
    local ready=${URL/ws:/http:}
    [ "$target" = roost ] && ready="$URL/healthz"
    if ! "$LOAD" wait-ready --url "$ready" --timeout 20s; then
        log "$target did not start; log:"
        tail -5 "$data/server.log" >&2
        stop_server
        return 1
    fi
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        # Bounded wait, then SIGKILL.
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

WORK=$(mktemp -d /tmp/roost-peers-run.XXXXXX)
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# run_load TARGET ARGS...: one roost-load run, its JSON line appended to $OUT.
run_load() {
    local target=$1
    shift
    if ! timeout 300 "$LOAD" --json --label "$target" --server-pid "$SERVER_PID" "$@" >>"$OUT"; then
        log "$target: roost-load $1 failed (see above); continuing"
    fi
}

# --- main -------------------------------------------------------------------
install_peers || exit 1
cargo build --release -q -p roost -p roost-load || exit 1
LOAD="$REPO/target/release/roost-load"
log "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB; node $(node --version); results in $OUT"

for target in $TARGETS; do
    data="$WORK/$target"
    port=$("$LOAD" free-port)
    start_server "$target" "$port" "$data" || continue
    log "$target (pid $SERVER_PID) at $URL"

    log "$target: fanout docs=$DOCS clients=$CLIENTS rate=$RATE for $DURATION"
    run_load "$target" fanout --url "$URL" --protocol "$PROTOCOL" \
        --docs "$DOCS" --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION"

    log "$target: connections conns=$CONNS docs=$CONN_DOCS"
    run_load "$target" connections --url "$URL" --protocol "$PROTOCOL" \
        --conns "$CONNS" --docs "$CONN_DOCS" --idle 2s

    log "$target: coldload fill updates=$UPDATES"
    if timeout 300 "$LOAD" --label "$target" coldload --url "$URL" --protocol "$PROTOCOL" \
        --doc coldload --updates "$UPDATES" --phase fill >/dev/null; then
        # Let asynchronous persistence (LevelDB, debounced stores) settle, then restart.
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
