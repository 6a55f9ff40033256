"""Shapley values: exact against hand-computed games, Monte-Carlo against exact, caching."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from fedtrail.errors import ConfigError
from fedtrail.valuation.shapley import (
    MAX_EXACT_SITES,
    exact_shapley,
    mc_shapley,
)
from fedtrail.valuation.utility import CachedUtility


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (average) ranks."""
    rx, ry = ranks(x) - (len(x) + 1) / 2, ranks(y) - (len(y) + 1) / 2
    return float((rx * ry).sum() / math.sqrt((rx * rx).sum() * (ry * ry).sum()))


def test_spearman_helper() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one adjacent swap among 4: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert list(ranks([5, 1, 5, 3])) == [3.5, 1.0, 3.5, 2.0]


# ---------------------------------------------------------------- exact, hand-computed games


def glove(coalition: frozenset[str]) -> float:
    """Glove game: ``a`` owns a left glove, ``b`` and ``c`` right gloves; a pair is worth 1."""
    return 1.0 if "a" in coalition and coalition & {"b", "c"} else 0.0


def test_exact_glove_game() -> None:
    # a is pivotal in orders where it comes after b or c: 4 of 6 orders -> 2/3;
    # b is pivotal only in (a, b, c): 1/6; likewise c.
    res = exact_shapley(["a", "b", "c"], glove)
    assert res.values == pytest.approx({"a": 2 / 3, "b": 1 / 6, "c": 1 / 6})
    assert res.evaluations == 8
    assert (res.v_empty, res.v_full) == (0.0, 1.0)
    assert res.method == "shapley" and res.permutations == 0


def test_exact_two_players_with_a_baseline() -> None:
    table = {"": 0.5, "a": 0.7, "b": 0.6, "ab": 0.9}

    def v(c: frozenset[str]) -> float:
        return table["".join(sorted(c))]

    # phi_a = 1/2 (0.7 - 0.5) + 1/2 (0.9 - 0.6) = 0.25; phi_b = 1/2 (0.1) + 1/2 (0.2) = 0.15
    res = exact_shapley(["a", "b"], v)
    assert res.values == pytest.approx({"a": 0.25, "b": 0.15})
    assert sum(res.values.values()) == pytest.approx(0.9 - 0.5)  # efficiency


def test_exact_additive_and_null_players() -> None:
    q = {"s1": 0.3, "s2": -0.1, "s3": 0.0, "s4": 0.05}
    res = exact_shapley(list(q), lambda c: 0.5 + sum(q[p] for p in c))
    assert res.values == pytest.approx(q)
    assert res.evaluations == 16


def test_exact_refuses_more_than_ten_sites_before_evaluating() -> None:
    calls = []

    def v(c: frozenset[str]) -> float:
        calls.append(c)
        return 0.0

    assert MAX_EXACT_SITES == 10
    assert len(exact_shapley([f"s{i}" for i in range(10)], v).values) == 10
    calls.clear()
    with pytest.raises(ConfigError, match="limit is 10"):
        exact_shapley([f"s{i}" for i in range(11)], v)
    assert calls == []
    with pytest.raises(ConfigError, match="distinct"):
        exact_shapley(["a", "a"], v)


def test_cached_utility_counts_distinct_coalitions() -> None:
    calls: list[frozenset[str]] = []

    def v(c: frozenset[str]) -> float:
        calls.append(c)
        return float(len(c))

    u = CachedUtility(v)
    assert u(frozenset({"a"})) == 1.0
    assert u(frozenset({"a"})) == 1.0
    assert u(frozenset({"a", "b"})) == 2.0
    assert u.evaluations == 2 == len(calls)
    with pytest.raises(ConfigError, match="not finite"):
        CachedUtility(lambda c: math.nan)(frozenset())


# ---------------------------------------------------------------- Monte-Carlo

Q8 = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0]
SITES8 = [f"site{i}" for i in range(8)]


def saturating(coalition: frozenset[str]) -> float:
    """An 8-site game shaped like validation accuracy: diminishing returns in the summed
    quality of the coalition's updates (site i contributes Q8[i])."""
    return 1.0 - math.exp(-3.0 * sum(Q8[int(s.removeprefix("site"))] for s in coalition))


def test_mc_ranking_agrees_with_exact_using_far_fewer_evaluations() -> None:
    exact = exact_shapley(SITES8, saturating)
    assert exact.evaluations == 2**8
    truth = [exact.values[s] for s in SITES8]
    assert truth == sorted(truth)  # better data, higher value
    counts = []
    for seed in range(10):
        mc = mc_shapley(SITES8, saturating, seed=seed)
        assert mc.method == "mc_shapley"
        estimate = [mc.values[s] for s in SITES8]
        assert spearman(truth, estimate) >= 0.9, (seed, estimate)
        # efficiency holds up to the truncated remainder: 1% of v(all) - v(empty) per
        # permutation
        gain = mc.v_full - mc.v_empty
        assert sum(estimate) == pytest.approx(gain, abs=0.01 * gain)
        assert mc.permutations % 16 == 0  # whole cycles of 2n rotations
        counts.append(mc.evaluations)
    # measured 60-110 per seed (mean ~85 over 200 seeds) against 256 for the exact values
    assert max(counts) <= 2**8 // 2
    assert sum(counts) / len(counts) <= 100


def test_mc_is_seeded() -> None:
    a = mc_shapley(SITES8, saturating, seed=3)
    b = mc_shapley(SITES8, saturating, seed=3)
    c = mc_shapley(SITES8, saturating, seed=4)
    assert a == b
    assert a.values != c.values


def test_mc_without_truncation_is_exact_on_an_additive_game() -> None:
    q = {"a": 0.3, "b": -0.1, "c": 0.2, "d": 0.0, "e": 0.05}
    res = mc_shapley(list(q), lambda c: 0.5 + sum(q[p] for p in c), truncation=0.0, seed=1)
    assert res.values == pytest.approx(q)


def test_mc_truncation_skips_evaluations() -> None:
    full = mc_shapley(SITES8, saturating, truncation=0.0, max_cycles=2, min_cycles=2)
    cut = mc_shapley(SITES8, saturating, truncation=0.05, max_cycles=2, min_cycles=2)
    assert full.permutations == cut.permutations == 32
    assert cut.evaluations < full.evaluations


def test_mc_small_games() -> None:
    empty = mc_shapley([], glove)
    assert empty.values == {} and empty.evaluations == 1
    one = mc_shapley(["a"], lambda c: 0.7 if c else 0.5)
    assert one.values == pytest.approx({"a": 0.2})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"truncation": -0.1},
        {"truncation": 1.0},
        {"convergence": math.nan},
        {"min_cycles": 0},
        {"max_cycles": 1, "min_cycles": 2},
        {"max_cycles": 2.0},
    ],
)
def test_mc_settings_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        mc_shapley(SITES8, saturating, **kwargs)  # type: ignore[arg-type]
