# Sourced by run.sh and loadtest/bench-trace.sh: installs the peers into
# a cache folder outside the repo and starts/stops one server at a time on
# loopback (start_server TARGET PORT DATA_DIR; stop_server; Roost from
# ROOST_BIN with ROOST_ARGS, default target/release/roost). Expects REPO,
# CACHE, TARGETS, YSWEET, YSWEET_VERSION and (once servers start) LOAD set.
# shellcheck shell=bash

log() { echo "[peers] $*" >&2; }

# --- install the peers (outside the repo) -----------------------------------
wants() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }

install_peers() {
    mkdir -p "$CACHE"
    if wants y-sweet && [ "$("$YSWEET" version 2>/dev/null)" != "$YSWEET_VERSION" ]; then
        # A Rust build on a shared machine: niced, bounded, cached across runs.
        log "installing y-sweet $YSWEET_VERSION into $CACHE/y-sweet (cargo install; takes a while)"
        timeout 3600 nice -n 10 cargo install y-sweet --version "$YSWEET_VERSION" --locked \
            --root "$CACHE/y-sweet" --quiet || {
            log "cargo install y-sweet failed"
            return 1
        }
    fi
    if ! wants y-websocket && ! wants hocuspocus; then
        return 0
    fi
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
# Signal that makes the server store everything and exit.
STOP_SIGNAL=TERM
# Extra roost-load flags for the current target (y-sweet's server token).
TARGET_ARGS=()
YSWEET_KEY=""
YSWEET_SERVER_TOKEN=""

# One y-sweet auth key per run (`y-sweet gen-auth --json`): the private key
# goes to the server, the server token to roost-load's --token.
ysweet_keys() {
    [ -n "$YSWEET_KEY" ] && return 0
    local json
    json=$("$YSWEET" gen-auth --json) || return 1
    YSWEET_KEY=$(printf '%s\n' "$json" | sed -n 's/.*"private_key": *"\([^"]*\)".*/\1/p')
    YSWEET_SERVER_TOKEN=$(printf '%s\n' "$json" | sed -n 's/.*"server_token": *"\([^"]*\)".*/\1/p')
    [ -n "$YSWEET_KEY" ] && [ -n "$YSWEET_SERVER_TOKEN" ]
}

# start_server TARGET PORT DATA_DIR: starts it in the background, sets SERVER_PID/URL/PROTOCOL.
start_server() {
    local target=$1 port=$2 data=$3
    mkdir -p "$data"
    STOP_SIGNAL=TERM
    TARGET_ARGS=()
    case "$target" in
    roost)
        # shellcheck disable=SC2086 # ROOST_ARGS is split into flags on purpose
        "${ROOST_BIN:-$REPO/target/release/roost}" serve --listen "127.0.0.1:$port" --data "$data/roost" ${ROOST_ARGS:-} >>"$data/server.log" 2>&1 &
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
    y-sweet)
        ysweet_keys || {
            log "y-sweet gen-auth failed"
            return 1
        }
        # The auth key by environment (not on the command line); RUST_LOG=warn
        # because y-sweet logs at INFO on every document change by default.
        # Checkpoints stay at its default (every 10 s); SIGINT stores all.
        Y_SWEET_AUTH="$YSWEET_KEY" RUST_LOG=warn "$YSWEET" serve "$data/store" \
            --host 127.0.0.1 --port "$port" >>"$data/server.log" 2>&1 &
        SERVER_PID=$!
        URL="http://127.0.0.1:$port"
        PROTOCOL=y-sweet
        STOP_SIGNAL=INT
        TARGET_ARGS=(--token "$YSWEET_SERVER_TOKEN")
        ;;
    *)
        log "unknown target $target"
        return 1
        ;;
    esac
    local ready=${URL/ws:/http:}
    [ "$target" = roost ] && ready="$URL/healthz"
    [ "$target" = y-sweet ] && ready="$URL/ready"
    if ! "$LOAD" wait-ready --url "$ready" --timeout 20s; then
        log "$target did not start; log:"
        tail -5 "$data/server.log" >&2
        stop_server
        return 1
    fi
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -s "$STOP_SIGNAL" "$SERVER_PID" 2>/dev/null || true
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

