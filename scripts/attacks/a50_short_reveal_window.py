"""A47: **aggregator**: round 1 opened with the shortest *reveal* window the contract takes, so
that a site whose reveal is slower (a larger blob to publish, a slow link, a chain whose blocks
take longer than the window) commits in every round and never gets its update revealed.

a43 bounded the commit window at the site (``[accept] min_commit_seconds``, a measured training
time) but not the reveal window: ``window_refusal`` checked ``commit_seconds`` (and a peer
round's score commit window) only. A node reveals no earlier than ``CLOCK_SLACK`` (2 s) after
the commit deadline, at its next poll, and then puts its blob on the store and sends one
transaction; the reveal window is bounded only by the contract's ``minRoundWindow`` (10 s by
``fedtrail chain deploy``, any value the deployer chose). An honest site whose reveal takes
longer commits, misses the reveal, and ``audit verify`` notes "1 other commitment(s) never
revealed" (as a site that withheld its update) and passes.

Three sites through production SiteNodes, 150 images each; ``t`` reveals "slowly": its node's
reveal hook moves the embedded chain's clock 15 s on. Commit window 60 s. Modes: ``short``:
reveal window 10 s; ``long``: 60 s (control).

usage: python attacks/a50_short_reveal_window.py MODE [rounds]   (short|long; 2)
Exits 1 while ``t`` is unpaid in a round that paid others and no failed check or decline names
it (the hole); 0 otherwise.
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
from fedtrail.chain import advance_time, connect, funded_accounts  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig  # noqa: E402
from fedtrail.node.daemon import NodeHooks  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402
from fedtrail.valuation.limits import ThresholdLimits  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "short"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
if mode not in ("short", "long"):
    sys.exit(f"unknown mode {mode!r}: short or long")
N, SLOW = 150, 15
WINDOW = 60 if mode == "long" else 10


def slow(reveal, round_id, ctx):
    # a site whose blob takes longer to publish (or whose transaction waits for a block):
    # the chain's clock moves on meanwhile (the embedded chain's stands still between
    # transactions)
    advance_time(w3, SLOW)
    return reveal


data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["a", "b", "t"]
accept = ThresholdLimits()
setups = [
    SiteSetup(
        account=acc[2 + i],
        name=nm,
        train=data.train.subset(perm[N * i : N * (i + 1)]),
        val=data.val,
        config=NodeConfig(
            training=TrainConfig(epochs=1, seed=i), poll_interval=0.01, accept=accept
        ),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a50-"))
store = LocalStore(tmp / "store")
fed = build_federation(
    sites=setups,
    store=store,
    folder=tmp,
    validation=data.val,
    w3=w3,
    coordinator=acc[0],
    aggregator=acc[1],
    settings=AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=60),
)
# the aggregator's window is chosen after the sites' tables (build_federation's simulated
# sites consent to whatever windows it is given)
fed.service.settings = dataclasses.replace(fed.service.settings, reveal_seconds=WINDOW)
fed = type(fed)(
    **{
        **fed.__dict__,
        "nodes": tuple(
            fed.node(i, hooks=NodeHooks(transform_reveal=slow)) if nm == "t" else fed.nodes[i]
            for i, nm in enumerate(names)
        ),
    }
)
addr = {s.account.address: s.name for s in setups}
absent: dict[int, bool] = {}  # round -> t absent while others were paid
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
    absent[r] = ("t" not in subs or subs["t"].weight == 0) and any(
        s.weight > 0 for s in subs.values()
    )
    print(f"round {r} (reveal window {WINDOW} s): {fed.ledger.get_round(r).phase.name}: {row}")
    for n in fed.nodes:
        note = n.state.rounds.get(r)
        if note is not None and note.phase == "skipped":
            print(f"    node {n.config.name}: skipped: {note.note[:150]}")
audits = verify_all(fed.ledger, store)
failed = [(a.round, c.name, c.detail[:140]) for a in audits for c in a.checks if c.failed]
print("audit verify:", "PASS" if not failed else "FAIL", failed)
missed = []
for a in audits:
    declined = next((c.detail for c in a.checks if c.name == "terms.declined"), "")
    print(f"  round {a.round} terms.declined: {declined[:200] or '(no such check)'}")
    named = "t (" in declined and any(c.failed for c in a.checks)
    if absent.get(a.round) and not named:
        missed.append(f"round {a.round}: t shut out, others paid, nothing names t")
if missed:
    print("HOLE OPEN: " + "; ".join(missed))
    sys.exit(1)
print("no slow revealer shut out unseen")
