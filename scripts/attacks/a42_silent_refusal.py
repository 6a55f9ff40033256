"""A42: **aggregator**: terms that the honest sites refuse, so that an ally is paid alone, with
nothing on chain saying the others refused.

A site's node refuses terms outside its ``[accept]`` (here: per-round valuation, standing off,
which a node's default table refuses: a18) before it trains, and before this fix that refusal
stayed in the site's own ``state.json``: the chain showed only that the honest sites did not
commit, as if they were offline, and ``audit verify`` passed with no check naming them
(``terms.limits`` notes the setting without failing: a site may have opted in). The
aggregator wrote terms only its ally (``[accept] per_round = true``) takes and paid it the
whole weight, round after round. Now a refusing node commits a *decline*
(``fedtrail.ledger.decline_commitment``: site, round, terms sha256 and a reason code; five
words, so no reveal can open it), and ``audit verify``'s ``terms.declined`` names each site
that declined and why.

Four sites through production SiteNodes, 150 images each: ``a``, ``b``, ``c`` with a node's
default ``[accept]``, ``x`` (the ally) with ``per_round = true``. Modes: ``refuse``: the terms
value each round on its own (``standing`` off); ``silent``: the same with the node's
declaration turned off (the behaviour before the fix); ``control``: standing on, every site
takes part.

usage: python attacks/a42_silent_refusal.py MODE [rounds]   (MODE refuse|silent|control; 2)
Prints each round's weights and node outcomes and ``audit verify``'s ``terms.declined``; exits
1 while a refusing site is not named by ``terms.declined`` in a round it refused (the hole).
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
from fedtrail.chain import connect, funded_accounts  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig  # noqa: E402
from fedtrail.node.daemon import RoundRecord, SiteNode  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402
from fedtrail.valuation.limits import ThresholdLimits  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "refuse"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
if mode not in ("refuse", "silent", "control"):
    sys.exit(f"unknown mode {mode!r}: refuse, silent or control")
N = 150

if mode == "silent":  # the node before the fix: a refusal recorded on the site only

    def _quiet(self, round_id, info, reason, note):
        return self._skip(RoundRecord(round=round_id, phase="skipped"), note)

    SiteNode._decline = _quiet

data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["a", "b", "c", "x"]
setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=data.train.subset(perm[N * i : N * (i + 1)]),
        val=data.val,
        config=NodeConfig(
            training=TrainConfig(epochs=1, seed=i),
            poll_interval=0.01,
            accept=ThresholdLimits(per_round=nm == "x"),
        ),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a42-"))
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
        explain_method=None,
        round_seconds=60,
        reveal_seconds=30,
    ),
)
# the aggregator's settings are chosen after the sites' tables (build_federation's simulated
# sites consent to whatever settings it is given)
fed.service.settings = dataclasses.replace(fed.service.settings, standing=mode == "control")
addr = {s.account.address: s.name for s in setups}
refused: dict[int, set[str]] = {}
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
    print(f"round {r}: {fed.ledger.get_round(r).phase.name}: {row}")
    for n in fed.nodes:
        note = n.state.rounds.get(r)
        if note is not None and note.phase == "skipped":
            refused.setdefault(r, set()).add(n.config.name)
            print(f"    node {n.config.name}: skipped: {note.note[:110]}...{note.note[-60:]}")
audits = verify_all(fed.ledger, store)
print("audit verify:", "PASS" if all(a.passed for a in audits) else "FAIL")
missed = []
for a in audits:
    declined = [c for c in a.checks if c.name == "terms.declined"]
    detail = declined[0].detail if declined else "(no terms.declined check)"
    print(f"  round {a.round} terms.declined: {detail[:300]}")
    for nm in sorted(refused.get(a.round, ())):
        if not declined or f"{nm} (" not in detail:
            missed.append(f"round {a.round}: {nm} refused, unnamed by audit verify")
if missed:
    print("HOLE OPEN: " + "; ".join(missed))
    sys.exit(1)
print("no refusal unseen" + ("" if refused else " (no site refused)"))
