#!/usr/bin/env bash
# Run the js-ipfs daemon (npm `ipfs` 0.66.1) as fedtrail's local content-store component.
#
#   scripts/ipfs_daemon.sh start|stop|status|restart
#
# The node is private to this machine: its own repo folder, no bootstrap peers, no delegates,
# no MDNS, the RPC API on 127.0.0.1, the gateway and the gRPC server off, swarm on loopback, and
# `daemon --offline`. Nothing here talks to the public IPFS network.
#
# Environment:
#   IPFS_PATH                      repo folder            (default: <repo root>/.run/ipfs)
#   FEDTRAIL_IPFS_PORT             RPC API port           (default: 5001)
#   FEDTRAIL_IPFS_START_TIMEOUT    readiness wait, s      (default: 60)
#   FEDTRAIL_IPFS_STOP_TIMEOUT     graceful stop wait, s  (default: 15)
#   FEDTRAIL_JSIPFS                jsipfs executable      (default: <repo root>/node_modules/.bin/jsipfs)
#   FEDTRAIL_IPFS_PIDFILE          pid file               (default: $IPFS_PATH.pid)
#   FEDTRAIL_IPFS_LOGFILE          daemon log             (default: $IPFS_PATH.log)
#
# Exit codes: 0 ok; 1 failure; 3 `status` of a stopped daemon (the LSB convention).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IPFS_PATH="${IPFS_PATH:-$ROOT/.run/ipfs}"
IPFS_PATH="${IPFS_PATH%/}"
PORT="${FEDTRAIL_IPFS_PORT:-5001}"
START_TIMEOUT="${FEDTRAIL_IPFS_START_TIMEOUT:-60}"
STOP_TIMEOUT="${FEDTRAIL_IPFS_STOP_TIMEOUT:-15}"
JSIPFS="${FEDTRAIL_JSIPFS:-$ROOT/node_modules/.bin/jsipfs}"
PIDFILE="${FEDTRAIL_IPFS_PIDFILE:-$IPFS_PATH.pid}"
LOGFILE="${FEDTRAIL_IPFS_LOGFILE:-$IPFS_PATH.log}"
API_MULTIADDR="/ip4/127.0.0.1/tcp/$PORT"
export IPFS_PATH

say() { printf 'ipfs_daemon: %s\n' "$*"; }
die() { printf 'ipfs_daemon: error: %s\n' "$*" >&2; exit 1; }

# True when the RPC API on 127.0.0.1:$1 answers `POST /api/v0/version` like an IPFS node.
# Pure bash (/dev/tcp) so the script needs neither curl nor python.
api_answers() {
    local resp
    # shellcheck disable=SC2016  # $0 expands in the inner bash, not here
    resp="$(timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "POST /api/v0/version HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nContent-Length: 0\r\n\r\n" "$0" >&3
        cat <&3' "$1" 2>/dev/null)" || return 1
    [[ $resp == *'"Version"'* ]]
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    # shellcheck disable=SC2016  # $0 expands in the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# The pid recorded in the pid file if that process is alive and is a js-ipfs daemon (node sets
# its title to "ipfs"; before that the command line still names jsipfs). Guards against a
# recycled pid.
daemon_pid() {
    [[ -f $PIDFILE ]] || return 1
    local pid cmd
    pid="$(<"$PIDFILE")"
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ $cmd == ipfs* || $cmd == *jsipfs* ]] || return 1
    printf '%s\n' "$pid"
}

# The API port a daemon running on this repo announced in $IPFS_PATH/api (may be stale).
repo_api_port() {
    [[ -f $IPFS_PATH/api ]] || return 1
    local addr
    addr="$(<"$IPFS_PATH/api")"
    [[ $addr =~ /tcp/([0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# Create the repo once: empty (no help files), ed25519 identity.
init_repo() {
    [[ -f $IPFS_PATH/config ]] && return 0
    mkdir -p "$IPFS_PATH"
    say "initialising an empty repo in $IPFS_PATH"
    "$JSIPFS" init --emptyRepo >>"$LOGFILE" 2>&1 || die "jsipfs init failed; see $LOGFILE"
}

# Enforce the private, loopback-only network settings on every start (so a port change or a
# hand-edited config cannot expose the node). RPC="" turns the gRPC server off ([] crashes it).
configure_repo() {
    FEDTRAIL_API="$API_MULTIADDR" node -e '
        const fs = require("fs");
        const p = process.env.IPFS_PATH + "/config";
        const c = JSON.parse(fs.readFileSync(p, "utf8"));
        c.Addresses = Object.assign(c.Addresses || {}, {
            API: process.env.FEDTRAIL_API,
            Gateway: [],
            RPC: "",
            Swarm: ["/ip4/127.0.0.1/tcp/0"],
            Announce: [],
            Delegates: [],
        });
        c.Bootstrap = [];
        c.Discovery = { MDNS: { Enabled: false, Interval: 10 }, webRTCStar: { Enabled: false } };
        fs.writeFileSync(p + ".tmp", JSON.stringify(c, null, 2));
        fs.renameSync(p + ".tmp", p);
    ' || die "cannot rewrite $IPFS_PATH/config"
}

# A repo.lock left by a crashed daemon blocks the next start ("Lock already being held").
# Remove it only when no daemon holds it: neither our pid file's process nor a node answering on
# the API address recorded in the repo.
clear_stale_lock() {
    [[ -e $IPFS_PATH/repo.lock ]] || return 0
    local other
    if other="$(repo_api_port)" && api_answers "$other"; then
        die "another daemon holds $IPFS_PATH/repo.lock (API on 127.0.0.1:$other); stop it first"
    fi
    say "removing stale $IPFS_PATH/repo.lock (no daemon holds it)"
    rm -rf "$IPFS_PATH/repo.lock" "$IPFS_PATH/api"
}

cmd_start() {
    local pid
    if pid="$(daemon_pid)"; then
        api_answers "$PORT" || die "daemon pid $pid is alive but its API on :$PORT does not answer"
        say "already running (pid $pid, API $API_MULTIADDR)"
        return 0
    fi
    [[ -x $JSIPFS ]] || die "$JSIPFS not found; run 'npm ci' in $ROOT"
    command -v node >/dev/null || die "node not found on PATH"
    if api_answers "$PORT"; then
        die "an IPFS API already answers on 127.0.0.1:$PORT that this script did not start"
    fi
    if port_in_use "$PORT"; then
        die "127.0.0.1:$PORT is in use by another program; set FEDTRAIL_IPFS_PORT"
    fi
    mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOGFILE")"
    rm -f "$PIDFILE"

    local t0=$EPOCHREALTIME
    init_repo
    clear_stale_lock
    configure_repo

    # setsid: the daemon outlives the shell (and a Ctrl-C in it); without job control the
    # background setsid execs in place, so $! is the daemon's pid.
    printf '\n--- %s start on %s\n' "$(date -Is)" "$API_MULTIADDR" >>"$LOGFILE"
    local log_from
    log_from=$(( $(wc -c <"$LOGFILE") + 1 ))
    # scripts/ipfs_abort_guard.cjs: a read its client gave up on no longer ends the daemon
    # (js-ipfs's CLI exits on the unhandled "Want for <cid> aborted" such a read leaves; h-333)
    NODE_OPTIONS="--require $ROOT/scripts/ipfs_abort_guard.cjs${NODE_OPTIONS:+ $NODE_OPTIONS}" \
        setsid "$JSIPFS" daemon --offline --enable-preload=false </dev/null >>"$LOGFILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    local deadline=$(( EPOCHSECONDS + START_TIMEOUT ))
    until api_answers "$PORT"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            tail -n 20 "$LOGFILE" >&2 || true
            die "daemon exited before its API on 127.0.0.1:$PORT answered; see $LOGFILE"
        fi
        # js-ipfs logs some fatal start errors and keeps running without an API.
        if tail -c "+$log_from" "$LOGFILE" | grep -qE 'EADDRINUSE|EACCES|Lock already being held'; then
            tail -n 20 "$LOGFILE" >&2 || true
            kill_and_wait "$pid"
            rm -f "$PIDFILE"
            die "daemon failed to start; see $LOGFILE"
        fi
        if (( EPOCHSECONDS >= deadline )); then
            tail -n 20 "$LOGFILE" >&2 || true
            kill_and_wait "$pid"
            rm -f "$PIDFILE"
            die "API on 127.0.0.1:$PORT did not answer within ${START_TIMEOUT}s; see $LOGFILE"
        fi
        sleep 0.1
    done
    local secs
    secs="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')"
    say "ready in ${secs}s (pid $pid, API $API_MULTIADDR, repo $IPFS_PATH, log $LOGFILE)"
}

# SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL and wait for the process to be gone.
kill_and_wait() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for (( i = 0; i < STOP_TIMEOUT * 10; i++ )); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

cmd_stop() {
    local pid
    if ! pid="$(daemon_pid)"; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill_and_wait "$pid"
    rm -f "$PIDFILE"
    # A SIGKILLed daemon cannot release its lock; nobody holds it now.
    rm -rf "$IPFS_PATH/repo.lock" "$IPFS_PATH/api"
    say "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(daemon_pid)"; then
        if api_answers "$PORT"; then
            say "running (pid $pid, API $API_MULTIADDR, repo $IPFS_PATH)"
            return 0
        fi
        say "pid $pid alive but its API on 127.0.0.1:$PORT does not answer"
        return 1
    fi
    say "stopped (repo $IPFS_PATH)"
    return 3
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) printf 'usage: %s start|stop|status|restart\n' "$0" >&2; exit 2 ;;
esac
