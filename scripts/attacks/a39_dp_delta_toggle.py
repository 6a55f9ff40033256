"""A39: **aggregator**: the DP delta moved for one chosen round to keep out a DP site whose
node refuses it, then moved back.

The round terms' delta (``privacy.delta``, every site's DP-SGD accounting) was free per round
(``payment_differences`` fixed ``privacy.required`` only, a36). A node refuses a round whose
delta is above its ``[privacy] delta`` or 1 / its training images, or below its
``min_delta``: so the aggregator, choosing the delta round by round, chose which DP sites could
take part, and an honest node that refuses leaves no trace an auditor sees (its ``[accept]``
outcome stays on the site). Terms with no privacy block after round 1 had one also let each site
account at a delta of its own, up to 1 / its samples. Now the privacy block is fixed by round
1's terms like the payment settings: a later round with another delta fails ``audit verify``'s
``terms.task_fixed`` and every honest node refuses it (``_payment_refusal``).

Three DP sites through production SiteNodes (DP-SGD at noise 1.0, budgets of 100 epsilon),
150 images each: ``a`` and ``b`` keep a node's defaults (``[privacy] delta`` 1e-5), ``t`` (the
target) sets ``delta = 1e-6``. ``toggle``: the terms account at 1e-6 in rounds 1 and 3 and at
1e-5 in round 2 (an honest default federation's delta); ``fixed``: 1e-6 every round (control).
The script's aggregator skips its own refusal to re-choose round 1's settings.

usage: python attacks/a39_dp_delta_toggle.py MODE [rounds]   (MODE toggle|fixed; default 3)
Prints each round's weights and node outcomes, then ``audit verify``.
"""

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, funded_accounts  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig, PrivacyConfig  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "toggle"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
N = 150
LOW, HIGH = 1e-6, 1e-5


def delta_of(round_id: int) -> float:
    return HIGH if mode == "toggle" and round_id == 2 else LOW


real_open = AggregatorService.open_next


def open_next(self, *args, **kwargs):
    r = self.ledger.current_round() + 1
    self.settings = dataclasses.replace(self.settings, dp_delta=delta_of(r))
    return real_open(self, *args, **kwargs)


AggregatorService.open_next = open_next
# a lying aggregator skips its own refusal to change round 1's payment settings
AggregatorService._payment_changes = lambda self, terms: []

data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["a", "b", "t"]
setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=data.train.subset(perm[N * i : N * (i + 1)]),
        val=data.val,
        config=NodeConfig(
            training=TrainConfig(epochs=1, seed=i),
            privacy=PrivacyConfig(
                enabled=True, noise_multiplier=1.0, delta=LOW if nm == "t" else HIGH
            ),
            poll_interval=0.01,
        ),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a39-"))
store = LocalStore(tmp / "store")
fed = build_federation(
    sites=setups,
    store=store,
    folder=tmp,
    validation=data.val,
    w3=w3,
    coordinator=acc[0],
    aggregator=acc[1],
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=LOW
    ),
)
for s in setups:
    fed.ledger.set_privacy_budget(fed.coordinator, s.account.address, 100_000_000)
addr = {s.account.address: s.name for s in setups}
for _ in range(rounds):
    fed.run_round()
    r = fed.ledger.current_round()
    subs = {addr[s.site]: s for s in fed.ledger.get_submissions(r)}
    row = ", ".join(
        f"{nm} {Reason(subs[nm].reason).name} {subs[nm].weight / 1e18:.3f}"
        if nm in subs
        else f"{nm} absent 0.000"
        for nm in names
    )
    print(f"round {r} (delta {delta_of(r):g}): {fed.ledger.get_round(r).phase.name}: {row}")
    for n in fed.nodes:
        note = n.state.rounds.get(r) if hasattr(n, "state") else None
        if note is not None and getattr(note, "phase", "") == "skipped":
            print(f"    node {n.config.name}: skipped: {note.note[:160]}")
audits = verify_all(fed.ledger, store)
print(
    "audit verify:",
    "PASS" if all(a.passed for a in audits) else "FAIL",
    [
        (a.round, c.name, c.detail[:160])
        for a in audits
        for c in a.checks
        if c.applicable and not c.passed
    ],
)
