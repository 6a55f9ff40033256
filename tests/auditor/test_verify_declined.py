"""``audit verify``'s ``terms.declined`` (attack a42): a site that refuses a round's committed
terms declares it on chain with a decline commitment, and the audit names it; it fails the
round when the auditor's own ``[accept]`` refuses the same terms and the round paid the others.
A plain commitment never revealed (a crash) is counted apart, named as no refusal."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import RoundAudit, verify_round
from fedtrail.chain import advance_time, block_timestamp
from fedtrail.ledger import Valuation, commitment, decline_commitment
from fedtrail.protocol.codes import Decline
from fedtrail.protocol.names import shown
from fedtrail.valuation import Combiner
from tests.auditor import test_verify_terms as terms_tests
from tests.auditor.report import federation as hand

pytestmark = pytest.mark.anvil

LOO = {"method": "loo", "metric": "auc", "combiner": asdict(Combiner())}
"""Per-round leave-one-out: payment settings a node's default ``[accept]`` refuses (a21)."""


def _round(tmp_path: Path, anvil_url: str, third: str, accept: object = None) -> RoundAudit:
    """A hand-run round under leave-one-out terms: sites 0 and 1 take part and are paid, site 2
    commits ``third`` ("decline": its decline of the terms as unaccepted; "crash": an update
    commitment it never reveals; "absent": nothing), then the round is finalized and audited."""
    fed = hand.new_federation(tmp_path, anvil_url)
    model = hand.initial(fed)
    r = terms_tests._open(fed, model, LOO)
    last = fed.sites[2]
    terms_sha = fed.ledger.get_round(r).terms_sha256
    if third == "decline":
        mine = decline_commitment(last.address, r, terms_sha, Decline.UNACCEPTED)
        fed.ledger.commit_update(last, r, mine)
    elif third == "crash":
        fed.ledger.commit_update(last, r, commitment(last.address, r, "ab" * 32, 10))
    hand.submit_all(dataclasses.replace(fed, sites=fed.sites[:2]), r, seed=1)
    # not every site revealed: the valuation waits for the reveal deadline
    left = fed.ledger.get_round(r).reveal_deadline - block_timestamp(fed.ledger.w3)
    advance_time(fed.ledger.w3, left + 1)
    fed.ledger.record_valuation(
        fed.coordinator,
        r,
        [Valuation(s.address, 500_000, 0) for s in fed.sites[:2]],
    )

    def edit(doc: dict[str, Any]) -> None:
        doc["settings"]["valuation"] = LOO
        for entry in doc["sites"]:  # two updates: below the robust screen's minimum of three
            entry["components"]["robust_checked"] = False

    hand.finalize(fed, r, model, None, edit=edit)
    advance_time(fed.ledger.w3, 1)
    return verify_round(fed.ledger, fed.store, r, accept=accept)  # type: ignore[arg-type]


def _declined(audit: RoundAudit) -> tuple[bool, str]:
    check = next(c for c in audit.checks if c.name == "terms.declined")
    return check.passed, check.detail


def test_a_decline_of_terms_the_auditor_refuses_too_fails_terms_declined(
    anvil_url: str, tmp_path: Path
) -> None:
    """a42: the aggregator wrote leave-one-out terms, site 2's node refused them and said so
    on chain, and the round paid sites 0 and 1. Under the default table (which refuses
    leave-one-out too) the round fails ``terms.declined`` and nothing else, naming the site and
    the reason; under a table that opted in to it the decline is named, not failed."""
    audit = _round(tmp_path, anvil_url, "decline")
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(failed) == {"terms.declined"}, failed
    detail = failed["terms.declined"]
    assert f"{shown(hand.SITE_NAMES[2])} (" in detail and ": unaccepted" in detail, detail
    assert "1 of the 3 site(s) active at open" in detail, detail
    assert "valuation game 'loo'" in detail, detail
    opted = _round(tmp_path / "opted", anvil_url, "decline", terms_tests.PER_ROUND_LOO)
    passed, detail = _declined(opted)
    assert passed and opted.passed, detail
    assert detail.startswith("noted, not failed") and f"{shown(hand.SITE_NAMES[2])} (" in detail


@pytest.mark.parametrize("third", ["crash", "absent"])
def test_a_site_that_declared_nothing_is_named_by_no_decline(
    anvil_url: str, tmp_path: Path, third: str
) -> None:
    """The control: a site that committed an update and never revealed it, or did nothing,
    declared no refusal; the check passes and names no site (a crash is counted)."""
    audit = _round(tmp_path, anvil_url, third)
    passed, detail = _declined(audit)
    assert passed, detail
    assert detail.startswith("no site declared it refuses the round's terms"), detail
    assert ("1 other commitment(s) never revealed" in detail) == (third == "crash"), detail
    assert shown(hand.SITE_NAMES[2]) not in detail


def test_audit_round_labels_a_decline_among_the_unrevealed(anvil_url: str, tmp_path: Path) -> None:
    """``audit round``'s unrevealed commitments say which one is a decline and why; an update
    commitment never revealed has no label."""
    from fedtrail.auditor.commands import round_doc

    fed = hand.new_federation(tmp_path, anvil_url)
    r = terms_tests._open(fed, hand.initial(fed), LOO)
    terms_sha = fed.ledger.get_round(r).terms_sha256
    decliner, crashed = fed.sites[1], fed.sites[2]
    fed.ledger.commit_update(
        decliner, r, decline_commitment(decliner.address, r, terms_sha, Decline.PRIVACY)
    )
    fed.ledger.commit_update(crashed, r, commitment(crashed.address, r, "ab" * 32, 10))
    rows = {u["site"]: u["declined"] for u in round_doc(fed.ledger, r)["unrevealed"]}
    assert rows == {decliner.address: "privacy", crashed.address: ""}
