#!/usr/bin/env bash
# The encryption-overhead study: YCSB workloads A-F against one local eekv node in each crypto
# mode (none, inline, offload, adaptive) and against redis-server without and with TLS, for three
# record shapes, all in one run on this machine. Writes every run's JSON under $OUT/raw, then
# `eekv bench report` turns them into $OUT/overhead.{json,md} and one SVG chart per record shape.
#
# Fairness: every server under test (an eekv node per crypto mode, and redis-server) is pinned to
# the same CPU ($SERVER_CPU) and the load generator to another ($CLIENT_CPU); both databases see
# the same generator, threads and requests in flight, the same TLS certificates (mutual TLS 1.3,
# ECDSA P-256), and the same durability (none: eekv runs `nosync`, Redis without AOF or
# snapshots). All six servers are up at once, idle but for the one under load (an idle eekv node
# sleeps in poll(), Redis in epoll).
#
# Interleaving: this VM's speed drifts by more than the effect measured (a plaintext run's
# throughput moved between 5,100 and 7,900 operations per second from one second to the next), so
# separate runs seconds apart compared poorly. Each round of a workload is one `eekv ycsb compare`:
# time is cut into slices of SLICE_MS, every configuration gets one slice per cycle in a fresh
# random order, and each gets SECONDS_PER_RUN of slices. The report takes each configuration's
# ratio to the others within a round, then the median over rounds.
#
# Knobs (environment): ROUNDS, SECONDS_PER_RUN, SLICE_MS, OUTSTANDING, THREADS, SHAPES, WORKLOADS, MODES,
# MTU (eekv's data-plane packet size; 1472 = a 1500-byte Ethernet frame, the default), SERVER_CPU,
# CLIENT_CPU, OUT, DATA_ROOT, IDLE_SPIN_US, CLIENT_SPIN_US. Traffic stays on loopback.
#
# Polling: the node under load has its core to itself (the idle ones sleep until a packet comes),
# so it busy-polls as an eRPC dispatch thread does, for up to IDLE_SPIN_US (1 ms) of quiet before
# it sleeps. With the default 20 µs, meant for cores shared with other work, it fell asleep
# between the client's batches, and each batch then paid a wake-up on both sides. The load
# generator's eekv clients have the client core to themselves as well and poll for up to
# CLIENT_SPIN_US (1 ms) before they sleep (their default, 50 µs, is for shared cores). Redis
# keeps its own design, an epoll loop.
#
# Storage: the eekv nodes keep their LMDB files under $DATA_ROOT, /dev/shm (tmpfs) by default. The
# study compares stores that do not persist synchronously (Redis without AOF or snapshots, eekv
# `nosync`), and on this VM's disk the kernel's background writeback of a node's memory map can hold
# the map's pages locked for more than 10 s (the group-commit writer then waits in a page fault and
# clients time out); that measures the disk, not the store. DATA_ROOT=/path puts them on a disk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-7}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-2}
SLICE_MS=${SLICE_MS:-250}
OUTSTANDING=${OUTSTANDING:-8}
THREADS=${THREADS:-1}
# fieldcount x fieldlength : records
SHAPES=${SHAPES:-"10x100:100000 1x4096:50000 1x65536:4000"}
WORKLOADS=${WORKLOADS:-"a b c f d e"}
MODES=${MODES:-"none inline offload adaptive"}
MTU=${MTU:-1472}
IDLE_SPIN_US=${IDLE_SPIN_US:-1000}
CLIENT_SPIN_US=${CLIENT_SPIN_US:-1000}
if [ "$(nproc)" -ge 2 ]; then
    SERVER_CPU=${SERVER_CPU:-0}
    CLIENT_CPU=${CLIENT_CPU:-1}
else
    SERVER_CPU=${SERVER_CPU:-0}
    CLIENT_CPU=${CLIENT_CPU:-0}
fi
OUT=${OUT:-$ROOT/bench/results/overhead}
# Below Linux's ephemeral range (32768-60999), so no client socket holds one when a server starts.
BASE_PORT=${BASE_PORT:-23850}
REDIS_PORT=${REDIS_PORT:-23379}
REDIS_TLS_PORT=${REDIS_TLS_PORT:-23380}

command -v redis-server >/dev/null || deploy/install-deps.sh
make -s release >/dev/null
EEKV=$ROOT/.build/release/eekv

WORK=
DATA=
declare -A PIDS=()
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
stop_all() {
    for name in "${!PIDS[@]}"; do stop_pid "${PIDS[$name]}"; done
    PIDS=()
}
cleanup() {
    stop_all
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    if [ -n "$DATA" ]; then rm -rf "$DATA"; fi
}

# Set before anything is made, so a failure at any point cleans up what exists.
trap 'cleanup' EXIT
trap 'exit 130' INT TERM
WORK=$(mktemp -d /tmp/eekv-overhead.XXXXXX)
if [ -z "${DATA_ROOT:-}" ]; then
    # tmpfs with room for four nodes' data (about 1 GiB at the default shapes), else beside the rest.
    if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 4194304 ]; then
        DATA_ROOT=/dev/shm
    else
        DATA_ROOT=$WORK
    fi
fi
DATA=$(mktemp -d "$DATA_ROOT/eekv-overhead-data.XXXXXX")

# Whether something already listens on TCP port $1 of loopback: a server left over from an
# earlier run (killed without its cleanup) would answer the start-up probe for the new one, which
# then dies on the busy port, and the study would measure the old server.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free() {
    local port
    for port in "$@"; do
        if port_taken "$port"; then
            echo "overhead.sh: port $port is already in use (a server left from an earlier run?); stop it or set BASE_PORT/REDIS_PORT" >&2
            exit 1
        fi
    done
}

"$EEKV" certs init --dir "$WORK/certs" --nodes 1 --clients 1 >/dev/null
# One node (config, ports, data) per crypto mode; the client's sessions must match its node's
# (plaintext or sealed), so each mode has its own config.
i=0
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
port = $((BASE_PORT + i))
udp_port = $((BASE_PORT + 50 + 10 * i))
threads = 1
EOF
    i=$((i + 1))
done

start_eekv() { # mode data-dir
    require_free "$(sed -n 's/^port = //p' "$WORK/node-$1.toml")"
    taskset -c "$SERVER_CPU" "$EEKV" server --config "$WORK/node-$1.toml" --node 0 --data "$2" \
        --idle-spin-us "$IDLE_SPIN_US" >>"$WORK/server-$1.log" 2>&1 &
    PIDS[eekv-$1]=$!
    # Up when a get of a missing key answers "not found" (exit 1).
    for _ in $(seq 1 100); do
        # A server that exited (port taken, bad config) must not let a leftover one answer for it.
        kill -0 "${PIDS[eekv-$1]}" 2>/dev/null || break
        code=0
        "$EEKV" get __probe__ --config "$WORK/node-$1.toml" >/dev/null 2>&1 || code=$?
        [ "$code" = 1 ] && return 0
        sleep 0.1
    done
    echo "overhead.sh: the $1 eekv node did not start:" >&2
    tail -5 "$WORK/server-$1.log" >&2
    exit 1
}

start_redis() {
    require_free "$REDIS_PORT" "$REDIS_TLS_PORT"
    taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$WORK/certs/node-0.pem" --tls-key-file "$WORK/certs/node-0.key" \
        --tls-ca-cert-file "$WORK/certs/ca.pem" --tls-auth-clients yes \
        --save "" --appendonly no --io-threads 1 --dir "$WORK" --logfile "$WORK/redis.log" &
    PIDS[redis]=$!
    for _ in $(seq 1 100); do
        kill -0 "${PIDS[redis]}" 2>/dev/null || break
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "overhead.sh: redis-server did not start:" >&2
    tail -5 "$WORK/redis.log" >&2
    exit 1
}

# ycsb PHASE WORKLOAD SHAPE RECORDS JSON CONFIG [args...]; CONFIG is an eekv mode, redis or redis-tls.
ycsb() {
    local phase=$1 workload=$2 shape=$3 records=$4 json=$5 config=$6
    shift 6
    rm -f "$json"  # an earlier phase's file must not pass for this one's
    local target=(--config "$WORK/node-$config.toml")
    case $config in
    redis) target=(--config "$WORK/node-none.toml" --db redis --redis-url "redis://127.0.0.1:$REDIS_PORT") ;;
    redis-tls) target=(--config "$WORK/node-adaptive.toml" --db redis --redis-url "rediss://127.0.0.1:$REDIS_TLS_PORT"
        --redis-server-name node-0) ;;
    esac
    taskset -c "$CLIENT_CPU" "$EEKV" ycsb "$phase" --workload "$workload" --records "$records" \
        -p "fieldcount=${shape%x*}" -p "fieldlength=${shape#*x}" \
        --threads "$THREADS" --outstanding "$OUTSTANDING" --client-spin-us "$CLIENT_SPIN_US" "${target[@]}" --json "$json" "$@" \
        >"$WORK/last.txt" 2>"$WORK/last.err" || {
        local code=$?
        # Exit 3 with a summary written: the run finished but some operations failed. The JSON
        # counts them and the report shows them; anything else stops the study, and so does a
        # load that failed to insert records (every later run would read a partial data set).
        if [ "$code" = 3 ] && [ "$phase" = run ] && [ -s "$json" ]; then
            echo "overhead.sh: ycsb $phase $workload against $config: some operations failed:" >&2
            grep "Return=ERROR" "$WORK/last.txt" >&2 || true
            return 0
        fi
        echo "overhead.sh: ycsb $phase $workload against $config failed:" >&2
        cat "$WORK/last.txt" >&2
        grep -v " sec: " "$WORK/last.err" >&2 || true
        exit 1
    }
}

# compare WORKLOAD SHAPE RECORDS JSON-PATTERN [args...]: one interleaved run of the workload
# against every configuration (each eekv mode's node, Redis, Redis+TLS), one JSON per target.
compare() {
    local workload=$1 shape=$2 records=$3 json=$4
    shift 4
    local targets=()
    for mode in $MODES; do targets+=(--target "$mode=$WORK/node-$mode.toml"); done
    targets+=(--target "redis=redis://127.0.0.1:$REDIS_PORT" --target "redis-tls=rediss://127.0.0.1:$REDIS_TLS_PORT")
    # --config: the certificates Redis+TLS is reached with (the cluster's CA and client); Redis
    # serves node-0's certificate, so that is the name the client checks.
    taskset -c "$CLIENT_CPU" "$EEKV" ycsb compare --workload "$workload" --records "$records" \
        -p "fieldcount=${shape%x*}" -p "fieldlength=${shape#*x}" \
        --threads "$THREADS" --outstanding "$OUTSTANDING" --client-spin-us "$CLIENT_SPIN_US" "${targets[@]}" --config "$WORK/node-adaptive.toml" \
        --redis-server-name node-0 \
        --json "$json" "$@" >"$WORK/last.txt" 2>"$WORK/last.err" || {
        local code=$?
        if [ "$code" = 3 ] && grep -q "^\[OVERALL\]" "$WORK/last.txt"; then
            echo "overhead.sh: ycsb compare $workload: some operations failed:" >&2
            grep -E "^\[TARGET\]|Return=ERROR" "$WORK/last.txt" >&2 || true
            return 0
        fi
        echo "overhead.sh: ycsb compare $workload failed:" >&2
        cat "$WORK/last.txt" >&2
        grep -v " sec: " "$WORK/last.err" >&2 || true
        exit 1
    }
}

# The previous study's files go now: a run that fails part-way must not leave its partial raw/
# beside an older report.
rm -rf "$OUT/raw" "$OUT"/overhead.md "$OUT"/overhead.json "$OUT"/overhead-*.svg
mkdir -p "$OUT/raw"
CONFIGS="$MODES redis redis-tls"
echo "overhead study: rounds=$ROUNDS seconds=$SECONDS_PER_RUN slice-ms=$SLICE_MS threads=$THREADS outstanding=$OUTSTANDING mtu=$MTU idle-spin-us=$IDLE_SPIN_US client-spin-us=$CLIENT_SPIN_US server-cpu=$SERVER_CPU client-cpu=$CLIENT_CPU data=$DATA"
for entry in $SHAPES; do
    shape=${entry%%:*}
    records=${entry#*:}
    ops=$((records * 5))
    # Load once, then give every mode's node its own copy of the same data.
    rm -rf "$DATA"/data-*
    start_eekv adaptive "$DATA/data-load"
    ycsb load a "$shape" "$records" "$WORK/load.json" adaptive
    stop_all
    for mode in $MODES; do cp -r "$DATA/data-load" "$DATA/data-$mode"; done
    rm -rf "$DATA/data-load"
    # Write the copies out now: a node writing into its memory map while the kernel writes back
    # those pages waits for the disk (this VM's disk takes 355 µs per synced 4 KiB write).
    sync
    for mode in $MODES; do start_eekv "$mode" "$DATA/data-$mode"; done
    start_redis
    ycsb load a "$shape" "$records" "$WORK/load.json" redis
    echo "$shape: $records records loaded in each eekv node and in Redis"
    for round in $(seq 1 "$ROUNDS"); do
        for w in $WORKLOADS; do
            compare "$w" "$shape" "$records" "$OUT/raw/$shape-$w-{target}-r$round.json" \
                --operations "$ops" --duration "$SECONDS_PER_RUN" --slice-ms "$SLICE_MS" --seed "$round"
        done
        echo "$shape: round $round done"
    done
    stop_all
done

"$EEKV" bench report --dir "$OUT"
