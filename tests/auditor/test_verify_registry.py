"""``audit verify``'s ``sites.registry`` (attack a65): the coordinator's removal, cap or privacy
budget set on a site inside a round's windows applies to its next commitment or reveal, so one
made after the site committed voids its commitment. A finalized round that paid the others
fails; a move outside the windows, or on a site that revealed anyway, does not."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import RoundAudit, verify_round
from fedtrail.chain import advance_time, block_timestamp
from fedtrail.errors import LedgerError
from fedtrail.ledger import Valuation, commitment, decline_commitment
from fedtrail.ledger.records import score_commitment
from fedtrail.protocol.codes import Decline, Reason
from fedtrail.protocol.names import shown
from fedtrail.protocol.peers import PeerVote, address_key
from fedtrail.storage.store import LocalStore
from tests.auditor import peer_federation as peers
from tests.auditor import test_verify_declined as declined_tests
from tests.auditor import test_verify_terms as terms_tests
from tests.auditor.report import federation as hand

pytestmark = pytest.mark.anvil


def _round(tmp_path: Path, anvil_url: str, move: str, when: str = "after_commit") -> RoundAudit:
    """A hand-run round: site 2 commits an update of 250 samples, then (``when``:
    ``"after_commit"``, or ``"after_round"``, once the round is finalized) the coordinator
    makes ``move`` on it: ``"remove"`` (and registers it again at once), ``"cap"`` (its cap
    set to 100), ``"budget"`` (a privacy budget of 1 epsilon) or ``"none"`` (site 2 then
    never reveals: a crash); sites 0 and 1 submit, a reveal site 2 tries after a move in the
    round reverts, and the round is valued, finalized and audited."""
    fed = hand.new_federation(tmp_path, anvil_url)
    model = hand.initial(fed)
    r = terms_tests._open(fed, model, declined_tests.LOO)
    target = fed.sites[2]
    cid, sha = hand.put(fed.store, b"site 2's update")
    fed.ledger.commit_update(target, r, commitment(target.address, r, sha, 250))

    def make_move() -> None:
        if move == "remove":
            fed.ledger.remove_site(fed.coordinator, target.address)
            fed.ledger.register_site(fed.coordinator, target.address, hand.SITE_NAMES[2], 10_000)
        elif move == "cap":
            fed.ledger.set_max_samples(fed.coordinator, target.address, 100)
        elif move == "budget":
            fed.ledger.set_privacy_budget(fed.coordinator, target.address, 1_000_000)

    if when == "after_commit":
        make_move()
    hand.submit_all(dataclasses.replace(fed, sites=fed.sites[:2]), r, seed=1)
    if move != "none" and when == "after_commit":
        with pytest.raises(LedgerError):  # the move voided site 2's commitment
            fed.ledger.reveal_update(target, r, cid, sha, 250)
    left = fed.ledger.get_round(r).reveal_deadline - block_timestamp(fed.ledger.w3)
    advance_time(fed.ledger.w3, left + 1)
    fed.ledger.record_valuation(
        fed.coordinator, r, [Valuation(s.address, 500_000, 0) for s in fed.sites[:2]]
    )
    hand.finalize(fed, r, model, None, edit=_edit)
    if when == "after_round":
        make_move()
    advance_time(fed.ledger.w3, 1)
    return verify_round(fed.ledger, fed.store, r)


def _edit(doc: dict[str, Any]) -> None:
    """The log as test_verify_declined writes it: leave-one-out, two updates (below the robust
    screen's minimum of three)."""
    doc["settings"]["valuation"] = declined_tests.LOO
    for entry in doc["sites"]:
        entry["components"]["robust_checked"] = False


def _registry(audit: RoundAudit) -> tuple[bool, str]:
    check = next(c for c in audit.checks if c.name == "sites.registry")
    return check.passed, check.detail


@pytest.mark.parametrize(
    ("move", "words"),
    [
        ("remove", "removed"),
        ("cap", "cap set to 100"),
        ("budget", "privacy budget set to 1000000 micro-epsilon"),
    ],
)
def test_a_move_that_voids_a_committed_site_fails_sites_registry(
    anvil_url: str, tmp_path: Path, move: str, words: str
) -> None:
    """a65: site 2 committed, the coordinator's move made its reveal revert, the round paid
    sites 0 and 1: ``sites.registry`` fails naming the site and the move, and nothing else
    fails that the same round without the move passes."""
    attacked = _round(tmp_path / "attacked", anvil_url, move)
    control = _round(tmp_path / "control", anvil_url, "none")
    passed, detail = _registry(attacked)
    assert not passed, detail
    assert f"{shown(hand.SITE_NAMES[2])} (" in detail and f": {words}" in detail, detail
    assert "revealed no update" in detail, detail
    failed = {c.name for c in attacked.checks if c.failed}
    control_failed = {c.name for c in control.checks if c.failed}
    assert failed - control_failed == {"sites.registry"}, (failed, control_failed)
    passed, detail = _registry(control)
    assert passed and detail == "no site's registry entry changed inside the round", detail


def _capped_decline(tmp_path: Path, anvil_url: str, reason: Decline) -> RoundAudit:
    """A hand-run round: once it is open the coordinator cuts site 2's cap to 100, and site 2
    commits a decline with ``reason`` in place of an update (its node, whose data is over the
    cap, declines ``cap below data``: a96); sites 0 and 1 are paid."""
    fed = hand.new_federation(tmp_path, anvil_url)
    model = hand.initial(fed)
    r = terms_tests._open(fed, model, declined_tests.LOO)
    target = fed.sites[2]
    fed.ledger.set_max_samples(fed.coordinator, target.address, 100)
    terms_sha = fed.ledger.get_round(r).terms_sha256
    fed.ledger.commit_update(target, r, decline_commitment(target.address, r, terms_sha, reason))
    hand.submit_all(dataclasses.replace(fed, sites=fed.sites[:2]), r, seed=1)
    left = fed.ledger.get_round(r).reveal_deadline - block_timestamp(fed.ledger.w3)
    advance_time(fed.ledger.w3, left + 1)
    fed.ledger.record_valuation(
        fed.coordinator, r, [Valuation(s.address, 500_000, 0) for s in fed.sites[:2]]
    )
    hand.finalize(fed, r, model, None, edit=_edit)
    advance_time(fed.ledger.w3, 1)
    return verify_round(fed.ledger, fed.store, r)


def test_a_cap_cut_that_a_site_declines_inside_the_round_still_fails_sites_registry(
    anvil_url: str, tmp_path: Path
) -> None:
    """a96: a node whose data is over its cap declines the round on chain (``cap below data``)
    instead of leaving no trace. Inside the round that decline is the coordinator's move, not
    the site's refusal: ``sites.registry`` fails as it does for a site the cut left with no
    commitment, and ``terms.declined`` names the reason. A decline for the site's own reason
    (settings it does not accept) after the same cut is the site's choice: not failed."""
    capped = _capped_decline(tmp_path / "capped", anvil_url, Decline.CAP_BELOW_DATA)
    passed, detail = _registry(capped)
    assert not passed, detail
    assert f"{shown(hand.SITE_NAMES[2])} (" in detail and ": cap set to 100" in detail, detail
    named = next(c for c in capped.checks if c.name == "terms.declined")
    assert "cap below data" in named.detail, named.detail
    own = _capped_decline(tmp_path / "own", anvil_url, Decline.UNACCEPTED)
    passed, detail = _registry(own)
    assert passed, detail


def test_a_move_after_the_round_or_on_a_site_that_revealed_is_not_failed(
    anvil_url: str, tmp_path: Path
) -> None:
    """The same removal once the round is over voids nothing (the check looks only at blocks
    stamped by the reveal deadline); a cap raised on a site that then revealed is named, not
    failed."""
    late = _round(tmp_path / "late", anvil_url, "remove", when="after_round")
    passed, detail = _registry(late)
    assert passed and detail == "no site's registry entry changed inside the round", detail

    fed = hand.new_federation(tmp_path / "raised", anvil_url)
    model = hand.initial(fed)
    r = terms_tests._open(fed, model, declined_tests.LOO)
    fed.ledger.set_max_samples(fed.coordinator, fed.sites[0].address, 20_000)
    hand.submit_all(fed, r, seed=1)
    fed.ledger.record_valuation(
        fed.coordinator, r, [Valuation(s.address, 500_000, 0) for s in fed.sites]
    )
    hand.finalize(fed, r, model, None, edit=_edit)
    advance_time(fed.ledger.w3, 1)
    passed, detail = _registry(verify_round(fed.ledger, fed.store, r))
    assert passed, detail
    assert detail.startswith("noted, not failed: moved but revealed or declined: "), detail
    assert f"{shown(hand.SITE_NAMES[0])} (" in detail and "cap set to 20000" in detail, detail


def _peer_round(tmp_path: Path, anvil_url: str, remove: bool) -> RoundAudit:
    """Round 2 of the hand-run peer federation (quorum 3 of 4 validators): every validator
    commits its score vector; with ``remove`` the coordinator then removes the first hospital
    (and registers it again at once), whose score reveal reverts; the rest reveal, the peer
    valuation is recorded from the revealed vectors and the round finalized and audited."""
    pf = peers.new_peer_federation(tmp_path, anvil_url, LocalStore(tmp_path / "peer-store"))
    fed, ledger = pf.fed, pf.fed.ledger
    r = peers.open_peer_round(pf)
    peers.submit(pf, r, seed=2)
    vectors = peers.hand_vectors(pf, r)
    advance_time(ledger.w3, ledger.get_round(r).reveal_deadline - block_timestamp(ledger.w3) + 1)
    salts = {v.address: secrets.token_bytes(32) for v in pf.validators}
    for v in pf.validators:
        ledger.commit_scores(
            v, r, score_commitment(v.address, r, vectors[v.address], salts[v.address])
        )
    victim = pf.validators[0]
    if remove:
        ledger.remove_site(fed.coordinator, victim.address)
        ledger.register_site(fed.coordinator, victim.address, hand.SITE_NAMES[0], 10_000)
    advance_time(ledger.w3, peers.SCORE_COMMIT + 1)
    votes = []
    for v in pf.validators:
        if remove and v is victim:
            with pytest.raises(LedgerError):  # its committed vector can no longer be revealed
                ledger.reveal_scores(v, r, list(vectors[v.address]), salts[v.address])
            continue
        ledger.reveal_scores(v, r, list(vectors[v.address]), salts[v.address])
        votes.append(PeerVote(validator=v.address, scores=vectors[v.address]))
    votes.sort(key=lambda x: address_key(x.validator))
    if remove:  # not every validator revealed: the valuation waits for the score reveal deadline
        deadline = ledger.get_peer_round(r).score_reveal_deadline  # type: ignore[union-attr]
        advance_time(ledger.w3, deadline - block_timestamp(ledger.w3) + 1)
    sites = sorted((s.site for s in ledger.get_submissions(r)), key=address_key)
    ledger.record_peer_valuation(pf.validators[-1], r, sites, votes)

    def peer_log(doc: dict[str, Any]) -> None:
        doc["settings"]["valuation"] = dict(peers.PEER_VALUATION)
        for entry in doc["sites"]:
            entry["reason_label"] = Reason(entry["reason"]).name
            entry["explanation"] = "median of the other validators' scores"
            entry["components"] = {}
        doc["peers"] = {
            "votes": [{"validator": v.validator, "scores": list(v.scores)} for v in votes]
        }

    hand.finalize(fed, r, pf.model, None, peer_log)
    advance_time(ledger.w3, 1)
    return verify_round(ledger, fed.store, r)


def test_a_validator_removed_after_committing_its_scores_fails_sites_registry(
    anvil_url: str, tmp_path: Path
) -> None:
    """a65 in a peer round: the coordinator removes an honest validator after it committed its
    score vector (after the update reveal deadline, so its update stands) and the medians are
    taken without it; ``sites.registry`` fails naming the lost vector, and nothing else fails
    that the same round without the removal passes."""
    attacked = _peer_round(tmp_path / "attacked", anvil_url, remove=True)
    control = _peer_round(tmp_path / "control", anvil_url, remove=False)
    passed, detail = _registry(attacked)
    assert not passed, detail
    assert f"{shown(hand.SITE_NAMES[0])} (" in detail, detail
    assert ": removed, then revealed no score vector" in detail, detail
    failed = {c.name for c in attacked.checks if c.failed}
    control_failed = {c.name for c in control.checks if c.failed}
    assert failed - control_failed == {"sites.registry"}, (failed, control_failed)
    assert _registry(control)[0]


@pytest.mark.parametrize(
    ("logged", "passes"),
    [("old", True), ("new", True), ("never registered", False)],
)
def test_a_rename_between_valuation_and_finalize_leaves_either_name_in_the_log(
    anvil_url: str, tmp_path: Path, logged: str, passes: bool
) -> None:
    """a66: the round is valued, the coordinator renames site 2 (removes it, registers it
    again) before the aggregator's finalize: a log naming it by the name it had at valuation
    (read before the rename) or by the new one agrees with the chain; a name it never held in
    that span does not."""
    fed = hand.new_federation(tmp_path, anvil_url)
    model = hand.initial(fed)
    r = hand.open_round(fed, model)
    hand.submit_all(fed, r, seed=1)
    fed.ledger.record_valuation(
        fed.coordinator, r, [Valuation(s.address, 500_000, 0) for s in fed.sites]
    )
    target = fed.sites[2]
    fed.ledger.remove_site(fed.coordinator, target.address)
    fed.ledger.register_site(fed.coordinator, target.address, "renamed", 10_000)
    name = {"old": hand.SITE_NAMES[2], "new": "renamed"}.get(logged, logged)

    def edit(doc: dict[str, Any]) -> None:
        for entry in doc["sites"]:
            if entry["site"] == target.address:
                entry["name"] = name

    hand.finalize(fed, r, model, None, edit=edit)
    advance_time(fed.ledger.w3, 1)
    audit = verify_round(fed.ledger, fed.store, r)
    agrees = next(c for c in audit.checks if c.name == "log.agrees")
    assert agrees.passed == passes, agrees.detail
