"""A96: **coordinator**: an honest site's cap cut between rounds, so it sits out unseen.

The coordinator may set a site's cap (``maxSamples``) at any time; inside a round a cut that
voids a committed site's reveal fails ``sites.registry`` (a65). Between rounds it is no
round's move: an honest node whose training set is larger than its cap does not train (its
reveal would revert ``TooManySamples``, a66's by-product) and used to skip every later round
with nothing on chain but its absence, so the rounds read as if the site had stopped coming
and ``audit verify`` passed them naming nobody. Three sites through production SiteNodes on
Anvil + IPFS, 1 epoch; after round 1 the coordinator cuts ``h0``'s cap to 10 (its shard holds
hundreds of images); round 2 runs.

Modes: ``attack`` (the above), ``honest`` (no cut: control). ``BEFORE=1`` gives the nodes the
old behaviour (a cap below the data skipped without a decline).

usage: scripts/attacks/real.sh scripts/attacks/a96_cap_cut_silent.py [attack|honest]
Exits 1 when h0 misses round 2 leaving no trace on chain and verify names nothing; 0 when its
decline is on chain and ``terms.declined`` names it (or, ``honest``, when all take part).
"""

import os
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
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK, SiteNode
from fedtrail.protocol.codes import Phase
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import build_federation, make_sites

mode = sys.argv[1] if len(sys.argv) > 1 else "attack"
if mode not in ("attack", "honest"):
    sys.exit(f"unknown mode {mode!r}: attack or honest")
if os.environ.get("BEFORE"):
    from fedtrail.node.daemon import RoundRecord

    def old_decline(self, round_id, info, reason, note):
        if reason.name == "CAP_BELOW_DATA":  # the old node: skipped, nothing on chain
            return self._skip(RoundRecord(round=round_id, phase="skipped"), note)
        return original_decline(self, round_id, info, reason, note)

    original_decline = SiteNode._decline
    SiteNode._decline = old_decline
    print("BEFORE: a node whose cap is below its data skips the round without a decline")
if not os.environ.get("FEDTRAIL_ATTACK_IPFS"):
    sys.exit("run through scripts/attacks/real.sh (needs Anvil and an IPFS daemon)")

tmp = Path(tempfile.mkdtemp(prefix="a96-"))
w3, accts, store = backends(tmp)
source = load_source("pneumonia")
splits = source.splits()
shards = partition_iid(splits.train.labels, 8, seed=1)
names = ["h0", "h1", "h2"]
sites = make_sites(
    accts[2:5],
    [splits.train.subset(shards[i]) for i in range(3)],
    training=TrainConfig(epochs=1),
    faults=[SiteFault()] * 3,
    data=DataConfig(class_names=source.class_names),
    names=names,
)
fed = build_federation(
    w3=w3,
    coordinator=accts[0],
    aggregator=accts[1],
    sites=sites,
    store=store,
    folder=tmp,
    validation=splits.val,
    settings=AggregatorSettings(
        class_names=source.class_names, explain_method=None, round_seconds=60, reveal_seconds=30
    ),
)
ledger = fed.ledger
by_address = {n.address: n.config.name for n in fed.nodes}
target = next(n for n in fed.nodes if n.config.name == "h0")


def play(r: int) -> dict[str, str]:
    status: dict[str, str] = {}
    for node in fed.nodes:
        record = node.participate(r)
        status[node.config.name] = record.phase if record else "none"
    info = ledger.get_round(r)
    now = next_block_timestamp(w3)
    advance_time(w3, info.commit_deadline - now + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        record = node.participate(r)
        status[node.config.name] = record.phase if record else "none"
    if not fed.service.ready_to_value(r):
        now = next_block_timestamp(w3)
        advance_time(w3, info.reveal_deadline - now + 1 + CLOCK_SLACK)
    for _ in range(3):
        if fed.service.step() is not None:
            break
    return status


for r in (1, 2):
    if r == 2 and mode == "attack":  # between rounds: no round is open
        ledger.set_max_samples(accts[0], target.address, 10)
        print(f"coordinator: h0's cap set to 10 (its training set: {len(target.train)} images)")
    assert fed.service.open_next() == r
    status = play(r)
    info = ledger.get_round(r)
    weights = {by_address[s.site]: round(s.weight / 1e18, 3) for s in ledger.get_submissions(r)}
    declines = {by_address[a]: d.label for a, d in ledger.declines(r).items()}
    print(
        f"round {r}: {info.phase.name}; nodes {status}; weights {weights}; "
        f"declines on chain {declines}"
    )
audits = verify_all(ledger, store)
failed = [(a.round, c.name, c.detail[:160]) for a in audits for c in a.checks if c.failed]
print("audit verify:", "PASS" if not failed else f"FAIL {failed}")
declined = next(c for a in audits if a.round == 2 for c in a.checks if c.name == "terms.declined")
print("round 2 terms.declined:", declined.status, declined.detail[:300])
paid = {by_address[s.site] for s in ledger.get_submissions(2) if s.weight > 0}
if mode == "honest":
    ok = ledger.get_round(2).phase == Phase.FINALIZED and paid == set(names) and not failed
    print("control:", "all three paid in round 2, verify passes" if ok else "UNEXPECTED")
    sys.exit(0 if ok else 1)
on_chain = {by_address[a] for a in ledger.declines(2)}
if "h0" not in paid and "h0" not in on_chain and not failed:
    print("ATTACK WORKS: h0 sat round 2 out leaving no trace on chain, and verify names nothing")
    sys.exit(1)
if "h0" in on_chain and "cap below data" in declined.detail:
    print("defence holds: h0's decline is on chain and terms.declined names it")
    sys.exit(0)
print("UNEXPECTED outcome")
sys.exit(1)
