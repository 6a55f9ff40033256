"""The a27 experiment's jury rules (scripts/bench/jury_rules.py): the high, low, true and
cosine-conditioned medians of a peer-round jury, and why no rule on the vote matrix alone can
close a27 without reopening a26 (the two attacks give the same votes, relabelled)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import PeerVote, peer_outcome
from fedtrail.protocol.weights import SCORE_SCALE
from scripts.bench import _sim, jury_rules

F = SCORE_SCALE
SITES = [_sim.peer_address(i) for i in range(5)]


def _votes(rows: list[list[int]]) -> list[PeerVote]:
    return [PeerVote(validator=SITES[j], scores=tuple(row)) for j, row in enumerate(rows)]


# a27: site 0 poisons and validates honestly, sites 1-2 are honest (they zero site 0), sites 3-4
# rubber-stamp (full for everyone). The diagonal (own entry) never counts.
A27 = [[0, F, F, F, F], [0, 0, F, F, F], [0, F, 0, F, F], [F, F, F, 0, F], [F, F, F, F, 0]]
# a26 "one": sites 0-2 honest (full for everyone), sites 3-4 collude to zero site 0.
A26_ONE = [[0, F, F, F, F], [F, 0, F, F, F], [F, F, 0, F, F], [0, F, F, 0, F], [0, F, F, F, 0]]


@pytest.mark.parametrize(
    ("rule", "cosine", "expected"),
    [
        ("high", None, F),
        ("low", None, 0),
        ("true", None, F // 2),
        ("cos", -0.9, 0),  # against the consensus: the tie lowers it
        ("cos", 0.5, F),  # with the consensus: the tie keeps it
        ("cos", None, F),  # fewer than 3 updates: no cosine, as high
    ],
)
def test_a_two_two_tie_under_each_rule(rule: str, cosine: float | None, expected: int) -> None:
    assert jury_rules.jury_median([F, 0, F, 0], rule, cosine) == expected


@pytest.mark.parametrize("rule", jury_rules.RULES)
def test_an_odd_jury_has_one_middle_for_every_rule(rule: str) -> None:
    assert jury_rules.jury_median([F, 0, 300, F, 7], rule, -0.9) == 300
    assert jury_rules.jury_median([], rule, -0.9) == 0


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown jury rule"):
        jury_rules.jury_median([F], "mean")
    with pytest.raises(ValueError, match="unknown jury rule"):
        jury_rules.install("mean")


def test_the_high_rule_rescores_to_the_product_outcome() -> None:
    product = peer_outcome(SITES, _votes(A27), standing={}, quorum=3)
    assert jury_rules.rescore(product, _votes(A27), "high", {}) == product


def test_the_product_rule_pays_the_stamped_poisoner_and_spares_the_zeroed_rival() -> None:
    stamped = peer_outcome(SITES, _votes(A27), standing={}, quorum=3)
    zeroed = peer_outcome(SITES, _votes(A26_ONE), standing={}, quorum=3)
    # the same votes relabelled (stampers <-> honest, honest demoters <-> colluders): one
    # outcome, whichever way the tie goes
    assert stamped.scores == zeroed.scores == (F,) * 5
    # the tie's losers are rated further from the medians: the honest validators in a27
    assert stamped.distances[SITES[1]] > stamped.distances[SITES[3]]


def test_the_low_median_closes_a27_and_zeroes_the_rival() -> None:
    for matrix in (A27, A26_ONE):
        votes = _votes(matrix)
        got = jury_rules.rescore(
            peer_outcome(SITES, votes, standing={}, quorum=3), votes, "low", {}
        )
        assert got.scores[0] == 0 and got.reasons[0] is Reason.PEER_REJECTED
        assert got.scores[1:] == (F,) * 4


def test_the_cosine_rule_separates_them_only_by_the_updates() -> None:
    cosines = {SITES[0]: -0.9, **{s: 0.8 for s in SITES[1:]}}
    stamped = jury_rules.rescore(
        peer_outcome(SITES, _votes(A27), standing={}, quorum=3), _votes(A27), "cos", cosines
    )
    assert stamped.scores == (0, F, F, F, F)
    # the stampers are now the tie's losers: rated F/4 from the medians, the honest 0
    assert stamped.distances[SITES[3]] == F // 4 and stamped.distances[SITES[1]] == 0
    rival = {SITES[0]: 0.8, **{s: 0.8 for s in SITES[1:]}}
    zeroed = jury_rules.rescore(
        peer_outcome(SITES, _votes(A26_ONE), standing={}, quorum=3), _votes(A26_ONE), "cos", rival
    )
    assert zeroed.scores == (F,) * 5
    # a rival whose own update is against the consensus (label skew) is zeroed by the two
    skewed = jury_rules.rescore(
        peer_outcome(SITES, _votes(A26_ONE), standing={}, quorum=3),
        _votes(A26_ONE),
        "cos",
        {**rival, SITES[0]: -0.8},
    )
    assert skewed.scores[0] == 0


def test_install_swaps_the_outcome_the_simulation_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sim, "peer_outcome", _sim.peer_outcome)
    monkeypatch.setattr(_sim._Peers, "score", _sim._Peers.score)
    jury_rules.install("low")
    got = _sim.peer_outcome(SITES, _votes(A27), standing={}, quorum=3)
    assert got.scores == (0, F, F, F, F)


def test_install_records_each_update_s_cosine_for_the_cos_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []
    monkeypatch.setattr(_sim, "peer_outcome", _sim.peer_outcome)
    monkeypatch.setattr(_sim._Peers, "score", lambda self, record, *rest: seen.append(record))
    jury_rules.install("cos")
    peers = SimpleNamespace(addresses=SITES[:3])
    spec = SimpleNamespace(statistic_names=lambda: ())
    deltas = [{"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([1.0, 0.9])}]
    flipped = {"w": torch.tensor([-1.0, -1.0])}
    sent = [(0, flipped), (1, deltas[0]), (2, deltas[1])]
    record = SimpleNamespace(cosines={})
    result = SimpleNamespace(site_names=["site-00", "site-01", "site-02"])
    _sim._Peers.score(peers, record, 2, None, spec, sent, result)
    assert seen == [record]
    # the median update is (1, 0.9): the flip points away from it, the others along it
    assert record.cosines["site-00"] < -0.99
    assert record.cosines["site-01"] > 0.99 and record.cosines["site-02"] > 0.99
    # the flipped update's jury tie now goes against it, the others' as the high median
    got = _sim.peer_outcome(
        SITES[:3], _votes([[0, 0, F], [F, 0, F], [0, F, 0]]), standing={}, quorum=2
    )
    assert got.scores == (0, F, F)
