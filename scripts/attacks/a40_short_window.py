"""A40: **aggregator**: the commit window shortened for one chosen round to shut out the
site that trains slowest, then lengthened again.

The round terms' windows (``commit_seconds``, ``reveal_seconds``) were free per round
(``payment_differences`` left them out; the ledger only refuses a window below its
``min_round_window``, 10 s by default, and ``terms.windows`` checks the chain's windows against
the terms). A site whose training takes longer than the window misses the commit deadline
(``FederationLedger__CommitClosed``) and leaves no trace but its absence, so an aggregator
that picks the window per round picks which slow sites (more images, DP-SGD, a bigger model)
take part in which rounds. Now a commit or reveal window shorter than round 1's is a change
round 1's terms forbid (``payment_differences``): a later round's ``terms.task_fixed`` fails and
every honest node refuses it; a longer window is free.

Three sites through production SiteNodes, 150 images each; ``t`` trains "slowly": its node's
update hook moves the embedded chain's clock 15 s on (the embedded chain's clock stands still
between transactions, so wall time spent training does not count by itself). ``toggle``: commit
window 60 s in rounds 1 and 3, 10 s (the ledger's minimum) in round 2; ``fixed``: 60 s every
round (control). The script's aggregator skips its own refusal to re-choose round 1's settings.

``slack`` (closed): the terms keep 60 s every round, but round 2 is opened on chain with a
10 s commit window (reveal window exact). Before, ``openRound`` took absolute deadlines and
``terms.windows`` accepted a chain commit window up to ``WINDOW_SLACK`` (60 s) shorter than the
terms' (for the opening transaction's wait), so deadlines set 50 s early passed. Now
``openRound`` takes the window lengths and the contract sets the deadlines from the opening
block: no wait shortens them, there is no slack, and the cut window fails ``terms.windows``.

usage: python attacks/a40_short_window.py MODE [rounds]   (MODE toggle|fixed|slack; default 3)
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
from fedtrail.chain import advance_time, connect, funded_accounts  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig  # noqa: E402
from fedtrail.node.daemon import NodeHooks  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "toggle"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
N = 150
LONG, SHORT, SLOW = 60, 10, 15


def window_of(round_id: int) -> int:
    return SHORT if mode == "toggle" and round_id == 2 else LONG


CUT = LONG - SHORT  # "slack": round 2's chain commit window this much shorter than the terms'


def slow(delta, round_id, ctx):
    # a site with more images (or DP-SGD) trains longer: the chain's clock moves on meanwhile
    # (the embedded chain's clock stands still between transactions)
    advance_time(w3, SLOW)
    return delta


real_open = AggregatorService.open_next


def open_next(self, *args, **kwargs):
    r = self.ledger.current_round() + 1
    self.settings = dataclasses.replace(self.settings, round_seconds=window_of(r))
    return real_open(self, *args, **kwargs)


AggregatorService.open_next = open_next
if mode == "slack":
    # the terms keep round 1's 60 s, the chain's commit window is cut to 10 s (the reveal
    # window stays exact): the contract takes window lengths, so the cut is all an aggregator
    # can do, and terms.windows compares the chain's windows with the terms' exactly
    from fedtrail.ledger import Ledger

    real_ledger_open = Ledger.open_round

    def cut_open(self, *args, commit_seconds, **kwargs):
        if self.current_round() + 1 == 2:
            commit_seconds -= CUT
        return real_ledger_open(self, *args, commit_seconds=commit_seconds, **kwargs)

    Ledger.open_round = cut_open
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
            poll_interval=0.01,
        ),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a40-"))
store = LocalStore(tmp / "store")
fed = build_federation(
    sites=setups,
    store=store,
    folder=tmp,
    validation=data.val,
    w3=w3,
    coordinator=acc[0],
    aggregator=acc[1],
    settings=AggregatorSettings(explain_method=None, round_seconds=LONG, reveal_seconds=30),
)
fed = type(fed)(
    **{
        **fed.__dict__,
        "nodes": tuple(
            fed.node(i, hooks=NodeHooks(transform_update=slow)) if nm == "t" else fed.nodes[i]
            for i, nm in enumerate(names)
        ),
    }
)
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
    phase = fed.ledger.get_round(r).phase.name
    print(f"round {r} (commit window {window_of(r)} s): {phase}: {row}")
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
