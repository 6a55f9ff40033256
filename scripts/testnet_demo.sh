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
# reveals it (R seconds each), and the contract takes each update's median; the aggregator only
# combines.
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
while [[ $# -gt 0 ]]; do
    case "$1" in
    --sites) SITES="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --compression) COMPRESSION="$2"; shift 2 ;;
    --round-seconds) ROUND_SECONDS="$2"; shift 2 ;;
    --reveal-seconds) REVEAL_SECONDS="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --arch) MODEL_ARGS+=(--arch "$2"); shift 2 ;;
    --image-size) MODEL_ARGS+=(--image-size "$2"); shift 2 ;;
    --valuation-mode) VALUATION_MODE="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$SITES" =~ ^[0-9]+$ && "$SITES" -ge 1 && "$SITES" -le 8 ]] || { echo "--sites must be 1..8" >&2; exit 2; }
[[ "$VALUATION_MODE" == aggregator || "$VALUATION_MODE" == peers ]] || { echo "--valuation-mode must be aggregator or peers" >&2; exit 2; }
PEER_ARGS=()
if [[ "$VALUATION_MODE" == peers ]]; then
    PEER_ARGS=(--valuation-mode peers --score-commit-seconds "$REVEAL_SECONDS" --score-reveal-seconds "$REVEAL_SECONDS")
fi

DIR="${DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fedtrail-testnet.XXXXXX")}"
# shellcheck source=scripts/federation_lib.sh
source "$ROOT/scripts/federation_lib.sh"
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
