"""A48: **site**: declines used against an honest aggregator (griefing) or to have it both ways.

A hostile site ``g`` (registered, a node's default ``[accept]``) answers honest terms with
decline commitments (``fedtrail.ledger.decline_commitment``) whose reasons are false, hoping
``audit verify``'s ``terms.declined`` fails the aggregator's rounds: round 1 ``unaccepted``,
round 2 ``short window``, round 3 ``windows`` plus, in round 4, its round-3 decline replayed
(a decline of another round's terms). In round 1 it also tries to commit an update after
declining, and to reveal an update against the decline (to be paid after saying it refused).

Holds when every round verifies (a false reason is named, never failed: the auditor's own
table decides), the replayed decline is not read as a decline of round 4, and the chain
refuses both the second commitment and the reveal. Three honest sites ``a``, ``b``, ``c``
through production SiteNodes, 150 images each, on the embedded chain with a LocalStore (as
a42).

usage: python attacks/a48_decline_grief.py
Exits 1 when any of those fails (the attack works), 0 when the defence holds.
"""

import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import connect, funded_accounts, next_block_timestamp  # noqa: E402
from fedtrail.errors import FedtrailError  # noqa: E402
from fedtrail.ledger import commitment, decline_commitment  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.node.config import NodeConfig  # noqa: E402
from fedtrail.protocol.codes import Decline  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402

N = 150
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
        config=NodeConfig(training=TrainConfig(epochs=1, seed=i), poll_interval=0.01),
    )
    for i, nm in enumerate(names)
]
tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a48-"))
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
g = setups[3].account
ledger = fed.ledger
PLAN = {1: Decline.UNACCEPTED, 2: Decline.SHORT_WINDOW, 3: Decline.WINDOWS}
problems: list[str] = []
refused: list[str] = []


def hostile(round_id: int, update: object = None) -> None:
    """g's node, replaced: a false decline (or a replayed one) before the commit deadline; in
    round 1, after it, a reveal against the decline."""
    info = ledger.get_round(round_id)
    mine = ledger.get_submission(round_id, g.address)
    if mine is None and next_block_timestamp(w3) <= info.commit_deadline:
        if round_id in PLAN:
            ours = decline_commitment(g.address, round_id, info.terms_sha256, PLAN[round_id])
        else:  # round 4: the round-3 decline replayed
            prev = ledger.get_round(round_id - 1)
            ours = decline_commitment(g.address, round_id - 1, prev.terms_sha256, PLAN[3])
        ledger.commit_update(g, round_id, ours)
        if round_id == 1:  # then an update commitment over the decline
            fake = commitment(g.address, 1, hashlib.sha256(b"x").hexdigest(), 10)
            try:
                ledger.commit_update(g, 1, fake)
                problems.append("round 1: a second commitment after the decline was accepted")
            except FedtrailError as exc:
                refused.append(f"second commitment refused ({type(exc).__name__})")
        return None
    if round_id == 1 and mine is not None and not mine.revealed:
        blob = b"\x00" * 64  # any bytes: no reveal opens a five-word decline
        cid = store.put(blob)
        try:
            ledger.reveal_update(g, 1, cid, hashlib.sha256(blob).hexdigest(), 10)
            problems.append("round 1: a reveal against the decline was accepted")
        except FedtrailError as exc:
            refused.append(f"reveal against the decline refused ({type(exc).__name__})")
    return None


node_g = next(n for n in fed.nodes if n.config.name == "g")
node_g.participate = hostile  # type: ignore[method-assign]
for _ in range(4):
    fed.run_round()
    r = ledger.current_round()
    print(f"round {r}: {ledger.get_round(r).phase.name}")
for line in refused:
    print("  chain:", line)
audits = verify_all(ledger, store)
print("audit verify:", "PASS" if all(a.passed for a in audits) else "FAIL")
for a in audits:
    declined = next(c for c in a.checks if c.name == "terms.declined")
    print(
        f"  round {a.round} terms.declined {'ok' if declined.passed else 'FAIL'}: "
        f"{declined.detail[:150]}"
    )
    for c in a.checks:
        if not c.passed:
            problems.append(f"round {a.round}: {c.name} failed: {c.detail[:120]}")
    if a.round == 4 and "g (" in declined.detail:
        problems.append("round 4: the replayed round-3 decline was read as a decline of round 4")
if len(refused) < 2:
    problems.append("the second commitment or the reveal was not tried")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: false declines named, not failed; replay not read; chain refused both")
