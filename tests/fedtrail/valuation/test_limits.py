"""The strictest and loosest valuation thresholds a site accepts: which side of each threshold
harms sites, the product's presets inside the defaults, and the ``[accept]`` table."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import RULE_NAMES, AggregationRule
from fedtrail.node.config import NodeConfig, load_node_config, write_node_config
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation import HISTORY_COMBINER, Combiner
from fedtrail.valuation.base import METRICS
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.limits import (
    DUPLICATE_LIMITS,
    PAIRED_LIMITS,
    PAYMENT_LIMITS,
    START_LIMITS,
    UNBOUNDED,
    WINDOW_LIMITS,
    LoosestLimits,
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
    "credit_cosine": 0.5,
    "relief_cosine": 0.5,
    "boost_clip": 0.9,
    "warm_up_floor": 0.25,
    "white_noise_z": 1e5,
    "shaped_noise_z": 1e5,
    "block_noise_z": 100.0,
    "dp_copy_z": 30.0,
    "sample_median_self": 0,
    "tiny_size_power": 0.0,
    "stale_support_cosine": 0.9,
    "stale_support_overlap": 0.5,
    "span_residual": 0.5,
    "size_norm_z": 3.0,
}
"""One value per bounded threshold on its harmful side of the default limit."""

OFF_IS_STRICTEST = {"norm_size_cap", "tiny_size_reference", "tiny_size_own"}
"""Thresholds whose default strictest limit is their strictest value (the rule off, or
``tiny_size_own``'s 1), so nothing is stricter than it."""

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
    "credit_cosine": -1.0,
    "relief_cosine": -1.0,
    "boost_clip": 0.0,
    "warm_up_floor": 1.0,
    "white_noise_z": 0.0,
    "shaped_noise_z": 0.0,
    "block_noise_z": 0.0,
    "dp_copy_z": 0.0,
    "sample_median_self": 1,
    "norm_size_cap": 1.0,
    "tiny_size_power": 2.0,
    "tiny_size_reference": 150.0,
    "tiny_size_own": 1,
    "stale_support_cosine": 1.0,
    "stale_support_overlap": 1.0,
    "span_residual": 0.0,
    "size_norm_z": 0.0,
}


LOOSEST_PAST = {
    "min_gain": -0.5,
    "max_norm_z": 50.0,
    "norm_scale_floor": 1.0,
    "min_robust_sites": 1000,
    "demote_scale": 2.0,
    "free_rider_norm": 0.0,
    "stale_cosine": 1.0,
    "stale_distance": 0.0,
    "max_sample_ratio": 1e9,
    "credit_cosine": -1.0,
    "stale_rounds": 1,
    "dp_spend_check": 0,
    "norm_size_cap": 1e6,
    "tiny_size_power": 8.0,
    "tiny_size_reference": 1e6,
    "tiny_size_own": 0,
    "dp_noise_check": 0,
    "relief_cosine": -1.0,
    "stale_support_cosine": 1.0,
    "stale_support_overlap": 1.0,
}
"""One value per threshold past its default loosest limit: each pays what the valuation should
not (a copy, a zero update, an inflated count, an outlier the norm screen would flag, a
sign-flipped update's positive share)."""


def test_every_threshold_but_the_unbounded_has_a_limit() -> None:
    names = {f.name for f in fields(Combiner)}
    limits = {f.name for f in fields(ThresholdLimits)} - {"loosest", "statistics"}
    limits -= PAYMENT_LIMITS | START_LIMITS | WINDOW_LIMITS | PAIRED_LIMITS
    assert limits == names - UNBOUNDED | set(DUPLICATE_LIMITS)
    # unbounded on the loosening side: off is their loosest; sample_median_self's default (1,
    # the median with the judged count in) is its loosest value and 0 its only other one
    # (dp_spend_check and dp_noise_check are bounded on their loose side only: off pays an
    # understated spend, a DP declaration without its noise)
    off_is_loosest = {
        "max_norm_ratio",
        "small_norm_ratio",
        "boost_clip",
        "warm_up_floor",
        "sample_median_self",
        "white_noise_z",
        "shaped_noise_z",
        "block_noise_z",
        "dp_copy_z",
        "span_residual",
        "size_norm_z",
    }
    # record_floor: no limit on either side (its effect never goes below demote_scale's; 0,
    # off, is the unbounded record of every ledger before it); size_norm_count neither (it only
    # lowers the count size_norm_z's allowance is judged against: takes rejections back);
    # warm_up_scope neither (either value scores the warm-up between warm_up_floor, bounded,
    # and the full score)
    unbounded_both = {"record_floor", "size_norm_count", "warm_up_scope"}
    loosest = {f.name for f in fields(LoosestLimits)}
    assert loosest == names - off_is_loosest - unbounded_both | set(DUPLICATE_LIMITS)
    assert set(LOOSEST_PAST) == loosest - {"min_cosine"} - set(DUPLICATE_LIMITS)
    assert set(DUPLICATE_LIMITS.values()) == {f.name for f in fields(DuplicateRule)}
    assert set(LOOSER) == names - UNBOUNDED
    assert set(STRICTER) == names - UNBOUNDED - OFF_IS_STRICTEST


@pytest.mark.parametrize("combiner", [Combiner(), HISTORY_COMBINER], ids=["per-round", "history"])
def test_the_products_own_presets_are_accepted_on_both_sides(combiner: Combiner) -> None:
    assert ThresholdLimits().breaches(combiner) == []
    assert ThresholdLimits().loosest.breaches(combiner, DuplicateRule()) == []
    assert ThresholdLimits().refusal(combiner, DuplicateRule()) is None


@pytest.mark.parametrize(
    "combiner",
    [
        combiner_from(ValuationSettings(method="loo", metric="auc")),  # a log of before thresholds
        combiner_from(ValuationSettings(method="loo", metric="auc", combiner={})),
        combiner_from(ValuationSettings(method="loo", metric="auc", standing=True, combiner={})),
    ],
    ids=["unrecorded", "recorded-early", "recorded-standing"],
)
def test_terms_omitting_later_thresholds_are_refused_on_the_side_each_harms(
    combiner: Combiner,
) -> None:
    """A round recorded before ``credit_cosine``, ``relief_cosine``, ``stale_rounds``,
    ``sample_median_self``, ``dp_spend_check``, ``dp_noise_check`` and the size allowances
    existed was valued without them (off; one round of references; the others' counts only; no
    privacy spend or noise check; no allowance), and that is how terms that omit them read: an
    aggregator could turn the sign-flip rules off, let a resent update from two rounds back be
    paid, bring back the count median that 1-sample colluders drag down to zero honest sites
    (attack a3), pay a site that understates its privacy spend (attack a5) or declares DP-SGD
    and adds no noise (a24), zero honest small and large hospitals again, or pay an earlier
    update resent sparser (a91), by leaving keys out. Sites refuse such terms (and this build
    reads no ledger of the builds that wrote them: the client requires its own contract
    code)."""
    assert sorted(ThresholdLimits().breaches(combiner)) == [
        "sample_median_self 0 (accepted: at least 1)",
        "tiny_size_power 0.0 (accepted: at least 2.0)",
    ]
    old_rules = {"sample_median_self": 0, "tiny_size_power": 0.0}
    assert limits_from(old_rules).breaches(combiner) == []
    assert ThresholdLimits().loosest.breaches(combiner, DuplicateRule()) == [
        "stale_rounds 1 (accepted: at least 3)",
        "credit_cosine -1.0 (accepted: at least -0.7)",
        "dp_spend_check 0 (accepted: at least 1)",
        "dp_noise_check 0 (accepted: at least 2)",
        "relief_cosine -1.0 (accepted: at least -0.7)",
        "stale_support_cosine 1.0 (accepted: at most 0.999995)",
        "stale_support_overlap 1.0 (accepted: at most 0.99)",
    ]


def test_the_size_allowances_need_the_sites_consent_to_change() -> None:
    """``tiny_size_power`` 0 (the free-rider floor's allowance off: the rule that zeroed an
    honest 20-image site as FREE_RIDER, and how terms written before it read) is refused by
    default, as is ``norm_size_cap`` above 1 (the norm screen excusing a count inflated within
    the cap for as many times the boost, attack a10); a site (or an auditor of an older
    ledger) that moves the limits accepts them."""
    old = combiner_from(ValuationSettings(method="loo", metric="auc", standing=True, combiner={}))
    assert (old.norm_size_cap, old.tiny_size_power) == (1.0, 0.0)
    assert ThresholdLimits().refusal(HISTORY_COMBINER, DuplicateRule()) is None
    assert [b for b in ThresholdLimits().breaches(old) if "size" in b] == [
        "tiny_size_power 0.0 (accepted: at least 2.0)"
    ]
    consenting = limits_from({"tiny_size_power": 0.0})
    assert [b for b in consenting.breaches(old) if "size" in b] == []
    opted_in = replace(HISTORY_COMBINER, norm_size_cap=10.0)
    assert ThresholdLimits().loosest.breaches(opted_in) == [
        "norm_size_cap 10.0 (accepted: at most 1.0)"
    ]
    assert limits_from({"loosest": {"norm_size_cap": 10.0}}).refusal(opted_in) is None


@pytest.mark.parametrize("name", sorted(STRICTER))
def test_each_threshold_tightened_past_its_limit_is_named(name: str) -> None:
    value = STRICTER[name]
    breaches = ThresholdLimits().breaches(replace(Combiner(), **{name: value}))
    assert len(breaches) == 1 and breaches[0].startswith(f"{name} {value} (accepted: ")


def test_loosening_is_accepted_up_to_the_loosest_preset() -> None:
    assert ThresholdLimits().breaches(Combiner(**LOOSER)) == []
    within = Combiner(min_cosine=-1.0, max_norm_z=20.0, stale_cosine=0.99999)
    assert ThresholdLimits().refusal(within) is None


@pytest.mark.parametrize("name", sorted(LOOSEST_PAST))
def test_each_threshold_loosened_past_its_loosest_limit_is_named(name: str) -> None:
    """Attack: an aggregator colluding with some sites loosens one threshold in the terms so a
    copy, a zero update, an inflated count or an outlier is paid; the round replays bit for bit.
    The site refuses it, naming the threshold and the bound."""
    value = LOOSEST_PAST[name]
    limits = ThresholdLimits()
    loose = replace(Combiner(), **{name: value})
    assert limits.breaches(loose) == []
    breaches = limits.loosest.breaches(loose)
    assert len(breaches) == 1 and breaches[0].startswith(f"{name} {value} (accepted: ")
    refusal = limits.refusal(loose)
    assert refusal is not None and refusal.startswith(
        "valuation thresholds looser than this site accepts ([accept.loosest] in its "
        f"config.toml): {name} {value}"
    )
    assert ThresholdLimits(loosest=LoosestLimits(**{name: value})).refusal(loose) is None


def test_a_duplicate_rule_looser_than_the_limits_is_named() -> None:
    """Duplicates off in effect (cosine 1.0 or relative_l2 0, no scaled_cosine): a copy with a
    few ulps of noise is paid as a second honest update."""
    off = DuplicateRule(cosine=1.0, relative_l2=1e-6, scaled_cosine=None)
    assert ThresholdLimits().loosest.breaches(Combiner(), off) == [
        "duplicate_cosine 1.0 (accepted: at most 0.9999)",
        "duplicate_relative_l2 1e-06 (accepted: at least 0.001)",
        "duplicate_scaled_cosine 1.0 (accepted: at most 0.999995)",
    ]
    agreed = limits_from(
        {
            "loosest": {
                "duplicate_cosine": 1.0,
                "duplicate_relative_l2": 1e-6,
                "duplicate_scaled_cosine": 1.0,
            }
        }
    )
    assert agreed.refusal(Combiner(), off) is None


def test_terms_without_scaled_cosine_are_refused_as_looser() -> None:
    """Terms that lack ``scaled_cosine`` replay the rule before it, which pays a copy scaled by
    1.01 (attack a1): an aggregator could turn the scale-free rule off by leaving one key out,
    so such terms read as 1.0 and are refused, like those omitting ``credit_cosine``."""
    old = DuplicateRule(scaled_cosine=None)
    assert ThresholdLimits().breaches(Combiner(), old) == []
    assert ThresholdLimits().loosest.breaches(Combiner(), old) == [
        "duplicate_scaled_cosine 1.0 (accepted: at most 0.999995)"
    ]
    assert ThresholdLimits().refusal(Combiner(), DuplicateRule()) is None


def test_terms_without_support_cosine_are_refused_as_looser() -> None:
    """Terms that lack ``support_cosine`` replay the rule before it, which pays a copy sent
    through ``topk8`` at fraction 0.5 (attack a90): read as 1.0 and refused, as a missing
    ``scaled_cosine``; a site that widened ``[accept.loosest]`` takes them."""
    old = DuplicateRule(support_cosine=None)
    assert ThresholdLimits().breaches(Combiner(), old) == []
    assert ThresholdLimits().loosest.breaches(Combiner(), old) == [
        "duplicate_support_cosine 1.0 (accepted: at most 0.999995)"
    ]
    refusal = ThresholdLimits().refusal(Combiner(), old)
    assert refusal is not None and "duplicate_support_cosine 1.0" in refusal
    wide = limits_from({"loosest": {"duplicate_support_cosine": 1.0}})
    assert wide.refusal(Combiner(), old) is None
    strict = DuplicateRule(support_cosine=0.99)  # flags more: stricter than a site accepts
    assert ThresholdLimits().breaches(Combiner(), strict) == [
        "duplicate_support_cosine 0.99 (accepted: at least 0.999995)"
    ]


def test_terms_without_white_noise_z_are_refused_as_looser() -> None:
    """Terms that lack ``duplicates.white_noise_z`` (or carry 0) replay the rule before it,
    which pays a same-round copy plus 1% noise (attack a1 ``noise 3 0.01``): read as 0, off,
    and refused; a site that widened ``[accept.loosest]`` takes them. A higher threshold flags
    more: refused as stricter."""
    for old in (DuplicateRule(white_noise_z=None), DuplicateRule(white_noise_z=0.0)):
        assert ThresholdLimits().breaches(Combiner(), old) == []
        assert ThresholdLimits().loosest.breaches(Combiner(), old) == [
            "duplicate_white_noise_z 0.0 (accepted: at least 1000.0)"
        ]
        wide = limits_from({"loosest": {"duplicate_white_noise_z": 0.0}})
        assert wide.refusal(Combiner(), old) is None
    strict = DuplicateRule(white_noise_z=5000.0)
    assert ThresholdLimits().breaches(Combiner(), strict) == [
        "duplicate_white_noise_z 5000.0 (accepted: at most 1000.0)"
    ]
    assert ThresholdLimits().refusal(Combiner(), DuplicateRule()) is None


def test_white_noise_dp_cosine_is_opt_in_on_both_sides() -> None:
    """Terms without ``duplicates.white_noise_dp_cosine`` (the product's default; DP-declared
    later updates exempt, attack a100) read as 1.0 and are accepted; terms that name 0.5 test
    more updates: refused as stricter unless the site's ``[accept]`` takes it."""
    default = DuplicateRule()
    assert default.white_noise_dp_cosine is None
    assert ThresholdLimits().refusal(Combiner(), default) is None
    on = DuplicateRule(white_noise_dp_cosine=0.5)
    assert ThresholdLimits().breaches(Combiner(), on) == [
        "duplicate_white_noise_dp_cosine 0.5 (accepted: at least 1.0)"
    ]
    taking = limits_from({"duplicate_white_noise_dp_cosine": 0.5})
    assert taking.refusal(Combiner(), on) is None
    assert taking.refusal(Combiner(), default) is None


def test_both_sides_are_named_together() -> None:
    both = replace(Combiner(), stale_cosine=0.5, max_sample_ratio=1e9)
    refusal = ThresholdLimits().refusal(both)
    assert refusal is not None
    stricter, looser = refusal.split("; and ")
    assert "stricter than this site accepts" in stricter and "stale_cosine 0.5" in stricter
    assert "looser than this site accepts" in looser and "max_sample_ratio 1000000000.0" in looser


def test_an_empty_accepted_range_is_refused_and_an_old_strict_limit_moves_the_loosest() -> None:
    with pytest.raises(ConfigError, match="loosest accepted value is stricter than the strictest"):
        limits_from({"max_sample_ratio": 30.0, "loosest": {"max_sample_ratio": 20.0}})
    # a table written before the loosest existed: a strict limit past the default loosest
    old = limits_from({"max_sample_ratio": 20.0, "min_cosine": -1.0})
    assert old.loosest.max_sample_ratio == 20.0 and old.loosest.min_cosine == -1.0
    assert old.refusal(replace(HISTORY_COMBINER, max_sample_ratio=20.0)) is None


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
    loose = Combiner(**{**LOOSER, **LOOSEST_PAST})
    consenting = ThresholdLimits.accepting(loose)
    assert consenting.refusal(loose) is None and consenting.refusal(Combiner()) is None


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"stale_cos": 0.5}, "unknown threshold(s) in [accept]: ['stale_cos']"),
        ({"stale_cosine": 2.0}, "stale_cosine must lie in [0, 1]"),
        ({"max_norm_z": "10"}, "max_norm_z must be a number"),
        ({"min_robust_sites": 2.5}, "min_robust_sites must be a positive integer"),
        ([], "must be a table"),
        ({"loosest": {"stale_cosine": 2.0}}, "[accept.loosest]: stale_cosine must lie in [0, 1]"),
        ({"loosest": {"max_norm_ratio": 2.0}}, "unknown threshold(s) in [accept.loosest]"),
        ({"loosest": 3}, "loosest must be a table"),
        ({"per_round": 1}, "per_round must be true or false"),
        ({"methods": "shapley"}, "methods must be a list of game names"),
        ({"methods": ["banzhaf"]}, "methods names unknown game(s) ['banzhaf']"),
        ({"rules": []}, "rules must name at least one of"),
        ({"metrics": ["accuracy"]}, "metrics names unknown metric(s) ['accuracy']"),
        ({"min_clip_norm": -1.0}, "min_clip_norm must be a finite number >= 0"),
        ({"max_trim_ratio": 0.5}, "max_trim_ratio must lie in [0, 0.5)"),
        ({"min_krum_m": 0}, "min_krum_m must be an integer >= 1"),
    ],
)
def test_an_invalid_accept_table_is_refused(table: object, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        limits_from(table)
    assert needle in str(exc.value)


def test_the_accept_table_round_trips_through_a_site_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    wide = ThresholdLimits(
        stale_cosine=0.9, max_norm_ratio=3.0, loosest=LoosestLimits(max_sample_ratio=50.0)
    )
    write_node_config(path, NodeConfig(accept=wide))
    assert "[accept.loosest]" in path.read_text(encoding="utf-8")
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
    opted = ThresholdLimits(per_round=True, methods=("shapley", "loo"), min_clip_norm=0.5)
    write_node_config(path, NodeConfig(accept=opted))
    assert load_node_config(path).accept == opted


def _valuation(**settings: Any) -> ValuationSettings:
    return ValuationSettings(
        **{"method": "shapley", "metric": "loss", "standing": True, **settings}
    )


@pytest.mark.parametrize(
    ("rule", "settings", "named"),
    [
        (AggregationRule(), _valuation(standing=False), "standing off"),
        (AggregationRule(), _valuation(standing=None), "standing off"),  # absent: off
        (AggregationRule(), _valuation(method="loo"), "valuation game 'loo'"),
        (AggregationRule(), _valuation(large_game="linear_shapley", method="loo"), "'loo'"),
        (
            AggregationRule(),
            _valuation(mode="peers", quorum=2, validator_game="loo"),
            "valuation game 'loo'",
        ),
        (AggregationRule(name="norm_clip", max_norm=1e-12), _valuation(), "max_norm 1e-12"),
        (AggregationRule(name="krum", krum_m=1), _valuation(), "krum_m 1"),
        (AggregationRule(name="trimmed_mean", trim_ratio=0.45), _valuation(), "trim_ratio 0.45"),
    ],
)
def test_payment_settings_outside_the_defaults_are_named_and_taken_after_consent(
    rule: AggregationRule, settings: ValuationSettings, named: str
) -> None:
    [breach] = ThresholdLimits().payment_breaches(rule, settings)
    assert named in breach
    assert ThresholdLimits().taking_terms(rule, settings).payment_breaches(rule, settings) == []


def test_the_products_payment_defaults_are_accepted() -> None:
    """Standing, Shapley (exact, Monte-Carlo, linearised as a peer round's validator game),
    every metric, every rule at its default parameters, the median norm for ``norm_clip``."""
    limits = ThresholdLimits()
    for name in RULE_NAMES:
        for metric in METRICS:
            assert (
                limits.payment_breaches(AggregationRule(name=name), _valuation(metric=metric)) == []
            )
    peers = _valuation(mode="peers", quorum=3, validator_game="linear_shapley")
    assert limits.payment_breaches(AggregationRule(), peers) == []
    # the public screen (the default since session 57) and the validators' own screen alike:
    # a ledger whose round 1 lacks it keeps its rule, and honest nodes take both
    public = replace(peers, public_screen=True)
    assert public.to_json()["public_screen"] is True and "public_screen" not in peers.to_json()
    assert limits.payment_breaches(AggregationRule(), public) == []
    assert limits.payment_breaches(AggregationRule(), _valuation(method="mc_shapley")) == []
    # a peer round without a validator game plays the method (leave-one-out here: refused)
    assert limits.payment_breaches(
        AggregationRule(), _valuation(mode="peers", quorum=3, method="loo")
    )
    # a fixed clip norm at or above a site's floor is taken
    clip = AggregationRule(name="norm_clip", max_norm=0.5)
    assert ThresholdLimits(min_clip_norm=0.5).payment_breaches(clip, _valuation()) == []
    assert ThresholdLimits(min_clip_norm=0.6).payment_breaches(clip, _valuation())


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        (DuplicateRule(cosine=0.5), ["duplicate_cosine 0.5 (accepted: at least 0.9999)"]),
        (
            DuplicateRule(relative_l2=0.9),
            ["duplicate_relative_l2 0.9 (accepted: at most 0.001)"],
        ),
        (
            DuplicateRule(scaled_cosine=0.999),
            ["duplicate_scaled_cosine 0.999 (accepted: at least 0.999995)"],
        ),
        (DuplicateRule(), []),
        (DuplicateRule(cosine=1.0, relative_l2=1e-6), []),  # looser: the loosest limits' case
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
    wide = limits_from(
        {"duplicate_cosine": 0.5, "duplicate_relative_l2": 0.9, "duplicate_scaled_cosine": 0.99}
    )
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


def test_min_commit_seconds_is_read_from_the_table_and_refuses_a_shorter_window() -> None:
    """a43: ``[accept] min_commit_seconds`` (default 30 s) bounds the terms' commit window,
    round 1's included; a table may lower it (0: any window the contract takes) but not make it
    negative, fractional or boolean."""
    from fedtrail.errors import ConfigError
    from fedtrail.valuation.limits import window_refusal
    from tests.fixtures.terms import parsed_terms

    terms = replace(
        parsed_terms(valuation={"method": "shapley", "metric": "loss", "standing": True}),
        reveal_seconds=60,
    )
    assert terms.commit_seconds == 1
    refused = window_refusal(ThresholdLimits(), terms)
    assert refused is not None and "commit window is 1 s, shorter than the 30 s" in refused
    assert window_refusal(ThresholdLimits(min_commit_seconds=1), terms) is None
    assert window_refusal(ThresholdLimits(min_commit_seconds=0), terms) is None
    # a peer round's score commit window is held to the same floor
    peers = {**terms.valuation, "mode": "peers", "quorum": 2}
    scored = replace(
        terms,
        valuation=peers,
        commit_seconds=60,
        score_commit_seconds=10,
        score_reveal_seconds=60,
    )
    refused = window_refusal(ThresholdLimits(), scored)
    assert refused is not None and "score commit window is 10 s, shorter than the 30 s" in refused
    assert "the terms' commit window" not in refused
    assert window_refusal(ThresholdLimits(), replace(scored, score_commit_seconds=30)) is None
    for bad in (-1, 1.5, True, "30"):
        with pytest.raises(ConfigError, match="min_commit_seconds"):
            ThresholdLimits(min_commit_seconds=bad)  # type: ignore[arg-type]


def test_min_reveal_seconds_refuses_a_shorter_reveal_or_score_reveal_window() -> None:
    """a50: ``[accept] min_reveal_seconds`` (default 20 s) bounds the terms' reveal window and
    a peer round's score reveal window: a committed site whose reveal is slower than the window
    missed it in every round, read as a withheld update, while verify passed. A table may lower
    it (0: any window the contract takes) but not make it negative, fractional or boolean."""
    from fedtrail.errors import ConfigError
    from fedtrail.valuation.limits import DEFAULT_MIN_REVEAL_SECONDS, window_refusal
    from tests.fixtures.terms import parsed_terms

    assert DEFAULT_MIN_REVEAL_SECONDS == 20
    base = parsed_terms(valuation={"method": "shapley", "metric": "loss", "standing": True})
    terms = replace(base, commit_seconds=60, reveal_seconds=10)
    refused = window_refusal(ThresholdLimits(), terms)
    assert refused is not None and "reveal window is 10 s, shorter than the 20 s" in refused
    assert "min_reveal_seconds" in refused and "commit window" not in refused
    assert window_refusal(ThresholdLimits(), replace(terms, reveal_seconds=20)) is None
    assert window_refusal(ThresholdLimits(min_reveal_seconds=10), terms) is None
    assert window_refusal(ThresholdLimits(min_reveal_seconds=0), terms) is None
    peers = {**terms.valuation, "mode": "peers", "quorum": 2}
    scored = replace(
        terms,
        valuation=peers,
        reveal_seconds=60,
        score_commit_seconds=60,
        score_reveal_seconds=5,
    )
    refused = window_refusal(ThresholdLimits(), scored)
    assert refused is not None and "score reveal window is 5 s, shorter than the 20 s" in refused
    assert window_refusal(ThresholdLimits(), replace(scored, score_reveal_seconds=20)) is None
    assert limits_from({"min_reveal_seconds": 5}).min_reveal_seconds == 5
    for bad in (-1, 1.5, True, "30"):
        with pytest.raises(ConfigError, match="min_reveal_seconds"):
            ThresholdLimits(min_reveal_seconds=bad)  # type: ignore[arg-type]


def test_terms_without_shared_tensor_are_refused_as_looser() -> None:
    """Terms that lack ``duplicates.shared_tensor`` (or carry 0) replay the rule before it,
    which pays a same-round copy with noise on every tensor but one (attack a101): read as 0,
    off, and refused; a site that widened ``[accept.loosest]`` takes them, and the reason
    names the limit in the site's words."""
    for old in (DuplicateRule(shared_tensor=None), DuplicateRule(shared_tensor=0)):
        assert ThresholdLimits().breaches(Combiner(), old) == []
        assert ThresholdLimits().loosest.breaches(Combiner(), old) == [
            "duplicate_shared_tensor 0.0 (accepted: at least 1)"
        ]
        wide = limits_from({"loosest": {"duplicate_shared_tensor": 0}})
        assert wide.refusal(Combiner(), old) is None
    assert ThresholdLimits().refusal(Combiner(), DuplicateRule()) is None
    with pytest.raises(ConfigError, match="shared_tensor"):
        limits_from({"loosest": {"duplicate_shared_tensor": 2}})


def test_terms_without_either_order_are_refused_as_looser() -> None:
    """Terms that lack ``duplicates.either_order`` (or carry false) replay the one-way sparse
    tests, which pay a sparse copy committed before its original (attack a99): read as 0 and
    refused by the default ``[accept.loosest]``; a site that widened it to 0 (an older ledger's
    auditor) takes them. On (1) is the strictest there is: never refused as stricter; a limit
    that is not 0 or 1 is no rule."""
    for old in (DuplicateRule(either_order=None), DuplicateRule(either_order=False)):
        assert ThresholdLimits().breaches(Combiner(), old) == []
        assert ThresholdLimits().loosest.breaches(Combiner(), old) == [
            "duplicate_either_order 0.0 (accepted: at least 1)"
        ]
        refusal = ThresholdLimits().refusal(Combiner(), old)
        assert refusal is not None and "[accept.loosest]" in refusal
        wide = limits_from({"loosest": {"duplicate_either_order": 0}})
        assert wide.refusal(Combiner(), old) is None
    assert ThresholdLimits().refusal(Combiner(), DuplicateRule(either_order=True)) is None
    with pytest.raises(ConfigError, match="either_order"):
        limits_from({"loosest": {"duplicate_either_order": 2}})
