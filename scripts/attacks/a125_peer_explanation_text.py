"""A125 (peer rounds): **aggregator**: a peer round's "why" text that misstates the chain.

In a peer round the aggregator scores nothing: each update's score is the median of the other
validators' revealed scores, and the log's explanation is a sentence built from the chain alone
(``Scored by its peers: the median of the 2 other validator(s)' scores is 0.744.``, with a
clause for validators below the reputation gate and one when the update was dropped as
WITHHELD). ``peers.median`` checks the log's ``peer_median`` and ``peer_count`` components
against the votes, but not the sentence the report and ``audit log`` show. The lie, in round
1's log of three honest sites (schema-valid, every pinned field and component the chain's):

- ``attack``: the best-paid site's text says its peers' median is 0.050 and that it was
  dropped because the aggregator could not read its update back (a WITHHELD story) while the
  chain has it paid in full; the text begins with no reason label, so the session-56 label
  rule does not apply;
- ``honest``: the log as written (control).

usage: scripts/attacks/real.sh scripts/attacks/a125_peer_explanation_text.py MODE
Exits 1 when public verify passes the lying log (or fails the honest one), 0 otherwise.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import backends

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig, NodeConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog
from fedtrail.simulation.federation import SiteSetup, build_federation

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest"):
    sys.exit(f"unknown mode {MODE!r}")
LIE = (
    "Scored by its peers: the median of the 2 other validator(s)' scores is 0.050. It was then "
    "dropped: the aggregator could not read the update back by the score reveal deadline "
    "(reason WITHHELD), and its weight went to the others."
)
honest_bytes = roundlog.RoundLog.to_bytes


def lying_bytes(log: RoundLog) -> bytes:
    doc = json.loads(honest_bytes(log))
    if MODE == "attack":
        max(doc["sites"], key=lambda e: int(e["weight"]))["explanation"] = LIE
    return roundlog.to_bytes(doc)


def past(w3: object, deadline: int) -> None:
    now = next_block_timestamp(w3)
    if now <= deadline + CLOCK_SLACK:
        advance_time(w3, deadline - now + 1 + CLOCK_SLACK)


tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a125-"))
w3, accts, store = backends(tmp)
source = load_source("pneumonia")
splits = source.splits()
train_parts = partition_iid(splits.train.labels, 8, seed=1)
val_parts = partition_iid(splits.val.labels, 3, seed=2)
fed = build_federation(
    sites=[
        SiteSetup(
            account=accts[2 + i],
            name=f"site-{i}",
            train=splits.train.subset(train_parts[i]),
            val=splits.val.subset(val_parts[i]),
            config=NodeConfig(
                training=TrainConfig(epochs=1, seed=i),
                data=DataConfig(class_names=source.class_names),
                poll_interval=0.1,
            ),
        )
        for i in range(3)
    ],
    store=store,
    folder=tmp,
    validation=splits.val,
    w3=w3,
    coordinator=accts[0],
    settings=AggregatorSettings(
        valuation_mode="peers",
        seed=3,
        standing=False,
        explain_method=None,
        class_names=source.class_names,
    ),
)
ledger, service = fed.ledger, fed.service
r = service.open_next()
info, peer = ledger.get_round(r), ledger.get_peer_round(r)
assert peer is not None
for n in fed.nodes:
    n.participate(r)
past(w3, info.commit_deadline)
for n in fed.nodes:
    n.participate(r)
past(w3, info.reveal_deadline)
for n in fed.nodes:
    n.scorer.score(r)
past(w3, peer.score_commit_deadline)
for n in fed.nodes:
    n.scorer.score(r)
roundlog.RoundLog.to_bytes = lying_bytes
try:
    service.step()
    outcome = service.step()
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
assert outcome is not None, "the round did not finalize"
final = ledger.get_round(r)
log = RoundLog.from_bytes(store.get(final.log_cid, final.log_sha256, max_bytes=MAX_LOG_BYTES))
for e in log.sites:
    chain = f"chain {e.reason_label} score {e.score / 1e6:.3f} weight {e.weight_fraction:.3f}"
    print(f"round {r} {e.name}: {chain}; components {dict(e.components)}; why: {e.explanation}")
audits = verify_all(ledger, store)
failed = [(a.round, c.name, c.detail[:200]) for a in audits for c in a.checks if c.failed]
print("public audit verify:", "PASS" if not failed else f"FAIL {failed}")
if MODE == "honest":
    if failed:
        print("ATTACK HARNESS BROKEN: the honest log fails")
        sys.exit(1)
    print("control: the honest log passes")
    sys.exit(0)
if not failed:
    print("ATTACK WORKS: public verify passes a peer round's 'why' that misstates the chain")
    sys.exit(1)
print("defence holds: public verify fails the lying log")
