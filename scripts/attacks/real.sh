#!/usr/bin/env bash
# Run one attack script against real daemons: Anvil and the js-ipfs daemon on free loopback
# ports (as scripts/run_tests.sh), named to the harness by FEDTRAIL_ATTACK_RPC /
# FEDTRAIL_ATTACK_IPFS; both are stopped afterwards (also on failure or Ctrl-C).
#   scripts/attacks/real.sh scripts/attacks/a52_header_writer_crash.py [args...]
# Exits with the script's status (0: the defence holds, 1: the attack works).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/fedtrail-attack.XXXXXX")"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export FEDTRAIL_ANVIL_PORT="$(free_port)" FEDTRAIL_ANVIL_DIR="$RUN/anvil"
export FEDTRAIL_IPFS_PORT="$(free_port)" IPFS_PATH="$RUN/ipfs"
export FEDTRAIL_ANVIL_BLOCK_TIME=0 FEDTRAIL_ANVIL_STATE=none
cleanup() {
    scripts/anvil.sh stop >/dev/null 2>&1 || true
    scripts/ipfs_daemon.sh stop >/dev/null 2>&1 || true
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

scripts/anvil.sh start >/dev/null
scripts/ipfs_daemon.sh start >/dev/null
export FEDTRAIL_ATTACK_RPC="http://127.0.0.1:$FEDTRAIL_ANVIL_PORT"
export FEDTRAIL_ATTACK_IPFS="/ip4/127.0.0.1/tcp/$FEDTRAIL_IPFS_PORT/http"
"$PY" "$@"
