#!/usr/bin/env bash
# Run the whole test suite against real components: starts Anvil and the js-ipfs daemon on free
# loopback ports, points the tests at them, runs pytest, and stops both (also on failure/Ctrl-C).
#   scripts/run_tests.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/fedtrail-test.XXXXXX")"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export FEDTRAIL_ANVIL_PORT="$(free_port)" FEDTRAIL_ANVIL_DIR="$RUN/anvil"
export FEDTRAIL_IPFS_PORT="$(free_port)" IPFS_PATH="$RUN/ipfs"
# The suite's chain mines only on transactions (tests move time with evm_increaseTime).
export FEDTRAIL_ANVIL_BLOCK_TIME="${FEDTRAIL_ANVIL_BLOCK_TIME:-0}"
cleanup() {
    scripts/anvil.sh stop >/dev/null 2>&1 || true
    scripts/ipfs_daemon.sh stop >/dev/null 2>&1 || true
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

scripts/anvil.sh start
scripts/ipfs_daemon.sh start
export FEDTRAIL_TEST_RPC_URL="http://127.0.0.1:$FEDTRAIL_ANVIL_PORT"
export FEDTRAIL_TEST_IPFS_API="/ip4/127.0.0.1/tcp/$FEDTRAIL_IPFS_PORT/http"

set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "run_tests: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit $rc
