"""A round the aggregator valued but never finalized is not passed by ``audit verify``: its
scores weigh the sites on chain with no log or global model to check them against, and the
contract lets it stay valued for good (attack a33: h0 scored 0 as LOW_QUALITY in the last
round, never finalized, and every check passed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.chain import (
    advance_time,
    block_timestamp,
    connect,
    funded_accounts,
    next_block_timestamp,
)
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.training import TrainConfig
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.peers import address_key
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.store import LocalStore
from tests.auditor.peer_federation import new_peer_federation, open_peer_round, score_round, submit

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


def test_a_valued_peer_round_is_checked_from_its_votes(
    anvil_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer round valued and left so (attack a33, peer mode): its weights follow from the
    revealed vectors on chain, so verify checks them now and passes ``phase`` when they agree
    (reporting the round as valued, not finalized), and a chain weight the medians do not give
    fails ``peers.median``. What the aggregator alone can still change before finalizing is a
    drop (``dropWithheld``): dropping a readable update takes its site's pay and reputation,
    and ``peers.withheld`` fails (the medians are re-derived with the drop, so
    ``peers.median`` still agrees with the chain)."""
    store = LocalStore(tmp_path / "store")
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    r = open_peer_round(pf)
    submit(pf, r, seed=3)
    score_round(pf, r)
    assert ledger.get_round(r).phase == Phase.VALUED

    valued = verify_round(ledger, store, r)
    checks = {c.name: c for c in valued.checks}
    assert valued.passed, [(c.name, c.detail) for c in valued.checks if not c.passed]
    assert {"phase", "terms.hash", "peers.votes", "peers.median", "peers.quorum"} <= set(checks)
    assert "valued, not finalized: its 3 on-chain weight(s)" in checks["phase"].detail

    # a weight the medians do not give (the contract refuses one; a chain that held one all
    # the same, here a reader's view of it) fails peers.median
    real = ledger.get_submissions
    skewed = [replace(s, weight=s.weight + 1) if i == 0 else s for i, s in enumerate(real(r))]
    monkeypatch.setattr(ledger, "get_submissions", lambda round_id: skewed)
    lied = {c.name: c for c in verify_round(ledger, store, r).checks}
    assert not lied["peers.median"].passed and "the median gives" in lied["peers.median"].detail
    monkeypatch.undo()

    peer = ledger.get_peer_round(r)
    assert peer is not None
    advance_time(ledger.w3, peer.score_reveal_deadline - block_timestamp(ledger.w3) + 1)
    sites = [s.site for s in ledger.get_submissions(r)]
    victim = sorted(sites, key=address_key)[0]
    ledger.drop_withheld(pf.fed.coordinator, r, sites, [victim])  # its update reads fine
    dropped = {c.name: c for c in verify_round(ledger, store, r).checks}
    assert not dropped["peers.withheld"].passed
    assert victim[:10] in dropped["peers.withheld"].detail
    assert dropped["peers.median"].passed, dropped["peers.median"].detail
