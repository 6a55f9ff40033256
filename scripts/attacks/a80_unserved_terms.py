"""A80: **aggregator**: a round opened under terms nobody but its allies can read.

The contract pins a round's terms by their sha256 (``openRound``'s ``termsSha256``), not by
whether anyone serves them. The aggregator opens round 2 under the raw-codec CIDv1 of its terms'
bytes (``bafkrei...``; the form is immaterial: any CID it does not publish does the same), which
no IPFS node holds; it hands the terms to one ally (``ally``) out of band and ``block/put``s them
only once the round is over, so every later audit reads them. Three sites through production
SiteNodes on Anvil + IPFS, 1 epoch. a67 did this with the start model, which a node can fetch
under the last global model's CID; terms are new each round and have no such fallback.

Modes: ``attack`` (the above), ``honest`` (the terms served: control). ``BEFORE=1`` gives the
nodes the old behaviour (an unreadable store answer is retried until the commit window closes).

usage: scripts/attacks/real.sh scripts/attacks/a80_unserved_terms.py [attack|honest]
Exits 1 when the honest nodes miss round 2 leaving no trace on chain and verify passes it; 0 when
their refusal is on chain and ``terms.declined`` names it (or, ``honest``, when all take part).
"""

import base64
import os
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import backends

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.errors import StoreError
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK, MISSES_BEFORE_DECLINE, SiteNode
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.cid import check_cid

mode = sys.argv[1] if len(sys.argv) > 1 else "attack"
if mode not in ("attack", "honest"):
    sys.exit(f"unknown mode {mode!r}: attack or honest")
if os.environ.get("BEFORE"):
    original = SiteNode._terms_refusal

    def old_refusal(self, round_id, info, *, last_finalized=None, now=None):
        self._terms_of(info)  # the old node: the store's error propagates, the daemon retries
        return original(self, round_id, info, last_finalized=last_finalized, now=now)

    SiteNode._terms_refusal = old_refusal
    print("BEFORE: nodes retry unreadable terms until the commit window closes")
api = os.environ.get("FEDTRAIL_ATTACK_IPFS", "")
if not api:
    sys.exit("run through scripts/attacks/real.sh (needs an IPFS daemon)")
parts = api.split("/")
URL = f"http://{parts[2]}:{parts[4]}/api/v0"


def raw_cid(sha256_hex: str) -> str:
    body = base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + bytes.fromhex(sha256_hex))
    return check_cid("b" + body.decode().lower().rstrip("="))


tmp = Path(tempfile.mkdtemp(prefix="a80-"))
w3, accts, store = backends(tmp)
source = load_source("pneumonia")
splits = source.splits()
shards = partition_iid(splits.train.labels, 8, seed=1)
names = ["ally", "h1", "h2"]
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
real_open = ledger.open_round
hidden: list[tuple[str, bytes]] = []
ally = next(n for n in fed.nodes if n.config.name == "ally")


def open_round(signer, cid, sha, *, terms_cid, terms_sha256, **kwargs):
    if mode == "attack" and ledger.current_round() == 1:  # round 2: terms nobody serves
        blob = store.get(terms_cid, terms_sha256)
        terms_cid = raw_cid(terms_sha256)
        hidden.append((terms_cid, blob))
        fed.service._kept[terms_cid] = blob  # the aggregator holds its own terms
        # handed to the ally out of band: its node has them before it polls
        ally._terms = {**ally._terms, terms_sha256: RoundTerms.from_bytes(blob)}
    return real_open(signer, cid, sha, terms_cid=terms_cid, terms_sha256=terms_sha256, **kwargs)


ledger.open_round = open_round


def poll(status: dict[str, str]) -> None:
    for node in fed.nodes:
        try:
            record = node.participate(r)
            status[node.config.name] = record.phase if record else "none"
        except StoreError as exc:
            status[node.config.name] = f"cannot fetch the terms ({type(exc).__name__})"


def play(r: int) -> dict[str, str]:
    status: dict[str, str] = {}
    poll(status)
    info = ledger.get_round(r)
    # past half the commit window, still inside it
    middle = info.opened_at + (info.commit_deadline - info.opened_at) // 2 + 1
    now = next_block_timestamp(w3)
    if middle > now:
        advance_time(w3, middle - now)
    for _ in range(MISSES_BEFORE_DECLINE):  # a running node polls every few seconds
        poll(status)
    now = next_block_timestamp(w3)
    advance_time(w3, info.commit_deadline - now + 1 + CLOCK_SLACK)
    poll(status)
    if not fed.service.ready_to_value(r):
        now = next_block_timestamp(w3)
        advance_time(w3, info.reveal_deadline - now + 1 + CLOCK_SLACK)
    for _ in range(3):
        if fed.service.step() is not None:
            break
    return status


by_address = {n.address: n.config.name for n in fed.nodes}
for r in (1, 2):
    assert fed.service.open_next() == r
    status = play(r)
    info = ledger.get_round(r)
    weights = {by_address[s.site]: round(s.weight / 1e18, 3) for s in ledger.get_submissions(r)}
    declines = {by_address[a]: d.label for a, d in ledger.declines(r).items()}
    print(
        f"round {r}: terms CID {info.terms_cid}; {info.phase.name}; nodes {status}; "
        f"weights {weights}; declines on chain {declines}"
    )
for cid, blob in hidden:  # the aggregator publishes the hidden terms once the round is over
    answer = requests.post(
        URL + "/block/put",
        params={"format": "raw", "mhtype": "sha2-256"},
        files={"file": ("blob", blob, "application/octet-stream")},
        timeout=60,
    )
    print("published", answer.json()["Key"], "== hidden:", answer.json()["Key"] == cid)
audits = verify_all(ledger, store)
failed = [(a.round, c.name, c.detail[:160]) for a in audits for c in a.checks if c.failed]
print("audit verify:", "PASS" if not failed else f"FAIL {failed}")
declined = next(c for a in audits if a.round == 2 for c in a.checks if c.name == "terms.declined")
print("round 2 terms.declined:", declined.status, declined.detail[:300])
paid = {by_address[s.site] for s in ledger.get_submissions(2) if s.weight > 0}
honest_declines = {by_address[a] for a in ledger.declines(2)} & {"h1", "h2"}
if mode == "honest":
    ok = ledger.get_round(2).phase == Phase.FINALIZED and paid == set(names) and not failed
    print("control:", "all three paid in round 2, verify passes" if ok else "UNEXPECTED")
    sys.exit(0 if ok else 1)
if paid and not {"h1", "h2"} & paid and not honest_declines and not failed:
    print(
        "ATTACK WORKS: only the ally took part in round 2, the honest nodes left no trace, "
        "and verify passes it"
    )
    sys.exit(1)
if honest_declines == {"h1", "h2"} and "terms unusable" in declined.detail:
    print("defence holds: each honest node's refusal is on chain and terms.declined names it")
    sys.exit(0)
print("UNEXPECTED outcome")
sys.exit(1)
