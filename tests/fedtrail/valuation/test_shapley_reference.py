"""Exact Shapley against a brute force written from the definition: the mean, over every
order of the players, of each player's marginal contribution when it joins (in exact
rationals, on random games of 1-7 players whose coalition values are random floats)."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest

from fedtrail.valuation.shapley import exact_shapley


def brute_force(players: list[str], v: dict[frozenset[str], float]) -> dict[str, Fraction]:
    """phi_i = (1/n!) * sum over orders of v(before i + i) - v(before i)."""
    total = {p: Fraction(0) for p in players}
    for order in itertools.permutations(players):
        before: frozenset[str] = frozenset()
        for p in order:
            now = before | {p}
            total[p] += Fraction(v[now]) - Fraction(v[before])
            before = now
    return {p: t / math.factorial(len(players)) for p, t in total.items()}


def random_game(n: int, seed: int) -> tuple[list[str], dict[frozenset[str], float]]:
    rng = random.Random(seed)
    players = [f"0x{rng.getrandbits(160):040x}" for _ in range(n)]
    v = {
        frozenset(c): rng.uniform(-1.0, 1.0) * 10 ** rng.randint(-3, 2)
        for k in range(n + 1)
        for c in itertools.combinations(players, k)
    }
    return players, v


@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize("seed", range(3))
def test_exact_shapley_is_the_permutation_mean(n: int, seed: int) -> None:
    players, v = random_game(n, seed)
    res = exact_shapley(players, lambda c: v[c])
    want = brute_force(players, v)
    assert list(res.values) == players
    scale = max(abs(x) for x in v.values())
    for p in players:
        assert abs(Fraction(res.values[p]) - want[p]) <= Fraction(1e-13) * Fraction(scale)
    assert res.evaluations == 2**n
    assert (res.v_empty, res.v_full) == (v[frozenset()], v[frozenset(players)])


def test_the_values_do_not_depend_on_the_order_players_are_listed() -> None:
    players, v = random_game(5, 42)
    want = brute_force(players, v)
    shuffled = players[::-1]
    res = exact_shapley(shuffled, lambda c: v[c])
    for p in players:
        assert abs(Fraction(res.values[p]) - want[p]) <= Fraction(1e-13) * 100
