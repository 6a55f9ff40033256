#!/usr/bin/env bash
# Run Anvil (npm @foundry-rs/anvil) on loopback as fedtrail's local chain.
#
#   scripts/anvil.sh start|stop|status
#
# Environment:
#   FEDTRAIL_ANVIL_PORT   JSON-RPC port            (default: 8545)
#   FEDTRAIL_ANVIL_DIR    pid/log/state folder     (default: <repo root>/.run/anvil)
#   FEDTRAIL_ANVIL_BLOCK_TIME  seconds between blocks mined on a timer (default: 1), so the
#                         chain's clock runs as a real chain's does: round deadlines are chain
#                         time, and without a timer the latest block's time stands still between
#                         transactions. 0: mine only on transactions (scripts/run_tests.sh: the
#                         test suite moves time itself with evm_increaseTime).
#   FEDTRAIL_ANVIL_MINING "mixed" (default: every transaction is also mined at once, as
#                         without a block time, so CLI calls and benchmarks wait for no block) or
#                         "interval" (a transaction waits for the next block, as on a real chain)
#   FEDTRAIL_ANVIL_ARGS   extra anvil arguments (a --block-time or --no-mining here wins over
#                         FEDTRAIL_ANVIL_BLOCK_TIME)
#   FEDTRAIL_ANVIL_STATE  state file kept across restarts (default: <dir>/anvil-<port>.state.json;
#                         "none" for a chain that starts empty every time). Anvil loads it at
#                         start and writes it every 5 s and at stop, so a restart (even after
#                         kill -9, minus the last seconds) keeps the deployed ledger.
# Anvil moves the states of older blocks out of memory into <dir>/history-<port> (its
# --cache-path; by default it would write them under ~/.foundry/anvil/tmp and never remove them:
# a few GB per long run that filled this machine's disk). `stop` removes that folder: a restart
# reloads the chain from the state file, not from it.
# The chain listens on 127.0.0.1 only and uses Anvil's public development accounts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${FEDTRAIL_ANVIL_PORT:-8545}"
DIR="${FEDTRAIL_ANVIL_DIR:-$ROOT/.run/anvil}"
ANVIL="$ROOT/node_modules/.bin/anvil"
PIDFILE="$DIR/anvil-$PORT.pid"
LOGFILE="$DIR/anvil-$PORT.log"
STATE="${FEDTRAIL_ANVIL_STATE:-$DIR/anvil-$PORT.state.json}"
HISTORY="$DIR/history-$PORT"
BLOCK_TIME="${FEDTRAIL_ANVIL_BLOCK_TIME:-1}"
MINING="${FEDTRAIL_ANVIL_MINING:-mixed}"

say() { printf 'anvil: %s\n' "$*"; }
die() { printf 'anvil: error: %s\n' "$*" >&2; exit 1; }

answers() {
    local resp
    { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 1
    printf 'POST / HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 63\r\n\r\n{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}    ' >&3
    resp=$(timeout 2 cat <&3 || true)
    exec 3>&-
    [[ "$resp" == *'"result"'* ]]
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# True when something accepts TCP connections on the port (a program that is not a chain).
port_in_use() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$PORT" 2>/dev/null; }

case "${1:-}" in
start)
    [[ -x "$ANVIL" ]] || die "$ANVIL is missing: run 'npm ci' in $ROOT"
    if running; then say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; exit 0; fi
    if answers; then die "something else answers on 127.0.0.1:$PORT"; fi
    if port_in_use; then die "127.0.0.1:$PORT is in use by another program; set FEDTRAIL_ANVIL_PORT"; fi
    mkdir -p "$DIR"
    state_args=()
    if [[ "$STATE" != "none" ]]; then
        mkdir -p "$(dirname "$STATE")"
        state_args=(--state "$STATE" --state-interval 5)
        [[ -s "$STATE" ]] && say "loading the chain state saved in $STATE"
    fi
    [[ "$BLOCK_TIME" =~ ^[0-9]+$ ]] || die "FEDTRAIL_ANVIL_BLOCK_TIME must be whole seconds"
    [[ "$MINING" == mixed || "$MINING" == interval ]] \
        || die "FEDTRAIL_ANVIL_MINING must be mixed or interval, not '$MINING'"
    mining_args=()
    mining="mines only on transactions: its clock stands still between them"
    chosen='(^| )(-b|--block-time|--blockTime|--no-mining|--no-mine)( |=|$)'
    if [[ "${FEDTRAIL_ANVIL_ARGS:-}" =~ $chosen ]]; then
        mining="mining as FEDTRAIL_ANVIL_ARGS says"
    elif [[ "$BLOCK_TIME" -gt 0 ]]; then
        mining_args=(--block-time "$BLOCK_TIME")
        mining="a block every $BLOCK_TIME s"
        if [[ "$MINING" == mixed ]]; then
            mining_args+=(--mixed-mining)
            mining+=", and each transaction at once"
        fi
    fi
    # shellcheck disable=SC2086
    rm -rf "$HISTORY"
    nohup "$ANVIL" --host 127.0.0.1 --port "$PORT" --cache-path "$HISTORY" "${state_args[@]}" "${mining_args[@]}" \
        ${FEDTRAIL_ANVIL_ARGS:-} \
        >"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
        if answers; then
            say "ready on http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"); $mining)"
            exit 0
        fi
        running || die "anvil exited; see $LOGFILE"
        sleep 0.1
    done
    die "anvil did not answer within 10 s; see $LOGFILE"
    ;;
stop)
    if running; then
        pid=$(cat "$PIDFILE"); kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        say "stopped"
    else
        say "not running"
    fi
    rm -f "$PIDFILE"
    rm -rf "$HISTORY"
    ;;
status)
    if running && answers; then say "running on http://127.0.0.1:$PORT"; else say "stopped"; exit 3; fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
