"""Explanation-aware valuation in the service: a "shortcut" site whose pneumonia images carry a
burned-in corner tag is flagged EXPLANATION_SHIFT and scored 0; honest sites are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.shortcuts import add_marker
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import NodeConfig
from fedtrail.node.daemon import SiteNode
from fedtrail.protocol import roundlog
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_shortcut_site_is_flagged_and_scored_zero(embedded: ChainEnv, tmp_path: Path) -> None:
    ledger = embedded.deploy()
    store = LocalStore(tmp_path / "store")
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 5, seed=0)
    nodes = []
    for i, acct in enumerate(embedded.sites[:4]):
        ledger.register_site(embedded.coordinator, acct.address, f"site-{i}")
        train = splits.train.subset(parts[i])
        if i == 3:
            train = add_marker(train, label=1)  # the burned-in tag marks every pneumonia image
        nodes.append(
            SiteNode(
                ledger=ledger,
                store=store,
                account=acct,
                folder=tmp_path / f"n{i}",
                config=NodeConfig(name=f"s{i}", training=TrainConfig(epochs=3, seed=i)),
                train=train,
                val=None,
            )
        )
    service = AggregatorService(
        ledger=ledger,
        store=store,
        account=embedded.aggregator,
        validation=splits.val,
        settings=AggregatorSettings(explanation_check=True, explain_method=None),
        folder=tmp_path / "agg",
    )
    r = service.open_next()
    for n in nodes:
        n.participate(r)
    service.step()
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = {s.site: s for s in ledger.get_submissions(r)}
    shortcut = subs[embedded.sites[3].address]
    assert (shortcut.score, shortcut.reason) == (0, Reason.EXPLANATION_SHIFT)
    for acct in embedded.sites[:3]:
        assert subs[acct.address].reason != Reason.EXPLANATION_SHIFT
    info = ledger.get_round(r)
    doc = roundlog.from_bytes(store.get(info.log_cid, info.log_sha256))
    entry = next(e for e in doc["sites"] if e["site"] == embedded.sites[3].address)
    assert (
        entry["reason_label"] == "EXPLANATION_SHIFT"
        and "no-clinical-signal region" in entry["explanation"]
    )
