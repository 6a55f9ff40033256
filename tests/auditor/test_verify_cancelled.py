"""``audit verify --validation`` on a cancelled aggregator round: the contract lets the
aggregator cancel any open round once its reveal deadline passed, and a cancelled round has no
log. An aggregator that wants a site kept out could cancel every round in which that site would
be paid; the replayed valuation (``cancelled.valuation``) now says whether anything could have
been valued."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.codes import Phase
from fedtrail.simulation.federation import Federation, _pass
from fedtrail.storage.store import LocalStore
from tests.auditor.test_verify import federation, on_anvil

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _submit(fed: Federation) -> int:
    """Opens the next round and lets every node commit and reveal; the reveal window closes."""
    round_id = fed.service.open_next()
    for node in fed.nodes:
        node.participate(round_id)  # train, encode, commit
    info = fed.ledger.get_round(round_id)
    _pass(fed.ledger, info.commit_deadline)
    for node in fed.nodes:
        node.participate(round_id)  # store, reveal
    _pass(fed.ledger, info.reveal_deadline)
    return round_id


def _failed(audit: object) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """One honest round finalized (round 2 has a standing to carry), 3 hospitals."""
    return federation(tmp_path_factory.mktemp("cancelled"), rounds=1, **on_anvil(anvil_url))


def test_cancelling_a_round_the_aggregator_could_value_fails_verify(fed: Federation) -> None:
    """Three honest updates revealed, the aggregator cancels instead of valuing. The contract
    allows it; on the parent commit verify reported the round as cancelled and passed it, with
    the split too. Now cancelled.valuation fails, naming the sites the replay pays."""
    round_id = _submit(fed)
    fed.ledger.cancel_round(fed.aggregator, round_id)
    assert fed.ledger.get_round(round_id).phase == Phase.CANCELLED
    audit = verify_round(fed.ledger, fed.store, round_id, validation=load_bundled().val)
    failed = _failed(audit)
    assert set(failed) == {"cancelled.valuation"}, failed
    assert failed["cancelled.valuation"].startswith("cancelled, yet the valuation replayed")
    paid = [s.site[:10] for s in fed.ledger.get_submissions(round_id)]
    assert all(site in failed["cancelled.valuation"] for site in paid)
    # without the split nothing tells a censoring cancel from an honest one
    assert verify_round(fed.ledger, fed.store, round_id).passed


def test_a_round_the_aggregator_cancels_for_want_of_usable_updates_passes(
    fed: Federation,
) -> None:
    """Every revealed update's blob is gone before the aggregator values: its own valuation
    scores all of them 0 and it cancels the round; the replay agrees."""
    round_id = _submit(fed)
    assert isinstance(fed.store, LocalStore)
    for cid in fed.ledger.update_cids(round_id).values():
        (Path(fed.store.root) / "blobs" / cid).unlink()
    _pass(fed.ledger, fed.ledger.get_round(round_id).reveal_deadline)
    outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.CANCELLED
    audit = verify_round(fed.ledger, fed.store, round_id, validation=load_bundled().val)
    assert audit.passed, _failed(audit)
    check = next(c for c in audit.checks if c.name == "cancelled.valuation")
    assert check.detail == (
        "the valuation replayed under its terms scores each of the 3 revealed update(s) 0: "
        "the round could not be valued"
    )
