"""Leave-one-out marginal gain."""

from __future__ import annotations

import pytest

from fedtrail.errors import ConfigError
from fedtrail.valuation.loo import leave_one_out


def glove(coalition: frozenset[str]) -> float:
    return 1.0 if "a" in coalition and coalition & {"b", "c"} else 0.0


def test_glove_game() -> None:
    # without a there is no pair (gain 1); b and c each have a substitute (gain 0)
    res = leave_one_out(["a", "b", "c"], glove)
    assert res.values == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert res.evaluations == 5  # empty, full and the three leave-one-out coalitions
    assert (res.v_empty, res.v_full, res.method) == (0.0, 1.0, "loo")


def test_harmful_player_gets_a_negative_gain() -> None:
    q = {"a": 0.2, "b": -0.05, "c": 0.1}
    res = leave_one_out(list(q), lambda c: 0.5 + sum(q[p] for p in c))
    assert res.values == pytest.approx(q)


def test_single_and_no_player() -> None:
    assert leave_one_out(["a"], lambda c: 0.8 if c else 0.5).values == pytest.approx({"a": 0.3})
    assert leave_one_out([], lambda c: 0.5).values == {}
    with pytest.raises(ConfigError):
        leave_one_out(["a", "a"], glove)
