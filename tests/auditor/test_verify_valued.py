"""A round the aggregator valued but never finalized is not passed by ``audit verify``: its
scores weigh the sites on chain with no log or global model to check them against, and the
contract lets it stay valued for good (attack a33: h0 scored 0 as LOW_QUALITY in the last
round, never finalized, and every check passed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, connect, funded_accounts, next_block_timestamp
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.training import TrainConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.store import LocalStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_valued_round_is_not_verified_until_it_is_finalized(tmp_path: Path) -> None:
    w3 = connect("embedded")
    accounts = funded_accounts(w3)
    data = load_bundled()
    trains = [data.train.subset(np.arange(60 * i, 60 * (i + 1))) for i in range(3)]
    store = LocalStore(tmp_path / "store")
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        aggregator=accounts[1],
        sites=make_sites(accounts[2:5], trains, training=TrainConfig(epochs=1)),
        store=store,
        folder=tmp_path,
        validation=data.val,
        settings=AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=30),
    )
    r = fed.service.open_next()
    for node in fed.nodes:
        node.participate(r)  # commit
    info = fed.ledger.get_round(r)
    advance_time(w3, info.commit_deadline - next_block_timestamp(w3) + 1 + CLOCK_SLACK)
    for node in fed.nodes:
        node.participate(r)  # reveal
    assert fed.service.step() is None
    assert fed.ledger.get_round(r).phase == Phase.VALUED

    valued = verify_round(fed.ledger, store, r)
    assert not valued.passed
    (phase,) = valued.checks
    assert phase.name == "phase" and not phase.passed
    assert "valued but not finalized: its scores give 3 update(s) weight" in phase.detail

    fed.service.step()  # finalized: the same round is replayed and passes
    assert fed.ledger.get_round(r).phase == Phase.FINALIZED
    finalized = verify_round(fed.ledger, store, r)
    assert finalized.passed, [(c.name, c.detail) for c in finalized.checks if not c.passed]
    assert "phase" not in {c.name for c in finalized.checks}
