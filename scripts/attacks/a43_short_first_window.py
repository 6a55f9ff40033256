"""A43: **aggregator**: round 1 opened with the shortest window the contract takes, so that a
site whose training is slower never takes part, with no trace.

Later rounds may not have a shorter commit window than round 1's (a40, ``terms.task_fixed``),
but round 1's is the aggregator's choice, bounded only by the contract's ``minRoundWindow``
(10 s by ``fedtrail chain deploy``). A site that trains longer than the window (more images,
DP-SGD, a bigger model, a slower machine) misses the commit deadline in every round; the chain
shows only that it did not commit, and ``audit verify`` passed. Now (1) a node declines on
chain (``SHORT_WINDOW``, ``terms.declined``) terms whose commit window is below its ``[accept]
min_commit_seconds`` (default 30 s), and ``terms.windows`` fails such a window under the
auditor's table; (2) a node that measured its training in chain time (``chain_seconds``)
declines, before training, a round whose window leaves less than that.

Three sites through production SiteNodes, 150 images each; ``t`` trains "slowly": its node's
update hook moves the embedded chain's clock 15 s on. The aggregator opens every round with a
10 s commit window (reveal 30 s). Modes: ``short``: the nodes as shipped; ``silent``: the
nodes before the fix (no floor, no measure, no declaration); ``optin``: every site's
``min_commit_seconds`` lowered to 10 (a federation that agreed to 10 s windows: round 1 is
then missed unseen, later rounds declined by measure); ``long``: a 60 s window (control).

usage: python attacks/a43_short_first_window.py MODE [rounds]   (short|silent|optin|long; 3)
Prints each round's weights and node outcomes and ``audit verify``; exits 1 while ``t`` is
absent from a round that paid others and ``terms.declined`` does not name it (the hole).
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
from fedtrail.node.daemon import NodeHooks, RoundRecord, SiteNode  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402
from fedtrail.valuation.limits import ThresholdLimits  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else "short"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
if mode not in ("short", "silent", "optin", "long"):
    sys.exit(f"unknown mode {mode!r}: short, silent, optin or long")
N, SLOW = 150, 15
WINDOW = 60 if mode == "long" else 10
FLOOR = {"silent": 0, "optin": 10}.get(mode)

if mode == "silent":  # the node before the fix: no measure, refusals kept on the site

    def _quiet(self, round_id, info, reason, note):
        return self._skip(RoundRecord(round=round_id, phase="skipped"), note)

    SiteNode._decline = _quiet
    SiteNode._window_refusal = lambda self, info: None


def slow(delta, round_id, ctx):
    # a site with more images (or DP-SGD) trains longer: the chain's clock moves on meanwhile
    # (the embedded chain's clock stands still between transactions)
    advance_time(w3, SLOW)
    return delta


data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
w3 = connect("embedded")
acc = funded_accounts(w3)
names = ["a", "b", "t"]
accept = ThresholdLimits() if FLOOR is None else ThresholdLimits(min_commit_seconds=FLOOR)
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
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a43-"))
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
# the aggregator's window is chosen after the sites' tables (build_federation's simulated
# sites consent to whatever windows it is given)
fed.service.settings = dataclasses.replace(fed.service.settings, round_seconds=WINDOW)
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
    absent[r] = "t" not in subs and any(s.weight > 0 for s in subs.values())
    print(f"round {r} (commit window {WINDOW} s): {fed.ledger.get_round(r).phase.name}: {row}")
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
    if absent.get(a.round) and "t (" not in declined:
        missed.append(f"round {a.round}: t shut out, others paid, nothing names t")
if missed:
    print("HOLE OPEN: " + "; ".join(missed))
    sys.exit(1)
print("no slow site shut out unseen")
