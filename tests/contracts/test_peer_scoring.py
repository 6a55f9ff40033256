"""FederationLedger peer rounds (issue 14): openPeerRound, commitScores, revealScores,
recordPeerValuation and the views, through the typed client. Every new custom error with its
name and arguments, the events, and the on-chain median / validator rating checked against
hand-computed values and against fedtrail.protocol.peers.peer_outcome on random vectors."""

from __future__ import annotations

import random

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from fedtrail.errors import (
    CommitmentMismatch,
    DuplicateSubmission,
    InvalidArgument,
    InvalidValuation,
    RoundStateError,
    Unauthorized,
)
from fedtrail.ledger import Valuation, pack_scores, score_commitment, score_vote_hash
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import (
    REPUTATION_GATE,
    PeerVote,
    next_validator_reputation,
    peer_outcome,
)
from fedtrail.protocol.weights import (
    SCORE_SCALE,
    next_reputation,
    onchain_weights,
    withheld_reputation,
)
from tests.contracts.federation import CID, MAX_SAMPLES, Fed, by_address, expect, h, last_event
from tests.fixtures.chain import ChainEnv

S2 = SCORE_SCALE // 2


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


def accounts_by_address(fed: Fed) -> dict[str, LocalAccount]:
    return {a.address: a for a in fed.sites}


def round_events(fed: Fed, name: str, round_id: int) -> list[dict[str, object]]:
    return [e.args for e in fed.ledger.events(name, argument_filters={"round": round_id})]


def raw_peer_valuation(
    fed: Fed,
    caller: LocalAccount,
    round_id: int,
    sites: list[str],
    validators: list[str],
    vectors: list[list[int]],
    withheld: list[str] | None = None,
    medians: list[int] | None = None,
) -> None:
    """Bypasses the client's sorting, to reach the contract's own checks; the medians are the
    rule's over exactly these lists (zeros where the rule refuses them), unless given."""
    votes = [
        PeerVote(validator=v, scores=tuple(x)) for v, x in zip(validators, vectors, strict=False)
    ]
    if medians is None:
        medians = fed.ledger.peer_medians(round_id, sites, votes)
    packed = [pack_scores(x) for x in vectors]
    call = fed.ledger._fn.recordPeerValuation(
        round_id, sites, validators, packed, medians, withheld or []
    )
    fed.ledger._transact(caller, call)


# ------------------------------------------------------------------ opening


def test_open_peer_round_records_scoring_terms_and_emits_both_events(fed: Fed) -> None:
    """Every deadline is the mining block's time plus the lengths given, in order (a40)."""
    round_id, result = fed.ledger.open_peer_round(
        fed.agg,
        model_cid=CID,
        model_sha256=h("g0"),
        terms_cid=CID,
        terms_sha256=h("terms"),
        commit_seconds=100,
        reveal_seconds=200,
        score_commit_seconds=300,
        score_reveal_seconds=400,
        quorum=2,
    )
    mined = fed.w3.eth.get_block(result.block_number)["timestamp"]
    assert round_id == 1
    opened = last_event(fed.ledger, "RoundOpened")
    assert opened["round"] == 1 and opened["commitDeadline"] == mined + 100
    assert opened["revealDeadline"] == mined + 300 and opened["modelSha256"] == h("g0")
    assert last_event(fed.ledger, "PeerScoringOpened") == {
        "round": 1,
        "scoreCommitDeadline": mined + 600,
        "scoreRevealDeadline": mined + 1000,
        "quorum": 2,
    }
    peer = fed.ledger.get_peer_round(1)
    assert peer is not None
    assert (peer.score_commit_deadline, peer.score_reveal_deadline) == (mined + 600, mined + 1000)
    assert (peer.quorum, peer.commit_count, peer.vote_count) == (2, 0, 0)
    info = fed.ledger.get_round(1)
    assert info.phase == Phase.OPEN and info.active_at_open == 3


def test_aggregator_round_has_no_peer_record(fed: Fed) -> None:
    round_id = fed.open()
    assert fed.ledger.get_peer_round(round_id) is None
    with expect(RoundStateError, "UnknownRound", round=2):
        fed.ledger.get_peer_round(2)


def test_open_peer_round_refuses_short_score_windows_bad_quorum_and_non_aggregator(
    fed: Fed,
) -> None:
    base = {
        "model_cid": CID,
        "model_sha256": h("g0"),
        "terms_cid": CID,
        "terms_sha256": h("terms"),
        "commit_seconds": 100,
        "reveal_seconds": 100,
        "score_commit_seconds": 100,
        "score_reveal_seconds": 100,
        "quorum": 2,
    }
    # min_round_window is 10: each score window must be at least 10 s long
    with expect(RoundStateError, "ScoreCommitWindowTooShort", scoreCommitSeconds=9, minimum=10):
        fed.ledger.open_peer_round(fed.agg, **{**base, "score_commit_seconds": 9})
    with expect(RoundStateError, "ScoreRevealWindowTooShort", scoreRevealSeconds=5, minimum=10):
        fed.ledger.open_peer_round(fed.agg, **{**base, "score_reveal_seconds": 5})
    with expect(InvalidArgument, "InvalidParameter", what="window"):
        fed.ledger.open_peer_round(fed.agg, **{**base, "score_reveal_seconds": 2**64 - 1})
    with expect(InvalidArgument, "InvalidParameter", what="quorum"):
        fed.ledger.open_peer_round(fed.agg, **{**base, "quorum": 4})  # 3 sites registered
    with expect(InvalidArgument, "InvalidParameter", what="quorum"):
        call = fed.ledger._fn.openPeerRound(
            CID, bytes.fromhex(h("g0")), CID, bytes.fromhex(h("t")), 100, 100, 100, 100, 0
        )  # (the client refuses quorum 0 itself)
        fed.ledger._transact(fed.agg, call)
    with expect(Unauthorized, "NotAggregator", caller=fed.coord.address):
        fed.ledger.open_peer_round(fed.coord, **base)
    # the checks of openRound come first: a too short commit window
    with expect(RoundStateError, "CommitWindowTooShort", commitSeconds=1):
        fed.ledger.open_peer_round(fed.agg, **{**base, "commit_seconds": 1})
    assert fed.ledger.current_round() == 0


# ------------------------------------------------------------------ commitScores


def test_commit_scores_window_roles_and_duplicates(fed: Fed) -> None:
    a, b, c = fed.sites
    late = fed.env.sites[5]
    round_id = fed.open_peer(quorum=1)
    fed.ledger.register_site(fed.coord, late.address, "late", MAX_SAMPLES)
    fed.commit(round_id, a, "ua")
    fed.past_commit(round_id)
    fed.reveal(round_id, a, "ua")
    reveal_deadline = fed.ledger.get_round(round_id).reveal_deadline
    with expect(RoundStateError, "ScoringNotOpen", round=round_id, revealDeadline=reveal_deadline):
        fed.commit_scores(round_id, b, [500_000])
    fed.past_reveal(round_id)
    with expect(Unauthorized, "UnknownSite", site=fed.env.outsider.address):
        fed.ledger.commit_scores(fed.env.outsider, round_id, "11" * 32)
    with expect(Unauthorized, "RegisteredAfterOpen", round=round_id, site=late.address):
        fed.ledger.commit_scores(late, round_id, "11" * 32)
    with expect(InvalidArgument, "InvalidParameter", what="commitment"):
        fed.ledger.commit_scores(b, round_id, "00" * 32)
    with expect(RoundStateError, "UnknownRound", round=round_id + 1):
        fed.ledger.commit_scores(b, round_id + 1, "11" * 32)

    digest = score_commitment(b.address, round_id, [500_000], fed.salt(b, round_id))
    fed.ledger.commit_scores(b, round_id, digest)
    assert last_event(fed.ledger, "ScoresCommitted") == {
        "round": round_id,
        "validator": b.address,
        "commitment": digest,
    }
    assert fed.ledger.score_vote(round_id, b.address) == (digest, False)
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None and (peer.commit_count, peer.vote_count) == (1, 0)
    with expect(DuplicateSubmission, "ScoresAlreadyCommitted", round=round_id, validator=b.address):
        fed.ledger.commit_scores(b, round_id, "22" * 32)
    fed.past_score_commit(round_id)
    with expect(
        RoundStateError,
        "ScoreCommitClosed",
        round=round_id,
        scoreCommitDeadline=peer.score_commit_deadline,
    ):
        fed.ledger.commit_scores(c, round_id, "33" * 32)


def test_peer_calls_refused_on_an_aggregator_round(fed: Fed) -> None:
    round_id = fed.open()
    fed.submit_all(round_id)
    fed.past_reveal(round_id)
    a = fed.sites[0]
    with expect(RoundStateError, "NotPeerRound", round=round_id):
        fed.ledger.commit_scores(a, round_id, "11" * 32)
    with expect(RoundStateError, "NotPeerRound", round=round_id):
        fed.ledger.reveal_scores(a, round_id, [1, 2, 3], b"\x01" * 32)
    with expect(RoundStateError, "NotPeerRound", round=round_id):
        raw_peer_valuation(fed, a, round_id, by_address([s.address for s in fed.sites]), [], [])


# ------------------------------------------------------------------ revealScores


def test_reveal_scores_checks_window_commitment_length_range_and_duplicates(fed: Fed) -> None:
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=1)
    sites = fed.submit(round_id, [a, b], [100, 200])
    fed.commit_scores(round_id, a, [0, 700_000])
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None
    with expect(
        RoundStateError,
        "ScoreRevealNotOpen",
        round=round_id,
        scoreCommitDeadline=peer.score_commit_deadline,
    ):
        fed.reveal_scores(round_id, a, [0, 700_000])
    # c commits to an out-of-range vector (the client refuses to build one, so by hand)
    bad = [1_000_001, 5]
    salt_c = fed.salt(c, round_id)
    raw = abi_encode(
        ["address", "uint256", "uint32[]", "bytes32"], [c.address, round_id, bad, salt_c]
    )
    fed.ledger.commit_scores(c, round_id, keccak(raw).hex())
    fed.past_score_commit(round_id)

    with expect(CommitmentMismatch, "ScoresNotCommitted", round=round_id, validator=b.address):
        fed.reveal_scores(round_id, b, [1, 2])
    with expect(InvalidValuation, "ScoreVectorLength", round=round_id, expected=2, given=3):
        fed.reveal_scores(round_id, a, [0, 700_000, 1])
    with expect(InvalidValuation, "ScoreOutOfRange", site=c.address, score=1_000_001):
        fed.ledger._transact(c, fed.ledger._fn.revealScores(round_id, bad, salt_c))
    with expect(CommitmentMismatch, "ScoreCommitmentMismatch", round=round_id, validator=a.address):
        fed.reveal_scores(round_id, a, [0, 700_001])
    with expect(CommitmentMismatch, "ScoreCommitmentMismatch", round=round_id, validator=a.address):
        fed.ledger.reveal_scores(a, round_id, [0, 700_000], b"\x07" * 32)  # wrong salt

    fed.reveal_scores(round_id, a, [0, 700_000])
    ev = last_event(fed.ledger, "ScoresRevealed")
    assert ev["round"] == round_id and ev["validator"] == a.address
    assert list(ev["scores"]) == [0, 700_000]
    stored, revealed = fed.ledger.score_vote(round_id, a.address)
    assert revealed
    assert (
        stored
        == keccak(
            abi_encode(["uint256", "address", "uint32[]"], [round_id, a.address, [0, 700_000]])
        ).hex()
    )
    assert stored == score_vote_hash(round_id, a.address, [0, 700_000])
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None and (peer.commit_count, peer.vote_count) == (2, 1)
    with expect(DuplicateSubmission, "ScoresAlreadyRevealed", round=round_id, validator=a.address):
        fed.reveal_scores(round_id, a, [0, 700_000])
    assert sites == by_address([a.address, b.address])


def test_late_score_reveal_is_refused(fed: Fed) -> None:
    a, b, _ = fed.sites
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, [a], [100])
    fed.commit_scores(round_id, b, [600_000])
    fed.past_score_reveal(round_id)
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None
    with expect(
        RoundStateError,
        "ScoreRevealClosed",
        round=round_id,
        scoreRevealDeadline=peer.score_reveal_deadline,
    ):
        fed.reveal_scores(round_id, b, [600_000])
    assert fed.ledger.score_vote(round_id, b.address)[1] is False


# ------------------------------------------------------------------ recordPeerValuation


def test_median_ignores_self_entries_rejects_zero_medians_and_rates_validators(fed: Fed) -> None:
    """Hand-computed: three sites submit and validate; the outsider records the valuation."""
    round_id = fed.open_peer(quorum=3)
    order = sorted(fed.sites, key=lambda s: int(s.address, 16))
    s0, s1, s2 = order
    sites = fed.submit(round_id, order, [100, 300, 50])
    votes = fed.score(
        round_id,
        {
            s0.address: [1_000_000, 300_000, 0],
            s1.address: [200_000, 1_000_000, 0],
            s2.address: [400_000, 500_000, 1_000_000],
        },
    )
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(fed.env.outsider, round_id, sites, votes)

    valued = {e["site"]: e for e in round_events(fed, "UpdateValued", round_id)}
    # high median of the others' entries: s0: 200k, 400k -> 400k (with its own 1,000,000 it
    # would still be 400k; without self-exclusion s2's own 1,000,000 would lift it off 0)
    # s1: others 300k, 500k -> 500k; s2: others 0, 0 -> 0, PeerRejected
    assert [valued[s]["score"] for s in sites] == [400_000, 500_000, 0]
    assert [valued[s]["reason"] for s in sites] == [Reason.OK, Reason.OK, Reason.PEER_REJECTED]
    # weights n*s: 100*400k = 4e7, 300*500k = 1.5e8, 0 -> 4/19, 15/19, 0 (floored, the remainder
    # one unit each from the first fractional share, as recordValuation)
    assert [valued[s]["weight"] for s in sites] == [210526315789473685, 789473684210526315, 0]
    assert [valued[s]["reputation"] for s in sites] == [400_000, 500_000, 0]
    rated = {e["validator"]: e for e in round_events(fed, "ValidatorRated", round_id)}
    # s0: |300k-500k| (s1) + |0-0| (s2), / 2 = 100k; s1: |200k-400k| + 0, / 2; s2: 0 + 0
    assert {v: (e["distance"], e["validatorReputation"]) for v, e in rated.items()} == {
        s0.address: (100_000, 900_000),
        s1.address: (100_000, 900_000),
        s2.address: (0, 1_000_000),
    }
    standing = fed.ledger.validator_standing(s1.address)
    assert (standing.reputation, standing.rated_rounds) == (900_000, 1)
    sub = fed.ledger.get_submission(round_id, s2.address)
    assert sub is not None and sub.reason == Reason.PEER_REJECTED and sub.score == 0
    assert last_event(fed.ledger, "RoundValued")["round"] == round_id
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    fed.finalize(round_id, "g1")
    assert fed.ledger.get_round(round_id).phase == Phase.FINALIZED


def _random_vector(rng: random.Random, n: int) -> list[int]:
    return [0 if rng.random() < 0.15 else rng.randrange(1, SCORE_SCALE + 1) for _ in range(n)]


@pytest.mark.parametrize("seed", [3, 17, 2024])
def test_median_weights_and_ratings_equal_peer_outcome_on_random_vectors(
    embedded: ChainEnv, seed: int
) -> None:
    rng = random.Random(seed)
    fed = Fed(embedded, n_sites=7)
    alpha = fed.ledger.reputation_alpha()
    model = "g0"
    for count in (rng.choice([2, 4, 6]), rng.choice([3, 5, 7])):  # an even and an odd count
        round_id = fed.open_peer(quorum=2, model=model)
        submitters = rng.sample(fed.sites, rng.randint(3, 6))
        others = [s for s in fed.sites if s not in submitters]
        # at least one validator also submitted an update, and (when possible) one did not
        validators = [submitters[0], *rng.sample([*submitters[1:], *others], count - 1)]
        ns = {s.address: rng.randint(1, 1_000) for s in submitters}
        sites = fed.submit(round_id, submitters, [ns[s.address] for s in submitters])
        while True:
            vectors = {v.address: _random_vector(rng, len(sites)) for v in validators}
            votes = [
                PeerVote(validator=a, scores=tuple(vectors[a])) for a in by_address(list(vectors))
            ]
            # the second round's medians count only the validators the first left at or above
            # the reputation gate (random vectors put some below it)
            standings = {v: fed.ledger.validator_standing(v) for v in vectors}
            before_validators = {v: (st.reputation, st.rated_rounds) for v, st in standings.items()}
            expected = peer_outcome(sites, votes, standing=before_validators, quorum=2)
            if any(expected.scores):
                break
        before_sites = {s: fed.ledger.get_site(s) for s in sites}
        assert fed.score(round_id, vectors) == votes
        assert fed.ledger.peer_votes(round_id) == votes
        fed.past_score_reveal(round_id)
        # the contract takes the rule's medians (below) and nothing one off any of them
        for i, site in enumerate(sites):
            for wrong in (expected.scores[i] - 1, expected.scores[i] + 1):
                if not 0 <= wrong <= SCORE_SCALE:
                    continue
                medians = [*expected.scores[:i], wrong, *expected.scores[i + 1 :]]
                with expect(
                    InvalidValuation, "WrongMedian", round=round_id, site=site, supplied=wrong
                ):
                    fed.ledger.record_peer_valuation(
                        fed.env.outsider, round_id, sites, votes, medians=medians
                    )
        fed.ledger.record_peer_valuation(fed.env.outsider, round_id, sites, votes)

        weights = onchain_weights([ns[s] for s in sites], list(expected.scores))
        valued = {e["site"]: e for e in round_events(fed, "UpdateValued", round_id)}
        assert [valued[s]["score"] for s in sites] == list(expected.scores)
        assert [valued[s]["reason"] for s in sites] == [int(r) for r in expected.reasons]
        assert [valued[s]["weight"] for s in sites] == weights
        for s in sites:
            prev = before_sites[s]
            assert prev is not None
            want = next_reputation(
                prev.reputation,
                valued[s]["score"],  # type: ignore[arg-type]
                valued_rounds=prev.valued_rounds,
                alpha=alpha,
            )
            assert valued[s]["reputation"] == want
        rated = {e["validator"]: e for e in round_events(fed, "ValidatorRated", round_id)}
        assert {v: e["distance"] for v, e in rated.items()} == dict(expected.distances)
        reps = expected.validator_reputations(before_validators, alpha=alpha)
        assert {v: e["validatorReputation"] for v, e in rated.items()} == reps
        for v, rep in reps.items():
            standing = fed.ledger.validator_standing(v)
            assert (standing.reputation, standing.rated_rounds) == (
                rep,
                before_validators[v][1] + 1,
            )
        model = f"g{round_id}"
        fed.finalize(round_id, model)


@pytest.mark.parametrize(("n_sites", "cartel_size"), [(5, 1), (7, 2)])
def test_a_minority_cartel_cannot_move_honest_scores_and_loses_validator_reputation(
    embedded: ChainEnv, n_sites: int, cartel_size: int
) -> None:
    rng = random.Random(n_sites)
    fed = Fed(embedded, n_sites=n_sites)
    round_id = fed.open_peer(quorum=n_sites)
    order = sorted(fed.sites, key=lambda s: int(s.address, 16))
    cartel = {s.address for s in order[:cartel_size]}
    sites = fed.submit(round_id, order, [100] * n_sites)
    quality = [rng.randrange(300_000, 900_000) for _ in sites]
    target = next(i for i, s in enumerate(sites) if s not in cartel)
    vectors: dict[str, list[int]] = {}
    for v in sites:
        if v in cartel:  # inverts everyone, zeroes the target, praises itself and its partner
            vectors[v] = [
                SCORE_SCALE if s in cartel else 0 if i == target else SCORE_SCALE - quality[i]
                for i, s in enumerate(sites)
            ]
        else:
            vectors[v] = [
                max(0, min(SCORE_SCALE, q + rng.randrange(-30_000, 30_001))) for q in quality
            ]
    votes = fed.score(round_id, vectors)
    # every site active at open revealed: the valuation need not wait for the deadline
    fed.ledger.record_peer_valuation(fed.env.outsider, round_id, sites, votes)

    valued = {e["site"]: e for e in round_events(fed, "UpdateValued", round_id)}
    for i, s in enumerate(sites):
        if s in cartel:
            continue
        honest = [vectors[v][i] for v in sites if v not in cartel and v != s]
        assert min(honest) <= valued[s]["score"] <= max(honest), (s, honest)  # type: ignore[operator]
    assert valued[sites[target]]["reason"] == Reason.OK
    honest_reps = [fed.ledger.validator_standing(v).reputation for v in sites if v not in cartel]
    cartel_reps = [fed.ledger.validator_standing(v).reputation for v in cartel]
    assert max(cartel_reps) < min(honest_reps)


def test_anyone_may_record_and_the_aggregator_finalizes(fed: Fed) -> None:
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b], [10, 20])
    votes = fed.score(round_id, {b.address: [400_000, 0], c.address: [600_000, 300_000]})
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(a, round_id, sites, votes)  # a validator that did not vote
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    with expect(Unauthorized, "NotAggregator", caller=a.address):
        fed.ledger.finalize_round(
            a, round_id, global_cid=CID, global_sha256=h("g1"), log_cid=CID, log_sha256=h("l")
        )
    fed.finalize(round_id, "g1")
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.record_peer_valuation(a, round_id, sites, votes)


def test_record_valuation_is_refused_on_a_peer_round(fed: Fed) -> None:
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, fed.sites, [100, 100, 100])
    with expect(RoundStateError, "PeerRound", round=round_id):
        fed.value(round_id, [500_000, 500_000, 500_000])


def test_valuation_waits_for_the_score_reveal_deadline_unless_every_validator_revealed(
    fed: Fed,
) -> None:
    a, b, c = fed.sites
    s0, s1 = sorted([a, b], key=lambda s: int(s.address, 16))
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [s0, s1], [10, 20])
    # vectors in site address order; each site's own entry (1) never counts
    votes = fed.score(round_id, {s0.address: [1, 400_000], s1.address: [600_000, 1]})
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None
    with expect(
        RoundStateError,
        "RoundStillOpen",
        round=round_id,
        revealDeadline=peer.score_reveal_deadline,
    ):
        fed.ledger.record_peer_valuation(c, round_id, sites, votes)
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(c, round_id, sites, votes)
    valued = {e["site"]: e["score"] for e in round_events(fed, "UpdateValued", round_id)}
    assert valued == {s0.address: 600_000, s1.address: 400_000}


def test_cancel_waits_for_the_score_reveal_deadline(fed: Fed) -> None:
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, fed.sites[:1], [100])
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None
    # past the reveal deadline (fed.submit moved there) but not the score reveal deadline
    with expect(
        RoundStateError,
        "RoundStillOpen",
        round=round_id,
        revealDeadline=peer.score_reveal_deadline,
    ):
        fed.ledger.cancel_round(fed.agg, round_id)
    fed.past_score_commit(round_id)
    with expect(RoundStateError, "RoundStillOpen", round=round_id):
        fed.ledger.cancel_round(fed.agg, round_id)
    fed.past_score_reveal(round_id)
    fed.ledger.cancel_round(fed.agg, round_id)
    assert last_event(fed.ledger, "RoundCancelled") == {"round": round_id}
    assert fed.ledger.get_round(round_id).phase == Phase.CANCELLED


def test_quorum_not_met_is_refused_and_the_round_can_be_cancelled(fed: Fed) -> None:
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=3)
    sites = fed.submit(round_id, [a, b], [10, 20])
    fed.commit_scores(round_id, c, [500_000, 500_000])
    votes = fed.score(round_id, {a.address: [9, 400_000], b.address: [600_000, 9]})
    fed.past_score_reveal(round_id)  # c never revealed
    with expect(RoundStateError, "QuorumNotMet", round=round_id, votes=2, quorum=3):
        fed.ledger.record_peer_valuation(a, round_id, sites, votes)
    fed.ledger.cancel_round(fed.agg, round_id)
    assert fed.ledger.get_round(round_id).phase == Phase.CANCELLED
    # c committed and withheld its vector: the cancellation rates it, and only it
    rated = {e["validator"]: e for e in round_events(fed, "ValidatorRated", round_id)}
    assert {v: (e["distance"], e["validatorReputation"]) for v, e in rated.items()} == {
        c.address: (SCORE_SCALE, 0)
    }


def test_every_median_zero_is_refused_as_zero_total_weight(fed: Fed) -> None:
    a, b, c = fed.sites
    s0, s1 = sorted([a, b], key=lambda s: int(s.address, 16))
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [s0, s1], [10, 20])
    votes = fed.score(round_id, {s1.address: [0, 0], c.address: [0, 900_000]})
    fed.past_score_reveal(round_id)
    # s0: median(s1 0, c 0) = 0; s1: only c scored it (its own entry never counts) -> 900,000
    fed.ledger.record_peer_valuation(a, round_id, sites, votes)
    valued = {e["site"]: (e["score"], e["reason"]) for e in round_events(fed, "UpdateValued", 1)}
    assert valued == {s0.address: (0, Reason.PEER_REJECTED), s1.address: (900_000, Reason.OK)}
    fed.finalize(round_id, "g1")

    round2 = fed.open_peer(quorum=1, model="g1")
    sites = fed.submit(round2, [a, b], [10, 20])
    votes = fed.score(round2, {c.address: [0, 0]})
    fed.past_score_reveal(round2)
    with expect(InvalidValuation, "ZeroTotalWeight", round=round2):
        fed.ledger.record_peer_valuation(c, round2, sites, votes)


def test_a_supplied_median_other_than_the_high_median_is_refused(embedded: ChainEnv) -> None:
    """The caller supplies the medians and the contract counts. s0's jury gives 100k, 200k,
    300k, 400k (k = 4): only 300k has at most 2 entries below it and at least 3 at or below
    it; the low median, the mean, the next entry up and 0 are refused (WrongMedian), and so
    is 700k for s1, whose jury ties at 500k (500k, 500k, 500k, 700k). Nothing is stored until
    every median is right; then the events carry exactly the supplied medians."""
    fed = Fed(embedded, n_sites=5)
    s0, s1, s2, s3, s4 = sorted(fed.sites, key=lambda s: int(s.address, 16))
    round_id = fed.open_peer(quorum=5)
    sites = fed.submit(round_id, [s0, s1], [10, 20])
    votes = fed.score(
        round_id,
        {
            s0.address: [SCORE_SCALE, 500_000],
            s1.address: [100_000, SCORE_SCALE],
            s2.address: [400_000, 500_000],
            s3.address: [200_000, 700_000],
            s4.address: [300_000, 500_000],
        },
    )
    out = fed.env.outsider
    for wrong in (200_000, 250_000, 400_000, 0):
        with expect(
            InvalidValuation, "WrongMedian", round=round_id, site=s0.address, supplied=wrong
        ):
            fed.ledger.record_peer_valuation(out, round_id, sites, votes, medians=[wrong, 500_000])
    with expect(InvalidValuation, "WrongMedian", round=round_id, site=s1.address, supplied=700_000):
        fed.ledger.record_peer_valuation(out, round_id, sites, votes, medians=[300_000, 700_000])
    with expect(InvalidValuation, "MissingScores", round=round_id, expected=2, given=1):
        fed.ledger.record_peer_valuation(out, round_id, sites, votes, medians=[300_000])
    assert fed.ledger.get_round(round_id).phase == Phase.OPEN
    assert round_events(fed, "UpdateValued", round_id) == []
    assert fed.ledger.peer_medians(round_id, sites, votes) == [300_000, 500_000]
    fed.ledger.record_peer_valuation(out, round_id, sites, votes, medians=[300_000, 500_000])
    valued = {e["site"]: e for e in round_events(fed, "UpdateValued", round_id)}
    assert [valued[s]["score"] for s in sites] == [300_000, 500_000]
    assert [valued[s]["reason"] for s in sites] == [Reason.OK, Reason.OK]
    # distances against the checked medians: s3 |200k - 300k| and |700k - 500k| -> 150k
    rated = {e["validator"]: e["distance"] for e in round_events(fed, "ValidatorRated", round_id)}
    assert rated[s3.address] == 150_000
    assert rated[s0.address] == 0  # its own entry (full marks) never counts


def test_the_valuation_costs_the_same_whatever_the_vote_order(embedded: ChainEnv) -> None:
    """a25: every median is checked by counting, so entries that fall with the validators'
    addresses (each lower than every earlier one: the order that made the old per-site
    insertion sort shift every earlier entry, ~360 gas a shift, 105 shifts here) cost what
    equal entries do, up to the absolute-difference branch (a few gas an entry). Two fresh
    ledgers, 7 sites each submitting and validating every update."""
    gas = []
    for falling in (False, True):
        fed = Fed(embedded, n_sites=7)
        order = sorted(fed.sites, key=lambda s: int(s.address, 16))
        round_id = fed.open_peer(quorum=4)
        sites = fed.submit(round_id, order, [10] * 7)
        vectors = {
            v.address: [SCORE_SCALE - 1_000 * (rank + 1) if falling else SCORE_SCALE] * 7
            for rank, v in enumerate(order)
        }
        votes = fed.score(round_id, vectors)
        result = fed.ledger.record_peer_valuation(fed.env.outsider, round_id, sites, votes)
        gas.append(result.gas_used)
    assert abs(gas[1] - gas[0]) <= 20 * 7 * 7, gas


def test_a_site_no_other_validator_scored_takes_only_median_zero(fed: Fed) -> None:
    a, b, _ = sorted(fed.sites, key=lambda s: int(s.address, 16))
    round_id = fed.open_peer(quorum=1)
    sites = fed.submit(round_id, [a, b], [10, 20])
    votes = fed.score(round_id, {a.address: [SCORE_SCALE, 600_000]})
    fed.past_score_reveal(round_id)
    out = fed.env.outsider
    with expect(InvalidValuation, "WrongMedian", round=round_id, site=a.address, supplied=1):
        fed.ledger.record_peer_valuation(out, round_id, sites, votes, medians=[1, 600_000])
    fed.ledger.record_peer_valuation(out, round_id, sites, votes, medians=[0, 600_000])
    valued = {e["site"]: e for e in round_events(fed, "UpdateValued", round_id)}
    assert (valued[a.address]["score"], valued[a.address]["reason"]) == (0, Reason.PEER_REJECTED)
    assert (valued[b.address]["score"], valued[b.address]["reason"]) == (600_000, Reason.OK)


def test_record_peer_valuation_checks_sites_validators_and_vectors(fed: Fed) -> None:
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=1)
    order = sorted([a, b], key=lambda s: int(s.address, 16))
    sites = fed.submit(round_id, order, [10, 20])
    vectors = {a.address: [300_000, 500_000], b.address: [700_000, 200_000]}
    fed.commit_scores(round_id, c, [1, 1])  # commits, never reveals
    votes = fed.score(round_id, vectors)
    fed.past_score_reveal(round_id)
    validators = [v.validator for v in votes]
    vecs = [list(v.scores) for v in votes]
    out = fed.env.outsider
    with expect(InvalidValuation, "MissingScores", round=round_id, expected=2, given=1):
        raw_peer_valuation(fed, out, round_id, sites[:1], validators, vecs)
    with expect(InvalidValuation, "MissingVotes", round=round_id, expected=2, given=1):
        raw_peer_valuation(fed, out, round_id, sites, validators[:1], vecs)
    with expect(InvalidValuation, "MissingVotes", round=round_id, expected=2, given=1):
        raw_peer_valuation(fed, out, round_id, sites, validators, vecs[:1])
    with expect(InvalidValuation, "ValidatorsNotSorted", index=1):
        raw_peer_valuation(fed, out, round_id, sites, validators[::-1], vecs[::-1])
    tampered = [vecs[0], [vecs[1][0], vecs[1][1] + 1]]
    with expect(InvalidValuation, "VoteMismatch", round=round_id, validator=validators[1]):
        raw_peer_valuation(fed, out, round_id, sites, validators, tampered)
    # a validator that committed but never revealed cannot stand in for one that did
    swapped = by_address([validators[0], c.address])
    with expect(InvalidValuation, "VoteMismatch", round=round_id):
        raw_peer_valuation(fed, out, round_id, sites, swapped, [[1, 1], [1, 1]])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        raw_peer_valuation(fed, out, round_id, sites[::-1], validators, vecs)
    with expect(InvalidValuation, "NotRevealed", round=round_id, site=c.address):
        raw_peer_valuation(fed, out, round_id, by_address([sites[0], c.address]), validators, vecs)
    # the withheld list names exactly the validators that committed and did not reveal (c)
    with expect(InvalidValuation, "MissingVotes", round=round_id, expected=1, given=0):
        raw_peer_valuation(fed, out, round_id, sites, validators, vecs, [])
    with expect(InvalidValuation, "MissingVotes", round=round_id, expected=1, given=2):
        raw_peer_valuation(fed, out, round_id, sites, validators, vecs, [c.address, c.address])
    with expect(InvalidValuation, "VoteMismatch", round=round_id, validator=validators[0]):
        raw_peer_valuation(fed, out, round_id, sites, validators, vecs, [validators[0]])
    never = fed.env.outsider.address  # committed nothing
    with expect(InvalidValuation, "VoteMismatch", round=round_id, validator=never):
        raw_peer_valuation(fed, out, round_id, sites, validators, vecs, [never])
    raw_peer_valuation(fed, out, round_id, sites, validators, vecs, [c.address])
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    # c is rated at the largest distance (agreement 0): its first rating sets its reputation 0
    rated = {e["validator"]: e for e in round_events(fed, "ValidatorRated", round_id)}
    assert (rated[c.address]["distance"], rated[c.address]["validatorReputation"]) == (
        SCORE_SCALE,
        0,
    )
    assert list(rated)[-1] == c.address  # after the validators that revealed
    standing = fed.ledger.validator_standing(c.address)
    assert (standing.reputation, standing.rated_rounds) == (0, 1)


def test_withheld_validators_must_be_listed_in_ascending_order(embedded: ChainEnv) -> None:
    fed = Fed(embedded, n_sites=4)
    a, b, c, d = sorted(fed.sites, key=lambda s: int(s.address, 16))
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b], [10, 20])
    fed.commit_scores(round_id, c, [1, 1])
    fed.commit_scores(round_id, d, [1, 1])
    votes = fed.score(round_id, {a.address: [0, S2], b.address: [S2, 0]})
    fed.past_score_reveal(round_id)
    validators, vecs = [v.validator for v in votes], [list(v.scores) for v in votes]
    out = fed.env.outsider
    with expect(InvalidValuation, "ValidatorsNotSorted", index=1):
        raw_peer_valuation(fed, out, round_id, sites, validators, vecs, [d.address, c.address])
    assert fed.ledger.peer_withheld(round_id) == [c.address, d.address]
    fed.ledger.record_peer_valuation(out, round_id, sites, votes)  # the client reads the list
    rated = {e["validator"]: e["distance"] for e in round_events(fed, "ValidatorRated", round_id)}
    assert rated == {a.address: 0, b.address: 0, c.address: SCORE_SCALE, d.address: SCORE_SCALE}


def test_a_validator_below_the_reputation_gate_is_left_out_of_the_medians(
    embedded: ChainEnv,
) -> None:
    """Round 1: d scores every update 0 where the others give full marks (distance SCORE_SCALE:
    reputation 0). Round 2 (quorum 4: only three validators pass the gate, a majority below the
    quorum): the round cannot be valued (GateUndecided; before, all four counted and d's 0 made
    b's median 400k), nobody is rated, and the aggregator cancels it. Round 3 (quorum 3): the
    three pass, d is left out, b's median is the higher of 400k and 600k; d is still rated."""
    fed = Fed(embedded, n_sites=4)
    alpha = fed.ledger.reputation_alpha()
    a, b, c, d = sorted(fed.sites, key=lambda s: int(s.address, 16))
    full = SCORE_SCALE
    r1 = fed.open_peer(quorum=3)
    sites = fed.submit(r1, [a, b, c], [10, 20, 30])
    votes = fed.score(
        r1,
        {
            a.address: [0, full, full],
            b.address: [full, 0, full],
            c.address: [full, full, 0],
            d.address: [0, 0, 0],
        },
    )
    fed.ledger.record_peer_valuation(fed.env.outsider, r1, sites, votes)
    fed.finalize(r1, "g1")
    assert fed.ledger.validator_standing(d.address).reputation == 0 < REPUTATION_GATE

    second = {
        a.address: [0, 400_000, full],
        b.address: [full, 0, full],
        c.address: [full, 600_000, 0],
        d.address: [full, 0, full],
    }
    r2 = fed.open_peer(quorum=4, model="g1")
    sites = fed.submit(r2, [a, b, c], [10, 20, 30])
    votes = fed.score(r2, second)
    fed.past_score_reveal(r2)
    with expect(RoundStateError, "GateUndecided", round=r2, passed=3, votes=4, quorum=4):
        fed.ledger.record_peer_valuation(fed.env.outsider, r2, sites, votes)
    assert round_events(fed, "UpdateValued", r2) == []
    assert round_events(fed, "ValidatorRated", r2) == []
    fed.ledger.cancel_round(fed.agg, r2)

    r3 = fed.open_peer(quorum=3, model="g1")
    sites = fed.submit(r3, [a, b, c], [10, 20, 30])
    votes = fed.score(r3, second)
    # the medians with d counted (no gate: everyone unrated) are refused: the check gates too
    ungated = peer_outcome(sites, votes, standing={}, quorum=3).scores
    assert ungated[1] == 400_000
    with expect(InvalidValuation, "WrongMedian", round=r3, site=b.address, supplied=400_000):
        fed.ledger.record_peer_valuation(fed.env.outsider, r3, sites, votes, medians=ungated)
    fed.ledger.record_peer_valuation(fed.env.outsider, r3, sites, votes)
    valued = {e["site"]: e["score"] for e in round_events(fed, "UpdateValued", r3)}
    assert valued[b.address] == 600_000  # d left out: b's jury is a (400k) and c (600k)
    rated = {e["validator"]: e["distance"] for e in round_events(fed, "ValidatorRated", r3)}
    assert rated[d.address] == 200_000  # |0 - 600k| / 3: still rated, against the gated medians
    rep = fed.ledger.validator_standing(d.address).reputation
    assert rep == next_validator_reputation(0, full - 200_000, rated_rounds=1, alpha=alpha)
    assert rep < REPUTATION_GATE
    # the Python rule says the same from the standing round 2 left
    expected = peer_outcome(
        sites, votes, standing=fed.ledger.validator_ratings_before(r3), quorum=3
    )
    assert expected.counted == (a.address, b.address, c.address)
    assert expected.scores == tuple(valued[s] for s in sites)


def test_aggregator_rounds_are_unchanged_around_peer_rounds(fed: Fed) -> None:
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=1)
    sites = fed.submit(round_id, [a, b, c], [10, 20, 30])
    votes = fed.score(round_id, {a.address: [500_000, 500_000, 500_000]})
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(a, round_id, sites, votes)
    fed.finalize(round_id, "g1")
    before = fed.ledger.validator_standing(a.address)

    round2 = fed.open("g1")
    fed.submit_all(round2, [10, 20, 30])
    fed.past_reveal(round2)
    fed.ledger.record_valuation(
        fed.agg,
        round2,
        [
            Valuation(site=a.address, score=100_000, reason=Reason.OK),
            Valuation(site=b.address, score=0, reason=Reason.LOW_GAIN),
            Valuation(site=c.address, score=300_000, reason=Reason.OK),
        ],
    )
    assert fed.ledger.get_round(round2).phase == Phase.VALUED
    assert round_events(fed, "ValidatorRated", round2) == []
    assert fed.ledger.validator_standing(a.address) == before
    # an aggregator still never posts PeerRejected
    fed.finalize(round2, "g2")
    round3 = fed.open("g2")
    fed.submit_all(round3)
    fed.past_reveal(round3)
    with expect(InvalidValuation, "InvalidReason", reason=int(Reason.PEER_REJECTED)):
        fed.raw_valuation(
            round3,
            by_address([s.address for s in fed.sites]),
            [0, 0, 0],
            [int(Reason.PEER_REJECTED)] * 3,
        )


def test_a_valued_peer_round_can_be_cancelled_after_its_score_reveal_deadline(fed: Fed) -> None:
    """The exit from a valued peer round whose weighted update cannot be read back: the
    aggregator only, after the score reveal deadline; a valued aggregator round cannot."""
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b], [10, 20])
    votes = fed.score(round_id, {a.address: [0, S2], b.address: [S2, 0], c.address: [S2, S2]})
    fed.ledger.record_peer_valuation(c, round_id, sites, votes)  # every validator revealed
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    with expect(RoundStateError, "RoundStillOpen", round=round_id):
        fed.ledger.cancel_round(fed.agg, round_id)
    fed.past_score_reveal(round_id)
    with expect(Unauthorized, "NotAggregator", caller=a.address):
        fed.ledger.cancel_round(a, round_id)
    ratings = len(round_events(fed, "ValidatorRated", round_id))
    fed.ledger.cancel_round(fed.agg, round_id)
    assert fed.ledger.get_round(round_id).phase == Phase.CANCELLED
    assert last_event(fed.ledger, "RoundCancelled") == {"round": round_id}
    assert len(round_events(fed, "ValidatorRated", round_id)) == ratings  # rated once, valued
    kept = {s.site: (s.score, s.weight) for s in fed.ledger.get_submissions(round_id)}
    assert all(w > 0 for _, w in kept.values())  # the recorded valuation stays readable
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.cancel_round(fed.agg, round_id)

    aggregator_round = fed.open("g0")
    fed.submit_all(aggregator_round)
    fed.past_reveal(aggregator_round)
    fed.value(aggregator_round, [S2, S2, S2])
    with expect(RoundStateError, "WrongPhase", round=aggregator_round):
        fed.ledger.cancel_round(fed.agg, aggregator_round)


def _reputation(fed: Fed, site: str) -> int:
    info = fed.ledger.get_site(site)
    assert info is not None
    return info.reputation


def _valued_peer_round(fed: Fed) -> tuple[int, list[str]]:
    """A peer round of three updates, each weighted (samples 10 / 20 / 30 in address order),
    valued by all three validators before the score reveal deadline."""
    accounts = by_address([s.address for s in fed.sites])
    by_addr = accounts_by_address(fed)
    ordered = [by_addr[a] for a in accounts]
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, ordered, [10, 20, 30])
    votes = fed.score(
        round_id,
        {
            ordered[0].address: [S2, S2, SCORE_SCALE],
            ordered[1].address: [S2, S2, SCORE_SCALE],
            ordered[2].address: [S2, SCORE_SCALE, S2],
        },
    )
    fed.ledger.record_peer_valuation(ordered[0], round_id, sites, votes)
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    return round_id, sites


def test_drop_withheld_zeroes_the_dropped_updates_and_reweights_the_rest(fed: Fed) -> None:
    """dropWithheld: each dropped update gets score 0, reason Withheld and weight 0; the others
    keep their scores and take the weight by the weight rule over the scores left; one
    UpdateWithheld per dropped site and one UpdateReweighted per changed weight; the dropped
    site's reputation loses the round's credit, the others' and every rating stay; the round
    stays Valued and finalizes."""
    round_id, sites = _valued_peer_round(fed)
    valued = {s.site: s for s in fed.ledger.get_submissions(round_id)}
    reps = {s: _reputation(fed, s) for s in sites}
    ratings = round_events(fed, "ValidatorRated", round_id)
    fed.past_score_reveal(round_id)
    gone = sites[2]
    fed.ledger.drop_withheld(fed.agg, round_id, sites, [gone])
    after = {s.site: s for s in fed.ledger.get_submissions(round_id)}
    assert (after[gone].score, after[gone].reason, after[gone].weight) == (0, Reason.WITHHELD, 0)
    kept = [s for s in sites if s != gone]
    scores = [valued[s].score if s != gone else 0 for s in sites]
    want = onchain_weights([valued[s].num_samples for s in sites], scores)
    assert [after[s].weight for s in sites] == want
    assert all(after[s].score == valued[s].score for s in kept)
    assert sum(want) == 10**18 and want[2] == 0
    # its reputation loses this round's credit: its first valued round, so it falls to 0
    assert round_events(fed, "UpdateWithheld", round_id) == [
        {"round": round_id, "site": gone, "reputation": 0}
    ]
    assert _reputation(fed, gone) == 0
    # every weight that changed, the dropped one's included, is stated; nothing is re-valued
    assert round_events(fed, "UpdateReweighted", round_id) == [
        {"round": round_id, "site": s, "weight": after[s].weight}
        for s in sites
        if after[s].weight != valued[s].weight
    ]
    assert len(round_events(fed, "UpdateReweighted", round_id)) == 3
    assert len(round_events(fed, "UpdateValued", round_id)) == 3
    assert len(round_events(fed, "RoundValued", round_id)) == 1
    assert round_events(fed, "ValidatorRated", round_id) == ratings
    assert {s: _reputation(fed, s) for s in kept} == {s: reps[s] for s in kept}
    assert fed.ledger.peer_dropped(round_id) == [gone]
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    fed.finalize(round_id, "g1")
    assert fed.ledger.get_round(round_id).phase == Phase.FINALIZED


def test_drop_withheld_refuses_what_the_contract_requires(fed: Fed) -> None:
    """Every requirement of dropWithheld, each with its custom error."""
    round_id, sites = _valued_peer_round(fed)
    with expect(RoundStateError, "RoundStillOpen", round=round_id):
        fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[0]])
    fed.past_score_reveal(round_id)
    site0 = accounts_by_address(fed)[sites[0]]
    with expect(Unauthorized, "NotAggregator", caller=site0.address):
        fed.ledger.drop_withheld(site0, round_id, sites, [sites[0]])

    def raw(listed: list[str], dropped: list[str]) -> None:
        fed.ledger._transact(fed.agg, fed.ledger._fn.dropWithheld(round_id, listed, dropped))

    with expect(InvalidArgument, "InvalidParameter", what="dropped"):
        raw(sites, [])
    with expect(InvalidValuation, "MissingScores", round=round_id):
        raw(sites[:2], [sites[0]])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        raw(sites, [sites[1], sites[0]])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        raw([sites[1], sites[0], sites[2]], [sites[2]])
    # the right number of sites, one of them without an update in the round (the re-weighting
    # tells it by the sample count its submission slot holds, 0)
    with expect(InvalidValuation, "NotRevealed", round=round_id, site=fed.coord.address):
        raw(by_address([sites[0], sites[1], fed.coord.address]), [sites[0]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=fed.coord.address):
        raw(sites, [fed.coord.address])
    with expect(InvalidValuation, "ZeroTotalWeight", round=round_id):
        raw(sites, sites)
    fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[0]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=sites[0]):
        fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[0]])
    # the last weighted updates cannot all go: the aggregator cancels instead
    with expect(InvalidValuation, "ZeroTotalWeight", round=round_id):
        fed.ledger.drop_withheld(fed.agg, round_id, sites, sites[1:])
    fed.ledger.cancel_round(fed.agg, round_id)
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[1]])

    aggregator_round = fed.open("g0")
    fed.submit_all(aggregator_round)
    fed.past_reveal(aggregator_round)
    fed.value(aggregator_round, [S2, S2, S2])
    everyone = by_address([s.address for s in fed.sites])
    with expect(RoundStateError, "NotPeerRound", round=aggregator_round):
        fed.ledger.drop_withheld(fed.agg, aggregator_round, everyone, [everyone[0]])
    with expect(RoundStateError, "UnknownRound", round=99):
        fed.ledger.drop_withheld(fed.agg, 99, everyone, [everyone[0]])


def test_drop_screened_zeroes_the_marked_updates_and_reweights_the_rest(fed: Fed) -> None:
    """dropScreened (round terms ``valuation.public_screen``): each dropped update gets score 0,
    reason FreeRider and weight 0, before the score reveal deadline too; the others keep their
    scores and take the weight by the weight rule over the scores left; one UpdateScreened per
    dropped site (no UpdateWithheld) and one UpdateReweighted per changed weight; the dropped
    site's reputation loses the round's credit, the others' and every rating stay; the round
    stays Valued and finalizes."""
    round_id, sites = _valued_peer_round(fed)
    valued = {s.site: s for s in fed.ledger.get_submissions(round_id)}
    reps = {s: _reputation(fed, s) for s in sites}
    ratings = round_events(fed, "ValidatorRated", round_id)
    gone = sites[1]
    fed.ledger.drop_screened(fed.agg, round_id, sites, [gone])  # no deadline to wait for
    after = {s.site: s for s in fed.ledger.get_submissions(round_id)}
    assert (after[gone].score, after[gone].reason, after[gone].weight) == (0, Reason.FREE_RIDER, 0)
    kept = [s for s in sites if s != gone]
    scores = [valued[s].score if s != gone else 0 for s in sites]
    want = onchain_weights([valued[s].num_samples for s in sites], scores)
    assert [after[s].weight for s in sites] == want
    assert all(after[s].score == valued[s].score for s in kept)
    assert sum(want) == 10**18 and want[1] == 0
    assert round_events(fed, "UpdateScreened", round_id) == [
        {"round": round_id, "site": gone, "reputation": 0}
    ]
    assert round_events(fed, "UpdateWithheld", round_id) == []
    assert _reputation(fed, gone) == 0
    assert round_events(fed, "UpdateReweighted", round_id) == [
        {"round": round_id, "site": s, "weight": after[s].weight}
        for s in sites
        if after[s].weight != valued[s].weight
    ]
    assert round_events(fed, "ValidatorRated", round_id) == ratings
    assert {s: _reputation(fed, s) for s in kept} == {s: reps[s] for s in kept}
    assert fed.ledger.peer_screened(round_id) == [gone]
    assert fed.ledger.peer_dropped(round_id) == []
    outcome = fed.ledger.peer_outcome(round_id)
    assert outcome.screened == (gone,) and outcome.scores == tuple(scores)
    assert outcome.reasons[1] is Reason.FREE_RIDER
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED
    fed.finalize(round_id, "g1")
    assert fed.ledger.get_round(round_id).phase == Phase.FINALIZED


def test_drop_screened_takes_back_a_later_rounds_credit_only(fed: Fed) -> None:
    """A site screened in its second valued round keeps the reputation its first left:
    ``reputation - floor(alpha * score / SCORE_SCALE)``, as dropWithheld's rule."""
    first, _ = _valued_peer_round(fed)
    fed.finalize(first, "g1")
    accounts = by_address([s.address for s in fed.sites])
    by_addr = accounts_by_address(fed)
    ordered = [by_addr[a] for a in accounts]
    before = {a: _reputation(fed, a) for a in accounts}
    round_id = fed.open_peer(quorum=2, model="g1")
    sites = fed.submit(round_id, ordered, [10, 20, 30])
    votes = fed.score(
        round_id,
        {
            ordered[0].address: [SCORE_SCALE] * 3,
            ordered[1].address: [SCORE_SCALE] * 3,
            ordered[2].address: [SCORE_SCALE] * 3,
        },
    )
    fed.ledger.record_peer_valuation(ordered[0], round_id, sites, votes)
    valued = {s.site: s for s in fed.ledger.get_submissions(round_id)}
    gone = sites[0]
    credited = _reputation(fed, gone)
    assert credited > before[gone] > 0  # its first round's S2, then this round's SCORE_SCALE
    alpha = fed.ledger.reputation_alpha()
    fed.ledger.drop_screened(fed.agg, round_id, sites, [gone])
    want = max(credited - alpha * valued[gone].score // SCORE_SCALE, 0)
    assert round_events(fed, "UpdateScreened", round_id) == [
        {"round": round_id, "site": gone, "reputation": want}
    ]
    assert _reputation(fed, gone) == want


def test_drop_screened_refuses_what_the_contract_requires(fed: Fed) -> None:
    """Every requirement of dropScreened, each with its custom error."""
    round_id, sites = _valued_peer_round(fed)
    site0 = accounts_by_address(fed)[sites[0]]
    with expect(Unauthorized, "NotAggregator", caller=site0.address):
        fed.ledger.drop_screened(site0, round_id, sites, [sites[0]])

    def raw(listed: list[str], dropped: list[str]) -> None:
        fed.ledger._transact(fed.agg, fed.ledger._fn.dropScreened(round_id, listed, dropped))

    with expect(InvalidArgument, "InvalidParameter", what="dropped"):
        raw(sites, [])
    with expect(InvalidValuation, "MissingScores", round=round_id):
        raw(sites[:2], [sites[0]])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        raw(sites, [sites[1], sites[0]])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        raw([sites[1], sites[0], sites[2]], [sites[2]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=fed.coord.address):
        raw(sites, [fed.coord.address])
    with expect(InvalidValuation, "ZeroTotalWeight", round=round_id):
        raw(sites, sites)
    fed.ledger.drop_screened(fed.agg, round_id, sites, [sites[0]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=sites[0]):
        fed.ledger.drop_screened(fed.agg, round_id, sites, [sites[0]])
    # a screened update cannot be dropped again as withheld, nor the reverse
    fed.past_score_reveal(round_id)
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=sites[0]):
        fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[0]])
    fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[1]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=sites[1]):
        fed.ledger.drop_screened(fed.agg, round_id, sites, [sites[1]])
    with expect(InvalidValuation, "ZeroTotalWeight", round=round_id):
        fed.ledger.drop_screened(fed.agg, round_id, sites, sites[2:])
    fed.ledger.cancel_round(fed.agg, round_id)
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.drop_screened(fed.agg, round_id, sites, [sites[2]])

    aggregator_round = fed.open("g0")
    fed.submit_all(aggregator_round)
    fed.past_reveal(aggregator_round)
    fed.value(aggregator_round, [S2, S2, S2])
    everyone = by_address([s.address for s in fed.sites])
    with expect(RoundStateError, "NotPeerRound", round=aggregator_round):
        fed.ledger.drop_screened(fed.agg, aggregator_round, everyone, [everyone[0]])
    with expect(RoundStateError, "UnknownRound", round=99):
        fed.ledger.drop_screened(fed.agg, 99, everyone, [everyone[0]])


def test_an_aggregator_can_never_post_withheld(fed: Fed) -> None:
    """Withheld is posted by dropWithheld only: recordValuation refuses it."""
    round_id = fed.open("g0")
    fed.submit_all(round_id)
    fed.past_reveal(round_id)
    with expect(InvalidValuation, "InvalidReason", reason=int(Reason.WITHHELD)):
        fed.raw_valuation(
            round_id,
            by_address([s.address for s in fed.sites]),
            [0, 0, 0],
            [int(Reason.WITHHELD)] * 3,
        )


def test_after_a_drop_and_the_finalize_nothing_can_cancel_or_drop_again(fed: Fed) -> None:
    """Drop and cancel interleaved the other way (attack review): once a valued peer round with
    a drop is finalized, neither cancelRound nor dropWithheld reaches it, and the drop's
    weights are the ones the round finalized with."""
    round_id, sites = _valued_peer_round(fed)
    fed.past_score_reveal(round_id)
    fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[2]])
    weights = [s.weight for s in fed.ledger.get_submissions(round_id)]
    fed.finalize(round_id, "g1")
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.cancel_round(fed.agg, round_id)
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[0]])
    assert [s.weight for s in fed.ledger.get_submissions(round_id)] == weights
    assert fed.ledger.get_round(round_id).phase == Phase.FINALIZED


def test_a_dropped_site_loses_the_credit_of_the_round_it_withheld(fed: Fed) -> None:
    """A site valued before: dropping its update takes back the credit the round's median
    gave its reputation (alpha * median, floored), as fedtrail.protocol.weights says."""
    round1, sites = _valued_peer_round(fed)
    fed.past_score_reveal(round1)
    fed.finalize(round1, "g1")
    accounts = accounts_by_address(fed)
    ordered = [accounts[a] for a in sites]
    round2 = fed.open_peer(quorum=2, model="g1")
    assert fed.submit(round2, ordered, [10, 20, 30]) == sites
    votes = fed.score(
        round2,
        {
            ordered[0].address: [S2, S2, 700_000],
            ordered[1].address: [S2, S2, 700_000],
            ordered[2].address: [S2, SCORE_SCALE, S2],
        },
    )
    before = _reputation(fed, sites[2])
    fed.ledger.record_peer_valuation(ordered[0], round2, sites, votes)
    valued = {s.site: s for s in fed.ledger.get_submissions(round2)}
    after_valuation = _reputation(fed, sites[2])
    assert after_valuation != before and valued[sites[2]].score == 700_000
    fed.past_score_reveal(round2)
    fed.ledger.drop_withheld(fed.agg, round2, sites, [sites[2]])
    alpha = fed.ledger.reputation_alpha()
    want = withheld_reputation(after_valuation, 700_000, valued_rounds=2, alpha=alpha)
    assert want == after_valuation - alpha * 700_000 // SCORE_SCALE > 0
    assert _reputation(fed, sites[2]) == want
    assert last_event(fed.ledger, "UpdateWithheld") == {
        "round": round2,
        "site": sites[2],
        "reputation": want,
    }


def _commit_words(fed: Fed, validator: LocalAccount, round_id: int, words: list[int]) -> None:
    """Commits to ``words`` (32-byte entries of a ``uint32[]``, as given: high bits and all):
    ``keccak256(abi.encode(validator, round, scores, salt))`` over exactly those bytes."""
    salt = fed.salt(validator, round_id)
    body = b"".join(w.to_bytes(32, "big") for w in [len(words), *words])
    opened = (
        (bytes(12) + bytes.fromhex(validator.address[2:]) + round_id.to_bytes(32, "big"))
        + (0x80).to_bytes(32, "big")
        + salt
        + body
    )
    fed.ledger.commit_scores(validator, round_id, keccak(opened).hex())


def _send_reveal(fed: Fed, validator: LocalAccount, round_id: int, words: list[int]) -> int:
    """Reveals ``words`` with calldata holding exactly them, as a hostile client can; the
    receipt's status (a fixed gas limit: a reverting reveal is mined, not estimated)."""
    selector = keccak(text="revealScores(uint256,uint32[],bytes32)")[:4]
    head = round_id.to_bytes(32, "big") + (0x60).to_bytes(32, "big") + fed.salt(validator, round_id)
    body = b"".join(w.to_bytes(32, "big") for w in [len(words), *words])
    w3 = fed.w3
    tx = {
        "to": fed.ledger.address,
        "data": "0x" + (selector + head + body).hex(),
        "gas": 300_000,
        "gasPrice": int(w3.eth.gas_price),
        "nonce": int(w3.eth.get_transaction_count(validator.address)),
        "chainId": int(w3.eth.chain_id),
        "value": 0,
    }
    tx_hash = w3.eth.send_raw_transaction(validator.sign_transaction(tx).raw_transaction)
    return int(w3.eth.wait_for_transaction_receipt(tx_hash)["status"])


def test_a_score_reveal_with_dirty_high_bits_reverts_even_when_its_bytes_were_committed(
    fed: Fed,
) -> None:
    """h-261 moved revealScores' range check into assembly over the copied words (the
    commitment is hashed from those same words). Attack: a validator commits to the exact
    bytes of a vector whose entry 5 has bits above the uint32 set (2**32 + 5: a uint32 of 5 to
    an ABI decoder that masks) and reveals those bytes. It must revert, as reading the entry
    through the ABI decoder does: stored, it would be a vote hash no clean vector matches. The
    same path with clean words is accepted, and its event is the ABI encoding, byte for byte,
    at the range's ends (0 and SCORE_SCALE)."""
    a, b, c = fed.sites
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, [a, b], [100, 200])
    dirty = [2**32 + 5, SCORE_SCALE]
    clean = [SCORE_SCALE, 0]
    _commit_words(fed, c, round_id, dirty)
    _commit_words(fed, a, round_id, clean)
    fed.past_score_commit(round_id)
    assert _send_reveal(fed, c, round_id, dirty) == 0
    assert not fed.ledger.score_vote(round_id, c.address)[1]
    assert _send_reveal(fed, a, round_id, clean) == 1
    assert fed.ledger.score_vote(round_id, a.address) == (
        score_vote_hash(round_id, a.address, clean),
        True,
    )
    logs = fed.w3.eth.get_logs(
        {
            "address": fed.ledger.address,
            "fromBlock": 0,
            "topics": [keccak(text="ScoresRevealed(uint256,address,uint32[])")],
        }
    )
    assert len(logs) == 1
    log = logs[0]
    assert [bytes(t) for t in log["topics"][1:]] == [
        round_id.to_bytes(32, "big"),
        bytes(12) + bytes.fromhex(a.address[2:]),
    ]
    assert bytes(log["data"]) == abi_encode(["uint32[]"], [clean])
