"""FederationLedger peer rounds (issue 14) under attack, on the embedded chain: what a
malicious validator, site or coordinator tries with score votes, and the contract's refusal.
Copying another validator's commitment, replaying an earlier round's commitment or vote,
voting after removal or re-registration, valuing early by removing a validator, and a lone
validator scoring its own update into weight."""

from __future__ import annotations

import pytest

from fedtrail.errors import CommitmentMismatch, InvalidValuation, RoundStateError, Unauthorized
from fedtrail.ledger import pack_scores, score_commitment
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.peers import REPUTATION_GATE, PeerVote
from fedtrail.protocol.weights import SCORE_SCALE
from tests.contracts.federation import MAX_SAMPLES, Fed, by_address, expect
from tests.fixtures.chain import ChainEnv

S = SCORE_SCALE


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded, n_sites=4)


def raw_peer_valuation(fed: Fed, round_id: int, sites: list[str], votes: list[PeerVote]) -> None:
    """Sends exactly these votes (no client reordering; the medians the rule's over them, the
    withheld list read from the chain), from an outsider: anyone may."""
    call = fed.ledger._fn.recordPeerValuation(
        round_id,
        sites,
        [v.validator for v in votes],
        [pack_scores(v.scores) for v in votes],
        fed.ledger.peer_medians(round_id, sites, votes),
        fed.ledger.peer_withheld(round_id),
    )
    fed.ledger._transact(fed.env.outsider, call)


def test_a_copied_commitment_cannot_be_opened_by_the_copier(fed: Fed) -> None:
    """b copies a's commitment from the mempool or the ScoresCommitted event and, once a
    revealed, tries to open it with a's vector and salt: the commitment binds the sender, so
    the copy opens nothing and b, having used its one commitment, loses its vote."""
    a, b, c, _ = fed.sites
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, [a, b, c], [10, 20, 30])
    vector, salt = [S // 3, S // 2, S], fed.salt(a, round_id)
    digest = score_commitment(a.address, round_id, vector, salt)
    fed.ledger.commit_scores(a, round_id, digest)
    fed.ledger.commit_scores(b, round_id, digest)  # accepted: a commitment is opaque
    fed.past_score_commit(round_id)
    fed.ledger.reveal_scores(a, round_id, vector, salt)
    with expect(CommitmentMismatch, "ScoreCommitmentMismatch", round=round_id, validator=b.address):
        fed.ledger.reveal_scores(b, round_id, vector, salt)
    assert fed.ledger.score_vote(round_id, b.address) == (digest, False)
    peer = fed.ledger.get_peer_round(round_id)
    assert peer is not None and (peer.commit_count, peer.vote_count) == (2, 1)


def test_an_earlier_rounds_commitment_and_vote_cannot_be_replayed(fed: Fed) -> None:
    """a reuses its round-1 commitment (same vector, same salt) in round 2: the round is in
    the commitment, so it cannot be opened there; and round 1's revealed vote cannot be handed
    to round 2's valuation for a validator that did not reveal in round 2."""
    a, b, c, _ = fed.sites
    round1 = fed.open_peer(quorum=2)
    sites1 = fed.submit(round1, [a, b, c], [10, 20, 30])
    vectors = {a.address: [S // 2] * 3, b.address: [S // 3] * 3}
    votes1 = fed.score(round1, vectors)
    fed.past_score_reveal(round1)
    fed.ledger.record_peer_valuation(fed.agg, round1, sites1, votes1)
    fed.finalize(round1, "g1")

    round2 = fed.open_peer(quorum=1, model="g1")
    sites2 = fed.submit(round2, [a, b, c], [10, 20, 30])
    assert sites2 == sites1
    salt1 = fed.salt(a, round1)
    fed.ledger.commit_scores(
        a, round2, score_commitment(a.address, round1, vectors[a.address], salt1)
    )
    fed.commit_scores(round2, c, [S // 4] * 3)
    fed.past_score_commit(round2)
    with expect(CommitmentMismatch, "ScoreCommitmentMismatch", round=round2, validator=a.address):
        fed.ledger.reveal_scores(a, round2, vectors[a.address], salt1)
    fed.reveal_scores(round2, c, [S // 4] * 3)
    fed.past_score_reveal(round2)
    old_b = next(v for v in votes1 if v.validator == b.address)
    c_vote = PeerVote(validator=c.address, scores=(S // 4,) * 3)
    replay = sorted([old_b, c_vote], key=lambda v: int(v.validator, 16))
    with expect(InvalidValuation, "MissingVotes", round=round2, expected=1, given=2):
        raw_peer_valuation(fed, round2, sites2, replay)
    with expect(InvalidValuation, "VoteMismatch", round=round2, validator=b.address):
        raw_peer_valuation(fed, round2, sites2, [old_b])
    raw_peer_valuation(fed, round2, sites2, [c_vote])
    assert fed.ledger.get_round(round2).phase == Phase.VALUED


def test_removed_and_re_registered_sites_cannot_vote_nor_let_valuation_start_early(
    fed: Fed,
) -> None:
    """The coordinator removes d after it committed scores (it can no longer reveal) and
    removes then re-registers c during the round (it is now registered after open). The
    remaining validators all reveal, but the round still counts the four sites active at open:
    valuation waits for the score reveal deadline."""
    a, b, c, d = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b], [10, 20])
    fed.commit_scores(round_id, d, [S, S])
    fed.ledger.remove_site(fed.coord, d.address)
    fed.ledger.remove_site(fed.coord, c.address)
    with expect(Unauthorized, "UnknownSite", site=c.address):
        fed.commit_scores(round_id, c, [S, S])
    fed.ledger.register_site(fed.coord, c.address, "again", MAX_SAMPLES)
    with expect(Unauthorized, "RegisteredAfterOpen", round=round_id, site=c.address):
        fed.commit_scores(round_id, c, [S, S])
    # each validator gives itself the top score (never counted) and the other one half
    vectors = {v.address: [S if s == v.address else S // 2 for s in sites] for v in (a, b)}
    votes = fed.score(round_id, vectors)
    with expect(Unauthorized, "UnknownSite", site=d.address):
        fed.reveal_scores(round_id, d, [S, S])
    with expect(RoundStateError, "RoundStillOpen", round=round_id):
        fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    fed.past_score_reveal(round_id)
    fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    scores = {s.site: s.score for s in fed.ledger.get_submissions(round_id)}
    # each hospital is scored by the other one only: a by b, b by a
    assert scores == {a.address: S // 2, b.address: S // 2}


def test_a_lone_validator_cannot_score_its_own_update_into_weight(fed: Fed) -> None:
    """Quorum 1 and the only validator is a submitter: its own entry (the top score) never
    counts, so its update is PeerRejected, and zeroing the other leaves nothing to value."""
    a, b, _, _ = fed.sites
    round_id = fed.open_peer(quorum=1)
    sites = fed.submit(round_id, [a, b], [10, 20])
    own = [S if s == a.address else 0 for s in sites]
    votes = fed.score(round_id, {a.address: own})
    fed.past_score_reveal(round_id)
    with expect(InvalidValuation, "ZeroTotalWeight", round=round_id):
        fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    fed.ledger.cancel_round(fed.agg, round_id)
    assert fed.ledger.get_round(round_id).phase == Phase.CANCELLED
    assert by_address(sites) == sites


def test_a_cartel_bound_is_half_of_the_sites_own_jury_not_of_all_validators(
    embedded: ChainEnv,
) -> None:
    """Every one of five sites submits and validates, so each update is scored by the four
    others. One validator zeroing hospital A cannot move A's score; two (40 % of the
    validators, half of A's jury) cannot either, since the high median keeps the higher score
    on a tie; three (more than half of A's jury) zero it. The bound counts A's jury, the *other*
    validators: lowering a score takes more than half of them."""
    fed = Fed(embedded, n_sites=5)
    honest = 800_000
    target = by_address([s.address for s in fed.sites])[0]
    for liars, want in ((1, honest), (2, honest), (3, 0)):
        round_id = fed.open_peer(quorum=5, model=f"g{liars - 1}")
        sites = fed.submit(round_id, fed.sites, [100] * 5)
        cartel = [v.address for v in fed.sites if v.address != target][:liars]
        vectors = {
            v.address: [0 if (s == target and v.address in cartel) else honest for s in sites]
            for v in fed.sites
        }
        votes = fed.score(round_id, vectors)
        fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
        scores = {s.site: s.score for s in fed.ledger.get_submissions(round_id)}
        assert scores[target] == want
        assert all(score == honest for site, score in scores.items() if site != target)
        fed.finalize(round_id, f"g{liars}")


def test_a_cartel_that_gated_the_honest_validators_once_does_not_rule_them_afterwards(
    embedded: ChainEnv,
) -> None:
    """Quorum 2 (the aggregator may pick it) and a two-site cartel among five validators. In
    rounds 1-3 only one honest validator votes beside the cartel: the cartel is the majority
    of every jury, sets the honest sites' medians to 1 (positive, so the round is valued) and
    each lone honest validator, scoring them in full, is rated at distance ~SCORE_SCALE: all
    three fall below the reputation gate, the cartel stays at the top. Round 4: all five vote,
    three honest against two. Before, only the two cartel members passed the gate, which was
    enough (max(quorum, 2) = 2): the gate left the honest majority out of every median and the
    cartel zeroed hospital h1 whom every honest validator scored in full, and could go on doing
    so forever (the honest are rated against the cartel's medians, so never climb back). The
    gate now needs a majority of the revealed validators to pass: the cartel cannot keep its
    once-won majority, all five count and h1 keeps its full score."""
    fed = Fed(embedded, n_sites=5)
    full = SCORE_SCALE
    ordered = sorted(fed.sites, key=lambda s: int(s.address, 16))
    c1, c2, h1, h2, h3 = ordered  # any split works; address order keeps the test readable
    honest = [h1, h2, h3]
    model = "g0"
    for k, lone in enumerate(honest, start=1):
        r = fed.open_peer(quorum=2, model=model)
        sites = fed.submit(r, honest, [10, 20, 30])
        votes = fed.score(
            r, {c1.address: [1, 1, 1], c2.address: [1, 1, 1], lone.address: [full] * 3}
        )
        fed.past_score_reveal(r)  # the other two honest validators did not vote
        fed.ledger.record_peer_valuation(fed.env.outsider, r, sites, votes)
        model = f"g{k}"
        fed.finalize(r, model)
    for h in honest:
        assert fed.ledger.validator_standing(h.address).reputation < REPUTATION_GATE
    for c in (c1, c2):
        assert fed.ledger.validator_standing(c.address).reputation == full

    r = fed.open_peer(quorum=2, model=model)
    sites = fed.submit(r, honest, [10, 20, 30])
    zero_h1 = [0 if s == h1.address else full for s in sites]
    vectors = {c.address: zero_h1 for c in (c1, c2)} | {h.address: [full] * 3 for h in honest}
    votes = fed.score(r, vectors)
    expected = fed.ledger.peer_outcome(r, sites=sites, votes=votes)
    fed.ledger.record_peer_valuation(fed.env.outsider, r, sites, votes)
    scores = {s.site: s.score for s in fed.ledger.get_submissions(r)}
    assert scores[h1.address] == full, "the cartel ruled through the gate"
    assert expected.counted == tuple(by_address([v.address for v in fed.sites]))
    assert tuple(scores[s] for s in sites) == expected.scores
