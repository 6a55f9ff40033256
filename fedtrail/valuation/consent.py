"""What in a round's terms a site's node refuses to train under, as one rule the node (before
it trains, declaring its refusal on chain) and ``audit verify`` (``terms.declined``, which fails
when a site declined terms the auditor's ``[accept]`` refuses too) share."""

from __future__ import annotations

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.roundlog import InvalidLog, ValuationSettings
from fedtrail.protocol.terms import RoundTerms
from fedtrail.valuation.chained import check_playable
from fedtrail.valuation.limits import ThresholdLimits, payment_refusal, statistics_refusal

__all__ = ["unrunnable"]


def unrunnable(terms: RoundTerms, accept: ThresholdLimits | None = None) -> str | None:
    """What in a round's terms no honest aggregator, validator or auditor could run, or this
    site does not accept (None: nothing): an aggregation rule
    :class:`~fedtrail.ml.aggregation.AggregationRule` refuses, valuation settings
    :func:`~fedtrail.valuation.chained.check_playable` refuses, payment settings outside
    ``accept`` (:func:`~fedtrail.valuation.limits.payment_refusal`: standing off, leave-one-out,
    a rule or rule parameter it does not take; every round, round 1's choice included),
    thresholds stricter than ``accept`` (default: :class:`~fedtrail.valuation.limits.
    ThresholdLimits`' defaults), or a running-statistics rule it does not accept for a model
    that has them."""
    try:
        rule = AggregationRule.from_terms(terms.aggregation_rule)
    except (TypeError, ValueError, ConfigError) as exc:
        return f"aggregation rule {dict(terms.aggregation_rule)}: {exc}"
    try:
        settings = ValuationSettings.from_json(terms.valuation)
        combiner = check_playable(settings)
    except (InvalidLog, ConfigError) as exc:
        return f"valuation: {exc}"
    limits = accept or ThresholdLimits()
    try:
        running = bool(ModelSpec(**terms.model_spec).statistic_names())
    except (TypeError, ValueError, ConfigError) as exc:
        return f"model: {exc}"
    return (
        payment_refusal(limits, rule, settings)
        or limits.refusal(combiner, terms.duplicates)
        or statistics_refusal(limits, rule, running_statistics=running)
    )
