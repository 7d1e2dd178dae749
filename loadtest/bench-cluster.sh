#!/usr/bin/env bash
# Cluster-mode benchmark, side by side with one node: starts three
# JetStream servers (the pinned nats-server, `sync_interval: always`, R3)
# and three `roost serve --cluster` nodes on free loopback ports, plus one
# single-node Roost, and runs the `durable` scenario against each:
#   - one client, one object (a durable RPC at low rate: its latency),
#   - 64 clients over 100 objects (throughput);
# against the cluster twice: objects all owned by the node the run's first
# read went through (2 of 3 calls proxied), and owners spread so that each
# client talks to its object's owner (`cluster-spread`);
# RUNS times each, then prints the medians. Then it measures crash
# failover FAILOVERS times: kill -9 of a counter's owner while a probe
# increments it through another node; the time from the kill to the first
# increment that succeeds again.
#
#   loadtest/bench-cluster.sh                     # 3 runs of 8 s per cell, 5 failovers
#   RUNS=1 DURATION=3s FAILOVERS=1 loadtest/bench-cluster.sh
#   BIN=/tmp/bench-new loadtest/bench-cluster.sh  # binaries built elsewhere
#   REPLICAS=1 NATS_SYNC=2m loadtest/bench-cluster.sh  # a spike only: NATS at
#       its cheapest (one replica, lazy fsync; NOT durable), to see what the
#       Roost nodes alone reach on this machine
#
# Every loop is bounded; every process is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-8s}
FAILOVERS=${FAILOVERS:-5}
TTL=${TTL:-3s}
SHARDS=${SHARDS:-3}
REPLICAS=${REPLICAS:-3}
NATS_SYNC=${NATS_SYNC:-always}
OUT=${OUT:-$(mktemp /tmp/roost-bench-cluster.XXXXXX.jsonl)}
if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p roost -p roost-load
    BIN=target/release
fi
./scripts/install-nats.sh >/dev/null
NATS=${NATS_SERVER:-.tools/nats/bin/nats-server}
LOAD="$BIN/roost-load"
WORK=$(mktemp -d /tmp/roost-bench-cluster.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Three routed JetStream servers.
NATS_URLS=() MONITORS=() ROUTES=()
for i in 1 2 3; do
    NATS_PORT[$i]=$("$LOAD" free-port); ROUTE_PORT[$i]=$("$LOAD" free-port); MON_PORT[$i]=$("$LOAD" free-port)
    NATS_URLS+=("nats://127.0.0.1:${NATS_PORT[$i]}"); MONITORS+=("http://127.0.0.1:${MON_PORT[$i]}")
    ROUTES+=("nats-route://127.0.0.1:${ROUTE_PORT[$i]}")
done
for i in 1 2 3; do
    cat >"$WORK/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${NATS_PORT[$i]}
http: 127.0.0.1:${MON_PORT[$i]}
jetstream { store_dir: "$WORK/js$i", sync_interval: $NATS_SYNC }
cluster { name: bench, listen: 127.0.0.1:${ROUTE_PORT[$i]}, routes: [$(IFS=,; echo "${ROUTES[*]}")] }
CONF
    "$NATS" -c "$WORK/n$i.conf" >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2 3; do "$LOAD" wait-ready --url "${MONITORS[$((i-1))]}/healthz" --timeout 20s; done
sleep 2

# The nodes read the servers' sync setting from their monitoring ports;
# without fsync they would refuse them, so the spike skips the check.
if [ "$NATS_SYNC" = always ]; then
    SYNC_CHECK=(--cluster-monitor "$(IFS=,; echo "${MONITORS[*]}")")
else
    SYNC_CHECK=(--cluster-skip-sync-check)
fi
start_node() { # index
    local i=$1 port
    port=$("$LOAD" free-port)
    "$BIN/roost" serve --listen "127.0.0.1:$port" --data "$WORK/r$i" --cluster "$(IFS=,; echo "${NATS_URLS[*]}")" \
        "${SYNC_CHECK[@]}" --node-id "r$i" --cluster-node-ttl "$TTL" --cluster-shards "$SHARDS" \
        --cluster-replicas "$REPLICAS" --admin-token bench >>"$WORK/r$i.log" 2>&1 &
    ROOST_PID[$i]=$! ROOST_URL[$i]="http://127.0.0.1:$port"
    PIDS+=($!)
    "$LOAD" wait-ready --url "${ROOST_URL[$i]}/healthz" --timeout 60s || { sed -n "/Error/,/Stack/p" "$WORK/r$i.log" >&2; return 1; }
}
for i in 1 2 3; do start_node "$i"; done
SINGLE_PORT=$("$LOAD" free-port)
"$BIN/roost" serve --listen "127.0.0.1:$SINGLE_PORT" --data "$WORK/single" >"$WORK/single.log" 2>&1 &
SINGLE_PID=$!; PIDS+=($SINGLE_PID)
SINGLE="http://127.0.0.1:$SINGLE_PORT"
"$LOAD" wait-ready --url "$SINGLE/healthz" --timeout 20s
CLUSTER_URLS="${ROOST_URL[1]},${ROOST_URL[2]},${ROOST_URL[3]}"

echo "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); results: $OUT" >&2
for run in $(seq 1 "$RUNS"); do
    for cell in "1 1" "100 64"; do
        set -- $cell
        echo "run $run/$RUNS: objects=$1 clients=$2" >&2
        timeout 120 "$LOAD" --json --label "single objects=$1 clients=$2" \
            durable --url "$SINGLE" --objects "$1" --clients "$2" --prefix "s$run" --duration "$DURATION" >>"$OUT"
        timeout 120 "$LOAD" --json --label "cluster objects=$1 clients=$2" \
            durable --url "$CLUSTER_URLS" --objects "$1" --clients "$2" --prefix "c$run" --duration "$DURATION" >>"$OUT"
        # The same with object i first touched through node i mod 3: owners
        # spread, and client i (object i, node i mod 3) reaches its owner.
        for o in $(seq 0 $(($1 - 1))); do
            curl -sf -X POST "${ROOST_URL[$((o % 3 + 1))]}/v1/objects/counter/p$run-$o/call/get" -d '{}' >/dev/null
        done
        timeout 120 "$LOAD" --json --label "cluster-spread objects=$1 clients=$2" \
            durable --url "$CLUSTER_URLS" --objects "$1" --clients "$2" --prefix "p$run" --duration "$DURATION" >>"$OUT"
    done
done
"$LOAD" summarize --markdown --figures calls_per_s,latency_p50_us,latency_p99_us,errors "$OUT"
# Where a cluster call's time goes (the first two runs: every object owned
# by r1, which the first read touched; then spread): JetStream's append acknowledgement, per node.
for i in 1 2 3; do
    curl -s -H 'authorization: Bearer bench' "${ROOST_URL[$i]}/metrics" | awk -v node="r$i" '
        /^roost_cluster_append_seconds_sum/ {s=$2} /^roost_cluster_append_seconds_count/ {c=$2}
        /^roost_cluster_forwarded_total/ {f=$2}
        END {if (c > 0) printf "%s: %d appends, mean %.2f ms; %d forwarded\n", node, c, 1000*s/c, f}' >&2
done

# Crash failover: the owner of counter fo-k is the node its first call went
# through (r1); a probe increments through r2 until it succeeds again.
echo >&2
echo "| failover | kill -9 → first increment through another node |" 
echo "|---|---|"
for k in $(seq 1 "$FAILOVERS"); do
    curl -sf -X POST "${ROOST_URL[1]}/v1/objects/counter/fo-$k/call/increment" -d '{}' >/dev/null
    kill -9 "${ROOST_PID[1]}"; wait "${ROOST_PID[1]}" 2>/dev/null || true
    t0=$(date +%s%N)
    for _ in $(seq 1 600); do
        if curl -sf -m 5 -X POST "${ROOST_URL[2]}/v1/objects/counter/fo-$k/call/increment" -d '{}' >/dev/null; then break; fi
        sleep 0.02
    done
    t1=$(date +%s%N)
    echo "| $k | $(( (t1 - t0) / 1000000 )) ms |"
    start_node 1
done
