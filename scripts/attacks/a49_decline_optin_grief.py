"""A49: **site**: a false decline in a federation that opted into non-default terms, to make
``audit verify`` fail its honest aggregator.

Every site of the federation opted into per-round valuation (``[accept] per_round = true``;
the aggregator's terms: standing off), which a node's default ``[accept]`` refuses (a18). A
hostile site ``g`` declines every round as ``unaccepted`` although its own table accepts the
terms. ``terms.declined`` fails a finalized, paid round when *the auditor's* table confirms a
declined reason, so the outcome depends on the table the audit runs with: the federation's
(what README asks an auditor of such a federation to pass) or verify's default.

Three honest sites ``a``, ``b``, ``c`` and ``g`` through production SiteNodes, 150 images each,
on the embedded chain with a LocalStore (as a42); 2 rounds.

usage: python attacks/a49_decline_optin_grief.py
Exits 1 when the audit with the federation's own table fails a round (the griefing works), 0
when it passes. The default-table audit's verdict is printed: it fails by design (its table
refuses the terms, and a site said it refused them too), which is why such a federation audits
with its own table.
"""

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, funded_accounts, next_block_timestamp  # noqa: E402
from fedtrail.ledger import decline_commitment  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig  # noqa: E402
from fedtrail.protocol.codes import Decline  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402
from fedtrail.valuation.limits import ThresholdLimits  # noqa: E402

N = 150
OPTED = ThresholdLimits(per_round=True)
data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["a", "b", "c", "g"]
setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=data.train.subset(perm[N * i : N * (i + 1)]),
        val=data.val,
        config=NodeConfig(training=TrainConfig(epochs=1, seed=i), poll_interval=0.01, accept=OPTED),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a49-"))
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
fed.service.settings = dataclasses.replace(fed.service.settings, standing=False)
g = setups[3].account
ledger = fed.ledger


def hostile(round_id: int, update: object = None) -> None:
    info = ledger.get_round(round_id)
    if ledger.get_submission(round_id, g.address) is None and (
        next_block_timestamp(w3) <= info.commit_deadline
    ):
        ledger.commit_update(
            g,
            round_id,
            decline_commitment(g.address, round_id, info.terms_sha256, Decline.UNACCEPTED),
        )


next(n for n in fed.nodes if n.config.name == "g").participate = hostile  # type: ignore[method-assign]
for _ in range(2):
    fed.run_round()
    r = ledger.current_round()
    print(f"round {r}: {ledger.get_round(r).phase.name}")
failed = []
for label, accept in (("federation's table (per_round = true)", OPTED), ("default table", None)):
    audits = verify_all(ledger, store, accept=accept)
    verdict = "PASS" if all(a.passed for a in audits) else "FAIL"
    print(f"audit verify with the {label}: {verdict}")
    for a in audits:
        c = next(c for c in a.checks if c.name == "terms.declined")
        print(f"  round {a.round} terms.declined {'ok' if c.passed else 'FAIL'}: {c.detail[:170]}")
        if accept is OPTED and not a.passed:
            failed.append(
                f"round {a.round}: " + ", ".join(x.name for x in a.checks if not x.passed)
            )
if failed:
    print(
        "ATTACK WORKS: the federation's own audit fails an honest aggregator: " + "; ".join(failed)
    )
    sys.exit(1)
print("defence holds: with the federation's table the false declines are named, not failed")
