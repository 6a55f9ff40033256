"""A69: **aggregator** that also serves a site's JSON-RPC endpoint: the site signs the chain's
record as the endpoint reports it, and the aggregator holds that signature against it.

On Flower a site replies with a signed statement of its revealed update (round, CID, sha256,
sample count). A signed reply that contradicts the chain is "the site's own lie": the
aggregator hands it to its service as evidence, the site is scored 0 ``CONTRADICTED`` and
``audit verify``'s ``evidence.signed`` accepts it, since the site's key signed it. Up to this
change the site's ClientApp signed the reveal *as its JSON-RPC endpoint reported it*
(``fedtrail.flower.site._unsigned`` reads ``get_submission`` back), not as it sent it. In a
federation whose aggregator runs the chain node the sites use (a consortium's one node, as in
``scripts/flower_demo.sh``), the endpoint can answer that one read with another sample count;
the site signs it, and its honest update earns nothing, with verify passing and the site named
a liar in the round's log.

Three honest sites of 150 images (``a``, ``b`` and the target ``t``) run the Flower site path
(``fedtrail.flower.site.answer``: commit, reveal, signed reply), in process, on Anvil + IPFS;
the aggregator checks every reply (``check_reply``) and hands the evidence to its service.

- ``lie``: ``t``'s endpoint reports its revealed update with ten times its sample count;
- ``cid``: ... with another CID (the sha256 and the count unchanged);
- ``honest``: control, the endpoint answers truly.

usage: scripts/attacks/real.sh scripts/attacks/a69_rpc_signed_lie.py lie|cid|honest
Exits 1 when ``t`` is scored CONTRADICTED on a statement the endpoint made up and verify passes
the round, else 0.
"""

import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import backends

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.flower.replies import check_reply
from fedtrail.flower.site import answer
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Reason
from fedtrail.simulation.federation import build_federation, make_sites

MODE = sys.argv[1] if len(sys.argv) > 1 else "lie"
if MODE not in ("lie", "cid", "honest"):
    sys.exit(f"unknown mode {MODE!r}: lie, cid or honest")
OTHER_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # the empty UnixFS directory


class LyingEndpoint:
    """The site's ledger as read through the aggregator's endpoint: every call passes through,
    except the read of the site's own revealed submission."""

    def __init__(self, ledger: Any, site: str) -> None:
        self._ledger, self._site = ledger, site

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def get_submission(self, round_id: int, site: str) -> Any:
        sub = self._ledger.get_submission(round_id, site)
        if sub is None or not sub.revealed or site.lower() != self._site.lower():
            return sub
        if MODE == "lie":
            return replace(sub, num_samples=sub.num_samples * 10)
        return replace(sub, cid=OTHER_CID)


tmp = Path(tempfile.mkdtemp(prefix="a69-"))
w3, accts, store = backends(tmp)
source = load_source("pneumonia")
splits = source.splits()
parts = partition_iid(splits.train.labels, 8, seed=1)
sites = make_sites(
    accts[2:5],
    [splits.train.subset(parts[i][:150]) for i in range(3)],
    names=["a", "b", "t"],
    training=TrainConfig(epochs=1),
    data=DataConfig(class_names=source.class_names),
)
fed = build_federation(
    sites=sites,
    store=store,
    folder=tmp,
    validation=splits.val,
    w3=w3,
    coordinator=accts[0],
    aggregator=accts[1],
    settings=AggregatorSettings(
        class_names=source.class_names, explain_method=None, round_seconds=120
    ),
)
target = fed.nodes[2]
if MODE != "honest":
    target.ledger = LyingEndpoint(target.ledger, target.address)  # type: ignore[assignment]
r = fed.service.open_next()
for node in fed.nodes:
    print(f"round {r}: {node.address[:10]} {answer(node, r, wait_seconds=0).phase}")
deadline = fed.ledger.get_round(r).commit_deadline
now = next_block_timestamp(w3)
if now <= deadline:
    advance_time(w3, deadline - now + 1 + CLOCK_SLACK)
evidence = []
for node in fed.nodes:
    reply = answer(node, r, wait_seconds=0)
    check = check_reply(fed.ledger, reply, round_id=r, sender=node.address)
    print(
        f"round {r}: {node.address[:10]} replies {reply.phase} n={reply.num_samples} "
        f"cid={reply.cid[:12]}: mismatches {list(check.mismatches)}, attributable "
        f"{check.attributable}, evidence {check.evidence}"
    )
    if check.evidence:
        evidence.append(reply.signed(chain_id=fed.ledger.chain_id, ledger=fed.ledger.address))
if evidence:
    print(f"aggregator: {len(evidence)} signed contradiction(s) handed to the service")
    fed.service.submit_evidence(r, evidence)
if not fed.service.ready_to_value(r):
    info = fed.ledger.get_round(r)
    advance_time(w3, info.reveal_deadline - next_block_timestamp(w3) + 1 + CLOCK_SLACK)
for _ in range(4):  # value, then finalize
    if fed.ledger.get_round(r).phase.name in ("FINALIZED", "CANCELLED"):
        break
    fed.service.step()
subs = {s.site: s for s in fed.ledger.get_submissions(r)}
for node, name in zip(fed.nodes, ["a", "b", "t"], strict=True):
    s = subs[node.address]
    print(
        f"  {name} n={s.num_samples} score={s.score / 1e6:.3f} {Reason(s.reason).name} "
        f"weight={s.weight / 1e18:.3f}"
    )
audit = verify_round(fed.ledger, store, r)
failed = [(c.name, c.detail[:160]) for c in audit.checks if c.applicable and not c.passed]
print("audit verify:", "PASS" if audit.passed else "FAIL", failed)
zeroed = subs[target.address].reason == Reason.CONTRADICTED
works = zeroed and audit.passed
print(
    f"t {'CONTRADICTED on the endpoint word' if zeroed else 'not contradicted'}: attack "
    + ("WORKS" if works else "held")
)
sys.exit(1 if works else 0)
