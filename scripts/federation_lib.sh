# Shared by scripts/testnet_demo.sh and scripts/flower_demo.sh (source it, do not run it): a
# local federation on loopback — Anvil and the IPFS daemon on free ports, the FederationLedger
# deployed, N sites with encrypted keystores created and registered.
#
# The caller sets ROOT (repo root) and DIR (work folder) first, then:
#   fed_env                      ports, RPC, STORE, DEPLOYMENT, PY, FEDTRAIL
#   fed_start_daemons            Anvil (a block every second, as a real chain) + IPFS (starting)
#   fed_wait_store               the IPFS daemon is up (call it before the store is used)
#   fed_deploy [deploy args]     the ledger, coordinator = Anvil dev account 0
#   fed_create_sites N DATA COMPRESSION [model args]   hospital-A.. in $DIR/<name>, registered
#   fed_stop_daemons             (for the caller's EXIT trap)
# Site i's keystore passphrase is "testnet-<name>" (a local demo; FEDTRAIL_PASSPHRASE when run).

SITE_NAMES=(hospital-A hospital-B hospital-C hospital-D hospital-E hospital-F hospital-G hospital-H)

fed_free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Usage errors that would otherwise surface only after Anvil, IPFS and the deployment: a --data
# that names neither a shipped dataset nor an existing file or folder (every site's `node init`
# failed on it, exit 1), and a --dir that already holds a deployment (`chain deploy` refused it).
# One line on stderr and exit 2, before the run folder is made. Needs only the venv's Python.
fed_check_run_args() {
    local data="$1" dir="$2" py="$ROOT/.venv/bin/python" why
    if [[ -x "$py" ]] && ! why=$("$py" -c '
import sys
from fedtrail.errors import FedtrailError
from fedtrail.ml.catalog import resolve_source
try:
    resolve_source(sys.argv[1])
except FedtrailError as exc:
    sys.exit(str(exc))
' "$data" 2>&1); then
        echo "--data: ${why##*$'\n'}" >&2
        exit 2
    fi
    if [[ -n "$dir" && -e "$dir/deployment.json" ]]; then
        echo "--dir $dir already holds a run (deployment.json): give a new or empty folder" >&2
        exit 2
    fi
}

fed_env() {
    PY="$ROOT/.venv/bin/python"
    FEDTRAIL="$ROOT/.venv/bin/fedtrail"
    [[ -x "$FEDTRAIL" ]] || { echo "run 'make install' first" >&2; exit 2; }
    mkdir -p "$DIR/logs"
    export FEDTRAIL_ANVIL_PORT="${FEDTRAIL_ANVIL_PORT:-$(fed_free_port)}" FEDTRAIL_ANVIL_DIR="$DIR/anvil"
    export FEDTRAIL_IPFS_PORT="${FEDTRAIL_IPFS_PORT:-$(fed_free_port)}" IPFS_PATH="$DIR/ipfs"
    # A block every second (scripts/anvil.sh's default FEDTRAIL_ANVIL_BLOCK_TIME=1), and each
    # transaction waits for the next one, as on a real chain: the commit and reveal deadlines are
    # chain time, and an idle automining Anvil mines nothing, so its latest block's clock stands
    # still. Transactions are checked against the pending block's timestamp; the demo still keeps
    # a real chain's steady clock (untested without it).
    export FEDTRAIL_ANVIL_BLOCK_TIME="${FEDTRAIL_ANVIL_BLOCK_TIME:-1}"
    export FEDTRAIL_ANVIL_MINING="${FEDTRAIL_ANVIL_MINING:-interval}"
    export FEDTRAIL_IPFS_LOGFILE="$DIR/logs/ipfs.log"
    RPC="http://127.0.0.1:$FEDTRAIL_ANVIL_PORT"
    STORE="ipfs:/ip4/127.0.0.1/tcp/$FEDTRAIL_IPFS_PORT/http"
    DEPLOYMENT="$DIR/deployment.json"
}

# Anvil, then the IPFS daemon's start in the background: deploying the ledger and creating the
# sites need only the chain, so the daemon's start (a fresh repo: 10-20 s) overlaps them.
# fed_wait_store waits for it (before anything that reads or writes the store) and prints what
# its start printed.
fed_start_daemons() {
    "$ROOT/scripts/anvil.sh" start
    "$ROOT/scripts/ipfs_daemon.sh" start >"$DIR/logs/ipfs-start.out" 2>&1 &
    FED_IPFS_STARTER=$!
}

fed_wait_store() {
    local rc=0
    [[ -n "${FED_IPFS_STARTER:-}" ]] || return 0
    wait "$FED_IPFS_STARTER" || rc=$?
    FED_IPFS_STARTER=""
    if [[ "$rc" == 0 ]]; then cat "$DIR/logs/ipfs-start.out"; else cat "$DIR/logs/ipfs-start.out" >&2; fi
    return "$rc"
}

fed_stop_daemons() {
    # a start still under way would leave its daemon behind: let it finish, then stop it
    fed_wait_store >/dev/null 2>&1 || true
    "$ROOT/scripts/ipfs_daemon.sh" stop >/dev/null 2>&1 || true
    "$ROOT/scripts/anvil.sh" stop >/dev/null 2>&1 || true
}

fed_deploy() {
    "$FEDTRAIL" chain deploy --rpc-url "$RPC" --dev-account 0 --out "$DEPLOYMENT" "$@"
}

fed_create_sites() {
    local sites="$1" data="$2" compression="$3"
    shift 3
    # The sites' `node init`s are local (a keystore and config.toml each) and independent, so
    # they run concurrently; the registrations stay one at a time, in site order: they are
    # transactions from one coordinator account (dev account 0), whose nonces must not race.
    # Site i's registration starts as soon as its own init has finished.
    local max_samples i name folder address failed=0
    local -a init_pids=()
    for i in $(seq 0 $((sites - 1))); do
        name="${SITE_NAMES[$i]}"
        FEDTRAIL_PASSPHRASE="testnet-$name" "$FEDTRAIL" node init "$DIR/$name" --name "$name" \
            --rpc-url "$RPC" --deployment "$DEPLOYMENT" --store "$STORE" --shard "$i/$sites" \
            --partition dirichlet --compression "$compression" --data "$data" "$@" --fast-kdf \
            >"$DIR/logs/$name.init.log" &
        init_pids+=($!)
    done
    # Each site trains on a shard of the data's training split, so no site can claim more
    # samples than the whole split: the cap the coordinator registers.
    max_samples=$("$PY" -c 'import sys; from fedtrail.ml.catalog import load_source; print(len(load_source(sys.argv[1]).train))' "$data") || failed=1
    for i in $(seq 0 $((sites - 1))); do
        name="${SITE_NAMES[$i]}"
        folder="$DIR/$name"
        if ! wait "${init_pids[$i]}"; then
            echo "fedtrail node init failed for $name (see $DIR/logs/$name.init.log)" >&2
            failed=1
        fi
        [[ "$failed" == 0 ]] || continue
        address=$("$PY" -c 'import json,sys; print("0x"+json.load(open(sys.argv[1]))["address"])' "$folder/keystore.json")
        "$FEDTRAIL" node register "$address" --name "$name" --max-samples "$max_samples" --fund 10 \
            --rpc-url "$RPC" --deployment "$DEPLOYMENT" --dev-account 0
    done
    return "$failed"
}
