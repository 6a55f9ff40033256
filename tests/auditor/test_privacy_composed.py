"""Composed accounting (issue 16) in `audit privacy` and verify's `privacy.spend`: a site that
declares the increment of its RDP-composed total passes and its chain total is that epsilon
rounded up; declaring 1 micro-epsilon less (the attack) or more fails, naming the rule; blobs
without the field (the summed rule) are recomputed as before. Expected spends come from opacus'
own accountant, not from the code under test."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from fedtrail.auditor.privacy import Status, audit_privacy
from fedtrail.auditor.verify import RoundAudit, _check_privacy
from fedtrail.protocol.privacy import COMPOSED, DpParams
from fedtrail.storage.codec import decode_update
from fedtrail.storage.privacy_history import PrivacyHistory
from tests.auditor.test_privacy import P1, P2, SPEC, World, spend, world

pytestmark = pytest.mark.anvil

C1, C2 = replace(P1, accounting=COMPOSED), replace(P2, accounting=COMPOSED)


def composed_micro(history: list[DpParams]) -> int:
    accountant = RDPAccountant()
    accountant.history = [(p.noise_multiplier, p.sample_rate, p.steps) for p in history]
    return math.ceil(float(accountant.get_epsilon(delta=history[-1].delta)) * 1e6)


@pytest.fixture(scope="module")
def fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Three rounds (C1, C2, C1) of composed updates by three sites: hospital-0 declares the
    exact increments, hospital-1 one micro-epsilon less in round 3, hospital-2 one more; round
    every round is cancelled after its reveals (nothing is valued here)."""
    w = world(anvil_url, tmp_path_factory.mktemp("composed"))
    a, b, c = w.fed.sites
    plan = [C1, C2, C1]
    for i, params in enumerate(plan):
        exact = composed_micro(plan[: i + 1]) - (composed_micro(plan[:i]) if i else 0)
        last = i == len(plan) - 1
        r = w.open()
        w.submit(r, [(a, params, exact), (b, params, exact - last), (c, params, exact + last)])
        w.close(r)
    return w


def test_the_chain_total_is_the_composed_epsilon_rounded_up(fed: World) -> None:
    a = fed.fed.sites[0].address
    result = audit_privacy(fed.fed.ledger, fed.store)
    mine = [u for u in result.updates if u.site == a]
    assert [u.status for u in mine] == [Status.AGREES] * 3
    assert [u.accounting for u in mine] == [COMPOSED] * 3
    plan = [C1, C2, C1]
    assert [u.total_micro for u in mine] == [composed_micro(plan[: i + 1]) for i in range(3)]
    (site,) = [s for s in result.sites if s.site == a]
    assert site.spent_micro == composed_micro(plan)
    assert site.composed_epsilon is not None
    assert site.spent_micro == math.ceil(site.composed_epsilon * 1e6)  # the panel's two agree
    # the summed rule would have charged far more for the same updates
    assert site.spent_micro < sum(spend(p) for p in (P1, P2, P1)) * 0.7


def test_under_and_over_declaring_under_the_composed_rule_fail(fed: World) -> None:
    _, b, c = (s.address for s in fed.fed.sites)
    result = audit_privacy(fed.fed.ledger, fed.store)
    status = {(u.round, u.site): u for u in result.updates}
    assert status[(3, b)].status == Status.DIFFERS
    assert status[(3, c)].status == Status.DIFFERS
    assert "under the composed rule" in status[(3, b)].detail
    assert status[(3, b)].recomputed_micro == status[(3, b)].declared_micro + 1
    assert status[(3, c)].recomputed_micro == status[(3, c)].declared_micro - 1
    assert [status[(r, s)].status for r in (1, 2) for s in (b, c)] == [Status.AGREES] * 4
    assert not result.passed and len(result.problems) == 2


def test_verify_privacy_spend_recomputes_the_composed_increment(fed: World) -> None:
    """verify's privacy.spend (its rounds are cancelled here, so the check is called on round
    3's updates directly, with the history read back from chain + store)."""
    ledger, store = fed.fed.ledger, fed.store
    subs = ledger.get_submissions(3)
    dp = {s.site: decode_update(store.get(s.cid, s.sha256), spec=SPEC)[1].dp for s in subs}
    audit = RoundAudit(round=3)
    _check_privacy(audit, ledger, 3, subs, dp, None, PrivacyHistory(ledger, store))
    check = next(c for c in audit.checks if c.name == "privacy.spend")
    assert not check.passed
    a, b, c = (s.address for s in fed.fed.sites)
    assert (
        f"{b[:10]} declared epsilon" in check.detail and "under the composed rule" in check.detail
    )
    assert f"{c[:10]} declared epsilon" in check.detail and a[:10] not in check.detail


def test_a_composed_spend_whose_history_is_gone_cannot_pass(fed: World, tmp_path: Path) -> None:
    """The rule composes over the site's earlier blobs: without them the spend is unchecked."""
    a = fed.fed.sites[0].address
    ledger = fed.fed.ledger
    first = ledger.get_submission(1, a)
    assert first is not None
    blob = fed.store_dir / "blobs" / first.cid
    kept = blob.read_bytes()
    blob.unlink()
    try:
        result = audit_privacy(ledger, fed.store)
    finally:
        blob.write_bytes(kept)
    status = {(u.round, u.site): u.status for u in result.updates}
    assert status[(1, a)] == Status.UNREADABLE
    assert status[(2, a)] == Status.UNREADABLE  # its history includes round 1


def test_verify_fails_a_composed_spend_whose_earlier_blob_is_withheld(fed: World) -> None:
    """verify's ``privacy.spend``, as ``audit privacy``: round 2's composed declarations hold
    with every earlier blob in the store; with hospital-0's round-1 blob withheld, its round-2
    spend cannot be recomputed, and the check fails naming the site, not passes without it."""
    ledger, store = fed.fed.ledger, fed.store
    a = fed.fed.sites[0].address
    subs = ledger.get_submissions(2)
    dp = {s.site: decode_update(store.get(s.cid, s.sha256), spec=SPEC)[1].dp for s in subs}

    def spend_check() -> tuple[bool, str]:
        audit = RoundAudit(round=2)
        _check_privacy(audit, ledger, 2, subs, dp, None, PrivacyHistory(ledger, store))
        check = next(c for c in audit.checks if c.name == "privacy.spend")
        return check.passed, check.detail

    assert spend_check()[0], spend_check()
    first = ledger.get_submission(1, a)
    assert first is not None
    blob = fed.store_dir / "blobs" / first.cid
    kept = blob.read_bytes()
    blob.unlink()
    try:
        passed, detail = spend_check()
    finally:
        blob.write_bytes(kept)
    assert not passed
    assert f"{a[:10]}: cannot recompute its composed spend" in detail, detail
