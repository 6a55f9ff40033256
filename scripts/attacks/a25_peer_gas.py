"""A25: how many sites a peer round can value, and whether a cartel's vote order adds gas.

``recordPeerValuation`` takes every revealed vector (n entries from each of v validators, all in
calldata). Before issue 14's fix it re-hashed each vector (32 bytes an entry) and per site
sorted the other validators' entries by insertion: linear in v per site when the entries
arrived in order, quadratic when each new entry was lower than those before it. Validators are
taken in ascending address order, and a site's key (its address) is its own choice at
registration, so a cartel whose addresses sort last, giving every site entries that fall with
each cartel member, made each of its entries shift every earlier one. Now the vectors travel
packed (4 bytes an entry) and the caller supplies each median, which the contract checks by
counting in one pass: the same operations per entry whatever the values, so the cartel rows
should cost what the honest ones do. This script runs one peer round per size on a real Anvil
(the contract's own gas, 30M block gas limit; EIP-7825's per-transaction cap of 2**24 =
16,777,216 gas is on Ethereum mainnet since Fusaka) and prints recordPeerValuation's gas:

- ``honest``: every validator gives every site 1,000,000 but a few honest disagreements
  (entries 900,000..1,000,000, random order);
- ``cartel K``: as honest, but the K validators with the highest addresses give every site
  1,000,000 - 1,000 * (their rank), lowest last (each insertion shifted every earlier entry);
- ``worst``: every validator is in the cartel (the old sort's upper bound);
- ``full``: every entry 1,000,000 (no sort moved anything: the old lower bound).

usage: python attacks/a25_peer_gas.py MODE N1 [N2 ...]   (e.g. honest 10 40 80; cartel 0.33 80)
For ``cartel`` the first number after the mode is the cartel's fraction of the validators.
With ``A25_PROFILE=1`` Anvil records every step (``--steps-tracing``, no state file: a traced
chain's state dump runs to gigabytes) and each round's gas is split from
``debug_traceTransaction``: the intrinsic part (21,000 + calldata), storage (SSTORE, SLOAD),
events (LOG*), hashing (KECCAK256) and the rest of the execution. Keep N at 60 or below there:
the trace of one transaction is held in memory (~100 bytes a step, ~100 steps an entry).
"""

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from web3 import Web3  # noqa: E402
from web3.types import RPCEndpoint  # noqa: E402

from fedtrail.chain import advance_time, connect, dev_account, fund  # noqa: E402
from fedtrail.errors import FedtrailError  # noqa: E402
from fedtrail.ledger import Ledger, commitment, score_commitment  # noqa: E402
from fedtrail.protocol.peers import PeerVote, address_key  # noqa: E402
from scripts.bench.gas import CID, COMMIT_WINDOW, REVEAL_WINDOW, free_port, h  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "honest"
args = sys.argv[2:]
frac = 0.0
if mode == "cartel":
    frac, args = float(args[0]), args[1:]
elif mode == "worst":
    frac = 1.0
sizes = [int(a) for a in args] or [10, 40]
CAP_7825 = 2**24


def one_round(w3: Web3, n: int) -> tuple[int | str, int]:
    coord, agg = dev_account(0), dev_account(1)
    sites = [dev_account(200 + i) for i in range(n)]
    for s in sites:
        fund(w3, coord, s.address, 10**18)
    ledger, _ = Ledger.deploy(w3, coord, aggregator=agg.address)
    for i, s in enumerate(sites):
        ledger.register_site(coord, s.address, f"site-{i}", 10**6)
    r, _ = ledger.open_peer_round(
        agg,
        model_cid=CID,
        model_sha256=h("m"),
        terms_cid=CID,
        terms_sha256=h("t"),
        commit_seconds=COMMIT_WINDOW,
        reveal_seconds=REVEAL_WINDOW,
        score_commit_seconds=COMMIT_WINDOW,
        score_reveal_seconds=REVEAL_WINDOW,
        quorum=n // 2 + 1,
    )
    for i, s in enumerate(sites):
        ledger.commit_update(s, r, commitment(s.address, r, h(f"{i}"), 100))
    advance_time(w3, COMMIT_WINDOW + 1)
    for i, s in enumerate(sites):
        ledger.reveal_update(s, r, CID, h(f"{i}"), 100)
    advance_time(w3, REVEAL_WINDOW + 1)
    order = sorted((s.address for s in sites), key=address_key)
    validators = sorted(sites, key=lambda a: address_key(a.address))
    k = round(frac * n)
    rng = random.Random(n)
    votes = []
    for j, v in enumerate(validators):
        if j >= n - k:  # the cartel: the last k addresses, each lower than the one before
            row = tuple(1_000_000 - 1_000 * (j - (n - k) + 1) for _ in order)
        else:
            row = tuple(
                1_000_000 if mode == "full" else rng.choice((1_000_000,) * 8 + (900_000, 950_000))
                for _ in order
            )
        votes.append(PeerVote(validator=v.address, scores=row))
    salt = {v.address: bytes.fromhex(h(f"s{v.address}")) for v in validators}
    for v, vote in zip(validators, votes, strict=True):
        ledger.commit_scores(v, r, score_commitment(v.address, r, vote.scores, salt[v.address]))
    advance_time(w3, COMMIT_WINDOW + 1)
    reveal = 0
    for v, vote in zip(validators, votes, strict=True):
        reveal = max(reveal, ledger.reveal_scores(v, r, vote.scores, salt[v.address]).gas_used)
    try:
        return ledger.record_peer_valuation(agg, r, order, votes).gas_used, reveal
    except FedtrailError as e:
        return f"FAILED: {str(e)[:160]}", reveal


def breakdown(w3: Web3, n: int) -> str:
    """The last transaction's gas by part, from Anvil's step trace (``A25_PROFILE=1``)."""
    tx: Any = w3.eth.get_block("latest", full_transactions=True)["transactions"][-1]
    data = bytes(tx["input"])
    zeros = data.count(0)
    calldata = 4 * zeros + 16 * (len(data) - zeros)
    trace = w3.provider.make_request(
        RPCEndpoint("debug_traceTransaction"),
        [tx["hash"].to_0x_hex(), {"disableStack": True, "disableMemory": True}],
    )
    steps = trace["result"]["structLogs"]
    by_op: Counter[str] = Counter()
    for step in steps:
        by_op[step["op"]] += step["gasCost"]
    execution = sum(by_op.values())
    storage = by_op["SSTORE"] + by_op["SLOAD"]
    events = sum(g for op, g in by_op.items() if op.startswith("LOG"))
    rest = execution - storage - events - by_op["KECCAK256"]
    return (
        f"      calldata {calldata:,} ({len(data):,} bytes); storage {storage:,}; events "
        f"{events:,}; keccak {by_op['KECCAK256']:,}; other execution {rest:,} "
        f"({len(steps):,} steps, {len(steps) / (n * n):.0f} a vector entry)"
    )


PROFILE = os.environ.get("A25_PROFILE") == "1"
port = free_port()
env = {**os.environ, "FEDTRAIL_ANVIL_PORT": str(port), "FEDTRAIL_ANVIL_BLOCK_TIME": "0"}
if PROFILE:
    env |= {"FEDTRAIL_ANVIL_ARGS": "--steps-tracing", "FEDTRAIL_ANVIL_STATE": "none"}
subprocess.run([str(ROOT / "scripts" / "anvil.sh"), "start"], check=True, env=env)
try:
    w3 = connect(f"http://127.0.0.1:{port}")
    limit = w3.eth.get_block("latest")["gasLimit"]
    print(f"mode {mode}, cartel fraction {frac}; block gas limit {limit:,}")
    for n in sizes:
        gas, reveal = one_round(w3, n)
        if isinstance(gas, int):
            over = " (over EIP-7825's per-tx cap)" if gas > CAP_7825 else ""
            print(
                f"{n:4d} sites: recordPeerValuation {gas:,} gas{over}; revealScores max {reveal:,}"
            )
            if PROFILE:
                print(breakdown(w3, n))
        else:
            print(f"{n:4d} sites: recordPeerValuation {gas}; revealScores max {reveal:,}")
finally:
    subprocess.run([str(ROOT / "scripts" / "anvil.sh"), "stop"], env=env, check=False)
