"""FederationLedger through the typed client: every external function's success path, every
custom error with its exact name and arguments, and every event's fields. The attacks of
issue 13 are in test_attacks.py."""

from __future__ import annotations

import pytest

from fedtrail.chain import advance_time, block_timestamp
from fedtrail.errors import (
    CommitmentMismatch,
    ContractNotFound,
    DuplicateSubmission,
    InvalidArgument,
    InvalidValuation,
    RoundStateError,
    SampleLimitExceeded,
    SiteAlreadyRegistered,
    Unauthorized,
)
from fedtrail.ledger import Ledger, Valuation, checksum, commitment
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.weights import WEIGHT_SCALE, onchain_weights
from tests.contracts.federation import (
    CID,
    MAX_SAMPLES,
    ZERO,
    Fed,
    by_address,
    expect,
    h,
    last_event,
)
from tests.fixtures.chain import ChainEnv


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


# ------------------------------------------------------------------ constructor and roles


def test_constructor_sets_roles_and_emits_both_role_events(embedded: ChainEnv) -> None:
    ledger = embedded.deploy(reputation_alpha=250_000, min_round_window=45)
    assert ledger.coordinator() == embedded.coordinator.address
    assert ledger.pending_coordinator() is None
    assert ledger.aggregator() == embedded.aggregator.address
    assert ledger.reputation_alpha() == 250_000
    assert ledger.min_round_window() == 45
    assert ledger.current_round() == 0
    assert last_event(ledger, "CoordinatorTransferred") == {
        "previousCoordinator": ZERO,
        "newCoordinator": embedded.coordinator.address,
    }
    assert last_event(ledger, "AggregatorChanged") == {
        "previousAggregator": ZERO,
        "newAggregator": embedded.aggregator.address,
    }


@pytest.mark.parametrize("alpha", [0, 1_000_001])
def test_constructor_rejects_bad_reputation_alpha(embedded: ChainEnv, alpha: int) -> None:
    with expect(InvalidArgument, "InvalidParameter", what="reputationAlpha"):
        embedded.deploy(reputation_alpha=alpha)


def test_constructor_rejects_zero_aggregator(embedded: ChainEnv) -> None:
    with expect(InvalidArgument, "ZeroAddress"):
        Ledger.deploy(embedded.w3, embedded.coordinator, aggregator=ZERO)


def test_register_site_stores_site_cap_and_first_round_and_emits(fed: Fed) -> None:
    site = fed.env.sites[5]
    fed.ledger.register_site(fed.coord, site.address, "St. Elsewhere", 250)
    ev = last_event(fed.ledger, "SiteRegistered")
    assert ev == {"site": site.address, "name": "St. Elsewhere", "maxSamples": 250}
    info = fed.ledger.get_site(site.address)
    assert info is not None and info.registered and info.name == "St. Elsewhere"
    assert (info.max_samples, info.active_from, info.reputation) == (250, 1, 0)
    assert fed.ledger.active_site_count() == 4


def test_register_site_errors(fed: Fed) -> None:
    site = fed.env.sites[5]
    with expect(Unauthorized, "NotCoordinator", caller=fed.agg.address):
        fed.ledger.register_site(fed.agg, site.address, "x", 10)
    with expect(InvalidArgument, "ZeroAddress"):
        fed.ledger.register_site(fed.coord, ZERO, "x", 10)
    with expect(InvalidArgument, "InvalidParameter", what="maxSamples"):
        fed.ledger.register_site(fed.coord, site.address, "x", 0)
    with expect(SiteAlreadyRegistered, "SiteAlreadyRegistered", site=fed.sites[0].address):
        fed.ledger.register_site(fed.coord, fed.sites[0].address, "again", 10)


def test_remove_site_keeps_history_and_emits(fed: Fed) -> None:
    gone = fed.sites[0]
    fed.ledger.remove_site(fed.coord, gone.address)
    assert last_event(fed.ledger, "SiteRemoved") == {"site": gone.address}
    info = fed.ledger.get_site(gone.address)
    assert info is not None and not info.registered and info.name == "hospital-0"
    assert fed.ledger.active_site_count() == 2
    assert [s.address for s in fed.ledger.get_sites()] == [s.address for s in fed.sites]
    # a removed site may be registered again without duplicating it in the site list
    fed.ledger.register_site(fed.coord, gone.address, "back", 5)
    assert len(fed.ledger.get_sites()) == 3
    info = fed.ledger.get_site(gone.address)
    assert info is not None and (info.name, info.max_samples) == ("back", 5)


def test_remove_site_errors(fed: Fed) -> None:
    with expect(Unauthorized, "NotCoordinator", caller=fed.sites[0].address):
        fed.ledger.remove_site(fed.sites[0], fed.sites[1].address)
    with expect(Unauthorized, "UnknownSite", site=fed.env.outsider.address):
        fed.ledger.remove_site(fed.coord, fed.env.outsider.address)


def test_set_max_samples_changes_the_cap_from_the_next_reveal_and_emits(fed: Fed) -> None:
    site = fed.sites[0]
    r = fed.open()
    fed.commit(r, site, "a", 500)
    fed.ledger.set_max_samples(fed.coord, site.address, 499)
    assert last_event(fed.ledger, "MaxSamplesSet") == {"site": site.address, "maxSamples": 499}
    info = fed.ledger.get_site(site.address)
    assert info is not None and info.max_samples == 499
    fed.past_commit(r)
    with expect(SampleLimitExceeded, "TooManySamples", numSamples=500, maxSamples=499):
        fed.reveal(r, site, "a", 500)
    fed.ledger.set_max_samples(fed.coord, site.address, 500)
    fed.reveal(r, site, "a", 500)
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None and sub.revealed and sub.num_samples == 500


def test_set_max_samples_errors(fed: Fed) -> None:
    with expect(Unauthorized, "NotCoordinator", caller=fed.agg.address):
        fed.ledger.set_max_samples(fed.agg, fed.sites[0].address, 5)
    with expect(Unauthorized, "UnknownSite", site=fed.env.outsider.address):
        fed.ledger.set_max_samples(fed.coord, fed.env.outsider.address, 5)
    with expect(InvalidArgument, "InvalidParameter", what="maxSamples"):
        fed.ledger.set_max_samples(fed.coord, fed.sites[0].address, 0)


def test_set_aggregator_hands_over_the_role(fed: Fed) -> None:
    new = fed.env.outsider
    fed.ledger.set_aggregator(fed.coord, new.address)
    assert last_event(fed.ledger, "AggregatorChanged") == {
        "previousAggregator": fed.agg.address,
        "newAggregator": new.address,
    }
    with expect(Unauthorized, "NotAggregator", caller=fed.agg.address):
        fed.open()
    fed.agg = new
    assert fed.open() == 1


def test_set_aggregator_errors(fed: Fed) -> None:
    with expect(Unauthorized, "NotCoordinator", caller=fed.agg.address):
        fed.ledger.set_aggregator(fed.agg, fed.agg.address)
    with expect(InvalidArgument, "ZeroAddress"):
        fed.ledger.set_aggregator(fed.coord, ZERO)


# ------------------------------------------------------------------ openRound


def test_open_round_records_model_terms_deadlines_and_active_set_and_emits(fed: Fed) -> None:
    """The contract sets the deadlines from the mining block and the lengths given (a40)."""
    round_id, result = fed.ledger.open_round(
        fed.agg,
        CID,
        h("g0"),
        terms_cid="QmTerms",
        terms_sha256=h("terms"),
        commit_seconds=600,
        reveal_seconds=300,
    )
    mined = fed.w3.eth.get_block(result.block_number)["timestamp"]
    assert round_id == 1 and fed.ledger.current_round() == 1
    assert last_event(fed.ledger, "RoundOpened") == {
        "round": 1,
        "modelCid": CID,
        "modelSha256": h("g0"),
        "termsCid": "QmTerms",
        "termsSha256": h("terms"),
        "commitDeadline": mined + 600,
        "revealDeadline": mined + 900,
    }
    info = fed.ledger.get_round(1)
    assert info.phase == Phase.OPEN
    assert (info.commit_deadline, info.reveal_deadline) == (mined + 600, mined + 900)
    assert info.opened_at == mined and info.active_at_open == 3
    assert (info.start_cid, info.start_sha256) == (CID, h("g0"))
    assert (info.terms_cid, info.terms_sha256) == ("QmTerms", h("terms"))
    assert info.submission_count == 0 and info.global_cid == ""


def test_open_round_errors(fed: Fed) -> None:
    def open_(signer: object = None, **kw: object) -> None:
        args: dict[str, object] = {
            "terms_cid": CID,
            "terms_sha256": h("t"),
            "commit_seconds": 600,
            "reveal_seconds": 600,
        }
        model = kw.pop("model_cid", CID), kw.pop("model_sha256", h("g0"))
        args.update(kw)
        fed.ledger.open_round(signer or fed.agg, *model, **args)  # type: ignore[arg-type]

    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        open_(fed.coord)
    with expect(InvalidArgument, "InvalidParameter", what="modelCid"):
        open_(model_cid="")
    with expect(InvalidArgument, "InvalidParameter", what="modelSha256"):
        open_(model_sha256="00" * 32)
    with expect(InvalidArgument, "InvalidParameter", what="termsCid"):
        open_(terms_cid="")
    with expect(InvalidArgument, "InvalidParameter", what="termsSha256"):
        open_(terms_sha256="00" * 32)
    with expect(RoundStateError, "CommitWindowTooShort", commitSeconds=0):
        open_(commit_seconds=0)
    with expect(RoundStateError, "RevealWindowTooShort", revealSeconds=9):
        open_(reveal_seconds=9)
    with expect(InvalidArgument, "InvalidParameter", what="window"):
        open_(commit_seconds=2**64 - 1)
    fed.open()
    with expect(RoundStateError, "PreviousRoundNotClosed", round=1):
        fed.open()


def test_minimum_round_window_set_at_deploy_bounds_both_windows(embedded: ChainEnv) -> None:
    """The aggregator may not give a 2 s window (issue 13, point 7)."""
    fed = Fed(embedded, min_round_window=300)
    with expect(RoundStateError, "CommitWindowTooShort", commitSeconds=2, minimum=300):
        fed.ledger.open_round(
            fed.agg,
            CID,
            h("g0"),
            terms_cid=CID,
            terms_sha256=h("t"),
            commit_seconds=2,
            reveal_seconds=10_000,
        )
    with expect(RoundStateError, "RevealWindowTooShort", revealSeconds=299, minimum=300):
        fed.ledger.open_round(
            fed.agg,
            CID,
            h("g0"),
            terms_cid=CID,
            terms_sha256=h("t"),
            commit_seconds=1_000,
            reveal_seconds=299,
        )
    assert fed.open(commit=300, reveal=300) == 1


def test_open_round_must_start_from_last_finalized_model(fed: Fed) -> None:
    r = fed.open("g0")
    fed.submit_all(r)
    fed.value(r, [1, 1, 1])
    fed.finalize(r, "g1")
    with expect(RoundStateError, "StartModelMismatch", expected=h("g1"), given=h("other")):
        fed.open("other")
    assert fed.open("g1") == 2


# ------------------------------------------------------------------ commitUpdate


def test_commit_update_stores_the_commitment_and_emits(fed: Fed) -> None:
    r = fed.open()
    site = fed.sites[1]
    c = commitment(site.address, r, h("a"), 321)
    fed.ledger.commit_update(site, r, c)
    assert last_event(fed.ledger, "UpdateCommitted") == {
        "round": r,
        "site": site.address,
        "commitment": c,
    }
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None and not sub.revealed
    assert (sub.commitment, sub.commit_order, sub.sha256, sub.cid, sub.num_samples) == (
        c,
        1,
        "",
        "",
        0,
    )
    assert fed.ledger.get_submission(r, fed.sites[0].address) is None
    assert fed.ledger.get_submissions(r) == []
    assert [s.site for s in fed.ledger.get_submissions(r, include_unrevealed=True)] == [
        site.address
    ]
    assert fed.ledger.get_round(r).submission_count == 0


def test_commit_update_errors(fed: Fed) -> None:
    outsider = fed.env.outsider
    c = commitment(fed.sites[0].address, 1, h("x"), 1)
    with expect(Unauthorized, "UnknownSite", site=outsider.address):
        fed.ledger.commit_update(outsider, 1, c)
    with expect(RoundStateError, "UnknownRound", round=1):
        fed.ledger.commit_update(fed.sites[0], 1, c)
    r = fed.open()
    with expect(InvalidArgument, "InvalidParameter", what="commitment"):
        fed.ledger.commit_update(fed.sites[0], r, "00" * 32)
    fed.ledger.commit_update(fed.sites[0], r, c)
    with expect(DuplicateSubmission, "AlreadyCommitted", round=r, site=fed.sites[0].address):
        fed.commit(r, fed.sites[0], "b")
    fed.past_commit(r)
    with expect(RoundStateError, "CommitClosed", round=r):
        fed.commit(r, fed.sites[1], "late")


def test_commit_update_refused_for_removed_site(fed: Fed) -> None:
    r = fed.open()
    fed.ledger.remove_site(fed.coord, fed.sites[2].address)
    with expect(Unauthorized, "UnknownSite", site=fed.sites[2].address):
        fed.commit(r, fed.sites[2], "late")


def test_commit_update_in_valued_round_is_wrong_phase(fed: Fed) -> None:
    r = fed.open()
    fed.submit_all(r)
    fed.value(r, [1, 2, 3])
    with expect(RoundStateError, "WrongPhase", round=r, actual=Phase.VALUED, expected=Phase.OPEN):
        fed.commit(r, fed.sites[0], "again")


# ------------------------------------------------------------------ revealUpdate


def test_reveal_update_stores_hash_and_count_and_emits(fed: Fed) -> None:
    r = fed.open()
    site = fed.sites[1]
    fed.commit(r, fed.sites[0], "first")
    fed.commit(r, site, "a", 321)
    fed.past_commit(r)
    fed.reveal(r, site, "a", 321)
    ev = last_event(fed.ledger, "UpdateSubmitted")
    assert ev == {"round": r, "site": site.address, "cid": CID, "sha256": h("a"), "numSamples": 321}
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None and sub.revealed
    assert (sub.sha256, sub.num_samples, sub.cid, sub.weight, sub.commit_order) == (
        h("a"),
        321,
        CID,
        0,
        2,
    )
    # the view recomputes the commitment with the contract's own abi.encode + keccak256
    assert sub.commitment == commitment(site.address, r, h("a"), 321)
    info = fed.ledger.get_round(r)
    assert info.submission_count == 1
    assert [s.site for s in fed.ledger.get_submissions(r)] == [site.address]
    both = fed.ledger.get_submissions(r, include_unrevealed=True)
    assert [s.site for s in both] == by_address([fed.sites[0].address, site.address])


def test_reveal_update_errors(fed: Fed) -> None:
    site, other = fed.sites[0], fed.sites[1]
    r = fed.open()
    fed.commit(r, site, "a", 100)
    with expect(RoundStateError, "RevealNotOpen", round=r):
        fed.reveal(r, site, "a", 100)
    fed.past_commit(r)
    with expect(CommitmentMismatch, "NotCommitted", round=r, site=other.address):
        fed.reveal(r, other, "a", 100)
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r, site=site.address):
        fed.reveal(r, site, "b", 100)
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r, site=site.address):
        fed.reveal(r, site, "a", 101)
    with expect(InvalidArgument, "InvalidParameter", what="sha256"):
        fed.ledger.reveal_update(site, r, CID, "00" * 32, 100)
    with expect(InvalidArgument, "InvalidParameter", what="cid"):
        fed.ledger.reveal_update(site, r, "", h("a"), 100)
    with expect(InvalidArgument, "InvalidParameter", what="numSamples"):
        fed.ledger.reveal_update(site, r, CID, h("a"), 0)
    with expect(
        SampleLimitExceeded,
        "TooManySamples",
        site=site.address,
        numSamples=MAX_SAMPLES + 1,
        maxSamples=MAX_SAMPLES,
    ):
        fed.reveal(r, site, "a", MAX_SAMPLES + 1)
    fed.reveal(r, site, "a", 100)
    with expect(DuplicateSubmission, "AlreadyRevealed", round=r, site=site.address):
        fed.reveal(r, site, "a", 100)
    with expect(Unauthorized, "UnknownSite", site=fed.env.outsider.address):
        fed.ledger.reveal_update(fed.env.outsider, r, CID, h("a"), 1)
    fed.past_reveal(r)
    with expect(RoundStateError, "RevealClosed", round=r):
        fed.reveal(r, other, "a", 100)


def test_a_site_removed_after_committing_cannot_reveal(fed: Fed) -> None:
    r = fed.open()
    fed.commit(r, fed.sites[0], "a")
    fed.ledger.remove_site(fed.coord, fed.sites[0].address)
    fed.past_commit(r)
    with expect(Unauthorized, "UnknownSite", site=fed.sites[0].address):
        fed.reveal(r, fed.sites[0], "a")


def test_byte_identical_updates_are_both_accepted_and_ordered_by_commit_not_address(
    fed: Fed,
) -> None:
    """No site can lock another out by submitting its bytes first: both reveal, and the
    commit order (not the address order) tells which came first."""
    low, high = sorted(fed.sites[:2], key=lambda s: int(s.address, 16))
    r = fed.open()
    fed.commit(r, high, "same")
    fed.commit(r, low, "same")
    fed.past_commit(r)
    fed.reveal(r, low, "same")
    fed.reveal(r, high, "same")
    subs = {s.site: s for s in fed.ledger.get_submissions(r)}
    assert subs[high.address].sha256 == subs[low.address].sha256 == h("same")
    assert (subs[high.address].commit_order, subs[low.address].commit_order) == (1, 2)
    assert fed.ledger.commit_orders(r) == {high.address: 1, low.address: 2}


# ------------------------------------------------------------------ recordValuation


def test_record_valuation_fixes_weights_reputation_and_emits(fed: Fed) -> None:
    r = fed.open()
    ns = [100, 250, 50]
    fed.submit_all(r, ns)
    scores = [900_000, 400_000, 0]
    reasons = [Reason.OK, Reason.OK, Reason.DUPLICATE]
    fed.value(r, scores, reasons=[int(x) for x in reasons])
    order = sorted(range(3), key=lambda i: int(fed.sites[i].address, 16))
    expected = dict(
        zip(
            [fed.sites[i].address for i in order],
            onchain_weights([ns[i] for i in order], [scores[i] for i in order]),
            strict=True,
        )
    )
    subs = fed.ledger.get_submissions(r)
    assert [s.site for s in subs] == by_address(list(expected))
    assert {s.site: s.weight for s in subs} == expected
    assert sum(s.weight for s in subs) == WEIGHT_SCALE
    assert {s.site: s.num_samples for s in subs} == {
        s.address: n for s, n in zip(fed.sites, ns, strict=True)
    }
    zero = next(s for s in subs if s.site == fed.sites[2].address)
    assert zero.weight == 0 and zero.score == 0 and zero.reason == Reason.DUPLICATE
    assert fed.ledger.get_round(r).phase == Phase.VALUED
    valued = fed.ledger.events("UpdateValued", argument_filters={"round": r})
    assert {
        e.args["site"]: (e.args["score"], e.args["reason"], e.args["weight"], e.args["reputation"])
        for e in valued
    } == {
        fed.sites[i].address: (scores[i], reasons[i], expected[fed.sites[i].address], scores[i])
        for i in range(3)
    }
    assert last_event(fed.ledger, "RoundValued") == {
        "round": r,
        "totalWeightBasis": sum(n * s for n, s in zip(ns, scores, strict=True)),
    }
    site = fed.ledger.get_site(fed.sites[0].address)
    assert site is not None and site.reputation == 900_000 and site.valued_rounds == 1


def test_reputation_is_an_ema_of_scores(fed: Fed) -> None:
    alpha = fed.ledger.reputation_alpha()
    r = fed.open("g0")
    fed.submit_all(r)
    fed.value(r, [1_000_000, 500_000, 100])
    fed.finalize(r, "g1")
    r = fed.open("g1")
    fed.submit_all(r)
    fed.value(r, [0, 500_000, 1_000_000])
    reps = [fed.ledger.get_site(s.address).reputation for s in fed.sites]  # type: ignore[union-attr]
    assert reps == [
        (alpha * 0 + (10**6 - alpha) * 1_000_000) // 10**6,
        500_000,
        (alpha * 1_000_000 + (10**6 - alpha) * 100) // 10**6,
    ]


def test_record_valuation_errors(fed: Fed) -> None:
    r = fed.open()
    a, b, c = fed.sites
    for site, tag in ((a, "a"), (b, "b"), (c, "c")):
        fed.commit(r, site, tag)
    fed.past_commit(r)
    fed.reveal(r, a, "a")
    fed.reveal(r, b, "b")  # c committed and never reveals
    lo, hi = by_address([a.address, b.address])
    with expect(RoundStateError, "RoundStillOpen", round=r):
        fed.raw_valuation(r, [lo, hi], [1, 1], [0, 0])
    fed.past_reveal(r)
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger._transact(fed.coord, fed.ledger._fn.recordValuation(r, [lo, hi], [1, 1], [0, 0]))
    with expect(InvalidValuation, "LengthMismatch", sites=2, scores=1, reasons=2):
        fed.raw_valuation(r, [lo, hi], [1], [0, 0])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        fed.raw_valuation(r, [hi, lo], [1, 1], [0, 0])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        fed.raw_valuation(r, [lo, lo], [1, 1], [0, 0])
    with expect(InvalidValuation, "MissingScores", round=r, expected=2, given=1):
        fed.raw_valuation(r, [lo], [1], [0])
    with_c = by_address([a.address, c.address])
    with expect(InvalidValuation, "NotRevealed", round=r, site=c.address):
        fed.raw_valuation(r, with_c, [1, 1], [0, 0])
    with_outsider = by_address([a.address, fed.env.outsider.address])
    with expect(InvalidValuation, "NotRevealed", round=r, site=fed.env.outsider.address):
        fed.raw_valuation(r, with_outsider, [1, 1], [0, 0])
    with expect(InvalidValuation, "ScoreOutOfRange", site=hi, score=1_000_001):
        fed.raw_valuation(r, [lo, hi], [1, 1_000_001], [0, 0])
    with expect(InvalidValuation, "ZeroTotalWeight", round=r):
        fed.raw_valuation(r, [lo, hi], [0, 0], [4, 5])
    with expect(RoundStateError, "UnknownRound", round=9):
        fed.raw_valuation(9, [lo, hi], [1, 1], [0, 0])
    fed.raw_valuation(r, [lo, hi], [1, 1], [0, 0])
    with expect(RoundStateError, "WrongPhase", round=r, actual=Phase.VALUED, expected=Phase.OPEN):
        fed.raw_valuation(r, [lo, hi], [1, 1], [0, 0])
    # the unrevealed commitment is not valued and stays a bare commitment
    (unrevealed,) = [
        s for s in fed.ledger.get_submissions(r, include_unrevealed=True) if not s.revealed
    ]
    assert (unrevealed.site, unrevealed.sha256, unrevealed.weight) == (c.address, "", 0)


def test_valuation_may_start_early_once_every_site_active_at_open_revealed(fed: Fed) -> None:
    r = fed.open()
    fed.submit_all(r)
    assert block_timestamp(fed.w3) <= fed.ledger.get_round(r).reveal_deadline
    fed.value(r, [1, 1, 1])
    assert fed.ledger.get_round(r).phase == Phase.VALUED


@pytest.mark.parametrize(
    ("score", "reason"),
    [(-1, 0), (10**6 + 1, 0), (1, 4), (0, 0), (5, 12), (5, 13), (0, 14), (0, 15)],
)
def test_valuation_client_refuses_what_the_contract_would_before_sending(
    score: int, reason: int
) -> None:
    from fedtrail.errors import ConfigError

    with pytest.raises(ConfigError):
        Valuation(site="0x" + "11" * 20, score=score, reason=reason)


# ------------------------------------------------------------------ finalizeRound / cancelRound


def test_finalize_round_records_global_model_and_emits(fed: Fed) -> None:
    r = fed.open()
    fed.submit_all(r)
    fed.value(r, [1, 1, 1])
    fed.finalize(r, "g1")
    assert last_event(fed.ledger, "RoundFinalized") == {
        "round": r,
        "globalCid": CID,
        "globalSha256": h("g1"),
        "logCid": CID,
        "logSha256": h("logg1"),
    }
    info = fed.ledger.get_round(r)
    assert info.phase == Phase.FINALIZED
    assert (info.global_cid, info.global_sha256, info.log_cid, info.log_sha256) == (
        CID,
        h("g1"),
        CID,
        h("logg1"),
    )
    assert fed.ledger.last_finalized_round() == r


def test_finalize_round_errors(fed: Fed) -> None:
    with expect(RoundStateError, "UnknownRound", round=1):
        fed.finalize(1, "g1")
    r = fed.open()
    with expect(RoundStateError, "WrongPhase", round=r, actual=Phase.OPEN, expected=Phase.VALUED):
        fed.finalize(r, "g1")
    fed.submit_all(r)
    fed.value(r, [1, 1, 1])
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger.finalize_round(
            fed.coord, r, global_cid=CID, global_sha256=h("g"), log_cid=CID, log_sha256=h("l")
        )
    for field, kwargs in [
        ("globalSha256", {"global_sha256": "00" * 32}),
        ("logSha256", {"log_sha256": "00" * 32}),
        ("globalCid", {"global_cid": ""}),
        ("logCid", {"log_cid": ""}),
    ]:
        args = {"global_cid": CID, "global_sha256": h("g"), "log_cid": CID, "log_sha256": h("l")}
        args.update(kwargs)
        with expect(InvalidArgument, "InvalidParameter", what=field):
            fed.ledger.finalize_round(fed.agg, r, **args)


def test_cancel_round_lets_the_next_round_start_from_last_final_model(fed: Fed) -> None:
    r = fed.open("g0")
    with expect(RoundStateError, "RoundStillOpen", round=r):
        fed.ledger.cancel_round(fed.agg, r)
    fed.past_reveal(r)
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger.cancel_round(fed.coord, r)
    fed.ledger.cancel_round(fed.agg, r)
    assert last_event(fed.ledger, "RoundCancelled") == {"round": r}
    assert fed.ledger.get_round(r).phase == Phase.CANCELLED
    with expect(
        RoundStateError, "WrongPhase", round=r, actual=Phase.CANCELLED, expected=Phase.OPEN
    ):
        fed.ledger.cancel_round(fed.agg, r)
    assert fed.open("g0") == 2


def test_a_cancelled_round_keeps_its_revealed_sample_counts(fed: Fed) -> None:
    """The count waits in the site's slot while the round is open; cancelling moves it to the
    submission, so the site's next reveal does not erase it."""
    site = fed.sites[0]
    r = fed.open("g0")
    fed.commit(r, site, "a", 77)
    fed.past_commit(r)
    fed.reveal(r, site, "a", 77)
    fed.past_reveal(r)
    fed.ledger.cancel_round(fed.agg, r)
    r2 = fed.open("g0")
    fed.commit(r2, site, "b", 88)
    fed.past_commit(r2)
    fed.reveal(r2, site, "b", 88)
    old = fed.ledger.get_submission(r, site.address)
    new = fed.ledger.get_submission(r2, site.address)
    assert old is not None and (old.revealed, old.sha256, old.num_samples) == (True, h("a"), 77)
    assert new is not None and (new.revealed, new.sha256, new.num_samples) == (True, h("b"), 88)


def test_get_round_of_unknown_round_raises(fed: Fed) -> None:
    with expect(RoundStateError, "UnknownRound", round=5):
        fed.ledger.get_round(5)


def test_ledger_refuses_an_address_without_the_contract(embedded: ChainEnv) -> None:
    with pytest.raises(ContractNotFound, match="no contract"):
        Ledger.connect(embedded.w3, embedded.outsider.address)


# ------------------------------------------------------------------ every chain


def test_full_round_on_every_chain(any_chain: ChainEnv) -> None:
    """The same lifecycle and error mapping on the embedded chain, Anvil and Ganache."""
    fed = Fed(any_chain, n_sites=3)
    r = fed.open("g0", commit=60, reveal=60)
    for i, site in enumerate(fed.sites):
        fed.commit(r, site, f"u{i}", [10, 20, 30][i])
    with expect(DuplicateSubmission, "AlreadyCommitted", round=r, site=fed.sites[0].address):
        fed.commit(r, fed.sites[0], "again")
    with expect(Unauthorized, "UnknownSite", site=any_chain.outsider.address):
        fed.ledger.commit_update(any_chain.outsider, r, "11" * 32)
    advance_time(fed.w3, 61)
    with expect(CommitmentMismatch, "CommitmentMismatch", round=r, site=fed.sites[0].address):
        fed.reveal(r, fed.sites[0], "u1", 20)
    for i, site in enumerate(fed.sites):
        fed.reveal(r, site, f"u{i}", [10, 20, 30][i])
    fed.value(r, [500_000, 500_000, 1_000_000])
    fed.finalize(r, "g1")
    subs = fed.ledger.get_submissions(r)
    assert sum(s.weight for s in subs) == WEIGHT_SCALE
    assert [s.site for s in subs] == by_address([checksum(s.address) for s in fed.sites])
    assert [s.commit_order for s in subs] == [
        1 + [str(s.address) for s in fed.sites].index(sub.site) for sub in subs
    ]
    assert fed.ledger.get_round(r).phase == Phase.FINALIZED
    assert fed.open("g1") == 2


@pytest.mark.anvil
def test_concurrent_senders_with_one_key_never_collide_on_nonces(anvil_url: str) -> None:
    """Threads (and a second client object) sign with the same key at once: every transaction
    lands, none is refused for its nonce."""
    from concurrent.futures import ThreadPoolExecutor

    from fedtrail.chain import connect, dev_account

    coord = dev_account(0)
    ledger, _ = Ledger.deploy(connect(anvil_url), coord)
    other = Ledger.connect(connect(anvil_url), ledger.address)  # a second connection, same process
    sites = [dev_account(200 + i) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(
                lambda i: (ledger if i % 2 else other).register_site(
                    coord, sites[i].address, f"s{i}", 100
                ),
                range(len(sites)),
            )
        )
    assert len({r.tx_hash for r in results}) == len(sites)
    assert {s.address for s in ledger.get_sites()} == {s.address for s in sites}
