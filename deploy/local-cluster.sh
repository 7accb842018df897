#!/usr/bin/env bash
# Starts, stops and checks a local eekv cluster described by a cluster config (default: the 3-node
# loopback example). Everything it makes lives under one run folder: certificates (made with
# `eekv certs init` on first use), data, logs and pids.
#
#   deploy/local-cluster.sh up|down|status
#
# Environment: CONFIG (cluster config), RUN_DIR (run folder, default run/), EEKV (the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -d /opt/swift/usr/bin ]]; then export PATH=/opt/swift/usr/bin:$PATH; fi

CONFIG=${CONFIG:-deploy/cluster.example.toml}
RUN_DIR=${RUN_DIR:-run}
EEKV=${EEKV:-.build/release/eekv}
NODES=$(grep -c '^\[\[node\]\]' "$CONFIG")

build() {
    if [[ ! -x $EEKV ]]; then
        echo "local-cluster: building eekv (release)..."
        swift build -c release --product eekv >/dev/null
    fi
}

# The certificates go where the config's [tls] dir says (relative to the config's folder), so the
# nodes and the CLI find them; no [tls] section means a plaintext cluster and no certificates.
certs_dir() {
    local dir
    dir=$(sed -n '/^\[tls\]/,/^\[/s/^dir *= *"\(.*\)".*/\1/p' "$CONFIG" | head -1)
    [[ -z $dir ]] && return 0
    [[ $dir = /* ]] && echo "$dir" || echo "$(dirname "$CONFIG")/$dir"
}

certs() {
    local dir
    dir=$(certs_dir)
    if [[ -n $dir && ! -f $dir/ca.pem ]]; then
        "$EEKV" certs init --dir "$dir" --nodes "$NODES" --clients 1
    fi
}

# A node answers when a get of a key it does not have returns "not found" (exit 1).
answers() {
    local code=0
    "$EEKV" get "__probe__$1" --config "$CONFIG" >/dev/null 2>&1 || code=$?
    [[ $code -eq 0 || $code -eq 1 ]]
}

# Node $1 runs: its pid file names a live process that is that node. After a reboot the file may
# name an unrelated process that took the pid; that one is neither reported nor signalled.
alive() {
    local file=$RUN_DIR/pids/node-$1 pid
    [[ -f $file ]] || return 1
    pid=$(cat "$file")
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "server --config $CONFIG --node $1 "
}

up() {
    build
    certs
    mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/pids"
    for ((i = 0; i < NODES; i++)); do
        if alive "$i"; then
            echo "node $i already running (pid $(cat "$RUN_DIR/pids/node-$i"))"
            continue
        fi
        nohup "$EEKV" server --config "$CONFIG" --node "$i" --data "$RUN_DIR/data/node-$i" \
            >"$RUN_DIR/logs/node-$i.log" 2>&1 &
        echo $! >"$RUN_DIR/pids/node-$i"
    done
    # Wait until every node answers (each probe key routes to some node; probe until all have been hit).
    local deadline=$((SECONDS + 60))
    for ((i = 0; i < NODES; i++)); do
        until alive "$i" && answers "$i"; do
            # kill -0, not alive: just after the fork the child is still this shell, not eekv.
            if ((SECONDS > deadline)) || ! kill -0 "$(cat "$RUN_DIR/pids/node-$i")" 2>/dev/null; then
                echo "local-cluster: node $i did not come up; last log lines:" >&2
                tail -5 "$RUN_DIR/logs/node-$i.log" >&2 || true
                down >&2  # no half-started cluster left behind
                exit 1
            fi
            sleep 0.2
        done
    done
    # Every node must answer: one key per node's slot range.
    until "$EEKV" scan "" --limit 1 --config "$CONFIG" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "local-cluster: the cluster does not answer scans" >&2
            down >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "local-cluster: $NODES nodes up ($CONFIG, logs in $RUN_DIR/logs)"
}

down() {
    for ((i = 0; i < NODES; i++)); do
        # || true: a node may exit between the check and the signal; the others still go down.
        if alive "$i"; then kill -TERM "$(cat "$RUN_DIR/pids/node-$i")" || true; fi
    done
    for ((i = 0; i < NODES; i++)); do
        local n=0
        while alive "$i" && ((n < 100)); do sleep 0.1; n=$((n + 1)); done
        if alive "$i"; then kill -KILL "$(cat "$RUN_DIR/pids/node-$i")" || true; fi
        rm -f "$RUN_DIR/pids/node-$i"
    done
    echo "local-cluster: stopped"
}

status() {
    local down=0
    for ((i = 0; i < NODES; i++)); do
        if alive "$i"; then echo "node $i: running (pid $(cat "$RUN_DIR/pids/node-$i"))"; else echo "node $i: stopped"; down=1; fi
    done
    if ((down == 0)) && "$EEKV" scan "" --limit 1 --config "$CONFIG" >/dev/null 2>&1; then
        echo "cluster: answering"
    else
        echo "cluster: not answering"
        return 1
    fi
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
