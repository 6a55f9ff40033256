"""Terms that average a BatchNorm model's running statistics (``statistics = "weighted"``) hand
any one site the power to collapse the global model (``fedtrail demo --arch resnet10 --poison
statistics --statistics weighted``: AUC 0.500 with the poisoner paid in full). Sites refuse
such terms unless their ``[accept] statistics`` takes them, and ``terms.limits`` fails for an
auditor not given that table; a model without running statistics ignores the setting."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from fedtrail.auditor.verify import RoundAudit, _check_limits
from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.models import ModelSpec
from fedtrail.node.daemon import _unrunnable
from fedtrail.protocol.terms import RoundTerms
from fedtrail.valuation import HISTORY_COMBINER
from fedtrail.valuation.limits import ThresholdLimits, limits_from
from tests.fixtures.terms import parsed_terms

RESNET = ModelSpec(arch="resnet10")
VALUATION: dict[str, Any] = {
    "method": "shapley",
    "metric": "balanced_loss",
    "standing": True,
    "combiner": asdict(HISTORY_COMBINER),
}


def _terms(rule: dict[str, Any], spec: ModelSpec = RESNET) -> RoundTerms:
    """Terms as a node reads them from their bytes."""
    return parsed_terms(
        valuation=VALUATION,
        aggregation_rule=rule,
        model_spec=spec.to_json(),
        spec_hash=spec.spec_hash(),
    )


def _limits_check(terms: RoundTerms, accept: ThresholdLimits) -> tuple[bool, str]:
    audit = RoundAudit(1)
    _check_limits(audit, terms, accept)
    [check] = audit.checks
    assert check.name == "terms.limits"
    return check.failed, check.detail


def test_weighted_statistics_for_a_batchnorm_model_are_refused_by_default() -> None:
    weighted = _terms(AggregationRule(statistics="weighted").to_terms(statistics=True))
    refused = _unrunnable(weighted)
    assert refused is not None and "running statistics combined by 'weighted'" in refused
    failed, detail = _limits_check(weighted, ThresholdLimits())
    assert (
        failed and "'weighted'" in detail and "statistics = ['anchored_median', 'median']" in detail
    )
    # a site (and its auditor) that consented to averaging takes part and passes
    consented = limits_from({"statistics": ["median", "weighted"]})
    assert _unrunnable(weighted, consented) is None
    assert _limits_check(weighted, consented) == (
        False,
        "no valuation threshold is stricter or looser than the sites accept",
    )


def test_terms_without_the_setting_mean_weighted_and_are_refused_too() -> None:
    """An aggregator cannot get averaging past the sites by leaving the key out: terms written
    before the setting existed replay as "weighted" (AggregationRule.from_terms)."""
    legacy = _terms(AggregationRule().to_terms(statistics=False))
    assert "statistics" not in legacy.aggregation_rule
    refused = _unrunnable(legacy)
    assert refused is not None and "'weighted'" in refused
    assert _limits_check(legacy, ThresholdLimits())[0]


def test_median_statistics_and_models_without_statistics_are_accepted() -> None:
    median = _terms(AggregationRule().to_terms(statistics=True))
    assert _unrunnable(median) is None
    assert not _limits_check(median, ThresholdLimits())[0]
    small = _terms(AggregationRule().to_terms(statistics=False), ModelSpec())
    assert _unrunnable(small) is None
    assert not _limits_check(small, ThresholdLimits())[0]
    # a site that accepts only averaging refuses the median
    only_weighted = limits_from({"statistics": ["weighted"]})
    assert _unrunnable(median, only_weighted) is not None
    assert _unrunnable(small, only_weighted) is None


@pytest.mark.parametrize("value", ["weighted", [], ["mean"], [1]])
def test_an_invalid_statistics_acceptance_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match="statistics"):
        limits_from({"statistics": value})


def test_unreadable_thresholds_do_not_hide_averaged_statistics() -> None:
    """A peer round is not replayed through the combiner, so terms.limits itself fails terms
    whose thresholds cannot be read (an unknown one here), and still names the statistics."""
    weighted = AggregationRule(statistics="weighted").to_terms(statistics=True)
    terms = _terms(weighted)
    bogus = {**VALUATION, "combiner": {**VALUATION["combiner"], "bogus": 1}}
    terms = RoundTerms.from_bytes(replace(terms, valuation=bogus).to_bytes())
    failed, detail = _limits_check(terms, ThresholdLimits())
    assert failed
    assert "'weighted'" in detail and "not valid settings" in detail and "bogus" in detail


def test_an_unreadable_rule_fails_terms_limits() -> None:
    terms = _terms({**AggregationRule().to_terms(statistics=True), "statistics": "Weighted"})
    failed, detail = _limits_check(terms, ThresholdLimits())
    assert failed and "aggregation rule is not valid" in detail
    assert _unrunnable(terms) is not None


def test_the_median_rule_takes_the_median_of_the_statistics_whatever_they_say() -> None:
    """``--rule median`` aggregates every tensor, statistics included, by their median
    (fedtrail.ml.aggregation.aggregate), so its terms are accepted with either setting."""
    terms = _terms(AggregationRule(name="median", statistics="weighted").to_terms(statistics=True))
    assert _unrunnable(terms) is None
    assert not _limits_check(terms, ThresholdLimits())[0]
    for name in ("trimmed_mean", "krum", "norm_clip"):  # the rule's own treatment: refused
        other = AggregationRule(name=name, statistics="weighted").to_terms(statistics=True)
        assert _unrunnable(_terms(other)) is not None


def test_an_unknown_rule_in_the_table_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown rule\(s\) \[1\]"):
        limits_from({"statistics": ["median", 1]})


@pytest.mark.parametrize("field", ["in_channels", "num_classes", "width", "hidden"])
def test_a_spec_dimension_beyond_any_model_is_refused_not_a_crash(field: str) -> None:
    """Attack review a35: terms naming ``1e30`` channels (beyond a 64-bit integer) made torch's
    layout raise ``TypeError`` inside ``terms.limits`` (the running statistics are read from the
    built model); the spec is now refused by its own bound and the check says why."""
    huge: dict[str, Any] = {field: 10**30}
    with pytest.raises(ConfigError, match=f"model {field} must be at most"):
        ModelSpec(**huge)
    terms = _terms({"name": "weighted"}, RESNET)
    hostile = replace(terms, model_spec={**terms.model_spec, field: 10**30})
    audit = RoundAudit(1)
    _check_limits(audit, hostile, ThresholdLimits())  # no exception: the spec is terms.model's
    (limits,) = audit.checks
    assert limits.name == "terms.limits"
