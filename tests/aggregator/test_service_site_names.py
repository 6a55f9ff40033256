"""The aggregator's round log names each site as the registry does when the round is
finalized (attack a66): a site the coordinator removed and registered again under another name,
between rounds or inside one, kept the name a long-running service first read, so every later
round's log failed ``log.agrees`` against the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.store import LocalStore
from tests.aggregator.test_service import _federation, close_commits
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("when", ["between_rounds", "after_reveals"])
def test_a_site_renamed_after_the_service_read_the_registry_is_logged_under_its_new_name(
    embedded: ChainEnv, tmp_path: Path, when: str
) -> None:
    """Round 1 is finalized by the service (it reads every site's name); the coordinator then
    renames ``site-2`` (removes it, registers it again as ``site-2-renamed``) before round 2
    opens or once round 2's updates are revealed; round 2's log names it ``site-2-renamed`` and
    ``log.agrees`` passes."""
    store = LocalStore(tmp_path / "store")
    fed = _federation(
        store,
        list(embedded.sites[:3]),
        [SiteFault()] * 3,
        tmp_path,
        w3=embedded.w3,
        coordinator=embedded.coordinator,
    )
    ledger, target = fed.ledger, embedded.sites[2]

    def rename() -> None:
        before = ledger.get_site(target.address)
        assert before is not None
        ledger.remove_site(embedded.coordinator, target.address)
        ledger.register_site(
            embedded.coordinator, target.address, "site-2-renamed", before.max_samples
        )

    for r in (1, 2):
        if r == 2 and when == "between_rounds":
            rename()
        assert fed.service.open_next() == r
        for node in fed.nodes:
            node.participate(r)
        close_commits(ledger, r)
        for node in fed.nodes:
            node.participate(r)
        if r == 2 and when == "after_reveals":
            rename()
        for _ in range(3):  # value, then finalize
            if fed.service.step() is not None:
                break
        assert ledger.get_round(r).phase.name == "FINALIZED"
    info = ledger.get_round(2)
    log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256))
    entry = log.site(target.address)
    assert entry is not None and entry.name == "site-2-renamed", entry
    agrees = next(c for c in verify_round(ledger, store, 2).checks if c.name == "log.agrees")
    assert agrees.passed, agrees.detail
