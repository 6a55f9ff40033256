"""A node whose cap on chain (``maxSamples``) is below the samples its update would claim does
not train (attack a66's by-product): the ledger refuses such a reveal (``TooManySamples``), and
the node used to train, commit and store its update every round only to be refused at the
reveal (a DP update stored with no spend on chain). It declares that on chain (attack a96:
a cap the coordinator cut between rounds kept the site out of every later round leaving no
trace but its absence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.protocol.codes import Decline
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.store import LocalStore
from tests.aggregator.test_service import _federation
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_site_capped_below_its_training_set_skips_before_training(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """Site 0's cap is lowered to 100 (its split holds 304 images) before round 1: its node
    skips the round naming the cap and the command that raises it, commits its decline
    (``cap below data``, which no reveal opens) instead of an update and stores nothing; site
    1, capped at its size, commits as usual."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:2]),
        [SiteFault()] * 2,
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger = fed.ledger
    capped, other = fed.nodes
    ledger.set_max_samples(embedded.coordinator, capped.address, 100)
    r = fed.service.open_next()
    blobs = sorted((tmp_path / "store").rglob("*"))
    record = capped.participate(r)
    assert record is not None and record.phase == "skipped", record
    assert f"cap on chain is 100 samples, below the {len(capped.train)}" in record.note
    assert f"set-max-samples {capped.address} {len(capped.train)}" in record.note
    assert "[declined on chain (cap below data) in tx" in record.note
    assert ledger.declines(r) == {capped.address: Decline.CAP_BELOW_DATA}  # no update
    assert sorted((tmp_path / "store").rglob("*")) == blobs  # nothing stored
    again = capped.participate(r)  # recorded once: the next poll does not train either
    assert again is not None and again.phase == "skipped", again
    assert ledger.declines(r) == {capped.address: Decline.CAP_BELOW_DATA}
    done = other.participate(r)
    assert done is not None and done.phase == "committed", done
