"""A6: the A2 free-rider in PEER mode ([valuation] mode = "peers"), through production SiteNodes
(Federation.run_round: every node trains, commits, reveals, scores the others, commits and
reveals its score vector). The rider's node hook throws its training away from round 2 on and
sends 0.5 * (sum of two of the previous round's revealed updates), read from the chain and the
store like any auditor; in round 1 it sends nothing.

usage: python attacks/a6_peer_freerider.py [mix2|honest] [rounds]
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import numpy as np
import torch

torch.set_num_threads(1)
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, funded_accounts  # noqa: E402
from fedtrail.ml.catalog import load_source  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import DataConfig, NodeConfig  # noqa: E402
from fedtrail.node.daemon import NodeHooks  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.codec import decode_update  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "mix2"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def rider(delta, round_id, ctx):
    if mode == "honest":
        return delta
    if round_id == 1:
        return None
    subs = [
        s for s in ctx.ledger.get_submissions(round_id - 1) if s.revealed and s.site != ctx.address
    ][:2]
    ds = [decode_update(ctx.store.get(s.cid, s.sha256), spec=ctx.spec)[0] for s in subs]
    return {k: 0.5 * (ds[0][k] + ds[1][k]) for k in ds[0]}


source = load_source("pneumonia")
sp = source.splits()
perm = np.random.default_rng(0).permutation(len(sp.train.labels))
vperm = np.random.default_rng(1).permutation(len(sp.val.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["h0", "h1", "h2", "h3", "rider"]
setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=sp.train.subset(perm[150 * i : 150 * (i + 1)]),
        val=sp.val.subset(vperm[50 * i : 50 * (i + 1)]),
        config=NodeConfig(
            training=TrainConfig(epochs=1, seed=i),
            data=DataConfig(class_names=source.class_names),
            poll_interval=0.01,
        ),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-peer-"))
store = LocalStore(tmp / "store")
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
        round_seconds=60,
        reveal_seconds=30,
    ),
)
fed = type(fed)(
    **{
        **fed.__dict__,
        "nodes": tuple(
            fed.node(i, hooks=NodeHooks(transform_update=rider)) if nm == "rider" else fed.nodes[i]
            for i, nm in enumerate(names)
        ),
    }
)
addr = {s.account.address: s.name for s in fed.sites}
for _ in range(rounds):
    out = fed.run_round()
    r = fed.ledger.current_round()
    print(f"round {r}: {fed.ledger.get_round(r).phase.name}")
    for sub in fed.ledger.get_submissions(r):
        print(
            f"  {addr[sub.site]:6s} n={sub.num_samples} score={sub.score / 1e6:.3f} "
            f"{Reason(sub.reason).name:14s} weight={sub.weight / 1e18:.3f}"
        )
audits = verify_all(fed.ledger, store)
print(
    "audit verify:",
    "PASS" if all(a.passed for a in audits) else "FAIL",
    [(a.round, c.name) for a in audits for c in a.checks if c.applicable and not c.passed],
)
