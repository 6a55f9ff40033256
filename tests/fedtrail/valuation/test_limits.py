"""The strictest valuation thresholds a site accepts: which side of each threshold harms sites,
the product's presets inside the defaults, and the ``[accept]`` table."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.node.config import NodeConfig, load_node_config, write_node_config
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation import HISTORY_COMBINER, Combiner
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.limits import (
    DUPLICATE_LIMITS,
    UNBOUNDED,
    ThresholdLimits,
    limits_from,
    load_limits,
)

STRICTER = {
    "min_cosine": 0.2,
    "max_norm_z": 2.0,
    "norm_scale_floor": 0.01,
    "min_gain": 0.05,
    "min_robust_sites": 2,
    "demote_scale": 1e-9,
    "free_rider_norm": 0.5,
    "stale_cosine": 0.5,
    "max_sample_ratio": 1.5,
    "max_norm_ratio": 1.0,
    "small_norm_ratio": 0.9,
}
"""One value per bounded threshold on its harmful side of the default limit."""

LOOSER = {
    "min_cosine": -1.0,
    "max_norm_z": 50.0,
    "norm_scale_floor": 1.0,
    "min_gain": -1.0,
    "min_robust_sites": 5,
    "demote_scale": 2.0,
    "free_rider_norm": 0.0,
    "stale_cosine": 1.0,
    "max_sample_ratio": 100.0,
    "max_norm_ratio": 0.0,
    "small_norm_ratio": 0.0,
}


def test_every_threshold_but_the_unbounded_has_a_limit() -> None:
    names = {f.name for f in fields(Combiner)}
    assert {f.name for f in fields(ThresholdLimits)} == names - UNBOUNDED | set(DUPLICATE_LIMITS)
    assert set(DUPLICATE_LIMITS.values()) == {f.name for f in fields(DuplicateRule)}
    assert set(STRICTER) == set(LOOSER) == names - UNBOUNDED


@pytest.mark.parametrize(
    "combiner",
    [
        Combiner(),
        HISTORY_COMBINER,
        combiner_from(ValuationSettings(method="loo", metric="auc")),  # a log of before thresholds
        combiner_from(ValuationSettings(method="loo", metric="auc", combiner={})),
        combiner_from(ValuationSettings(method="loo", metric="auc", standing=True, combiner={})),
    ],
    ids=["per-round", "history", "unrecorded", "recorded-early", "recorded-standing"],
)
def test_the_products_own_presets_and_older_logs_are_accepted(combiner: Combiner) -> None:
    assert ThresholdLimits().breaches(combiner) == []


@pytest.mark.parametrize("name", sorted(STRICTER))
def test_each_threshold_tightened_past_its_limit_is_named(name: str) -> None:
    value = STRICTER[name]
    breaches = ThresholdLimits().breaches(replace(Combiner(), **{name: value}))
    assert len(breaches) == 1 and breaches[0].startswith(f"{name} {value} (accepted: ")


def test_loosening_every_threshold_is_accepted() -> None:
    assert ThresholdLimits().breaches(Combiner(**LOOSER)) == []


def test_the_norm_ratios_are_accepted_only_off_by_default_and_on_above_a_set_limit() -> None:
    on = Combiner(max_norm_ratio=4.0)
    assert ThresholdLimits().breaches(on) == ["max_norm_ratio 4.0 (accepted: only off (0))"]
    assert ThresholdLimits(max_norm_ratio=3.0).breaches(on) == []
    assert ThresholdLimits(max_norm_ratio=5.0).breaches(on) == [
        "max_norm_ratio 4.0 (accepted: at least 5.0)"
    ]
    assert ThresholdLimits().breaches(Combiner(small_norm_ratio=0.05)) == [
        "small_norm_ratio 0.05 (accepted: only off (0))"
    ]


def test_accepting_takes_the_looser_of_the_defaults_and_the_combiner() -> None:
    strict = Combiner(**STRICTER)
    agreed = ThresholdLimits.accepting(strict)
    assert agreed.breaches(strict) == []
    assert agreed.breaches(Combiner()) == [] and agreed.breaches(HISTORY_COMBINER) == []
    # still refuses what is stricter than both
    assert agreed.breaches(replace(strict, stale_cosine=0.4)) == [
        "stale_cosine 0.4 (accepted: at least 0.5)"
    ]


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"stale_cos": 0.5}, "unknown threshold(s) in [accept]: ['stale_cos']"),
        ({"stale_cosine": 2.0}, "stale_cosine must lie in [0, 1]"),
        ({"max_norm_z": "10"}, "max_norm_z must be a number"),
        ({"min_robust_sites": 2.5}, "min_robust_sites must be a positive integer"),
        ([], "must be a table"),
    ],
)
def test_an_invalid_accept_table_is_refused(table: object, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        limits_from(table)
    assert needle in str(exc.value)


def test_the_accept_table_round_trips_through_a_site_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    wide = ThresholdLimits(stale_cosine=0.9, max_norm_ratio=3.0)
    write_node_config(path, NodeConfig(accept=wide))
    assert load_node_config(path).accept == wide
    assert load_limits(path) == wide  # an auditor reads a site's config for `verify --accept`
    only = tmp_path / "accept.toml"
    only.write_text("[accept]\nmin_cosine = -0.2\n", encoding="utf-8")
    assert asdict(load_limits(only)) == {**asdict(ThresholdLimits()), "min_cosine": -0.2}
    none = tmp_path / "none.toml"
    none.write_text("", encoding="utf-8")
    assert load_limits(none) == ThresholdLimits()
    with pytest.raises(ConfigError, match="no file"):
        load_limits(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        (DuplicateRule(cosine=0.5), ["duplicate_cosine 0.5 (accepted: at least 0.9999)"]),
        (
            DuplicateRule(relative_l2=0.9),
            ["duplicate_relative_l2 0.9 (accepted: at most 0.001)"],
        ),
        (DuplicateRule(), []),
        (DuplicateRule(cosine=1.0, relative_l2=1e-6), []),  # looser: fewer copies
    ],
)
def test_a_duplicate_rule_stricter_than_the_limits_is_named(
    rule: DuplicateRule, named: list[str]
) -> None:
    """The terms' duplicate rule zeroes a later update within both thresholds of an earlier one
    (DUPLICATE): at cosine 0.5 and relative_l2 0.9 every honest update but the first committed
    is a "copy", and the replay passes bit for bit. Its thresholds are bounded like the
    valuation's."""
    assert ThresholdLimits().breaches(Combiner(), rule) == named
    wide = limits_from({"duplicate_cosine": 0.5, "duplicate_relative_l2": 0.9})
    assert wide.breaches(Combiner(), rule) == []
    assert ThresholdLimits.accepting(Combiner(**STRICTER)).breaches(Combiner(), rule) == named


def test_an_invalid_duplicate_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate thresholds out of range"):
        limits_from({"duplicate_cosine": 0.0})


def test_widened_only_loosens() -> None:
    """A site's own wider limit stays; a stricter one gives way to the combiner's threshold."""
    own = ThresholdLimits(stale_cosine=0.9, max_sample_ratio=20.0)
    wide = own.widened(replace(Combiner(), stale_cosine=0.95, max_sample_ratio=5.0))
    assert (wide.stale_cosine, wide.max_sample_ratio) == (0.9, 5.0)
    assert wide.widened(Combiner()) == wide.widened(Combiner()).widened(Combiner())
