"""The a19 experiment's game (scripts/bench/zeroed_out.py): players the standing already zeroes
are left out of the others' game and valued by their marginal on the others' coalition."""

from __future__ import annotations

import pytest

import fedtrail.valuation.round as round_module
from fedtrail.valuation.standing import History
from scripts.bench import zeroed_out


class Diluting:
    """v(S) = the mean of the members' own effects: adding any player to a coalition that holds
    a harmful one dilutes its harm, as the sample-weighted coalition mean does."""

    def __init__(self, effects: dict[str, float]) -> None:
        self.players = tuple(effects)
        self._effects = effects

    def __call__(self, coalition: frozenset[str]) -> float:
        return sum(self._effects[p] for p in coalition) / len(coalition) if coalition else 0.0


def test_zeroed_are_the_players_whose_record_before_scores_zero() -> None:
    before = {"a": 0.3, "b": -0.2, "z": -0.9}
    assert zeroed_out.zeroed(("a", "b", "z"), before) == {"z"}
    # the reference is the median record when it is negative: -0.6 here, so z (-0.9) is not
    assert zeroed_out.zeroed(("a", "b", "z"), {"a": -0.6, "b": -0.7, "z": -0.9}) == set()


def test_a_zeroed_player_no_longer_credits_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(round_module, "_play", round_module._play)
    monkeypatch.setattr(History, "warm_up", History.warm_up)
    utility = Diluting({"a": 1.0, "b": 1.0, "z": -4.0})
    plain = round_module._play("shapley", None, utility, 0).values  # type: ignore[arg-type]
    zeroed_out.install()
    history = History(accumulated={"a": 0.1, "b": 0.2, "z": -2.0}, valued_rounds=1)
    assert not history.warm_up  # the read value_round makes before its game
    got = round_module._play("shapley", None, utility, 0).values  # type: ignore[arg-type]
    assert got["a"] == pytest.approx(0.5) and got["b"] == pytest.approx(0.5)  # v({a, b}) = 1
    assert got["z"] == pytest.approx((1 + 1 - 4) / 3 - 1)  # its marginal on {a, b}
    assert plain["a"] > got["a"]  # in the plain game a was credited for diluting z
    # nobody zeroed: the plain game
    History(accumulated={"a": 0.1, "b": 0.2, "z": 0.0}, valued_rounds=1).warm_up  # noqa: B018
    assert round_module._play("shapley", None, utility, 0).values == pytest.approx(plain)  # type: ignore[arg-type]
