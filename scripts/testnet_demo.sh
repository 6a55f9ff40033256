#!/usr/bin/env bash
# The real thing on one machine: Anvil + the IPFS daemon on loopback, the ledger deployed, N site
# daemons and one aggregator as separate processes, K rounds, then `audit verify --all` and
# `audit report`. Stops everything it started, also on Ctrl-C.
#
#   scripts/testnet_demo.sh [--sites N] [--rounds K] [--dir DIR] [--compression none|topk8]
#                           [--round-seconds S] [--reveal-seconds R]
#                           [--data pneumonia|retina|FILE.npz] [--arch A] [--image-size PX]
#                           [--valuation-mode aggregator|peers]
#
# Sites train and commit within the commit window (S seconds of chain time, default 120: every
# site must finish training by then), and reveal after it within R seconds (default 60); a round
# is valued as soon as every site has revealed. With --valuation-mode peers every site daemon
# then scores the others' updates on its own validation shard, commits its score vector and
# reveals it (R seconds each), and the contract takes each update's median; the aggregator
# combines, and runs the free-rider screen once a round in public (`aggregator run`'s default
# since session 57, round terms valuation.public_screen: it drops what the screen marks,
# dropScreened, and `audit verify` recomputes it).
# Logs of every process go to DIR/logs/. Uses Anvil's public development key for the
# coordinator/aggregator (local chain only) and an encrypted keystore per site.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SITES=3
ROUNDS=2
DIR=""
COMPRESSION=none
ROUND_SECONDS=120
REVEAL_SECONDS=60
DATA=pneumonia
VALUATION_MODE=aggregator
MODEL_ARGS=()
usage_error() { echo "$*" >&2; exit 2; }
# An option that takes a value: one line and exit 2 when it is missing (not bash's "unbound variable").
need() { [[ $# -ge 2 && -n "$2" ]] || usage_error "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
    --sites) need "$@"; SITES="$2"; shift 2 ;;
    --rounds) need "$@"; ROUNDS="$2"; shift 2 ;;
    --dir) need "$@"; DIR="$2"; shift 2 ;;
    --compression) need "$@"; COMPRESSION="$2"; shift 2 ;;
    --round-seconds) need "$@"; ROUND_SECONDS="$2"; shift 2 ;;
    --reveal-seconds) need "$@"; REVEAL_SECONDS="$2"; shift 2 ;;
    --data) need "$@"; DATA="$2"; shift 2 ;;
    --arch) need "$@"; MODEL_ARGS+=(--arch "$2"); shift 2 ;;
    --image-size) need "$@"; MODEL_ARGS+=(--image-size "$2"); shift 2 ;;
    --valuation-mode) need "$@"; VALUATION_MODE="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
    esac
done
# Checked before anything starts (a bad value used to surface after Anvil and IPFS were up).
[[ "$SITES" =~ ^[0-9]+$ && "$SITES" -ge 1 && "$SITES" -le 8 ]] || usage_error "--sites must be 1..8"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || usage_error "--rounds must be a whole number >= 1"
[[ "$ROUND_SECONDS" =~ ^[0-9]+$ && "$ROUND_SECONDS" -ge 1 ]] || usage_error "--round-seconds must be a whole number of seconds >= 1"
[[ "$REVEAL_SECONDS" =~ ^[0-9]+$ && "$REVEAL_SECONDS" -ge 1 ]] || usage_error "--reveal-seconds must be a whole number of seconds >= 1"
[[ "$COMPRESSION" == none || "$COMPRESSION" == topk8 ]] || usage_error "--compression must be none or topk8"
[[ "$VALUATION_MODE" == aggregator || "$VALUATION_MODE" == peers ]] || usage_error "--valuation-mode must be aggregator or peers"
PEER_ARGS=()
if [[ "$VALUATION_MODE" == peers ]]; then
    PEER_ARGS=(--valuation-mode peers --score-commit-seconds "$REVEAL_SECONDS" --score-reveal-seconds "$REVEAL_SECONDS")
fi

# shellcheck source=scripts/federation_lib.sh
source "$ROOT/scripts/federation_lib.sh"
fed_check_run_args "$DATA" "$DIR"
DIR="${DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fedtrail-testnet.XXXXXX")}"
fed_env
PIDS=()

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true; done
    fed_stop_daemons
    echo "testnet: stopped everything; logs in $DIR/logs"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }

step "local chain and content store (loopback only)"
fed_start_daemons

step "deploy the FederationLedger"
fed_deploy

step "create $SITES site nodes (encrypted keystores) and register them"
fed_create_sites "$SITES" "$DATA" "$COMPRESSION" ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"}
fed_wait_store

step "start $SITES site daemons and the aggregator ($ROUNDS rounds)"
for i in $(seq 0 $((SITES - 1))); do
    name="${SITE_NAMES[$i]}"
    FEDTRAIL_PASSPHRASE="testnet-$name" "$FEDTRAIL" node run "$DIR/$name" --threads 1 \
        >"$DIR/logs/$name.log" 2>&1 &
    PIDS+=($!)
    echo "  $name daemon pid $!"
done
"$FEDTRAIL" aggregator run --rpc-url "$RPC" --deployment "$DEPLOYMENT" --dev-account 0 \
    --initial-salt seeded \
    --store "$STORE" --rounds "$ROUNDS" --round-seconds "$ROUND_SECONDS" \
    --reveal-seconds "$REVEAL_SECONDS" --poll-interval 1 --threads 1 \
    --validation "$DATA" ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} ${PEER_ARGS[@]+"${PEER_ARGS[@]}"} \
    --folder "$DIR/aggregator" 2>"$DIR/logs/aggregator.log" &
AGG=$!
PIDS+=("$AGG")
wait "$AGG"

step "audit: verify every round from the chain and IPFS alone"
set +e
"$FEDTRAIL" audit verify --all --rpc-url "$RPC" --deployment "$DEPLOYMENT" --store "$STORE"
verified=$?
set -e
"$FEDTRAIL" audit report --out "$DIR/report" --rpc-url "$RPC" --deployment "$DEPLOYMENT" \
    --store "$STORE" || true
"$FEDTRAIL" chain status --rpc-url "$RPC" --deployment "$DEPLOYMENT"
exit "$verified"
