#!/usr/bin/env bash
# The encryption-overhead study: YCSB workloads A-F against one local eekv node in each crypto
# mode (none, inline, offload, adaptive) and against redis-server without and with TLS, for three
# record shapes, all in one run on this machine. Writes every run's JSON under $OUT/raw, then
# `eekv bench report` turns them into $OUT/overhead.{json,md} and one SVG chart per record shape.
#
# Fairness: the server under test (eekv's node, or redis-server) gets the same CPU ($SERVER_CPU)
# and the load generator another ($CLIENT_CPU); both databases see the same generator, threads and
# requests in flight, the same TLS certificates (mutual TLS 1.3, ECDSA P-256), and the same
# durability (none: eekv runs `nosync`, Redis without AOF or snapshots). Each round runs every
# configuration once, so slow spells of this shared machine hit all of them; the report takes
# the median over rounds.
#
# Knobs (environment): ROUNDS, SECONDS_PER_RUN, OUTSTANDING, THREADS, SHAPES, WORKLOADS, MODES,
# MTU (eekv's data-plane packet size; 1472 = a 1500-byte Ethernet frame, the default), SERVER_CPU,
# CLIENT_CPU, OUT. Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
OUTSTANDING=${OUTSTANDING:-8}
THREADS=${THREADS:-1}
# fieldcount x fieldlength : records
SHAPES=${SHAPES:-"10x100:100000 1x4096:50000 1x65536:4000"}
WORKLOADS=${WORKLOADS:-"a b c f d e"}
MODES=${MODES:-"none inline offload adaptive"}
MTU=${MTU:-1472}
if [ "$(nproc)" -ge 2 ]; then
    SERVER_CPU=${SERVER_CPU:-0}
    CLIENT_CPU=${CLIENT_CPU:-1}
else
    SERVER_CPU=${SERVER_CPU:-0}
    CLIENT_CPU=${CLIENT_CPU:-0}
fi
OUT=${OUT:-$ROOT/bench/results/overhead}
EEKV_PORT=${EEKV_PORT:-33850}
EEKV_UDP=${EEKV_UDP:-33900}
REDIS_PORT=${REDIS_PORT:-33379}
REDIS_TLS_PORT=${REDIS_TLS_PORT:-33380}

command -v redis-server >/dev/null || deploy/install-deps.sh
make -s release >/dev/null
EEKV=$ROOT/.build/release/eekv

WORK=$(mktemp -d /tmp/eekv-overhead.XXXXXX)
SERVER_PID=""
REDIS_PID=""
# Stops a server: SIGTERM, up to 10 s to finish, then SIGKILL.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_eekv() {
    [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"
    SERVER_PID=""
}
stop_redis() {
    [ -n "$REDIS_PID" ] && stop_pid "$REDIS_PID"
    REDIS_PID=""
}
cleanup() {
    stop_eekv
    stop_redis
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$EEKV" certs init --dir "$WORK/certs" --nodes 1 --clients 1 >/dev/null
# One config per crypto mode (the client's sessions must match the node's: plaintext or sealed).
for mode in none inline offload adaptive; do
    cat >"$WORK/node-$mode.toml" <<EOF
[cluster]
crypto = "$mode"
durability = "nosync"
mtu = $MTU
[tls]
dir = "certs"
client = "client-0"
[[node]]
id = 0
host = "127.0.0.1"
port = $EEKV_PORT
udp_port = $EEKV_UDP
threads = 1
EOF
done

start_eekv() { # mode
    taskset -c "$SERVER_CPU" "$EEKV" server --config "$WORK/node-$1.toml" --node 0 --data "$WORK/data" \
        >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    # Up when a get of a missing key answers "not found" (exit 1).
    for _ in $(seq 1 100); do
        # A server that exited (port taken, bad config) must not let a leftover one answer for it.
        kill -0 "$SERVER_PID" 2>/dev/null || break
        code=0
        "$EEKV" get __probe__ --config "$WORK/node-$1.toml" >/dev/null 2>&1 || code=$?
        [ "$code" = 1 ] && return 0
        sleep 0.1
    done
    echo "overhead.sh: eekv node did not start; see $WORK/server.log" >&2
    tail -5 "$WORK/server.log" >&2
    exit 1
}

start_redis() {
    taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$WORK/certs/node-0.pem" --tls-key-file "$WORK/certs/node-0.key" \
        --tls-ca-cert-file "$WORK/certs/ca.pem" --tls-auth-clients yes \
        --save "" --appendonly no --io-threads 1 --dir "$WORK" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        kill -0 "$REDIS_PID" 2>/dev/null || break
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "overhead.sh: redis-server did not start; see $WORK/redis.log" >&2
    tail -5 "$WORK/redis.log" >&2
    exit 1
}

# ycsb PHASE WORKLOAD SHAPE RECORDS JSON MODE [args...]
ycsb() {
    local phase=$1 workload=$2 shape=$3 records=$4 json=$5 mode=$6
    shift 6
    taskset -c "$CLIENT_CPU" "$EEKV" ycsb "$phase" --workload "$workload" --records "$records" \
        -p "fieldcount=${shape%x*}" -p "fieldlength=${shape#*x}" \
        --threads "$THREADS" --outstanding "$OUTSTANDING" --config "$WORK/node-$mode.toml" --json "$json" "$@" \
        >"$WORK/last.txt" 2>"$WORK/last.err" || {
        echo "overhead.sh: ycsb $phase $workload failed:" >&2
        cat "$WORK/last.txt" >&2
        grep -v " sec: " "$WORK/last.err" >&2 || true
        exit 1
    }
}

rm -rf "$OUT/raw"
mkdir -p "$OUT/raw"
echo "overhead study: rounds=$ROUNDS seconds=$SECONDS_PER_RUN threads=$THREADS outstanding=$OUTSTANDING mtu=$MTU server-cpu=$SERVER_CPU client-cpu=$CLIENT_CPU"
for entry in $SHAPES; do
    shape=${entry%%:*}
    records=${entry#*:}
    ops=$((records * 5))
    rm -rf "$WORK/data"
    start_eekv adaptive
    ycsb load a "$shape" "$records" "$WORK/load.json" adaptive
    stop_eekv
    echo "$shape: $records records loaded in eekv"
    for round in $(seq 1 "$ROUNDS"); do
        # Every other round runs the modes in reverse, so a slow spell does not always hit the same one.
        order=$MODES
        [ $((round % 2)) = 0 ] && order=$(echo "$MODES" | tr ' ' '\n' | tac | tr '\n' ' ')
        for mode in $order; do
            start_eekv "$mode"
            for w in $WORKLOADS; do
                ycsb run "$w" "$shape" "$records" "$OUT/raw/$shape-$w-eekv-$mode-r$round.json" "$mode" \
                    --operations "$ops" --duration "$SECONDS_PER_RUN"
            done
            stop_eekv
        done
        # Redis keeps its data in memory only (no AOF, no snapshots): each round loads it afresh,
        # and one server serves the plain and the TLS port from the same data.
        start_redis
        ycsb load a "$shape" "$records" "$WORK/load.json" none --db redis --redis-url "redis://127.0.0.1:$REDIS_PORT"
        for w in $WORKLOADS; do
            ycsb run "$w" "$shape" "$records" "$OUT/raw/$shape-$w-redis-none-r$round.json" none \
                --operations "$ops" --duration "$SECONDS_PER_RUN" --db redis --redis-url "redis://127.0.0.1:$REDIS_PORT"
            ycsb run "$w" "$shape" "$records" "$OUT/raw/$shape-$w-redis-tls-r$round.json" adaptive \
                --operations "$ops" --duration "$SECONDS_PER_RUN" --db redis \
                --redis-url "rediss://127.0.0.1:$REDIS_TLS_PORT"
        done
        stop_redis
        echo "$shape: round $round done"
    done
done

"$EEKV" bench report --dir "$OUT"
