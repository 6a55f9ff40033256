"""A123 in PEER mode (``[valuation] mode = "peers"``), through production SiteNodes
(``Federation.run_round``: every node trains, commits, reveals, scores the others, commits and
reveals its score vector), on Anvil + IPFS when run through ``scripts/attacks/real.sh``.

Two honest nodes of 150 images; five Sybil nodes that hold 20 images each (so their nodes claim
20) and send white noise at LEVEL x the start model's norm instead of their training; the rider's
node holds 150 images and sends minus the start model (each weight times its own U(0.5, 1.5))
at LEVEL instead (``scripts/attacks/a123_median_claim_floor.py``'s ``decay``).

usage: scripts/attacks/real.sh scripts/attacks/a123_peers.py [h234|now|before] [ROUNDS] [LEVEL]
Exits 1 when the rider is paid (weight > 0) in any round with ``audit verify`` passing, else 0.
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tempfile

import numpy as np
import torch
from harness import backends, read_independently

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.ml.catalog import load_source
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig, NodeConfig
from fedtrail.node.daemon import NodeHooks
from fedtrail.protocol.codes import Reason
from fedtrail.simulation.federation import SiteSetup, build_federation
from fedtrail.storage.codec import decode_model
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

RULE = sys.argv[1] if len(sys.argv) > 1 else "h234"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
LEVEL = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
combiner = default_combiner(True)
if RULE == "h234":
    combiner = replace(combiner, tiny_size_own=0)
elif RULE == "before":
    combiner = replace(combiner, tiny_size_reference=0.0)
elif RULE != "now":
    raise SystemExit(f"unknown rule {RULE!r}: h234, now or before")
accept = ThresholdLimits.accepting(combiner)  # the sites consent to the rule tried


def _norm(d) -> float:
    return float(torch.sqrt(sum(v.double().pow(2).sum() for v in d.values())))


def _start(round_id, ctx):
    """The round's start model, read from the chain and the store like any auditor."""
    info = ctx.ledger.get_round(round_id)
    return decode_model(ctx.store.get(info.start_cid, info.start_sha256), spec=ctx.spec)[0]


def sybil(i: int):
    def transform(delta, round_id, ctx):
        g = torch.Generator().manual_seed(5000 + 100 * round_id + i)
        z = {k: torch.randn(v.shape, generator=g) for k, v in delta.items()}
        scale = LEVEL * _norm(_start(round_id, ctx)) / _norm(z)
        return {k: (scale * v).float() for k, v in z.items()}

    return transform


def rider(delta, round_id, ctx):
    g = torch.Generator().manual_seed(9000 + round_id)
    start = {k: v for k, v in _start(round_id, ctx).items() if k in delta}
    d = {k: -(torch.rand(v.shape, generator=g) + 0.5) * v.float() for k, v in start.items()}
    scale = LEVEL * _norm(start) / _norm(d)
    return {k: (scale * v).float() for k, v in d.items()}


source = load_source("pneumonia")
sp = source.splits()
perm = np.random.default_rng(0).permutation(len(sp.train.labels))
vperm = np.random.default_rng(1).permutation(len(sp.val.labels))
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a123p-"))
w3, acc, store = backends(tmp)
names = ["h0", "h1", *(f"syb{i}" for i in range(5)), "rider"]
sizes = {nm: 20 if nm.startswith("syb") else 150 for nm in names}
starts = np.cumsum([0, *(sizes[nm] for nm in names)])
setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=sp.train.subset(perm[starts[i] : starts[i + 1]]),
        val=sp.val.subset(vperm[30 * i : 30 * (i + 1)]),
        max_samples=sizes[nm],
        config=NodeConfig(
            training=TrainConfig(epochs=1, seed=i),
            data=DataConfig(class_names=source.class_names),
            poll_interval=0.01,
            accept=accept,
        ),
    )
    for i, nm in enumerate(names)
]
fed = build_federation(
    sites=setups,
    store=store,
    folder=tmp,
    validation=sp.val,
    w3=w3,
    coordinator=acc[0],
    aggregator=acc[1],
    settings=AggregatorSettings(
        valuation_mode="peers",
        explain_method=None,
        class_names=source.class_names,
        round_seconds=120,
        reveal_seconds=60,
        combiner=combiner,
    ),
)
hooks = {nm: sybil(i) for i, nm in enumerate(names) if nm.startswith("syb")} | {"rider": rider}
fed = type(fed)(
    **{
        **fed.__dict__,
        "nodes": tuple(
            fed.node(i, hooks=NodeHooks(transform_update=hooks[nm]))
            if nm in hooks
            else fed.nodes[i]
            for i, nm in enumerate(names)
        ),
    }
)
addr = {s.account.address: s.name for s in fed.sites}
paid = []
for _ in range(ROUNDS):
    fed.run_round()
    r = fed.ledger.current_round()
    row = {addr[s.site]: s for s in fed.ledger.get_submissions(r)}
    print(
        f"round {r}: {fed.ledger.get_round(r).phase.name}; "
        + ", ".join(
            f"{nm} n={s.num_samples} {Reason(s.reason).name} {s.weight / 1e18:.3f}"
            for nm, s in sorted(row.items())
        )
    )
    if "rider" in row and row["rider"].weight > 0:
        paid.append(r)
audits = verify_all(fed.ledger, store, accept=accept)
ok = all(a.passed for a in audits)
print(
    "audit verify:",
    "PASS" if ok else "FAIL",
    [(a.round, c.name) for a in audits for c in a.checks if c.applicable and not c.passed],
)
reader = read_independently(fed, "a123p")
failed = [f"{x['check']}: {x['detail'][:120]}" for x in reader if x["result"] == "FAIL"]
print(f"independent reader: {'PASS' if not failed else 'FAIL'} {failed}")
print(f"peers, rule {RULE}, level {LEVEL}: rider paid in rounds {paid}")
sys.exit(1 if paid and ok else 0)
