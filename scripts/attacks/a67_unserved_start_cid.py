"""A67: **aggregator**: a round opened under a start-model CID nobody can resolve yet.

The contract pins a round's start model by its sha256 (the last finalized global model's,
``StartModelMismatch``), not by its CID. The aggregator opens round 2 under the raw-codec CIDv1
of the global model's bytes (``bafkrei...``), which no IPFS node holds: it ``block/put``s it
only once the round is over, so every later audit reads it. Its allies (here: none) would train
from round 1's global CID. Three sites through production SiteNodes on Anvil + IPFS, 1 epoch.

``BEFORE=1`` gives the nodes the old fetch (the round's CID only).

usage: scripts/attacks/real.sh scripts/attacks/a67_unserved_start_cid.py
Exits 1 when the nodes miss round 2 and verify passes it, 0 when they take part.
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
from fedtrail.node.daemon import CLOCK_SLACK, SiteNode
from fedtrail.protocol.codes import Phase
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.cid import check_cid

if os.environ.get("BEFORE"):
    SiteNode._start_model = lambda self, r, cid, sha, last: self.store.get(cid, sha)
    print("BEFORE: nodes fetch the start model by the round's CID only")
api = os.environ.get("FEDTRAIL_ATTACK_IPFS", "")
if not api:
    sys.exit("run through scripts/attacks/real.sh (needs an IPFS daemon)")
parts = api.split("/")
URL = f"http://{parts[2]}:{parts[4]}/api/v0"


def raw_cid(sha256_hex: str) -> str:
    body = base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + bytes.fromhex(sha256_hex))
    return check_cid("b" + body.decode().lower().rstrip("="))


tmp = Path(tempfile.mkdtemp(prefix="a67-"))
w3, accts, store = backends(tmp)
source = load_source("pneumonia")
splits = source.splits()
shards = partition_iid(splits.train.labels, 8, seed=1)
sites = make_sites(
    accts[2:5],
    [splits.train.subset(shards[i]) for i in range(3)],
    training=TrainConfig(epochs=1),
    faults=[SiteFault()] * 3,
    data=DataConfig(class_names=source.class_names),
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
hidden: list[str] = []


def open_round(signer, cid, *args, **kwargs):
    if ledger.current_round() == 1:  # round 2: the start model under a CID nobody serves
        hidden.append(raw_cid(args[0]))
        cid = hidden[0]
    return real_open(signer, cid, *args, **kwargs)


ledger.open_round = open_round
real_model = fed.service._model


def own_model(cid, sha256):
    # the aggregator holds the bytes it hid: it reads its own start model by the earlier CID
    if cid in hidden:
        cid = ledger.get_round(1).global_cid
    return real_model(cid, sha256)


fed.service._model = own_model


def play(r: int) -> dict[str, str]:
    status = {}
    for node in fed.nodes:
        try:
            record = node.participate(r)
            status[node.config.name] = record.phase if record else "none"
        except StoreError as exc:
            status[node.config.name] = f"cannot fetch the start model ({type(exc).__name__})"
    info = ledger.get_round(r)
    now = next_block_timestamp(w3)
    advance_time(w3, info.commit_deadline - now + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        try:
            record = node.participate(r)
            status[node.config.name] = record.phase if record else "none"
        except StoreError:
            pass
    if not fed.service.ready_to_value(r):
        now = next_block_timestamp(w3)
        advance_time(w3, info.reveal_deadline - now + 1 + CLOCK_SLACK)
    for _ in range(3):
        if fed.service.step() is not None:
            break
    return status


for r in (1, 2):
    assert fed.service.open_next() == r
    status = play(r)
    info = ledger.get_round(r)
    weights = {s.site[:8]: round(s.weight / 1e18, 3) for s in ledger.get_submissions(r)}
    print(f"round {r}: start CID {info.start_cid}; {info.phase.name}; nodes {status}; {weights}")
# the aggregator publishes the hidden CID once the round is over
answer = requests.post(
    URL + "/block/put",
    params={"format": "raw", "mhtype": "sha2-256"},
    files={"file": ("blob", store.get(*_g), "application/octet-stream")}
    if (_g := (ledger.get_round(1).global_cid, ledger.get_round(1).global_sha256))
    else {},
    timeout=60,
)
print("published", answer.json()["Key"], "== hidden:", answer.json()["Key"] == hidden[0])
audits = verify_all(ledger, store)
failed = [(a.round, c.name, c.detail[:120]) for a in audits for c in a.checks if c.failed]
print("audit verify:", "PASS" if not failed else f"FAIL {failed}")
missed = ledger.get_round(2).phase != Phase.FINALIZED or not ledger.get_submissions(2)
if missed and not failed:
    print("ATTACK WORKS: every node missed round 2, and verify passes it")
    sys.exit(1)
print("defence holds:", "the nodes took part in round 2" if not missed else "verify fails it")
