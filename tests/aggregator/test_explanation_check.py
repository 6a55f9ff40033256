"""Explanation-aware valuation in the service: a "shortcut" site whose pneumonia images carry a
burned-in corner tag is flagged EXPLANATION_SHIFT and scored 0; honest sites are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.shortcuts import add_marker
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol import roundlog
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
@pytest.mark.anvil
def test_shortcut_site_is_flagged_and_scored_zero(anvil: ChainEnv, tmp_path: Path) -> None:
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 5, seed=0)
    trains = [splits.train.subset(parts[i]) for i in range(4)]
    trains[3] = add_marker(trains[3], label=1)  # the burned-in tag marks every pneumonia image
    fed = build_federation(
        w3=anvil.w3,
        coordinator=anvil.coordinator,
        aggregator=anvil.aggregator,
        sites=make_sites(anvil.sites[:4], trains, training=TrainConfig(epochs=3)),
        store=LocalStore(tmp_path / "store"),
        folder=tmp_path,
        validation=splits.val,
        settings=AggregatorSettings(explanation_check=True, explain_method=None),
    )
    ledger, store = fed.ledger, fed.store
    outcome = fed.run_round()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    r = outcome.round
    subs = {s.site: s for s in ledger.get_submissions(r)}
    shortcut = subs[anvil.sites[3].address]
    assert (shortcut.score, shortcut.reason) == (0, Reason.EXPLANATION_SHIFT)
    for acct in anvil.sites[:3]:
        assert subs[acct.address].reason != Reason.EXPLANATION_SHIFT
    info = ledger.get_round(r)
    doc = roundlog.from_bytes(store.get(info.log_cid, info.log_sha256))
    entry = next(e for e in doc["sites"] if e["site"] == anvil.sites[3].address)
    assert (
        entry["reason_label"] == "EXPLANATION_SHIFT"
        and "no-clinical-signal region" in entry["explanation"]
    )
