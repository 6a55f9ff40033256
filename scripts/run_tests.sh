#!/usr/bin/env bash
# Run the whole test suite against real components: starts Anvil and the js-ipfs daemon on free
# loopback ports, points the tests at them, runs pytest, and stops them (also on failure/Ctrl-C).
#   scripts/run_tests.sh [pytest args...]
#
# FEDTRAIL_TEST_WORKERS (default 1; `make test`, the README's test command and CI's, sets 2): how
# many pytest-xdist workers run the suite
# (`-n N --dist loadfile --no-loadscope-reorder`: a test file's tests, and so its module-scoped
# fixtures, stay on one worker; tests/conftest.py hands out the files with a `slow` test first).
# Each worker gets an Anvil and an IPFS daemon of its own (tests pin development account 0's
# nonce and move chain time: one chain per process), and with more than one worker every process
# runs torch on one thread (OMP_NUM_THREADS=1) so the workers do not oversubscribe the cores.
# FEDTRAIL_TEST_WORKERS=1: one pytest process, no xdist.
# The suite's Anvils keep no state file (FEDTRAIL_ANVIL_STATE=none): nothing restarts them, and
# scripts/anvil.sh's default rewrote a file that grows past 20 MB every 5 s (GBs of writes a run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
WORKERS="${FEDTRAIL_TEST_WORKERS:-1}"
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "run_tests: FEDTRAIL_TEST_WORKERS must be a whole number >= 1, not '$WORKERS'" >&2
    exit 2
fi
RUN="$(mktemp -d "${TMPDIR:-/tmp}/fedtrail-test.XXXXXX")"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The suite's chain mines only on transactions (tests move time with evm_increaseTime).
export FEDTRAIL_ANVIL_BLOCK_TIME="${FEDTRAIL_ANVIL_BLOCK_TIME:-0}"
ANVIL_PORTS=() IPFS_PORTS=()
cleanup() {
    local i
    for i in "${!ANVIL_PORTS[@]}"; do
        FEDTRAIL_ANVIL_PORT="${ANVIL_PORTS[$i]}" FEDTRAIL_ANVIL_DIR="$RUN/anvil$i" \
            scripts/anvil.sh stop >/dev/null 2>&1 || true
    done
    for i in "${!IPFS_PORTS[@]}"; do
        FEDTRAIL_IPFS_PORT="${IPFS_PORTS[$i]}" IPFS_PATH="$RUN/ipfs$i" \
            scripts/ipfs_daemon.sh stop >/dev/null 2>&1 || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

# Daemon pair i: Anvil on ANVIL_PORTS[i] (folder $RUN/anvil<i>), IPFS on IPFS_PORTS[i] ($RUN/ipfs<i>).
for ((i = 0; i < WORKERS; i++)); do
    ANVIL_PORTS[i]="$(free_port)"
    FEDTRAIL_ANVIL_PORT="${ANVIL_PORTS[$i]}" FEDTRAIL_ANVIL_DIR="$RUN/anvil$i" \
        FEDTRAIL_ANVIL_STATE=none scripts/anvil.sh start
    IPFS_PORTS[i]="$(free_port)"
    FEDTRAIL_IPFS_PORT="${IPFS_PORTS[$i]}" IPFS_PATH="$RUN/ipfs$i" scripts/ipfs_daemon.sh start
done

# What the tests see of pair i: the daemons' settings, and the URLs the fixtures connect to.
pair_env() {
    local i="$1" suffix="$2"
    export "FEDTRAIL_ANVIL_PORT$suffix=${ANVIL_PORTS[$i]}" "FEDTRAIL_ANVIL_DIR$suffix=$RUN/anvil$i"
    export "FEDTRAIL_IPFS_PORT$suffix=${IPFS_PORTS[$i]}" "IPFS_PATH$suffix=$RUN/ipfs$i"
    export "FEDTRAIL_TEST_RPC_URL$suffix=http://127.0.0.1:${ANVIL_PORTS[$i]}"
    export "FEDTRAIL_TEST_IPFS_API$suffix=/ip4/127.0.0.1/tcp/${IPFS_PORTS[$i]}/http"
}
xdist=()
if [[ $WORKERS -eq 1 ]]; then
    pair_env 0 ""
else
    # Worker gwK takes pair K: tests/conftest.py copies the _GWK variables over the plain ones.
    for ((i = 0; i < WORKERS; i++)); do pair_env "$i" "_GW$i"; done
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    xdist=(-n "$WORKERS" --dist loadfile --no-loadscope-reorder)
fi

set +e
"$PY" -m pytest "${xdist[@]}" "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "run_tests: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit $rc
