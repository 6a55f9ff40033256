"""The a19 experiment's share rule (scripts/bench/share_clip.py): each |value| clipped at c x
the round's median |value| before the shares are taken, installed for value_round only on
request."""

from __future__ import annotations

import pytest

import fedtrail.valuation.round as round_module
from fedtrail.valuation import normalised_values
from scripts.bench import share_clip


def test_a_dominant_value_is_clipped_and_the_others_shares_grow() -> None:
    values = {"a": 1.0, "b": 1.0, "c": 2.0, "att": -0.5, "syb": -10.0}  # median |value| 1
    plain = normalised_values(values)
    got = share_clip.clipped_normalised_values(values, 2.0)
    assert plain is not None and got is not None
    # syb counts as -2 (2 x the median): total 1 + 1 + 2 + 0.5 + 2 = 6.5
    assert got == pytest.approx(
        {"a": 1 / 6.5, "b": 1 / 6.5, "c": 2 / 6.5, "att": -0.5 / 6.5, "syb": -2 / 6.5}
    )
    assert abs(got["att"]) > abs(plain["att"])
    assert sum(abs(v) for v in got.values()) == pytest.approx(1.0)


def test_values_within_the_bound_keep_the_product_shares() -> None:
    values = {"a": 0.3, "b": -0.2, "c": 0.5}
    assert share_clip.clipped_normalised_values(values, 2.0) == normalised_values(values)


def test_a_zero_median_clips_nothing_and_all_zero_is_none() -> None:
    values = {"a": 0.0, "b": 0.0, "c": 1.0}
    assert share_clip.clipped_normalised_values(values, 2.0) == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert share_clip.clipped_normalised_values({"a": 0.0, "b": 0.0}, 2.0) is None


def test_install_swaps_the_rule_value_round_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(round_module, "normalised_values", round_module.normalised_values)
    share_clip.install(2.0)
    values = {"a": 1.0, "b": 1.0, "syb": -10.0}
    assert round_module.normalised_values(values) == share_clip.clipped_normalised_values(
        values, 2.0
    )
    with pytest.raises(ValueError):
        share_clip.install(0.5)
