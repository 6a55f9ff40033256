"""A47: **aggregator**: terms that keep ``dp_noise_check`` 1 shut the DP + topk8 sites out, with
nothing on chain saying they refused.

A node with ``[privacy]`` on and ``[compression] topk8`` (accepted with ``[accept.loosest]
dp_noise_check = 0``, issue 16) skips every round whose terms check each DP update's noise:
its compressed update would be scored 0 as UNCHECKABLE after spending privacy budget. Before
the fix that skip stayed in the site's own ``state.json`` (the a42 pattern: every other refusal
of the terms is declared on chain as a *decline*): ``dp_noise_check`` 1 is the product's
default, so an aggregator kept it, the DP topk8 sites vanished from every round as if offline,
and ``audit verify``'s ``terms.declined`` named no one. Now the node declares the refusal
(``Decline.PRIVACY``) before training, and verify names it.

Three sites through production SiteNodes, 150 images each, on the embedded chain with a
LocalStore (as a42): ``a`` and ``b`` plain, ``z`` DP-SGD + topk8 with ``dp_noise_check = 0``
under ``[accept.loosest]``; the aggregator's terms keep ``dp_noise_check`` 1.

usage: python attacks/a47_dp_topk8_silent.py [rounds]   (default 1)
Exits 1 while ``z`` skips a round that ``terms.declined`` does not name (the hole), 0 when it
is named in every round it skipped.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, funded_accounts  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig, PrivacyConfig  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.codec import Compression  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402
from fedtrail.valuation.limits import LoosestLimits, ThresholdLimits  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
N = 150
data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["a", "b", "z"]


def config(i: int, nm: str) -> NodeConfig:
    if nm != "z":
        return NodeConfig(training=TrainConfig(epochs=1, seed=i), poll_interval=0.01)
    return NodeConfig(
        training=TrainConfig(epochs=1, seed=i),
        poll_interval=0.01,
        privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0),
        compression=Compression(method="topk8"),
        accept=ThresholdLimits(loosest=LoosestLimits(dp_noise_check=0)),
    )


setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=data.train.subset(perm[N * i : N * (i + 1)]),
        val=data.val,
        config=config(i, nm),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a47-"))
store = LocalStore(tmp / "store")
fed = build_federation(
    sites=setups,
    store=store,
    folder=tmp,
    validation=data.val,
    w3=w3,
    coordinator=acc[0],
    aggregator=acc[1],
    settings=AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=30),
)
addr = {s.account.address: s.name for s in setups}
skipped: dict[int, set[str]] = {}
for _ in range(rounds):
    fed.run_round()
    r = fed.ledger.current_round()
    subs = {addr[s.site]: s for s in fed.ledger.get_submissions(r, include_unrevealed=True)}
    row = ", ".join(
        f"{nm} {Reason(subs[nm].reason).name if subs[nm].revealed else 'unrevealed'} "
        f"{subs[nm].weight / 1e18:.3f}"
        if nm in subs
        else f"{nm} absent"
        for nm in names
    )
    print(f"round {r}: {fed.ledger.get_round(r).phase.name}: {row}")
    for n in fed.nodes:
        note = n.state.rounds.get(r)
        if note is not None and note.phase == "skipped":
            skipped.setdefault(r, set()).add(n.config.name)
            print(f"    node {n.config.name}: skipped: {note.note[:90]}...{note.note[-70:]}")
audits = verify_all(fed.ledger, store)
print("audit verify:", "PASS" if all(a.passed for a in audits) else "FAIL")
missed = []
for a in audits:
    declined = [c for c in a.checks if c.name == "terms.declined"]
    detail = declined[0].detail if declined else "(no terms.declined check)"
    print(f"  round {a.round} terms.declined: {detail[:200]}")
    for nm in sorted(skipped.get(a.round, ())):
        if not declined or f"{nm} (" not in detail:
            missed.append(f"round {a.round}: {nm} refused, unnamed by audit verify")
if not skipped:
    print("z took part: nothing to check (the terms did not keep dp_noise_check 1?)")
    sys.exit(1)
if missed:
    print("HOLE OPEN: " + "; ".join(missed))
    sys.exit(1)
print("defence holds: every refusal of the DP topk8 site is named by terms.declined")
