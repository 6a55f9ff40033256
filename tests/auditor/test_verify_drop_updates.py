"""``dropUpdates`` (session 59) against ``audit verify`` and the independent reader: the
aggregator's one-call drop of a round's withheld and screened updates is checked exactly as the
two calls were (the drop events read as sets per round). An honest one passes; a rigged one
(a readable update dropped as withheld, an honest update dropped as screened, a marked one
spared) fails ``peers.withheld`` and ``peers.screen`` in verify, each naming the site, and
``peers.withheld`` and ``peers.screen`` in the reader (which left ``peers.withheld`` out before
h-276). The reader's ``weights`` and ``weights.basis`` pass after the drops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedtrail.chain import advance_time, block_timestamp
from fedtrail.protocol.codes import Reason
from fedtrail.storage.store import IpfsStore
from tests.auditor.peer_federation import new_peer_federation, peer_round, reader_results
from tests.auditor.test_verify_public_screen import TINY, _checks, _hospitals, _withdraw, public

__all__ = ["public"]  # the fixture, imported for its name

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_rigged_drop_updates_fails_verify_and_the_reader_an_honest_one_passes(
    anvil_url: str, ipfs_api: str, tmp_path: Path, public: None
) -> None:
    store = IpfsStore(ipfs_api)
    pf = new_peer_federation(tmp_path, anvil_url, store)
    ledger = pf.fed.ledger
    rider, honest, ally = _hospitals(pf)

    def drop_updates(withheld: list[str], screened: list[str]) -> Any:
        def run(r: int) -> None:
            peer = ledger.get_peer_round(r)
            assert peer is not None
            advance_time(ledger.w3, peer.score_reveal_deadline - block_timestamp(ledger.w3) + 1)
            every = [s.site for s in ledger.get_submissions(r)]
            assert ledger.has_drop_updates()
            (_sent,) = ledger.drop_updates(
                pf.fed.coordinator, r, every, withheld=withheld, screened=screened
            )

        return run

    # rigged: the honest update, readable, dropped as withheld; the ally's honest update
    # dropped as screened; the real free-rider spared (one transaction)
    r_rig = peer_round(pf, seed=7, scales={rider: TINY}, valued=drop_updates([honest], [ally]))
    subs = {s.site: s for s in ledger.get_submissions(r_rig)}
    assert (subs[honest].reason, subs[ally].reason) == (Reason.WITHHELD, Reason.FREE_RIDER)
    assert subs[rider].weight == 10**18
    checks = _checks(pf, store, r_rig)
    assert not checks["peers.withheld"].passed
    assert honest[:10] in checks["peers.withheld"].detail
    screen = checks["peers.screen"].detail
    assert not checks["peers.screen"].passed
    zeroed, spared = screen.split("yet not dropped:")
    assert "zeroed" in zeroed and ally[:10] in zeroed and rider[:10] not in zeroed
    assert "spared" in spared and rider[:10] in spared and ally[:10] not in spared
    assert checks["peers.median"].passed, checks["peers.median"].detail  # the drops are on chain

    # honest: the ally's update is withheld (unreadable from the finalize on), the free-rider
    # dropped as screened, in one transaction
    r_ok = peer_round(pf, seed=8, scales={rider: TINY}, valued=drop_updates([ally], [rider]))
    subs = {s.site: s for s in ledger.get_submissions(r_ok)}
    (withheld,) = ledger.events("UpdateWithheld", argument_filters={"round": r_ok})
    (screened,) = ledger.events("UpdateScreened", argument_filters={"round": r_ok})
    assert withheld.tx_hash == screened.tx_hash
    assert (subs[ally].reason, subs[rider].reason) == (Reason.WITHHELD, Reason.FREE_RIDER)
    _withdraw(ipfs_api, subs[ally].cid)  # the last round: no later screen reads it
    checks = _checks(pf, store, r_ok)
    failed = [(c.name, c.detail) for c in checks.values() if c.failed]
    assert not failed, failed
    assert rider[:10] in checks["peers.screen"].detail

    results = reader_results(pf, anvil_url, ipfs_api)
    assert results[(r_rig, "peers.screen")]["result"] == "FAIL", results[(r_rig, "peers.screen")]
    detail = results[(r_rig, "peers.screen")]["detail"]
    assert "zeroed unmarked" in detail and "spared marked" in detail
    assert results[(r_ok, "peers.screen")]["result"] == "PASS", results[(r_ok, "peers.screen")]
    # the readable update dropped as withheld (the reader left peers.withheld out before h-276)
    row = results.get((r_rig, "peers.withheld"))
    assert row is not None and row["result"] == "FAIL", row
    name = {s.address: s.name for s in ledger.get_sites()}[honest]
    assert name in row["detail"].split("yet")[1], row
    row = results.get((r_ok, "peers.withheld"))
    assert row is not None and row["result"] == "PASS", row
    # the weights follow the rule over the scores the drops left, the valuation's over
    # UpdateValued's (before h-276 the reader compared storage with UpdateValued: every round
    # with a drop failed weights and weights.basis)
    for r in (r_rig, r_ok):
        for check in ("peers.median", "peers.reputation", "weights", "weights.basis"):
            assert results[(r, check)]["result"] == "PASS", results[(r, check)]
