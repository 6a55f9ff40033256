"""`aggregator run` warns at start about settings sites refuse under their default [accept]
table (they would skip every round): thresholds outside it, and averaged running statistics
for a model that has them."""

from __future__ import annotations

from dataclasses import replace

from fedtrail.aggregator.commands import default_consent_warnings
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.models import ModelSpec
from fedtrail.valuation import HISTORY_COMBINER

RESNET = ModelSpec(arch="resnet10")


def test_the_defaults_draw_no_warning() -> None:
    assert default_consent_warnings(AggregatorSettings()) == []
    assert default_consent_warnings(AggregatorSettings(model=RESNET)) == []


def test_averaged_statistics_of_a_batchnorm_model_are_named() -> None:
    weighted = AggregationRule(statistics="weighted")
    [warning] = default_consent_warnings(AggregatorSettings(model=RESNET, rule=weighted))
    assert "running statistics combined by 'weighted'" in warning
    # no running statistics, or the median rule (every tensor's median): nothing to consent to
    assert default_consent_warnings(AggregatorSettings(rule=weighted)) == []
    median = AggregationRule(name="median", statistics="weighted")
    assert default_consent_warnings(AggregatorSettings(model=RESNET, rule=median)) == []


def test_thresholds_outside_the_default_table_are_named() -> None:
    loose = replace(HISTORY_COMBINER, max_sample_ratio=50.0)
    [warning] = default_consent_warnings(AggregatorSettings(combiner=loose))
    assert "max_sample_ratio 50.0" in warning and "[looser]" in warning
