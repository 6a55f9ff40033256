"""The peer-scoring rule the contract applies, in Python (median, self-exclusion, distances)."""

from __future__ import annotations

import random

import pytest

from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import InvalidVotes, PeerVote, median, peer_outcome
from fedtrail.protocol.weights import SCORE_SCALE

A, B, C, D, E = (f"0x{i:040x}" for i in (1, 2, 3, 4, 5))


def test_median_of_odd_even_and_empty_counts() -> None:
    assert median([5, 1, 3]) == 3
    assert median([4, 1, 3, 10]) == 4  # the higher of the two middles 3 and 4
    assert median([1, 2]) == 2
    assert median([0, 0, 7, 9]) == 7  # two of four lower: a tie keeps the higher
    assert median([0, 0, 0, 9]) == 0  # three of four lower: lowered
    assert median([]) == 0


def test_a_validator_never_counts_for_its_own_update() -> None:
    # A gives itself the maximum and everyone else 0; B and C give A 0.
    votes = [
        PeerVote(validator=A, scores=(SCORE_SCALE, 0, 0)),
        PeerVote(validator=B, scores=(0, 900_000, 800_000)),
        PeerVote(validator=C, scores=(0, 700_000, 600_000)),
    ]
    out = peer_outcome([A, B, C], votes)
    assert out.peer_counts == (2, 2, 2)
    assert out.scores == (0, 700_000, 800_000)  # the higher of each pair of other entries
    assert out.reasons == (Reason.PEER_REJECTED, Reason.OK, Reason.OK)


def test_an_even_split_of_peers_keeps_the_higher_score() -> None:
    """Four peers split two against two on site E: a score is lowered only when more than half
    of its peers put it lower, so E keeps the full score; with three of four lower it falls."""
    sites = [A, B, C, D, E]
    full = SCORE_SCALE

    def vote(v: str, e_score: int) -> PeerVote:
        return PeerVote(validator=v, scores=(full, full, full, full, e_score))

    split = peer_outcome(sites, [vote(A, 0), vote(B, 0), vote(C, full), vote(D, full)])
    assert split.scores[4] == full and split.reasons[4] is Reason.OK
    lowered = peer_outcome(sites, [vote(A, 0), vote(B, 0), vote(C, 200_000), vote(D, full)])
    assert lowered.scores[4] == 200_000


def test_an_update_no_peer_scored_gets_zero() -> None:
    out = peer_outcome([A, B], [PeerVote(validator=A, scores=(SCORE_SCALE, 500_000))])
    assert out.scores == (0, 500_000)
    assert out.peer_counts == (0, 1)
    assert out.reasons[0] is Reason.PEER_REJECTED


def test_distances_measure_how_far_a_validator_sits_from_the_medians() -> None:
    votes = [
        PeerVote(validator=A, scores=(0, 600_000, 600_000)),
        PeerVote(validator=B, scores=(600_000, 0, 600_000)),
        PeerVote(validator=C, scores=(600_000, 600_000, 0)),
        PeerVote(validator=D, scores=(0, 0, 0)),  # the inverted one: scores everyone 0
    ]
    out = peer_outcome([A, B, C], votes)
    # each site's peers: the two honest others (600k) and D (0) -> median 600k
    assert out.scores == (600_000, 600_000, 600_000)
    assert out.distances[A] == 0 and out.distances[B] == 0 and out.distances[C] == 0
    assert out.distances[D] == 600_000
    assert out.agreements[D] == SCORE_SCALE - 600_000
    reps = out.validator_reputations({D: (SCORE_SCALE, 3)}, alpha=300_000)
    assert reps[D] < SCORE_SCALE and reps[A] == SCORE_SCALE


@pytest.mark.parametrize("seed", range(20))
def test_a_cartel_below_half_keeps_each_median_inside_the_honest_range(seed: int) -> None:
    rng = random.Random(seed)
    n_sites = rng.randint(3, 9)
    sites = [f"0x{i + 1:040x}" for i in range(n_sites)]
    n_validators = n_sites
    cartel = set(rng.sample(range(n_validators), (n_validators - 2) // 2))
    votes = []
    for k, v in enumerate(sites):
        if k in cartel:
            scores = tuple(rng.choice((0, SCORE_SCALE)) for _ in sites)
        else:
            scores = tuple(rng.randint(200_000, 400_000) for _ in sites)
        votes.append(PeerVote(validator=v, scores=scores))
    out = peer_outcome(sites, votes)
    for i, site in enumerate(sites):
        honest = [
            votes[k].scores[i] for k in range(n_validators) if k not in cartel and sites[k] != site
        ]
        assert min(honest) <= out.scores[i] <= max(honest)


def test_input_the_contract_refuses_is_refused() -> None:
    with pytest.raises(InvalidVotes, match="ascending"):
        peer_outcome([B, A], [])
    with pytest.raises(InvalidVotes, match="ascending"):
        peer_outcome(
            [A, B], [PeerVote(validator=B, scores=(1, 1)), PeerVote(validator=A, scores=(1, 1))]
        )
    with pytest.raises(InvalidVotes, match="scored 1 updates"):
        peer_outcome([A, B], [PeerVote(validator=C, scores=(1,))])
    with pytest.raises(InvalidVotes, match="outside"):
        peer_outcome([A], [PeerVote(validator=C, scores=(SCORE_SCALE + 1,))])
