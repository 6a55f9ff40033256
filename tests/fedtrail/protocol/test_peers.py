"""The peer-scoring rule the contract applies, in Python (median, self-exclusion, distances, the
reputation gate, withheld vectors)."""

from __future__ import annotations

import random

import pytest

from fedtrail.protocol.codes import MAX_SITE_SAMPLES, Reason
from fedtrail.protocol.peers import (
    REPUTATION_GATE,
    GateUndecided,
    InvalidVotes,
    PeerOutcome,
    PeerVote,
    counted_validators,
    drop_withheld,
    median,
    next_validator_reputation,
    peer_outcome,
    screen_drop,
    screen_empties_round,
    screen_left_out,
)
from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights

A, B, C, D, E = (f"0x{i:040x}" for i in (1, 2, 3, 4, 5))


def first_round(sites: list[str], votes: list[PeerVote]) -> PeerOutcome:
    """The rule in a round where no validator was rated before (the gate lets everyone in)."""
    return peer_outcome(sites, votes, standing={}, quorum=1)


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
    out = first_round([A, B, C], votes)
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

    split = first_round(sites, [vote(A, 0), vote(B, 0), vote(C, full), vote(D, full)])
    assert split.scores[4] == full and split.reasons[4] is Reason.OK
    lowered = first_round(sites, [vote(A, 0), vote(B, 0), vote(C, 200_000), vote(D, full)])
    assert lowered.scores[4] == 200_000


def test_an_update_no_peer_scored_gets_zero() -> None:
    out = first_round([A, B], [PeerVote(validator=A, scores=(SCORE_SCALE, 500_000))])
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
    out = first_round([A, B, C], votes)
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
    out = first_round(sites, votes)
    for i, site in enumerate(sites):
        honest = [
            votes[k].scores[i] for k in range(n_validators) if k not in cartel and sites[k] != site
        ]
        assert min(honest) <= out.scores[i] <= max(honest)


def test_input_the_contract_refuses_is_refused() -> None:
    with pytest.raises(InvalidVotes, match="ascending"):
        first_round([B, A], [])
    with pytest.raises(InvalidVotes, match="ascending"):
        first_round(
            [A, B], [PeerVote(validator=B, scores=(1, 1)), PeerVote(validator=A, scores=(1, 1))]
        )
    with pytest.raises(InvalidVotes, match="scored 1 updates"):
        first_round([A, B], [PeerVote(validator=C, scores=(1,))])
    with pytest.raises(InvalidVotes, match="outside"):
        first_round([A], [PeerVote(validator=C, scores=(SCORE_SCALE + 1,))])


# ------------------------------------------------------------------ reputation gate


def _inverting_jury() -> tuple[list[str], list[PeerVote]]:
    """Four validators score three sites; D scores B at 0 where A and C give 400k and 600k.
    With D counted, B's jury (A, C, D) has the median 400k; without it, (A, C) -> 600k."""
    sites = [A, B, C]
    votes = [
        PeerVote(validator=A, scores=(0, 400_000, SCORE_SCALE)),
        PeerVote(validator=B, scores=(SCORE_SCALE, 0, SCORE_SCALE)),
        PeerVote(validator=C, scores=(SCORE_SCALE, 600_000, 0)),
        PeerVote(validator=D, scores=(SCORE_SCALE, 0, SCORE_SCALE)),
    ]
    return sites, votes


def test_a_rated_validator_below_the_gate_is_not_counted_but_still_rated() -> None:
    sites, votes = _inverting_jury()
    honest = (SCORE_SCALE, 2)
    below = {A: honest, B: honest, C: honest, D: (REPUTATION_GATE - 1, 1)}
    gated = peer_outcome(sites, votes, standing=below, quorum=3)
    assert gated.counted == (A, B, C)
    assert gated.scores[1] == 600_000 and gated.peer_counts == (2, 2, 2)
    assert D in gated.distances  # rated against the medians it did not move
    at_gate = {**below, D: (REPUTATION_GATE, 1)}
    counted = peer_outcome(sites, votes, standing=at_gate, quorum=3)
    assert counted.counted == (A, B, C, D)
    assert counted.scores[1] == 400_000 and counted.peer_counts == (3, 3, 3)


def test_a_validator_never_rated_is_counted_whatever_its_standing_reads() -> None:
    sites, votes = _inverting_jury()
    out = peer_outcome(sites, votes, standing={D: (0, 0)}, quorum=3)
    assert out.counted == (A, B, C, D) and out.scores[1] == 400_000


def test_the_gate_holds_for_a_majority_at_the_quorum_and_lets_a_gated_majority_count() -> None:
    """More than half pass and at least the quorum: only they count. Fewer than half pass:
    everyone counts (the gate never leaves out a majority, and a federation whose validators
    all fell below the gate still values rounds)."""
    sites, votes = _inverting_jury()
    low = (REPUTATION_GATE - 1, 1)
    ok = (SCORE_SCALE, 1)
    # three of four pass, quorum 3: the gate holds, D is left out
    out = peer_outcome(sites, votes, standing={A: ok, B: ok, C: ok, D: low}, quorum=3)
    assert out.counted == (A, B, C) and out.peer_counts == (2, 2, 2)
    # one of four passes: a gated majority, all count
    out = peer_outcome(sites, votes, standing={A: ok, B: low, C: low, D: low}, quorum=1)
    assert out.counted == (A, B, C, D) and out.scores[1] == 400_000
    # none passes: all count
    out = peer_outcome(sites, votes, standing=dict.fromkeys((A, B, C, D), low), quorum=4)
    assert out.counted == (A, B, C, D)


def test_the_round_is_refused_when_the_gate_cannot_decide() -> None:
    """Exactly half pass (whatever the quorum), or a majority below the quorum (a gated vote
    is no vote towards it): the contract reverts GateUndecided and the rule raises it; before,
    everyone counted in both cases."""
    sites, votes = _inverting_jury()
    low = (REPUTATION_GATE - 1, 1)
    ok = (SCORE_SCALE, 1)
    with pytest.raises(GateUndecided, match=r"2 of 4 .*\(exactly half\)") as half:
        peer_outcome(sites, votes, standing={A: ok, B: low, C: ok, D: low}, quorum=1)
    assert (half.value.passed, half.value.votes, half.value.quorum) == (2, 4, 1)
    with pytest.raises(GateUndecided, match=r"3 of 4 .*a majority below the quorum 4"):
        peer_outcome(sites, votes, standing={A: ok, B: ok, C: ok, D: low}, quorum=4)
    with pytest.raises(GateUndecided):
        counted_validators(votes, standing={A: ok, B: ok, C: ok, D: low}, quorum=4)
    # fewer revealed vectors than the quorum: refused before the gate (QuorumNotMet)
    with pytest.raises(InvalidVotes, match=r"3 revealed score vector.*fewer than the quorum 4"):
        peer_outcome(sites, votes[:3], standing={}, quorum=4)


def test_a_minority_that_once_gated_the_majority_does_not_keep_the_medians() -> None:
    """Two validators (D, E) rated at the top, three (A, B, C) rated below the gate in rounds
    where the two were the majority of the voters. With quorum 2 the two alone used to pass
    (max(quorum, 2) = 2) and set every median: they zeroed A whom the three others scored in
    full. A gate that leaves out a majority is not applied: all five count, A keeps its score."""
    sites = [A, B, C]
    votes = [
        PeerVote(validator=A, scores=(SCORE_SCALE,) * 3),
        PeerVote(validator=B, scores=(SCORE_SCALE,) * 3),
        PeerVote(validator=C, scores=(SCORE_SCALE,) * 3),
        PeerVote(validator=D, scores=(0, SCORE_SCALE, SCORE_SCALE)),
        PeerVote(validator=E, scores=(0, SCORE_SCALE, SCORE_SCALE)),
    ]
    low, top = (0, 1), (SCORE_SCALE, 3)
    standing = {A: low, B: low, C: low, D: top, E: top}
    out = peer_outcome(sites, votes, standing=standing, quorum=2)
    assert out.counted == (A, B, C, D, E)
    assert out.scores == (SCORE_SCALE,) * 3


def test_standing_keys_match_addresses_in_any_case() -> None:
    """The chain's events give checksummed addresses; a vote may carry lower case."""
    sites, votes = _inverting_jury()
    f = "0x" + "ab" * 20
    votes = [*votes[:3], PeerVote(validator=f, scores=votes[3].scores)]
    standing = {"0x" + "AB" * 20: (0, 1), A: (SCORE_SCALE, 1)}
    assert peer_outcome(sites, votes, standing=standing, quorum=2).counted == (A, B, C)


def test_the_next_validator_reputation_reads_the_standing_in_any_case() -> None:
    """The gate matched a lower-case vote to its checksummed standing, the EMA did not: it
    took a rated validator for a new one and set its reputation to this round's agreement."""
    sites, votes = _inverting_jury()
    f = "0x" + "ab" * 20
    votes = [*votes[:3], PeerVote(validator=f, scores=votes[3].scores)]
    out = peer_outcome(sites, votes, standing={}, quorum=1)
    standing = {"0x" + "AB" * 20: (0, 3)}
    reps = out.validator_reputations(standing, alpha=300_000)
    # the EMA from 0 (a rise: a quarter of the factor), not the first rating's agreement
    assert reps[f] == (75_000 * out.agreements[f]) // SCORE_SCALE


# ------------------------------------------------------------------ withheld vectors


def test_a_withheld_vector_is_rated_at_the_largest_distance() -> None:
    sites, votes = _inverting_jury()
    out = peer_outcome(sites, votes, standing={}, quorum=1, withheld=[E])
    assert out.withheld == (E,)
    assert out.distances[E] == SCORE_SCALE and out.agreements[E] == 0
    reps = out.validator_reputations({E: (SCORE_SCALE, 4)}, alpha=300_000)
    assert reps[E] == SCORE_SCALE - 300_000  # the EMA of agreement 0 from a full reputation
    assert out.scores == first_round(sites, votes).scores  # withholding moves no median


def test_withheld_lists_the_contract_refuses_are_refused() -> None:
    sites, votes = _inverting_jury()
    with pytest.raises(InvalidVotes, match="withheld validators must be in strictly ascending"):
        peer_outcome(sites, votes, standing={}, quorum=1, withheld=[E, D])
    with pytest.raises(InvalidVotes, match="revealed its vector cannot have withheld"):
        peer_outcome(sites, votes, standing={}, quorum=1, withheld=[D])


def test_a_liar_that_agrees_every_other_round_loses_its_vote_after_three_lies() -> None:
    """With one EMA factor (0.3 up and down) a liar that agreed every other round sat at ~0.59
    after each agreeing round and was counted in every round it lied (found by the attack
    review). Trust now comes back four times slower than it goes: E is counted in its first
    three lies (1.0 -> 0.70, 0.72 -> 0.51, 0.54 -> 0.38) and left out of every later one."""
    sites = [A, B, C, D, E]
    honest = {v: (SCORE_SCALE,) * 5 for v in (A, B, C, D)}
    standing: dict[str, tuple[int, int]] = {}
    counted_when_lying: list[bool] = []
    for rnd in range(12):
        lying = rnd % 2 == 1
        votes = [PeerVote(validator=v, scores=s) for v, s in honest.items()]
        votes.append(PeerVote(validator=E, scores=(0,) * 5 if lying else (SCORE_SCALE,) * 5))
        out = peer_outcome(sites, votes, standing=standing, quorum=3)
        if lying:
            counted_when_lying.append(E in out.counted)
        reps = out.validator_reputations(standing, alpha=300_000)
        standing = {v: (reps[v], standing.get(v, (0, 0))[1] + 1) for v in reps}
    assert counted_when_lying == [True, True, True, False, False, False]
    assert standing[E][0] < REPUTATION_GATE
    assert all(standing[v][0] == SCORE_SCALE for v in (A, B, C, D))


def test_validator_reputation_falls_by_alpha_and_rises_by_a_quarter_of_it() -> None:
    assert next_validator_reputation(0, 700_000, rated_rounds=0, alpha=300_000) == 700_000
    assert next_validator_reputation(1_000_000, 0, rated_rounds=1, alpha=300_000) == 700_000
    assert next_validator_reputation(700_000, 1_000_000, rated_rounds=2, alpha=300_000) == 722_500
    assert next_validator_reputation(500_000, 500_000, rated_rounds=2, alpha=300_000) == 500_000
    # integer floors, as the contract's
    assert next_validator_reputation(3, 1, rated_rounds=1, alpha=300_000) == 2
    assert next_validator_reputation(1, 3, rated_rounds=1, alpha=300_000) == 1


# ------------------------------------------------------------------ dropped updates


def test_dropping_a_weighted_update_zeroes_it_and_keeps_every_median_and_rating() -> None:
    """dropWithheld's rule: the dropped site's score is 0 with reason WITHHELD, every other
    score and reason, every validator distance and the counted set stay as valued, and the
    peers' medians stay readable (``peer_medians``)."""
    votes = [
        PeerVote(validator=A, scores=(0, 900_000, 800_000)),
        PeerVote(validator=B, scores=(600_000, 0, 700_000)),
        PeerVote(validator=C, scores=(500_000, 400_000, 0)),
    ]
    valued = first_round([A, B, C], votes)
    assert valued.scores == (600_000, 900_000, 800_000)
    out = drop_withheld(valued, [B])
    assert out.scores == (600_000, 0, 800_000)
    assert out.reasons == (Reason.OK, Reason.WITHHELD, Reason.OK)
    assert out.peer_medians == valued.scores
    assert out.dropped == (B,)
    assert (out.distances, out.agreements, out.counted) == (
        valued.distances,
        valued.agreements,
        valued.counted,
    )
    again = drop_withheld(out, [A])  # a second drop adds to the first
    assert again.dropped == (A, B) and again.scores == (0, 0, 800_000)
    assert again.peer_medians == valued.scores


def test_a_drop_the_contract_refuses_is_refused() -> None:
    votes = [
        PeerVote(validator=A, scores=(0, 0)),
        PeerVote(validator=B, scores=(SCORE_SCALE, 0)),
    ]
    valued = first_round([A, B], votes)
    assert valued.scores == (SCORE_SCALE, 0)
    with pytest.raises(InvalidVotes, match="no weighted update"):
        drop_withheld(valued, [B])  # score 0: nothing to drop
    with pytest.raises(InvalidVotes, match="no weighted update"):
        drop_withheld(valued, [C])  # not in the round


SEVEN = [f"0x{i:040x}" for i in range(1, 8)]
"""Issue 14's 2-of-7 bar: sites S0..S6, the liars S5 and S6 (the bench's last sites)."""


def test_two_liars_among_six_scorers_move_the_high_median_one_honest_rank_at_most() -> None:
    # Every site validates: each update has 6 scorers, 4 honest and the 2 liars (a third).
    honest = [600_000, 700_000, 800_000, 900_000]  # S1..S4's entries for S0
    votes = [PeerVote(validator=SEVEN[0], scores=(0,) * 7)]  # S0's own entry never counts
    votes += [
        PeerVote(validator=SEVEN[1 + i], scores=(e,) + (500_000,) * 6) for i, e in enumerate(honest)
    ]
    zeroed = first_round(
        SEVEN, [*votes, *(PeerVote(validator=s, scores=(0,) * 7) for s in SEVEN[5:])]
    )
    fair = first_round(
        SEVEN,
        [*votes, *(PeerVote(validator=s, scores=(750_000,) + (500_000,) * 6) for s in SEVEN[5:])],
    )
    # The even count's higher middle: [0, 0, 600k, 700k, 800k, 900k] -> 700k, the second-lowest
    # honest entry; with the liars honest (750k each) it was 750k: one rank down, not below.
    assert zeroed.scores[0] == sorted(honest)[1] == 700_000
    assert fair.scores[0] == 750_000
    assert min(honest) <= zeroed.scores[0] <= max(honest)


def test_two_colluders_holding_two_of_three_scorers_zero_a_site_and_out_agree_the_honest() -> None:
    # Seed 0's jury shape: S2..S4 cannot vote (one-class shards), so the voters are S0, S1 and the
    # colluders S5, S6, and S0's update is scored by S1, S5, S6: the colluders are 2 of its 3.
    s0 = PeerVote(
        validator=SEVEN[0], scores=(0, 800_000, 700_000, 600_000, 900_000, 750_000, 850_000)
    )
    s1 = PeerVote(
        validator=SEVEN[1], scores=(800_000, 0, 650_000, 700_000, 850_000, 800_000, 800_000)
    )
    c5 = PeerVote(validator=SEVEN[5], scores=(0, 780_000, 680_000, 640_000, 880_000, 0, 820_000))
    c6 = PeerVote(validator=SEVEN[6], scores=(0, 790_000, 670_000, 650_000, 870_000, 770_000, 0))
    out = peer_outcome(SEVEN, [s0, s1, c5, c6], standing={}, quorum=4)
    assert out.scores[0] == 0 and out.reasons[0] == Reason.PEER_REJECTED
    # They set S0's median, so on S0 their distance is 0 and the honest S1's is 800k: each
    # colluder sits closer to the medians than S1, and its reputation cannot fall below S1's.
    assert max(out.distances[SEVEN[5]], out.distances[SEVEN[6]]) < out.distances[SEVEN[1]]
    # With the colluders silent (the abstain reference) 2 votes miss the quorum of 4: refused.
    with pytest.raises(InvalidVotes, match="fewer than the quorum"):
        peer_outcome(SEVEN, [s0, s1], standing={}, quorum=4)


def _scored(sites: list[str], scores: list[int]) -> PeerOutcome:
    """The outcome of a jury of two validators outside ``sites`` that agree on ``scores``."""
    votes = [PeerVote(validator=v, scores=tuple(scores)) for v in (D, E)]
    return first_round(sites, votes)


def test_the_screen_drops_a_marked_update_only_while_its_weight_is_above_0() -> None:
    # B's exact share is below one unit of 1e-18 and the remainder unit goes to A: a positive
    # median, weight 0, which the contract cannot drop (NotWeighted) and the finalize never pays
    sites, samples = [A, B, C], [MAX_SITE_SAMPLES, 1, 200]
    outcome = _scored(sites, [SCORE_SCALE, 1, 500_000])
    assert onchain_weights(samples, list(outcome.scores))[1] == 0
    assert outcome.peer_medians[1] == 1
    assert screen_drop(outcome, samples, {B: "tiny"}) == ()
    assert screen_drop(outcome, samples, {B: "tiny", C: "tiny"}) == (C,)
    # dropped as withheld first: C's 0 takes nothing from B, still below one unit
    withheld = drop_withheld(outcome, [C])
    assert screen_drop(withheld, samples, {B: "tiny", C: "tiny"}) == ()
    # once A is withheld B is weighted (the weights re-derived), so the drop takes it
    assert screen_drop(drop_withheld(outcome, [A]), samples, {B: "tiny"}) == (B,)


def test_a_screen_drop_that_leaves_no_weight_empties_the_round() -> None:
    sites, samples = [A, B, C], [10, 20, 30]
    outcome = _scored(sites, [400_000, 0, 600_000])  # B: median 0, never weighted
    assert screen_drop(outcome, samples, {A: "x", C: "y"}) == (A, C)
    assert screen_empties_round(outcome, samples, [A, C])
    assert not screen_empties_round(outcome, samples, [A])
    # a withheld update counts as gone; an unmarked positive median keeps the round alive
    assert screen_empties_round(drop_withheld(outcome, [C]), samples, [A])
    edge = _scored(sites, [SCORE_SCALE, 1, 0])
    assert not screen_empties_round(edge, [MAX_SITE_SAMPLES, 1, 5], [A])


def test_the_screen_drops_a_marked_update_its_drop_re_weights() -> None:
    # B (median 1) is at weight 0 from rounding beside A; once A's drop lands the weights are
    # re-derived and B's are above 0: the drop takes it in its next step (h-284: before, the
    # rule stopped at A, and B was paid, in full where nothing else was weighted)
    sites, samples = [A, B, C], [MAX_SITE_SAMPLES, 1, 200]
    outcome = _scored(sites, [SCORE_SCALE, 1, 500_000])
    assert onchain_weights(samples, [0, 1, 500_000])[1] > 0
    assert screen_drop(outcome, samples, {A: "x", B: "y"}) == (A, B)
    assert not screen_empties_round(outcome, samples, [A, B])  # C is left
    alone = _scored(sites, [SCORE_SCALE, 1, 0])
    assert screen_drop(alone, samples, {A: "x", B: "y"}) == (A, B)
    assert screen_empties_round(alone, samples, screen_drop(alone, samples, {A: "x", B: "y"}))
    # marked alone, B stays unweighted while A is weighted: neither dropped nor paid
    assert screen_drop(outcome, samples, {B: "y"}) == ()


def test_an_unreadable_input_is_left_out_of_the_screen_only_at_weight_0() -> None:
    # B (median 1) is at weight 0 from rounding beside A, C is weighted: B unreadable is left
    # out (the contract cannot drop it as withheld, NotWeighted); C unreadable is not (it is
    # dropped as withheld, or the screen waits), and a readable B never is (h-291)
    sites, samples = [A, B, C], [MAX_SITE_SAMPLES, 1, 200]
    outcome = _scored(sites, [SCORE_SCALE, 1, 500_000])
    assert onchain_weights(samples, list(outcome.scores))[1] == 0
    assert screen_left_out(outcome, samples, [B]) == (B,)
    assert screen_left_out(outcome, samples, [C]) == ()
    assert screen_left_out(outcome, samples, []) == ()
    assert screen_left_out(outcome, samples, [B, C]) == (B,)
    # once A is withheld B is weighted (the weights re-derived): no longer left out
    assert screen_left_out(drop_withheld(outcome, [A]), samples, [B]) == ()
    # a median of 0 is no input at all, whatever reads
    rejected = _scored(sites, [SCORE_SCALE, 0, 500_000])
    assert screen_left_out(rejected, samples, [B]) == ()


def test_an_input_left_out_counts_as_withheld_in_the_screens_drop() -> None:
    # the rounding edge alone (h-291): A weighted and marked, B at weight 0 and unreadable.
    # Read, B keeps the round (the drop re-weights it); left out, it would have to be dropped
    # as withheld once re-weighted, which leaves no weight: the round empties (cancel)
    sites, samples = [A, B, C], [MAX_SITE_SAMPLES, 1, 200]
    alone = _scored(sites, [SCORE_SCALE, 1, 0])
    assert screen_drop(alone, samples, {A: "x"}) == (A,)
    assert not screen_empties_round(alone, samples, [A])
    left = screen_left_out(alone, samples, [B])
    assert left == (B,)
    assert screen_drop(alone, samples, {A: "x"}, left_out=left) == (A,)
    assert screen_empties_round(alone, samples, [A], left_out=left)
    # an unmarked weighted update keeps the round, left-out or not
    outcome = _scored(sites, [SCORE_SCALE, 1, 500_000])
    assert not screen_empties_round(outcome, samples, [A], left_out=[B])


def test_an_input_left_out_keeps_its_share_of_the_chains_total_until_re_weighted() -> None:
    # h-297 (attack on h-291): A and B weighted (claims ~3e12 at median 333667), C marked (1
    # sample at median 2), F unreadable (1 sample at median 1): C and F at weight 0 from
    # rounding, the remainder units going to A and B. Left out, F is not dropped on the chain:
    # its product stays in the total the contract divides by, so C stays at weight 0 and
    # cannot be dropped (NotWeighted). At 0 in the rule (h-291) F's product left the total,
    # C's exact share reached one unit, and the rule dropped C: verify failed peers.screen on
    # the honest finalize, whatever the aggregator did
    F = f"0x{6:040x}"
    n = 2_997_000_002_997  # (1e18 - 1) / 333667 x 2 = 2n
    sites, samples = [A, B, C, F], [n, n, 1, 1]
    outcome = _scored(sites, [333_667, 333_667, 2, 1])
    chain = onchain_weights(samples, list(outcome.scores))
    assert chain[2:] == [0, 0] and chain[0] > 0 and chain[1] > 0
    assert onchain_weights(samples, [333_667, 333_667, 2, 0])[2] == 1  # the moved unit
    left = screen_left_out(outcome, samples, [F])
    assert left == (F,)
    assert screen_drop(outcome, samples, {C: "tiny"}) == ()
    assert screen_drop(outcome, samples, {C: "tiny"}, left_out=left) == ()
    assert not screen_empties_round(outcome, samples, [], left_out=left)
    # once a drop re-weights F it is dropped as withheld: at 0, from the start (as the chain's
    # record holds it then), the rest of the rule follows: A's drop leaves B, C and F, F is
    # re-weighted, and with F at 0 C is weighted beside B, so C is dropped too
    assert screen_drop(outcome, samples, {A: "x", C: "tiny"}, left_out=left) == (A, C)
    assert screen_drop(drop_withheld(outcome, [F]), samples, {A: "x", C: "tiny"}) == (A, C)
