"""A81: **aggregator**: round 1 finalized under a global-model CID nobody can resolve.

a67 (a round opened under an unserved start-model CID) was fixed at the node by a fallback: the
start model fetched as the last finalized round's global model, under the CID ``finalizeRound``
named. That CID is the aggregator's choice too, and the contract pins only the global model's
sha256: the aggregator finalizes round 1 under the raw-codec CIDv1 of the global model's bytes
(``bafkrei...``), which no IPFS node holds, and opens round 2 from it; the fallback has nothing
else to try. It hands the model to one ally (``ally``) out of band and ``block/put``s it once
round 2 is over, so every later audit reads it. Three sites through production SiteNodes on
Anvil + IPFS, 1 epoch.

Modes: ``attack`` (the above), ``honest`` (served: control). ``BEFORE=1`` gives the nodes the
old behaviour (an unreadable start model is retried until the commit window closes).

usage: scripts/attacks/real.sh scripts/attacks/a81_unserved_global.py [attack|honest]
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
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.cid import check_cid

mode = sys.argv[1] if len(sys.argv) > 1 else "attack"
if mode not in ("attack", "honest"):
    sys.exit(f"unknown mode {mode!r}: attack or honest")
if os.environ.get("BEFORE"):
    original = SiteNode._start_model

    def old_start(self, round_id, cid, sha256, last_finalized, **kwargs):
        try:
            return original(self, round_id, cid, sha256, last_finalized, **kwargs)
        except StoreError as exc:  # the old node: retried until the commit window closed
            raise StoreError(f"start model not fetched: {exc}") from None

    SiteNode._start_model = old_start
    print("BEFORE: nodes retry an unreadable start model until the commit window closes")
api = os.environ.get("FEDTRAIL_ATTACK_IPFS", "")
if not api:
    sys.exit("run through scripts/attacks/real.sh (needs an IPFS daemon)")
parts = api.split("/")
URL = f"http://{parts[2]}:{parts[4]}/api/v0"


def raw_cid(sha256_hex: str) -> str:
    body = base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + bytes.fromhex(sha256_hex))
    return check_cid("b" + body.decode().lower().rstrip("="))


tmp = Path(tempfile.mkdtemp(prefix="a81-"))
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
real_finalize = ledger.finalize_round
hidden: list[tuple[str, bytes]] = []
ally = next(n for n in fed.nodes if n.config.name == "ally")


def finalize_round(signer, round_id, *, global_cid, global_sha256, **kwargs):
    if mode == "attack" and round_id == 1:  # round 1's global model under a CID nobody serves
        blob = store.get(global_cid, global_sha256)
        global_cid = raw_cid(global_sha256)
        hidden.append((global_cid, blob))
        fed.service._kept[global_cid] = blob  # the aggregator holds its own model
    return real_finalize(
        signer, round_id, global_cid=global_cid, global_sha256=global_sha256, **kwargs
    )


ledger.finalize_round = finalize_round


class OwnStore:
    """The aggregator's view of the store: it holds the model it hid."""

    def __init__(self, inner):
        self.inner = inner

    def get(self, cid, sha256, **kwargs):
        for name, blob in hidden:
            if name == cid:
                return blob
        return self.inner.get(cid, sha256, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


fed.service.store = OwnStore(store)
ally_start = ally._start_model


def handed(round_id, cid, sha256, last_finalized, **kwargs):
    for name, blob in hidden:  # handed to the ally out of band
        if name == cid:
            return blob
    return ally_start(round_id, cid, sha256, last_finalized, **kwargs)


ally._start_model = handed


def poll(status: dict[str, str]) -> None:
    for node in fed.nodes:
        try:
            record = node.participate(r)
            status[node.config.name] = record.phase if record else "none"
        except StoreError as exc:
            status[node.config.name] = f"cannot fetch ({type(exc).__name__})"


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
        f"round {r}: start CID {info.start_cid}, global CID {info.global_cid}; "
        f"{info.phase.name}; nodes {status}; "
        f"weights {weights}; declines on chain {declines}"
    )
for cid, blob in hidden:  # the aggregator publishes the hidden model once round 2 is over
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
if honest_declines == {"h1", "h2"} and "start unavailable" in declined.detail:
    print("defence holds: each honest node's refusal is on chain and terms.declined names it")
    sys.exit(0)
print("UNEXPECTED outcome")
sys.exit(1)
