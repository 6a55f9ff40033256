#!/usr/bin/env bash
# fedtrail on Flower's deployment runtime, on one machine: Anvil + the IPFS daemon on loopback,
# the ledger deployed with an aggregator that has its own encrypted keystore, N sites created
# and registered (scripts/federation_lib.sh, as scripts/testnet_demo.sh), a Flower SuperLink and
# one SuperNode per site, `flwr run` of the fedtrail Flower App (fedtrail/flower/app) for K
# rounds, then every round checked finalized on chain and `fedtrail audit verify --all`.
# Stops everything it started, also on Ctrl-C. Exit status non-zero when a round did not
# finalize or the audit fails.
#
#   scripts/flower_demo.sh [--sites N] [--rounds K] [--dir DIR] [--data pneumonia|retina|FILE]
#                          [--round-seconds S] [--reveal-seconds R] [--app APP_DIR]
#                          [--node-config-extra I 'key="value" ...']
#
# Each round is one Flower exchange: the ServerApp opens the round on the ledger and sends a
# `train` message; each site's ClientApp trains and commits on chain within the S-second commit
# window (default 45: it covers the ClientApp process's start, which Flower does per message),
# then after the chain's clock passes the deadline puts its update on IPFS and reveals it within
# R seconds (default 20), and replies. Logs of every process go to DIR/logs/; the ServerApp's
# per-round reports (each reply checked against the chain) to DIR/aggregator/flower-round-*.json.
#
# Security: this demo runs Flower with --insecure on 127.0.0.1 only. A real deployment across
# machines uses TLS and SuperNode authentication:
#   flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key
#       --enable-supernode-auth --disable-runtime-dependency-installation
#   flwr supernode register <site public key> <connection>   (per site, by the operator)
#   flower-supernode --superlink HOST:PORT --root-certificates ca.crt
#       --auth-supernode-private-key site_key --node-config 'config="/srv/site/config.toml"'
#   and in $FLWR_HOME/config.toml: [superlink.NAME] address = "HOST:PORT",
#       root-certificates = "/path/ca.crt" (no `insecure = true`).
# --disable-runtime-dependency-installation keeps the SuperLink from running `uv sync` for the
# app; SuperNodes install nothing unless started with --allow-runtime-dependency-installation.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SITES=3
ROUNDS=3
DIR=""
DATA=pneumonia
ROUND_SECONDS=45
REVEAL_SECONDS=20
APP="$ROOT/fedtrail/flower/app"
declare -A EXTRA=()
usage_error() { echo "$*" >&2; exit 2; }
# An option that takes a value: one line and exit 2 when it is missing (not bash's "unbound variable").
need() { [[ $# -ge 2 && -n "$2" ]] || usage_error "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
    --sites) need "$@"; SITES="$2"; shift 2 ;;
    --rounds) need "$@"; ROUNDS="$2"; shift 2 ;;
    --dir) need "$@"; DIR="$2"; shift 2 ;;
    --data) need "$@"; DATA="$2"; shift 2 ;;
    --round-seconds) need "$@"; ROUND_SECONDS="$2"; shift 2 ;;
    --reveal-seconds) need "$@"; REVEAL_SECONDS="$2"; shift 2 ;;
    --app)
        need "$@"
        [[ -d "$2" ]] || usage_error "--app $2: no such folder"
        APP="$(cd "$2" && pwd)"; shift 2 ;;
    --node-config-extra)
        [[ $# -ge 3 && "$2" =~ ^[0-9]+$ ]] || usage_error "--node-config-extra needs a site index and its settings: I 'key=\"value\" ...'"
        EXTRA[$2]="$3"; shift 3 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
    esac
done
# Checked before anything starts.
[[ "$SITES" =~ ^[0-9]+$ && "$SITES" -ge 1 && "$SITES" -le 8 ]] || usage_error "--sites must be 1..8"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || usage_error "--rounds must be >= 1"
[[ "$ROUND_SECONDS" =~ ^[0-9]+$ && "$ROUND_SECONDS" -ge 1 ]] || usage_error "--round-seconds must be a whole number of seconds >= 1"
[[ "$REVEAL_SECONDS" =~ ^[0-9]+$ && "$REVEAL_SECONDS" -ge 1 ]] || usage_error "--reveal-seconds must be a whole number of seconds >= 1"

# shellcheck source=scripts/federation_lib.sh
source "$ROOT/scripts/federation_lib.sh"
fed_check_run_args "$DATA" "$DIR"
DIR="${DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fedtrail-flower.XXXXXX")}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
fed_env
# Flower's own home (apps, its CLI config): inside DIR, never the user's ~/.flwr.
export FLWR_HOME="$DIR/flwr"
export PATH="$ROOT/.venv/bin:$PATH"   # the SuperLink/SuperNode start flower-superexec from PATH
LINK_PORT="$(fed_free_port)"
PIDS=()

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    # Each Flower process leads its own process group (setsid): its SuperExec and App
    # subprocesses stop with it.
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill -- "-$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true; done
    fed_stop_daemons
    echo "flower: stopped everything; logs in $DIR/logs"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
wait_port() {
    local port="$1" what="$2" i
    for i in $(seq 1 120); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.5
    done
    echo "flower: $what did not listen on 127.0.0.1:$port" >&2
    return 1
}

step "local chain and content store (loopback only)"
fed_start_daemons

step "the aggregator's key (encrypted keystore) and the FederationLedger"
mkdir -p "$DIR/aggregator"
AGG_KEYSTORE="$DIR/aggregator/keystore.json"
AGG_SECRET="$DIR/aggregator/passphrase"
(umask 077 && printf 'flower-aggregator\n' >"$AGG_SECRET")
AGG_ADDRESS=$("$PY" - "$AGG_KEYSTORE" "$RPC" <<'PYEOF'
import sys
from pathlib import Path
from fedtrail.chain import connect, fund
from fedtrail.cli.common import load_signer
from fedtrail.keys import FAST_KDF_N, create_keystore
account = create_keystore(Path(sys.argv[1]), "flower-aggregator", kdf_n=FAST_KDF_N)
w3 = connect(sys.argv[2])
fund(w3, load_signer(w3, None, 0), account.address, 10 * 10**18)  # gas, from the dev account
print(account.address)
PYEOF
)
echo "aggregator $AGG_ADDRESS (keystore $AGG_KEYSTORE, funded 10 ETH)"
fed_deploy --aggregator "$AGG_ADDRESS"

step "create $SITES site nodes (encrypted keystores) and register them"
fed_create_sites "$SITES" "$DATA" none
fed_wait_store
for i in $(seq 0 $((SITES - 1))); do
    name="${SITE_NAMES[$i]}"
    (umask 077 && printf 'testnet-%s\n' "$name" >"$DIR/$name/passphrase")
done

step "Flower: a SuperLink and $SITES SuperNodes on 127.0.0.1 (insecure: loopback only)"
mkdir -p "$FLWR_HOME"
cat >"$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "fedtrail"

[superlink.fedtrail]
address = "127.0.0.1:$LINK_PORT"
insecure = true
TOML
setsid flower-superlink --insecure --disable-runtime-dependency-installation \
    --host 127.0.0.1 --port "$LINK_PORT" >"$DIR/logs/superlink.log" 2>&1 &
PIDS+=($!)
wait_port "$LINK_PORT" "the SuperLink"
for i in $(seq 0 $((SITES - 1))); do
    name="${SITE_NAMES[$i]}"
    port="$(fed_free_port)"
    node_config="config=\"$DIR/$name/config.toml\" passphrase-file=\"$DIR/$name/passphrase\""
    [[ -n "${EXTRA[$i]:-}" ]] && node_config="$node_config ${EXTRA[$i]}"
    setsid flower-supernode --insecure --superlink "127.0.0.1:$LINK_PORT" --host 127.0.0.1 \
        --port "$port" --node-config "$node_config" >"$DIR/logs/$name.supernode.log" 2>&1 &
    PIDS+=($!)
    echo "  $name SuperNode pid $! (runtime API 127.0.0.1:$port)"
done

step "flwr run: $ROUNDS rounds of the fedtrail Flower App ($APP)"
cat >"$DIR/run.toml" <<TOML
num-server-rounds = $ROUNDS
deployment = "$DEPLOYMENT"
rpc-url = "$RPC"
store = "$STORE"
aggregator-keystore = "$AGG_KEYSTORE"
aggregator-passphrase-file = "$AGG_SECRET"
validation = "$DATA"
folder = "$DIR/aggregator"
round-seconds = $ROUND_SECONDS
reveal-seconds = $REVEAL_SECONDS
threads = 1
min-nodes = $SITES
# the seeded salt (as testnet_demo.sh's --initial-salt seeded): the same start model every run,
# so a run's figures repeat; a real federation keeps the default, a fresh random salt
initial-salt = "seeded"
TOML
budget=$(( ROUNDS * (ROUND_SECONDS + REVEAL_SECONDS + 90) + 120 ))
set +e
timeout "$budget" flwr run "$APP" fedtrail --run-config "$DIR/run.toml" --stream \
    >"$DIR/logs/flwr-run.log" 2>&1
run_rc=$?
set -e
grep -E "fedtrail|round [0-9]+" "$DIR/logs/flwr-run.log" | grep -vE "^\s*$" | tail -n 40 || true
echo "flwr run exited with $run_rc"

step "the chain: every round finalized?"
set +e
"$PY" - "$RPC" "$DEPLOYMENT" "$ROUNDS" <<'PYEOF'
import sys
from pathlib import Path
from fedtrail.chain import connect
from fedtrail.ledger import Deployment, Ledger
from fedtrail.protocol.codes import Phase
ledger = Ledger.at(connect(sys.argv[1]), Deployment.from_file(Path(sys.argv[2])))
want = int(sys.argv[3])
bad = 0
for r in range(1, want + 1):
    phase = ledger.get_round(r).phase if r <= ledger.current_round() else None
    ok = phase == Phase.FINALIZED
    bad += not ok
    weights = {s.site[:10]: f"{s.weight / 10**18:.3f}" for s in ledger.get_submissions(r)} if phase else {}
    print(f"round {r}: {phase.label if phase else 'never opened'}  weights {weights}")
sys.exit(1 if bad else 0)
PYEOF
finalized=$?
set -e

step "audit: verify every round from the chain and IPFS alone"
set +e
"$FEDTRAIL" audit verify --all --rpc-url "$RPC" --deployment "$DEPLOYMENT" --store "$STORE"
verified=$?
set -e
if [[ $finalized -ne 0 ]]; then echo "flower: not every round finalized on chain" >&2; exit 1; fi
exit "$verified"
