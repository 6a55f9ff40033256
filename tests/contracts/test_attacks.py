"""The contract-level attacks of issue 13 (points 1, 3 and 7), each one now failing for the
attacker with the contract's exact custom error."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3

from fedtrail.chain import advance_time, connect
from fedtrail.errors import (
    CommitmentMismatch,
    InvalidValuation,
    RoundStateError,
    SampleLimitExceeded,
    Unauthorized,
)
from fedtrail.ledger import to_bytes32
from fedtrail.protocol.codes import Phase, Reason
from tests.contracts.federation import CID, MAX_SAMPLES, ZERO, Fed, by_address, expect, h
from tests.fixtures.chain import ChainEnv, _env


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


# ------------------------------------------------------------------ point 1: sample counts


def test_an_uncapped_sample_claim_is_refused_and_cannot_be_valued(fed: Fed) -> None:
    """Claiming 2**64-1 samples took 0.999999999994 of the weight; now the reveal is refused
    (the commitment matches, the cap refuses it) and the claim never reaches the valuation."""
    greedy, honest = fed.sites[0], fed.sites[1]
    r = fed.open()
    fed.commit(r, greedy, "greedy", 2**64 - 1)
    fed.commit(r, honest, "honest", 100)
    fed.past_commit(r)
    with expect(
        SampleLimitExceeded,
        "TooManySamples",
        site=greedy.address,
        numSamples=2**64 - 1,
        maxSamples=MAX_SAMPLES,
    ):
        fed.reveal(r, greedy, "greedy", 2**64 - 1)
    fed.reveal(r, honest, "honest", 100)
    fed.past_reveal(r)
    with expect(InvalidValuation, "NotRevealed", round=r, site=greedy.address):
        fed.raw_valuation(r, [greedy.address], [1_000_000], [0])
    fed.raw_valuation(r, [honest.address], [1_000_000], [0])
    (only,) = fed.ledger.get_submissions(r)
    assert (only.site, only.weight) == (honest.address, 10**18)


# ------------------------------------------------------------------ points 2 and 3: copies


def test_a_copy_of_a_revealed_update_cannot_be_committed_late(fed: Fed) -> None:
    """Reveals start only after the commit window closed: whoever sees an update can no
    longer commit to it."""
    victim, copier = fed.sites[0], fed.sites[1]
    r = fed.open()
    fed.commit(r, victim, "victim", 500)
    fed.past_commit(r)
    fed.reveal(r, victim, "victim", 500)
    with expect(RoundStateError, "CommitClosed", round=r):
        fed.commit(r, copier, "victim", 500)
    with expect(CommitmentMismatch, "NotCommitted", round=r, site=copier.address):
        fed.reveal(r, copier, "victim", 500)


def test_a_reveal_copied_by_a_committed_site_does_not_open_its_commitment(fed: Fed) -> None:
    """The commitment binds the sender: the same (sha256, samples) revealed by another site
    is not what that site committed to, and the victim's own reveal is not blocked."""
    victim, copier = fed.sites[0], fed.sites[1]
    r = fed.open()
    fed.commit(r, copier, "placeholder", 100)
    fed.commit(r, victim, "victim", 500)
    fed.past_commit(r)
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r, site=copier.address):
        fed.reveal(r, copier, "victim", 500)
    fed.reveal(r, victim, "victim", 500)
    sub = fed.ledger.get_submission(r, victim.address)
    assert sub is not None and sub.revealed and sub.sha256 == h("victim")


def _raw_send(w3: Web3, signer: LocalAccount, to: str, data: Any, tip_gwei: int) -> HexBytes:
    """Signs and sends a transaction with a fixed gas limit and no estimate, so that one that
    will revert still gets mined (as a front-runner's would)."""
    base = int(w3.eth.get_block("latest")["baseFeePerGas"])
    tx = {
        "to": Web3.to_checksum_address(to),
        "data": data,
        "gas": 300_000,
        "nonce": w3.eth.get_transaction_count(signer.address, "pending"),
        "chainId": w3.eth.chain_id,
        "maxPriorityFeePerGas": tip_gwei * 10**9,
        "maxFeePerGas": 2 * base + tip_gwei * 10**9,
    }
    return w3.eth.send_raw_transaction(signer.sign_transaction(tx).raw_transaction)


@pytest.mark.anvil
def test_front_running_a_pending_reveal_steals_nothing(anvil_url: str) -> None:
    """Automine off: the attacker reads the victim's pending reveal from the mempool and sends
    the same calldata with a 10x tip. Its transaction is mined first and reverts
    (CommitmentMismatch); the victim's lands. A copier that never committed cannot commit now
    (CommitClosed)."""
    w3 = connect(anvil_url)
    fed = Fed(_env("anvil", w3))
    victim, attacker, late = fed.sites
    r = fed.open(commit=60, reveal=600)
    fed.commit(r, victim, "victim", 500)
    fed.commit(r, attacker, "junk", 1)
    advance_time(w3, 61)
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        call = fed.ledger._fn.revealUpdate(r, CID, to_bytes32(h("victim")), 500)
        victim_tx = _raw_send(w3, victim, fed.ledger.address, call._encode_transaction_data(), 1)
        pending = w3.eth.get_transaction(victim_tx)
        assert pending["blockNumber"] is None
        attacker_tx = _raw_send(w3, attacker, fed.ledger.address, pending["input"], 10)
        with expect(RoundStateError, "CommitClosed", round=r):
            fed.commit(r, late, "victim", 500)
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    stolen = w3.eth.get_transaction_receipt(attacker_tx)
    honest = w3.eth.get_transaction_receipt(victim_tx)
    assert stolen["blockNumber"] == honest["blockNumber"]
    assert stolen["transactionIndex"] < honest["transactionIndex"]  # it did run first
    assert (stolen["status"], honest["status"]) == (0, 1)
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r, site=attacker.address):
        fed.reveal(r, attacker, "victim", 500)
    subs = {s.site: s for s in fed.ledger.get_submissions(r, include_unrevealed=True)}
    assert subs[victim.address].revealed and subs[victim.address].sha256 == h("victim")
    assert not subs[attacker.address].revealed
    assert late.address not in subs


# ------------------------------------------------------------------ point 7: reasons


@pytest.mark.parametrize(
    ("score", "reason", "error", "args"),
    [
        (1_000_000, 255, "InvalidReason", {"reason": 255}),
        (1, 14, "InvalidReason", {"reason": 14}),
        (0, 14, "InvalidReason", {"reason": 14}),
        (1, int(Reason.CONTRADICTED), "ScoreReasonMismatch", {"score": 1, "reason": 13}),
        (1, int(Reason.NOT_REVEALED), "ScoreReasonMismatch", None),
        (0, int(Reason.NOT_REVEALED), "InvalidReason", {"reason": 12}),
        (1, int(Reason.TAMPERED), "ScoreReasonMismatch", {"score": 1, "reason": 4}),
        (0, int(Reason.OK), "ScoreReasonMismatch", {"score": 0, "reason": 0}),
    ],
)
def test_a_reason_that_is_not_a_code_or_disagrees_with_the_score_is_refused(
    fed: Fed, score: int, reason: int, error: str, args: dict[str, int] | None
) -> None:
    r = fed.open()
    fed.submit_all(r)
    sites = by_address([s.address for s in fed.sites])
    scores, reasons = [1, 1, 1], [0, 0, 0]
    scores[1], reasons[1] = score, reason
    if args is None:  # NOT_REVEALED with a positive score: whichever check runs first
        with pytest.raises(InvalidValuation) as info:
            fed.raw_valuation(r, sites, scores, reasons)
        assert info.value.error in {"InvalidReason", "ScoreReasonMismatch"}
        return
    with expect(InvalidValuation, error, site=sites[1], **args):
        fed.raw_valuation(r, sites, scores, reasons)


def test_contradicted_is_posted_with_score_0(fed: Fed) -> None:
    """CONTRADICTED (13, appended after NOT_REVEALED) is a code the contract accepts with a
    zero score, and the site then gets no weight."""
    r = fed.open()
    fed.submit_all(r)
    sites = by_address([s.address for s in fed.sites])
    fed.raw_valuation(r, sites, [1, 0, 1], [0, int(Reason.CONTRADICTED), 0])
    subs = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert subs[sites[1]].reason == Reason.CONTRADICTED == 13
    assert subs[sites[1]].score == 0 and subs[sites[1]].weight == 0
    assert subs[sites[0]].weight > 0


# ------------------------------------------------------------------ point 7: the active set


def test_removing_a_site_after_open_does_not_let_valuation_start_early(fed: Fed) -> None:
    """Before: removing a site lowered the active count, so valuation could start before the
    deadline and lock out the sites that had not submitted yet."""
    a, b, c = fed.sites
    r = fed.open()
    fed.commit(r, a, "a")
    fed.commit(r, b, "b")
    fed.past_commit(r)
    fed.reveal(r, a, "a")
    fed.ledger.remove_site(fed.coord, c.address)  # never committed
    fed.ledger.remove_site(fed.coord, b.address)  # committed, not yet revealed
    info = fed.ledger.get_round(r)
    assert (info.active_at_open, info.submission_count) == (3, 1)
    assert fed.ledger.active_site_count() == 1
    with expect(RoundStateError, "RoundStillOpen", round=r):
        fed.raw_valuation(r, [a.address], [1], [0])
    fed.past_reveal(r)
    fed.raw_valuation(r, [a.address], [1], [0])


def test_removing_a_revealed_site_does_not_let_valuation_start_early(fed: Fed) -> None:
    a, b, _ = fed.sites
    r = fed.open()
    fed.commit(r, a, "a")
    fed.commit(r, b, "b")
    fed.past_commit(r)
    fed.reveal(r, a, "a")
    fed.reveal(r, b, "b")
    fed.ledger.remove_site(fed.coord, fed.sites[2].address)
    fed.ledger.remove_site(fed.coord, a.address)
    sites = by_address([a.address, b.address])
    with expect(RoundStateError, "RoundStillOpen", round=r):
        fed.raw_valuation(r, sites, [1, 1], [0, 0])


def test_a_site_registered_after_open_takes_part_from_the_next_round(fed: Fed) -> None:
    newcomer = fed.env.sites[5]
    r = fed.open("g0")
    fed.ledger.register_site(fed.coord, newcomer.address, "new", MAX_SAMPLES)
    assert fed.ledger.get_round(r).active_at_open == 3
    with expect(Unauthorized, "RegisteredAfterOpen", round=r, site=newcomer.address):
        fed.commit(r, newcomer, "n")
    # removed and registered again in the same round: still out of this round
    gone = fed.sites[0]
    fed.commit(r, gone, "g")
    fed.ledger.remove_site(fed.coord, gone.address)
    fed.ledger.register_site(fed.coord, gone.address, "again", MAX_SAMPLES)
    fed.past_commit(r)
    with expect(Unauthorized, "RegisteredAfterOpen", round=r, site=gone.address):
        fed.reveal(r, gone, "g")
    fed.past_reveal(r)
    fed.ledger.cancel_round(fed.agg, r)
    r2 = fed.open("g0")
    assert fed.ledger.get_round(r2).active_at_open == 4
    fed.commit(r2, newcomer, "n")
    fed.commit(r2, gone, "g2")


# ------------------------------------------------------------------ point 7: the coordinator


def test_the_coordinator_role_moves_in_two_steps(fed: Fed) -> None:
    old, new, other = fed.coord, fed.env.outsider, fed.agg
    with expect(Unauthorized, "NotCoordinator", caller=new.address):
        fed.ledger.transfer_coordinator(new, new.address)
    with expect(Unauthorized, "NotPendingCoordinator", caller=new.address):
        fed.ledger.accept_coordinator(new)
    fed.ledger.transfer_coordinator(old, new.address)
    assert fed.ledger.events("CoordinatorTransferStarted")[-1].args == {
        "coordinator": old.address,
        "pendingCoordinator": new.address,
    }
    assert fed.ledger.pending_coordinator() == new.address
    assert fed.ledger.coordinator() == old.address  # nothing moves until accepted
    fed.ledger.set_max_samples(old, fed.sites[0].address, 7)
    with expect(Unauthorized, "NotPendingCoordinator", caller=other.address):
        fed.ledger.accept_coordinator(other)
    fed.ledger.accept_coordinator(new)
    assert fed.ledger.events("CoordinatorTransferred")[-1].args == {
        "previousCoordinator": old.address,
        "newCoordinator": new.address,
    }
    assert (fed.ledger.coordinator(), fed.ledger.pending_coordinator()) == (new.address, None)
    with expect(Unauthorized, "NotCoordinator", caller=old.address):
        fed.ledger.set_max_samples(old, fed.sites[0].address, 8)
    fed.ledger.set_max_samples(new, fed.sites[0].address, 8)


def test_a_pending_coordinator_offer_can_be_withdrawn(fed: Fed) -> None:
    candidate = fed.env.outsider
    fed.ledger.transfer_coordinator(fed.coord, candidate.address)
    fed.ledger.transfer_coordinator(fed.coord, ZERO)
    assert fed.ledger.pending_coordinator() is None
    assert fed.ledger.events("CoordinatorTransferStarted")[-1].args == {
        "coordinator": fed.coord.address,
        "pendingCoordinator": ZERO,
    }
    with expect(Unauthorized, "NotPendingCoordinator", caller=candidate.address):
        fed.ledger.accept_coordinator(candidate)
    assert fed.ledger.coordinator() == fed.coord.address


# ------------------------------------------------------------------ review: replays, closed rounds


def test_a_commitment_replayed_from_another_site_or_an_earlier_round_opens_nothing(
    fed: Fed,
) -> None:
    """The copier posts the victim's commitment as its own (read from UpdateCommitted), hoping
    to reveal the victim's update under it; and the victim replays its own round-1 commitment
    in round 2 to re-submit the round-1 update without committing anew. The commitment binds
    sender and round: neither opens, and the victim's own reveal is not blocked."""
    victim, copier, _ = fed.sites
    r1 = fed.open("g0")
    fed.commit(r1, victim, "victim", 500)
    stolen = fed.ledger.events("UpdateCommitted")[-1].args["commitment"]
    fed.ledger.commit_update(copier, r1, stolen)  # accepted: a commitment is opaque
    fed.past_commit(r1)
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r1, site=copier.address):
        fed.reveal(r1, copier, "victim", 500)
    fed.reveal(r1, victim, "victim", 500)
    fed.past_reveal(r1)
    fed.raw_valuation(r1, [victim.address], [1_000_000], [0])
    fed.finalize(r1, "g1")

    r2 = fed.open("g1")
    fed.ledger.commit_update(victim, r2, stolen)
    fed.past_commit(r2)
    with expect(CommitmentMismatch, "NotCommitted", round=r2, site=copier.address):
        fed.reveal(r2, copier, "victim", 500)  # round 1's commitment does not carry over
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r2, site=victim.address):
        fed.reveal(r2, victim, "victim", 500)
    assert fed.ledger.get_round(r2).submission_count == 0


def test_a_closed_round_cannot_be_valued_finalized_or_cancelled_again(fed: Fed) -> None:
    """The aggregator tries to rewrite a round it closed: a second valuation once valued, a
    cancel of the valued round (to drop its weights), a new round before finalizing, a second
    finalize with another global model, and a cancel of the finalized round. Each is refused
    with the round's phase, and the first global model stays the next round's start."""
    r = fed.open("g0")
    fed.submit_all(r)
    fed.past_reveal(r)
    fed.value(r, [1, 1, 1])
    valued = {"round": r, "actual": Phase.VALUED, "expected": Phase.OPEN}
    with expect(RoundStateError, "WrongPhase", **valued):
        fed.value(r, [1, 0, 0])
    with expect(RoundStateError, "WrongPhase", **valued):
        fed.ledger.cancel_round(fed.agg, r)
    with expect(RoundStateError, "PreviousRoundNotClosed", round=r):
        fed.open("g0")
    fed.finalize(r, "g1")
    with expect(
        RoundStateError, "WrongPhase", round=r, actual=Phase.FINALIZED, expected=Phase.VALUED
    ):
        fed.finalize(r, "g-other")
    with expect(
        RoundStateError, "WrongPhase", round=r, actual=Phase.FINALIZED, expected=Phase.OPEN
    ):
        fed.ledger.cancel_round(fed.agg, r)
    assert fed.ledger.get_round(r).global_sha256 == h("g1")
    with expect(RoundStateError, "StartModelMismatch", expected=h("g1"), given=h("g-other")):
        fed.open("g-other")
