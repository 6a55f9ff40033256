"""The peer-round checks of ``audit verify`` on hand-built chain records: an honest round passes
every check, and each kind of lie fails the check that names it. The medians, distances and
reputations below are worked out by hand from the rule in fedtrail.protocol.peers."""

from __future__ import annotations

import dataclasses

import pytest
from eth_utils.crypto import keccak

from fedtrail.auditor.peers import (
    CANCELLED,
    MEDIAN,
    QUORUM,
    REPUTATION,
    VOTES,
    WITHHELD,
    PeerRecord,
    check_cancelled,
    check_median,
    check_quorum,
    check_reputation,
    check_votes,
    check_withheld,
    peer_table,
    vote_hash,
)
from fedtrail.ledger import Submission, checksum
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import (
    InvalidVotes,
    PeerVote,
    address_key,
    peer_explanation,
)
from fedtrail.protocol.roundlog import SiteEntry, UpdateRef
from fedtrail.protocol.terms import RoundTerms
from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights

ROUND = 3
A, B, C, D = (checksum(f"0x{i:040x}") for i in (0xA1, 0xB2, 0xC3, 0xD4))
SAMPLES = {A: 100, B: 200, C: 300}
VECTORS = {  # entries for A, B, C; each site's own entry is 0 (never counted)
    A: (0, 600, 300),
    B: (500, 0, 400),
    C: (700, 800, 0),
    D: (100, 700, 350),  # registered, no update of its own: scores all three
}
MEDIANS = {A: 500, B: 700, C: 350}  # A: med(500,700,100); B: med(600,800,700); C: med(300,400,350)
DISTANCES = {A: 75, B: 25, C: 150, D: 133}  # floor(mean |entry - median|) over the others
ALPHA = 300_000
BEFORE = {A: (900_000, 2)}  # A was rated twice before; the others never
REPUTATIONS = {  # A rises: (0.075 * 999_925 + 0.925 * 900_000) floored; first ratings set it
    A: 907_494,
    B: 999_975,
    C: 999_850,
    D: 999_867,
}


def votes() -> tuple[PeerVote, ...]:
    return tuple(PeerVote(validator=v, scores=s) for v, s in VECTORS.items())


def record(**changes: object) -> PeerRecord:
    base = PeerRecord(
        round=ROUND,
        quorum=3,
        commit_count=4,
        vote_count=4,
        reveal_deadline=1_000,
        score_commit_deadline=1_600,
        score_reveal_deadline=2_500,
        votes=tuple(reversed(votes())),  # events in reveal order, not address order
        stored={v: vote_hash(ROUND, v, s) for v, s in VECTORS.items()},
        rated={v: (DISTANCES[v], REPUTATIONS[v]) for v in VECTORS},
        before=BEFORE,
        standing={v: (REPUTATIONS[v], BEFORE.get(v, (0, 0))[1] + 1) for v in VECTORS},
        alpha=ALPHA,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def subs(scores: dict[str, int] | None = None) -> list[Submission]:
    scores = scores or MEDIANS
    weights = onchain_weights([SAMPLES[s] for s in (A, B, C)], [scores[s] for s in (A, B, C)])
    return [
        Submission(
            round=ROUND,
            site=s,
            cid=f"cid-{s[-2:]}",
            sha256="ab" * 32,
            num_samples=SAMPLES[s],
            score=scores[s],
            reason=int(Reason.OK if scores[s] else Reason.PEER_REJECTED),
            weight=w,
            commitment="0x" + "00" * 32,
            commit_order=i + 1,
            revealed=True,
        )
        for i, (s, w) in enumerate(zip((A, B, C), weights, strict=True))
    ]


def entries(chain: list[Submission], rec: PeerRecord | None = None) -> list[SiteEntry]:
    """The log entries an aggregator writes for ``chain`` under ``rec``'s votes (default
    :func:`record`): the explanation is the sentence they give (``peers.median`` compares it;
    none where the votes give no outcome)."""
    rec = rec or record()
    withheld = {s.site for s in chain if s.reason == Reason.WITHHELD}
    said: dict[int, str] = {}
    try:
        outcome = rec.outcome(sorted((s.site for s in chain), key=address_key))
    except InvalidVotes:
        outcome = None
    if outcome is not None:
        gated = len(rec.votes) - len(outcome.counted)
        said = {
            address_key(site): peer_explanation(
                count=count, median=median, gated=gated, withheld=site in withheld
            )
            for site, median, count in zip(
                outcome.sites, outcome.peer_medians, outcome.peer_counts, strict=True
            )
        }
    return [
        SiteEntry.of(
            site=s.site,
            name="",
            update=UpdateRef(s.cid, s.sha256, s.num_samples),
            status=Reason.OK,
            score=s.score,
            reason=s.reason,
            weight=s.weight,
            components={},
            explanation=said.get(address_key(s.site)),
        )
        for s in chain
    ]


def terms(**windows: int) -> RoundTerms:
    return RoundTerms(
        round=ROUND,
        aggregation_rule={"name": "fedavg"},
        valuation={"method": "loo", "metric": "auc", "mode": "peers", "quorum": 3},
        model_spec={},
        spec_hash="cd" * 32,
        seed=0,
        validation_sha256="ef" * 32,
        validation_images=0,
        commit_seconds=60,
        reveal_seconds=60,
        score_commit_seconds=windows.get("commit", 600),
        score_reveal_seconds=windows.get("reveal", 900),
    )


def test_vote_hash_is_keccak_of_the_abi_encoding_the_contract_stores() -> None:
    """abi.encode(uint256, address, uint32[]): three head words (the array as an offset), then
    the array's length and its entries, each a 32-byte big-endian word."""

    def word(x: int) -> bytes:
        return x.to_bytes(32, "big")

    scores = (0, 600, 300)
    encoded = word(ROUND) + word(int(A, 16)) + word(96) + word(3) + b"".join(map(word, scores))
    assert vote_hash(ROUND, A, scores) == keccak(encoded).hex()
    assert vote_hash(ROUND, A, scores) != vote_hash(ROUND + 1, A, scores)


def test_an_honest_peer_round_passes_every_check() -> None:
    rec, chain = record(), subs()
    log_votes = votes()  # ascending validator order, as the log writes them
    assert check_votes(rec, log_votes)[1], check_votes(rec, log_votes)[2]
    median, outcome = check_median(rec, chain, entries(chain, rec))
    assert median[0] == MEDIAN and median[1], median[2]
    assert outcome is not None and dict(zip(outcome.sites, outcome.scores, strict=True)) == MEDIANS
    quorum = check_quorum(rec, terms())
    assert quorum[0] == QUORUM and quorum[1], quorum[2]
    rep = check_reputation(rec, outcome)
    assert rep[0] == REPUTATION and rep[1], rep[2]


def test_log_votes_that_differ_from_the_chain_fail_peers_votes() -> None:
    rec = record()
    forged = list(votes())
    forged[1] = PeerVote(validator=B, scores=(0, 0, 400))
    name, ok, detail = check_votes(rec, forged)
    assert (name, ok) == (VOTES, False) and B[:10] in detail
    name, ok, detail = check_votes(rec, votes()[:3])  # a vote left out of the log
    assert not ok and "not the chain's" in detail
    assert not check_votes(rec, None)[1]  # no peers block at all


def test_a_revealed_vector_that_does_not_open_the_stored_hash_fails_peers_votes() -> None:
    tampered = tuple(
        PeerVote(validator=v.validator, scores=(999, 0, 400)) if v.validator == B else v
        for v in votes()
    )
    rec = record(votes=tampered)
    name, ok, detail = check_votes(rec, tampered)
    assert (name, ok) == (VOTES, False) and "does not hash to the stored vote" in detail
    name, ok, detail = check_votes(record(vote_count=5), votes())
    assert not ok and "the contract counts 5" in detail


def test_a_score_that_is_not_the_median_fails_peers_median() -> None:
    rec = record()
    honest = subs()
    lie = subs({**MEDIANS, B: 800})  # the chain (or the log) paying B more than its median
    name, ok, detail = check_median(rec, lie, entries(honest, rec))[0]
    assert (name, ok) == (MEDIAN, False) and f"chain {B[:10]} score 800" in detail
    name, ok, detail = check_median(rec, honest, entries(lie, rec))[0]
    assert not ok and f"log {B[:10]} score 800" in detail and "chain " not in detail


def test_log_weights_that_are_not_the_medians_weights_fail_peers_median() -> None:
    honest = subs()
    moved = [
        dataclasses.replace(e, weight=e.weight + (10**15 if i == 0 else -(10**15)))
        for i, e in enumerate(entries(honest))
    ]
    name, ok, detail = check_median(record(), honest, moved)[0]
    assert (name, ok) == (MEDIAN, False) and "log " in detail and "weight" in detail


def test_a_zero_median_is_peer_rejected() -> None:
    """A and B score C 0 (its own 900 never counts): median 0, PEER_REJECTED, weight 0."""
    vectors = {A: (0, 600, 0), B: (500, 0, 0), C: (700, 800, 900)}
    vs = tuple(PeerVote(validator=v, scores=s) for v, s in vectors.items())
    rec = record(
        votes=vs, vote_count=3, stored={v: vote_hash(ROUND, v, s) for v, s in vectors.items()}
    )
    chain = subs({A: 700, B: 800, C: 0})  # A: high median of 500, 700; B: of 600, 800
    assert chain[2].reason == Reason.PEER_REJECTED and chain[2].weight == 0
    check, _ = check_median(rec, chain, entries(chain, rec))
    assert check[1], check[2]
    ok_instead = [
        dataclasses.replace(s, reason=int(Reason.OK)) if s.site == C else s for s in chain
    ]
    assert not check_median(rec, ok_instead, entries(chain, rec))[0][1]


def test_peers_quorum_compares_the_chain_with_the_terms_and_counts_the_votes() -> None:
    assert not check_quorum(record(), terms(commit=601))[1]  # another score commit window
    name, ok, detail = check_quorum(record(quorum=5), terms())
    assert (name, ok) == (QUORUM, False)
    assert "quorum 3, the chain's 5" in detail and "fewer than the quorum 5" in detail
    assert not check_quorum(record(), None)[1]


@pytest.mark.parametrize("quorum", [3.0, True], ids=["float", "bool"])
def test_peers_quorum_refuses_a_quorum_of_another_json_type(quorum: object) -> None:
    """Every party reads the terms' quorum as an integer (ValuationSettings.from_json): 3.0 or
    true is no quorum, though Python's == takes it for the chain's 3 or 1."""
    typed = dataclasses.replace(terms(), valuation={**terms().valuation, "quorum": quorum})
    name, ok, detail = check_quorum(record(quorum=1 if quorum is True else 3), typed)
    assert (name, ok) == (QUORUM, False)
    assert "the terms' valuation block is invalid" in detail and "quorum" in detail


def test_validator_reputations_are_recomputed_from_the_earlier_ratings() -> None:
    rec = record()
    _, outcome = check_median(rec, subs(), None)
    assert not check_median(rec, subs(), None)[0][1]  # no log: the median check cannot pass
    wrong = dict(rec.rated)
    wrong[C] = (DISTANCES[C], REPUTATIONS[C] - 1)
    name, ok, detail = check_reputation(record(rated=wrong), outcome)
    assert (name, ok) == (REPUTATION, False) and C[:10] in detail
    # the EMA must start from A's earlier ratings: from scratch, A's rating is its agreement
    name, ok, detail = check_reputation(record(before={}), outcome)
    assert not ok and A[:10] in detail
    missing = {k: v for k, v in rec.rated.items() if k != D}
    assert "not rated" in check_reputation(record(rated=missing), outcome)[2]
    stale = {**rec.standing, B: (REPUTATIONS[B], 2)}
    assert "validator standing" in check_reputation(record(standing=stale), outcome)[2]


def test_the_report_table_marks_each_validators_own_column() -> None:
    table = peer_table(record(), subs())
    assert table is not None
    assert table.validators == (A, B, C, D) and table.own == (0, 1, 2, None)
    assert table.medians == tuple(MEDIANS[s] for s in (A, B, C))
    assert table.distances == tuple(DISTANCES[v] for v in (A, B, C, D))
    assert table.reputations == tuple(REPUTATIONS[v] for v in (A, B, C, D))
    doc = table.to_json()
    assert doc["validators"][3] == {
        "validator": D,
        "scores": [100, 700, 350],
        "self_index": None,
        "distance": 133,
        "validator_reputation": 999_867,
        "counted": True,
    }


# D below the reputation gate (rated once, 0.4): quorum 3, and A, B, C pass, so D is left out.
GATED_BEFORE = {**BEFORE, D: (400_000, 1)}
GATED_MEDIANS = {A: 700, B: 800, C: 400}  # A: med(500, 700); B: med(600, 800); C: med(300, 400)
GATED_DISTANCES = {A: 150, B: 100, C: 0, D: 250}  # D: (600 + 100 + 50) / 3


def test_a_validator_below_the_reputation_gate_is_not_counted_in_the_medians() -> None:
    rec = record(before=GATED_BEFORE)
    gated = subs(GATED_MEDIANS)
    (name, ok, detail), outcome = check_median(rec, gated, entries(gated, rec))
    assert (name, ok) == (MEDIAN, True), detail
    assert "3 of 4 revealed vector(s)" in detail and "1 below the reputation gate" in detail
    assert outcome is not None and dict(outcome.distances) == GATED_DISTANCES
    # a chain that counted D (the medians of all four) is not what the contract computes
    (name, ok, detail), _ = check_median(rec, subs(), entries(subs(), rec))
    assert (name, ok) == (MEDIAN, False) and "the median gives 700" in detail
    table = peer_table(rec, gated)
    assert table is not None and table.counted == (True, True, True, False)


def test_a_round_the_reputation_gate_cannot_decide_is_one_to_cancel_not_to_value() -> None:
    """Two of the four validators below the gate (exactly half), or one below it at quorum 4
    (three pass: a majority below the quorum): the contract refuses the valuation
    (GateUndecided), so ``peers.cancelled`` passes a cancellation and ``peers.median`` fails
    any valuation recorded from those votes. With one below the gate at quorum 3 the gate
    holds and the cancellation fails the check."""
    low = (400_000, 1)
    for rec in (
        record(before={**BEFORE, A: low, D: low}),
        record(before={**BEFORE, D: low}, quorum=4),
    ):
        name, ok, detail = check_cancelled(rec, subs())
        assert (name, ok) == (CANCELLED, True), detail
        assert "pass the reputation gate" in detail and "cannot be valued" in detail
        (name, ok, detail), outcome = check_median(rec, subs(), entries(subs(), rec))
        assert (name, ok, outcome) == (MEDIAN, False, None)
        assert "pass the reputation gate" in detail
    name, ok, detail = check_cancelled(record(before=GATED_BEFORE), subs(GATED_MEDIANS))
    assert (name, ok) == (CANCELLED, False), detail


def test_a_withheld_vector_must_be_rated_at_the_largest_distance() -> None:
    e = checksum(f"0x{0xE5:040x}")
    committed = (*VECTORS, e)  # E committed and never revealed
    rated = {v: (DISTANCES[v], REPUTATIONS[v]) for v in VECTORS}
    rec = record(committed=committed, commit_count=5, rated={**rated, e: (SCORE_SCALE, 0)})
    assert rec.withheld() == (e,)
    _, outcome = check_median(rec, subs(), entries(subs(), rec))
    assert outcome is not None and outcome.withheld == (e,)
    name, ok, detail = check_reputation(rec, outcome)
    assert (name, ok) == (REPUTATION, True), detail
    name, ok, detail = check_reputation(dataclasses.replace(rec, rated=rated), outcome)
    assert (name, ok) == (REPUTATION, False) and f"{e[:10]} not rated" in detail
    lenient = {**rated, e: (SCORE_SCALE // 2, SCORE_SCALE // 2)}
    name, ok, detail = check_reputation(dataclasses.replace(rec, rated=lenient), outcome)
    assert not ok and "recomputed 1000000 0" in detail


def test_a_check_that_does_not_apply_is_shown_na_never_passed() -> None:
    from fedtrail.auditor.report import Federation, render_html
    from fedtrail.auditor.verify import RoundAudit

    audit = RoundAudit(1)
    audit.add("weights", True, "ok")
    audit.not_applicable("scores.recomputed", "peer round")
    na = audit.checks[1]
    assert (na.status, na.passed, na.failed) == ("N/A", False, False)
    assert audit.passed  # a check that does not apply does not fail the round
    audit.add("peers.median", False, "lie")
    assert not audit.passed
    fed = Federation(
        address=A,
        chain_id=1,
        block=1,
        coordinator=A,
        aggregator=A,
        sites=[],
        rounds=[],
        reputation={},
        audits=[audit],
    )
    page = render_html(fed)
    assert '<span class="badge na">N/A</span>' in page
    assert "Verification FAILED: 1 of 2 checks failed (round 1: peers.median)" in page
    assert "1 check(s) not applicable" in page


def test_peer_terms_on_an_aggregator_round_fail_peers_quorum() -> None:
    """Terms (or a log) that say the sites scored a round the chain holds as an aggregator
    round: the round is checked as a peer round, and ``peers.quorum`` names the disagreement;
    with no side saying peers it is an aggregator round (no peer check at all)."""
    from fedtrail.auditor.verify import RoundAudit, _check_peers, _is_peer_round

    peer_terms = terms()
    assert _is_peer_round(None, peer_terms, None)
    assert not _is_peer_round(None, None, None)
    audit = RoundAudit(ROUND)
    _check_peers(audit, None, peer_terms, None, subs())
    assert [(c.name, c.status) for c in audit.checks] == [(QUORUM, "FAIL")]
    assert "aggregator round" in audit.checks[0].detail


def _dropped_chain(site: str) -> list[Submission]:
    """The chain after dropWithheld dropped ``site``: score 0, reason WITHHELD, the others
    re-weighted over the medians left."""
    scores = {**MEDIANS, site: 0}
    return [
        dataclasses.replace(s, reason=int(Reason.WITHHELD)) if s.site == site else s
        for s in subs(scores)
    ]


def test_a_dropped_update_is_recomputed_from_the_drop_events() -> None:
    """peers.median over a round with a drop: the chain's score 0 / WITHHELD / weight 0 for the
    dropped update and the re-derived weights of the others pass when the record lists the
    drop (UpdateWithheld), and fail when it does not (the chain would then be paying B
    nothing against its median)."""
    chain = _dropped_chain(B)
    logged = entries(chain)
    logged = [
        dataclasses.replace(e, components={"peer_median": MEDIANS[e.site], "peer_count": 3})
        for e in logged
    ]
    name, ok, detail = check_median(record(dropped=(B,)), chain, logged)[0]
    assert (name, ok) == (MEDIAN, True), detail
    name, ok, detail = check_median(record(), chain, logged)[0]
    assert not ok and f"chain {B[:10]} score 0" in detail
    # the dropped update's logged median is the peers' median, not 0
    wrong = [
        dataclasses.replace(e, components={"peer_median": 0, "peer_count": 3}) if e.site == B else e
        for e in logged
    ]
    name, ok, detail = check_median(record(dropped=(B,)), chain, wrong)[0]
    assert not ok and "peer_median 0" in detail


def test_peers_withheld_passes_only_while_the_dropped_update_cannot_be_used() -> None:
    chain = _dropped_chain(B)
    name, ok, detail = check_withheld(chain, {B: Reason.MALFORMED})
    assert (name, ok) == (WITHHELD, True) and B[:10] in detail
    name, ok, detail = check_withheld(chain, {})
    assert (name, ok) == (WITHHELD, False) and B[:10] in detail and "read(s)" in detail
