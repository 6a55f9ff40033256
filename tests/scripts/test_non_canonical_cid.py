"""Attack a121 on real Anvil + IPFS: a site trains honestly but reveals its update under another
CID of the same bytes (``ipfs add --chunker=size-4096``: dag-pb leaves of 4 KiB, the shape a
site may make as slow to read as it likes). README *Content not given*: bytes are given only
under their canonical CID, so the update is MALFORMED (weight 0) however fast the daemon
answers, ``audit verify`` and the independent reader pass the round, and every reader refuses
the blob (``NonCanonicalCid``). Before session 55 the update was read (here at once: 4 KiB
leaves are fast) and paid, and whether a reader found a many-block DAG within its wait was the
site's choice (``scripts/attacks/a121_dag_shaped_blob.py``)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path
from types import ModuleType

import pytest
import requests

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.errors import NonCanonicalCid
from fedtrail.ledger import Ledger
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.cid import compute_cid
from fedtrail.storage.store import IpfsStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


class _Reshaping(IpfsStore):
    """A site's store whose ``put`` adds the bytes in 4 KiB dag-pb leaves: a valid sha2-256
    CIDv0 of the same bytes, not the canonical one."""

    def put(self, data: bytes) -> str:
        parts = self.api.split("/")
        answer = requests.post(
            f"http://{parts[2]}:{parts[4]}/api/v0/add",
            params={"chunker": "size-4096", "cid-version": "0", "raw-leaves": "false"},
            files={"file": ("blob", data, "application/octet-stream")},
            timeout=60,
        )
        answer.raise_for_status()
        return str(answer.json()["Hash"])


def _close_commits(ledger: Ledger, round_id: int) -> None:
    deadline = ledger.get_round(round_id).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_a121", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anvil
def test_an_update_under_a_non_canonical_cid_is_malformed_and_verify_passes(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    store = IpfsStore(ipfs_api)
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=2)
    sites = make_sites(
        anvil.sites[:3],
        [splits.train.subset(parts[i]) for i in range(3)],
        training=TrainConfig(epochs=1),
        faults=[SiteFault()] * 3,
        data=DataConfig(class_names=source.class_names),
    )
    fed = build_federation(
        sites=sites,
        store=store,
        folder=tmp_path,
        validation=splits.val,
        w3=anvil.w3,
        coordinator=anvil.coordinator,
        aggregator=anvil.aggregator,
        settings=AggregatorSettings(seed=3, class_names=source.class_names, explain_method=None),
    )
    ledger, service = fed.ledger, fed.service
    reshaper = fed.nodes[2]
    reshaper.store = _Reshaping(ipfs_api)
    assert service.open_next() == 1
    for node in fed.nodes:
        node.participate(1)  # commit
    _close_commits(ledger, 1)
    for node in fed.nodes:
        node.participate(1)  # store, reveal
    for _ in range(3):
        if service.step() is not None:
            break
    assert ledger.get_round(1).phase == Phase.FINALIZED
    subs = {s.site: s for s in ledger.get_submissions(1)}
    shaped = subs[anvil.sites[2].address]
    reader = _reader()
    api = reader.ipfs_url("ipfs:" + ipfs_api) + "/api/v0/"
    blob = requests.post(api + "cat", params={"arg": shaped.cid}, timeout=60).content
    assert compute_cid(blob) != shaped.cid  # the same bytes, under another DAG
    with pytest.raises(NonCanonicalCid):
        store.get(shaped.cid, shaped.sha256)
    assert (shaped.reason, shaped.weight) == (Reason.MALFORMED, 0)
    for acct in anvil.sites[:2]:
        assert subs[acct.address].reason == Reason.OK and subs[acct.address].weight > 0

    audits = verify_all(ledger, store)
    assert [c.name for a in audits for c in a.checks if c.failed] == []

    deployment = tmp_path / "deployment.json"
    assert fed.deployment is not None
    deployment.write_text(fed.deployment.to_json())
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(
            [
                "--rpc-url",
                str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
                "--deployment",
                str(deployment),
                "--ipfs",
                "ipfs:" + ipfs_api,
            ]
        )
    results = {(x["round"], x["check"]): x for x in reader.RESULTS}
    assert [k for k, x in results.items() if x["result"] == "FAIL"] == []
    names = [k for k in results if k[1].startswith("update.")]
    shaped_check = next(
        x for k, x in results.items() if k in names and "not the canonical CID" in x["detail"]
    )
    assert shaped_check["result"] == "PASS", shaped_check
