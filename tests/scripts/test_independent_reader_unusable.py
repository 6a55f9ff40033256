"""``scripts/independent/reader.py`` (written from README's *The public rules, exactly*) against
``audit verify`` on a round whose unusable updates the aggregator zeroed: README *Content not
given*. A tampered blob (bytes of a valid update under another sha256), an undecodable one
(hash ok) and one under a CID nobody serves are each scored 0 as TAMPERED or MALFORMED; both
readers pass the round. Round 2 zeroes the undecodable update as LOW_QUALITY instead: both fail
it. Before session 52 the reader failed round 1's three ``update.*`` checks (verify passed
them), and on the unserved CID it waited 60 s and died of a read timeout, with no verdict.
Round 3, left open with the same junk and unserved updates: verify reads no update there, the
reader notes them. Then round 2's log is withdrawn from the store: both fail its hash check
(verify's ``log.hash``, the reader's ``log.sha256``: "not given"), neither hangs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from eth_account.signers.local import LocalAccount

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.ledger import Ledger, commitment
from fedtrail.ml.catalog import load_source
from fedtrail.ml.datasets import partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import DataConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.simulation.faults import SiteFault
from fedtrail.simulation.federation import SiteSetup, build_federation, make_sites
from fedtrail.storage.cid import compute_cid
from fedtrail.storage.store import IpfsStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_unusable", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _close_commits(ledger: Ledger, round_id: int) -> None:
    deadline = ledger.get_round(round_id).commit_deadline
    now = next_block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)


def _commit(ledger: Ledger, site: LocalAccount, r: int, sha: str, n: int) -> None:
    ledger.commit_update(site, r, commitment(site.address, r, sha, n))


def _run_reader(reader: ModuleType, argv: list[str]) -> dict[tuple[int, str], str]:
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(argv)
    return {(x["round"], x["check"]): x["result"] for x in reader.RESULTS}


@pytest.mark.anvil
def test_the_reader_agrees_with_verify_on_zeroed_unusable_updates(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    store = IpfsStore(ipfs_api)
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 8, seed=1)
    sites = make_sites(
        anvil.sites[:3],
        [splits.train.subset(parts[i]) for i in range(3)],
        training=TrainConfig(epochs=1),
        faults=[SiteFault()] * 3,
        data=DataConfig(class_names=source.class_names),
    )
    tamperer, garbler, unserved = anvil.sites[3:6]
    sites += [
        SiteSetup(account=acct, name=name, max_samples=100)
        for acct, name in ((tamperer, "tamperer"), (garbler, "garbler"), (unserved, "unserved"))
    ]
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
    honest_valuate = service._valuate
    downgrade: dict[str, bool] = {"on": False}

    def valuate(round_id: int, global_state: Any, pairs: Any) -> Any:
        # round 2: the undecodable update zeroed under a reason that is no reading of its blob
        report, standing = honest_valuate(round_id, global_state, pairs)
        if not downgrade["on"]:
            return report, standing
        sites = [
            dataclasses.replace(v, reason=Reason.LOW_QUALITY) if v.site == garbler.address else v
            for v in report.sites
        ]
        return dataclasses.replace(report, sites=sites), standing

    service._valuate = valuate  # type: ignore[method-assign]
    junk = os.urandom(5000)
    never_stored = os.urandom(3000)  # its CID is served by nobody
    for r in (1, 2):
        downgrade["on"] = r == 2
        assert service.open_next() == r
        for node in fed.nodes:
            node.participate(r)  # commit
        fake = hashlib.sha256(b"other bytes %d" % r).hexdigest()
        _commit(ledger, tamperer, r, fake, 100)
        _commit(ledger, garbler, r, hashlib.sha256(junk).hexdigest(), 100)
        _commit(ledger, unserved, r, hashlib.sha256(never_stored).hexdigest(), 100)
        _close_commits(ledger, r)
        for node in fed.nodes:
            node.participate(r)  # store, reveal
        honest = ledger.get_submissions(r)[0]  # a valid update's bytes, under another sha256
        ledger.reveal_update(tamperer, r, honest.cid, fake, 100)
        ledger.reveal_update(garbler, r, store.put(junk), hashlib.sha256(junk).hexdigest(), 100)
        ledger.reveal_update(
            unserved, r, compute_cid(never_stored), hashlib.sha256(never_stored).hexdigest(), 100
        )
        for _ in range(3):
            if service.step() is not None:
                break
        assert ledger.get_round(r).phase == Phase.FINALIZED
        subs = {s.site: s for s in ledger.get_submissions(r)}
        assert (subs[tamperer.address].reason, subs[tamperer.address].weight) == (
            Reason.TAMPERED,
            0,
        )
        want = Reason.LOW_QUALITY if r == 2 else Reason.MALFORMED
        assert (subs[garbler.address].reason, subs[garbler.address].weight) == (want, 0)
        assert (subs[unserved.address].reason, subs[unserved.address].weight) == (
            Reason.MALFORMED,
            0,
        )

    # round 3 stays open: verify reads no update there, and the reader only notes unusable ones
    assert service.open_next() == 3
    _commit(ledger, garbler, 3, hashlib.sha256(junk).hexdigest(), 100)
    _commit(ledger, unserved, 3, hashlib.sha256(never_stored).hexdigest(), 100)
    _close_commits(ledger, 3)
    ledger.reveal_update(garbler, 3, store.put(junk), hashlib.sha256(junk).hexdigest(), 100)
    ledger.reveal_update(
        unserved, 3, compute_cid(never_stored), hashlib.sha256(never_stored).hexdigest(), 100
    )
    assert ledger.get_round(3).phase == Phase.OPEN

    audits = {a.round: a for a in verify_all(ledger, store)}
    assert [c.name for c in audits[3].checks if c.failed] == []
    failed_1 = [c.name for c in audits[1].checks if c.failed]
    failed_2 = {c.name for c in audits[2].checks if c.failed}
    assert failed_1 == []
    assert f"update.{garbler.address[:10]}" in failed_2
    assert f"update.{tamperer.address[:10]}" not in failed_2

    deployment = tmp_path / "deployment.json"
    assert fed.deployment is not None
    deployment.write_text(fed.deployment.to_json())
    argv = [
        "--rpc-url",
        str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
        "--deployment",
        str(deployment),
        "--ipfs",
        "ipfs:" + ipfs_api,
    ]
    reader = _reader()
    started = time.monotonic()
    results = _run_reader(reader, argv)
    took = time.monotonic() - started
    # three unserved CIDs, each bounded by the reader's wait (10 s), not a hang or a crash
    assert took < 3 * reader.WAIT_SECONDS + 90, took
    assert [check for (rnd, check), res in results.items() if rnd == 3 and res == "FAIL"] == []
    assert results[(3, "update.garbler")] == results[(3, "update.unserved")] == "NOTE"
    fails_1 = [check for (rnd, check), res in results.items() if rnd == 1 and res == "FAIL"]
    assert fails_1 == []
    for name in ("tamperer", "garbler", "unserved"):
        assert results[(1, f"update.{name}")] == "PASS", name
    assert results[(2, "update.garbler")] == "FAIL"
    assert results[(2, "update.tamperer")] == "PASS"
    assert results[(2, "update.unserved")] == "PASS"
    # README *Standing chain*: round 2 continues round 1's log, as verify finds
    assert results[(1, "standing.chain")] == results[(2, "standing.chain")] == "PASS"
    assert "standing.chain" not in failed_2
    details = {(x["round"], x["check"]): x["detail"] for x in reader.RESULTS}
    assert "not given: missing" in details[(1, "update.unserved")]

    # round 2's log withdrawn from the store: both fail its hash check, neither hangs
    api = reader.ipfs_url("ipfs:" + ipfs_api) + "/api/v0/"
    log_cid = ledger.get_round(2).log_cid
    requests.post(api + "pin/rm", params={"arg": log_cid}, timeout=30)
    requests.post(api + "block/rm", params={"arg": log_cid}, timeout=30).raise_for_status()
    audits = {a.round: a for a in verify_all(ledger, store)}
    assert [c.name for c in audits[1].checks if c.failed] == []
    assert "log.hash" in {c.name for c in audits[2].checks if c.failed}
    results = _run_reader(reader, argv)
    assert [check for (rnd, check), res in results.items() if rnd == 1 and res == "FAIL"] == []
    assert results[(2, "log.sha256")] == "FAIL"
    detail = next(
        x["detail"] for x in reader.RESULTS if x["round"] == 2 and x["check"] == "log.sha256"
    )
    assert detail.startswith("not given: missing"), detail


def test_an_unserved_cid_is_a_bounded_verdict(ipfs_api: str) -> None:
    """README *Content not given*: the reader waits a bounded time and names the CID missing."""
    reader = _reader()
    ipfs = reader.Ipfs(reader.ipfs_url("ipfs:" + ipfs_api), wait=2)
    served = IpfsStore(ipfs_api).put(b"served bytes")
    assert ipfs.cat(served) == b"served bytes"
    started = time.monotonic()
    with pytest.raises(reader.NotGiven) as caught:
        ipfs.cat(compute_cid(os.urandom(64)))
    assert caught.value.kind == "missing"
    assert time.monotonic() - started < 2 * 2 + 5
