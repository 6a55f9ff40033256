"""Adversarial checks of the peer-round audit (issue 14) on the embedded chain: the auditor's
peer checks read what the contract holds, and neither an honest federation's ordinary events
(a site that commits and never reveals) nor a cancelled peer round mislead them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.auditor.peers import (
    PeerRecord,
    check_median,
    check_votes,
    peer_table,
    read_peer_record,
    vote_hash,
)
from fedtrail.auditor.verify import verify_round
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import PeerVote, peer_explanation
from fedtrail.protocol.roundlog import SiteEntry, UpdateRef
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.storage.store import LocalStore
from tests.contracts.federation import Fed, by_address
from tests.fixtures.chain import ChainEnv

S = SCORE_SCALE


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded, n_sites=4)


def test_a_committed_but_unrevealed_update_does_not_fail_peers_median(fed: Fed) -> None:
    """Three hospitals reveal, the fourth commits and never reveals (a crash, an honest
    federation). The contract values the three revealed updates; the chain's submissions still
    list the fourth's commitment, and the audit must combine the votes over the revealed ones
    only, as the contract did."""
    round_id = fed.open_peer(quorum=3)
    a, b, c, d = fed.sites
    fed.commit(round_id, d, "never-revealed", 100)
    sites = fed.submit(round_id, [a, b, c], [100, 200, 300])
    vectors = {v.address: [S // 2, S // 3, S // 4] for v in (a, b, c, d)}
    votes = fed.score(round_id, vectors)
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)

    every = fed.ledger.get_submissions(round_id, include_unrevealed=True)
    assert {s.site for s in every if not s.revealed} == {d.address}  # the chain lists it
    subs = fed.ledger.get_submissions(round_id)  # what verify_round reads
    record = read_peer_record(fed.ledger, round_id)
    assert record is not None
    (name, passed, detail), outcome = check_median(record, subs, [])
    assert (name, passed) == ("peers.median", True), detail
    assert outcome is not None and outcome.sites == tuple(by_address(sites))
    table = peer_table(record, subs)
    assert table is not None and table.sites == tuple(by_address(sites))
    assert all(r == int(Reason.OK) for r in table.reasons)


def _cancel_after_votes(fed: Fed, quorum: int, voters: int) -> int:
    """A peer round: three hospitals reveal, ``voters`` of the four sites reveal honest score
    vectors, and the aggregator cancels after the score reveal deadline instead of valuing."""
    round_id = fed.open_peer(quorum=quorum)
    sites = fed.submit(round_id, fed.sites[:3], [100, 200, 300])
    vectors = {v.address: [S // 2] * len(sites) for v in fed.sites[:voters]}
    fed.score(round_id, vectors)
    fed.past_score_reveal(round_id)
    fed.ledger.cancel_round(fed.agg, round_id)
    return round_id


def test_verify_names_a_cancelled_peer_round_whose_votes_valued_it(
    fed: Fed, tmp_path: Path
) -> None:
    """The votes met the quorum and every median is positive: anyone could have recorded the
    peer valuation, yet the aggregator cancelled the round (overriding its validators). The
    contract allows the cancel after the score reveal deadline; audit verify must say so."""
    round_id = _cancel_after_votes(fed, quorum=3, voters=4)
    audit = verify_round(fed.ledger, LocalStore(tmp_path), round_id)
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert set(failed) == {"peers.cancelled"}, failed
    assert "met the quorum 3" in failed["peers.cancelled"]
    assert not audit.passed


def test_verify_accepts_a_peer_round_cancelled_for_want_of_quorum(fed: Fed, tmp_path: Path) -> None:
    round_id = _cancel_after_votes(fed, quorum=3, voters=2)
    audit = verify_round(fed.ledger, LocalStore(tmp_path), round_id)
    by_name = {c.name: c for c in audit.checks}
    assert by_name["peers.cancelled"].passed, by_name["peers.cancelled"].detail
    assert audit.passed


def test_a_peer_round_cancelled_below_its_quorum_rates_the_withheld_vectors(
    fed: Fed, tmp_path: Path
) -> None:
    """Two validators reveal, two commit and withhold, which leaves the round below its quorum
    of 3: the cancellation rates the two withholders at the largest distance (withholding to
    cancel a round is not free), and verify recomputes those ratings (peers.reputation)."""
    a, b, c, d = fed.sites
    round_id = fed.open_peer(quorum=3)
    sites = fed.submit(round_id, [a, b, c], [100, 200, 300])
    for v in (c, d):
        fed.commit_scores(round_id, v, [S] * len(sites))
    fed.score(round_id, {v.address: [S // 2] * len(sites) for v in (a, b)})
    fed.past_score_reveal(round_id)
    fed.ledger.cancel_round(fed.agg, round_id)
    rated = {
        e.args["validator"]: (e.args["distance"], e.args["validatorReputation"])
        for e in fed.ledger.events("ValidatorRated", argument_filters={"round": round_id})
    }
    assert rated == {c.address: (S, 0), d.address: (S, 0)}
    audit = verify_round(fed.ledger, LocalStore(tmp_path), round_id)
    by_name = {ch.name: ch for ch in audit.checks}
    assert by_name["peers.cancelled"].passed, by_name["peers.cancelled"].detail
    assert by_name["peers.reputation"].passed, by_name["peers.reputation"].detail
    assert "2 validator(s) rated" in by_name["peers.reputation"].detail
    assert audit.passed


def test_a_valued_then_cancelled_peer_rounds_medians_and_ratings_are_recomputed(
    fed: Fed, tmp_path: Path
) -> None:
    """A peer round valued (one validator withheld its vector) and then cancelled: its scores
    and validator ratings stay on chain, and the ratings feed the next rounds' reputation
    gate. Verify recomputed neither before (only peers.cancelled); it now checks both from the
    votes, as in a finalized round."""
    a, b, c, d = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b, c], [100, 200, 300])
    fed.commit_scores(round_id, d, [S] * len(sites))
    votes = fed.score(round_id, {v.address: [S // 2, S // 3, S // 4] for v in (a, b, c)})
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    fed.ledger.cancel_round(fed.agg, round_id)
    audit = verify_round(fed.ledger, LocalStore(tmp_path), round_id)
    by_name = {ch.name: ch for ch in audit.checks}
    assert by_name["peers.median"].passed, by_name["peers.median"].detail
    assert "in the log" not in by_name["peers.median"].detail
    assert by_name["peers.reputation"].passed, by_name["peers.reputation"].detail
    assert "4 validator(s) rated" in by_name["peers.reputation"].detail


A, B = "0x" + "aa" * 20, "0x" + "bb" * 20


def _record(events: tuple[PeerVote, ...], vote_count: int) -> PeerRecord:
    """A peer round whose validators A and B revealed; ``events`` are the ScoresRevealed
    events a reader got back (an RPC that drops or repeats a log)."""
    vectors = {A: (S // 2, S), B: (S, S // 2)}
    return PeerRecord(
        round=5,
        quorum=2,
        commit_count=2,
        vote_count=vote_count,
        reveal_deadline=100,
        score_commit_deadline=200,
        score_reveal_deadline=300,
        votes=events,
        stored={v: vote_hash(5, v, s) for v, s in vectors.items()},
    )


def test_a_missing_or_repeated_scores_revealed_event_fails_peers_votes() -> None:
    va = PeerVote(validator=A, scores=(S // 2, S))
    vb = PeerVote(validator=B, scores=(S, S // 2))
    name, passed, detail = check_votes(_record((va, vb), 2), [va, vb])
    assert (name, passed) == ("peers.votes", True), detail
    _, passed, detail = check_votes(_record((va,), 2), [va])  # B's event missing
    assert not passed and "1 ScoresRevealed event(s), the contract counts 2" in detail
    _, passed, detail = check_votes(_record((va, vb, vb), 2), [va, vb])  # B's repeated
    assert not passed and "revealed twice" in detail
    _, passed, detail = check_votes(_record((va, vb), 2), [va])  # the log omits B's vote
    assert not passed and "the log's votes are not the chain's" in detail


SAID = peer_explanation(count=2, median=S // 2, gated=0, withheld=False)
"""Each site's explanation in the two hand-built peer logs below: two other validators, 0.5."""


def test_a_log_that_misstates_a_sites_peer_median_or_peer_count_fails_peers_median(
    fed: Fed,
) -> None:
    """The aggregator's log tells each site why it got its weight: the median of how many
    peers. Score, reason and weight are the chain's, but the components claim the site was
    scored by four peers at 0.9 (it was two at 0.5): peers.median names the component."""
    a, b, c, _ = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b, c], [100, 200, 300])
    votes = fed.score(round_id, {v.address: [S // 2] * 3 for v in (a, b, c)})
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    subs = fed.ledger.get_submissions(round_id)
    record = read_peer_record(fed.ledger, round_id)
    assert record is not None

    def log(forge: dict[str, int]) -> list[SiteEntry]:
        return [
            SiteEntry.of(
                site=sub.site,
                name="",
                update=UpdateRef(sub.cid, sub.sha256, sub.num_samples),
                status=Reason.OK,
                score=sub.score,
                reason=sub.reason,
                weight=sub.weight,
                components=(forge if i == 0 else {"peer_median": sub.score, "peer_count": 2}),
                explanation=SAID,  # the sentence the votes give (peers.median)
            )
            for i, sub in enumerate(subs)
        ]

    (_, passed, detail), _ = check_median(
        record, subs, log({"peer_median": S // 2, "peer_count": 2})
    )
    assert passed, detail
    (_, passed, detail), _ = check_median(
        record, subs, log({"peer_median": S // 2, "peer_count": 4})
    )
    assert not passed and "component peer_count 4, the votes give 2" in detail
    forged = {"peer_median": 9 * S // 10, "peer_count": 2}
    (_, passed, detail), _ = check_median(record, subs, log(forged))
    assert not passed and f"component peer_median {9 * S // 10}, the votes give {S // 2}" in detail


def test_a_peer_log_that_adds_aggregator_statistics_to_a_site_fails_peers_median(
    fed: Fed,
) -> None:
    """Attack: in a peer round the aggregator computes no statistics, so verify recomputes
    none (the data-free ones are checked in aggregator rounds only). A log that gives an honest
    site ``norm_z`` 25 and ``cosine`` -0.9 next to its true median shows it as an outlier in the
    report with every check passing; peers.median must refuse components the votes do not
    give. Before, only peer_median and peer_count were compared."""
    a, b, c, _ = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b, c], [100, 200, 300])
    votes = fed.score(round_id, {v.address: [S // 2] * 3 for v in (a, b, c)})
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    subs = fed.ledger.get_submissions(round_id)
    record = read_peer_record(fed.ledger, round_id)
    assert record is not None

    def log(extra: dict[str, float]) -> list[SiteEntry]:
        return [
            SiteEntry.of(
                site=sub.site,
                name="",
                update=UpdateRef(sub.cid, sub.sha256, sub.num_samples),
                status=Reason.OK,
                score=sub.score,
                reason=sub.reason,
                weight=sub.weight,
                components={"peer_median": S // 2, "peer_count": 2, **(extra if i == 0 else {})},
                explanation=SAID,  # the sentence the votes give (peers.median)
            )
            for i, sub in enumerate(subs)
        ]

    (_, passed, detail), _ = check_median(record, subs, log({}))
    assert passed, detail
    (_, passed, detail), _ = check_median(record, subs, log({"norm_z": 25.0, "cosine": -0.9}))
    assert not passed, detail
    assert f"log {subs[0].site[:10]} components cosine, norm_z" in detail, detail


def test_a_removed_then_re_registered_validator_is_rated_once_at_cancel_as_verify_expects(
    fed: Fed, tmp_path: Path
) -> None:
    """d commits a vector; the coordinator removes d and registers it again mid-round (it is
    now registered after open and cannot reveal), c does the same without re-registration.
    cancelRound's loop over every site ever known rates each once (no duplicate entry in the
    site list), the events-based withheld list names the same two, and verify agrees."""
    a, b, c, d = fed.sites
    round_id = fed.open_peer(quorum=3)
    sites = fed.submit(round_id, [a, b, c], [100, 200, 300])
    for v in (c, d):
        fed.commit_scores(round_id, v, [S] * len(sites))
    fed.ledger.remove_site(fed.coord, c.address)
    fed.ledger.remove_site(fed.coord, d.address)
    fed.ledger.register_site(fed.coord, d.address, "again", 10_000)
    fed.score(round_id, {v.address: [S // 2] * len(sites) for v in (a, b)})
    fed.past_score_reveal(round_id)
    assert fed.ledger.peer_withheld(round_id) == by_address([c.address, d.address])
    fed.ledger.cancel_round(fed.agg, round_id)
    rated = [
        e.args["validator"]
        for e in fed.ledger.events("ValidatorRated", argument_filters={"round": round_id})
    ]
    assert sorted(rated) == sorted([c.address, d.address])
    audit = verify_round(fed.ledger, LocalStore(tmp_path), round_id)
    by_name = {ch.name: ch for ch in audit.checks}
    assert by_name["peers.reputation"].passed, by_name["peers.reputation"].detail
    assert by_name["peers.cancelled"].passed, by_name["peers.cancelled"].detail
