"""`aggregator run` warns at start about settings sites refuse under their default [accept]
table (they would skip every round): thresholds outside it, and averaged running statistics
for a model that has them."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.commands import default_consent_warnings
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.cli import cli
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.models import ModelSpec
from fedtrail.valuation import HISTORY_COMBINER
from fedtrail.valuation.limits import ThresholdLimits
from tests.fixtures.chain import ChainEnv

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


def test_payment_settings_outside_the_default_table_are_named() -> None:
    """Attacks a18, a20, a21: the aggregator stays free to choose them, and is told sites
    refuse them by default."""
    [warning] = default_consent_warnings(
        AggregatorSettings(
            standing=False,
            valuation="loo",
            rule=AggregationRule(name="norm_clip", max_norm=1e-12),
        )
    )
    assert warning.startswith("payment settings outside what sites accept by default: ")
    for named in ("standing off", "valuation game 'loo'", "norm_clip max_norm 1e-12"):
        assert named in warning, warning
    # peer rounds' default validator game (linear Shapley), and the AUC's fallback to the method
    assert default_consent_warnings(AggregatorSettings(valuation_mode="peers")) == []
    auc = AggregatorSettings(valuation_mode="peers", metric="auc", valuation="loo")
    [warning] = default_consent_warnings(auc)
    assert "valuation game 'loo'" in warning


def test_the_explanation_check_draws_no_warning_where_the_aggregator_publishes_its_probe() -> None:
    """In aggregator rounds the terms commit the probe set the aggregator publishes at open, so
    the check is within the default table; its bare form (no probe) is what sites refuse."""
    assert default_consent_warnings(AggregatorSettings(explanation_check=True)) == []
    bare = AggregatorSettings(explanation_check=True).valuation_terms(1, quorum=None, probe=None)
    [breach] = ThresholdLimits().payment_breaches(AggregationRule(), bare)
    assert breach.startswith("explanation check without a public probe set")


class _Idle:
    """Stands in for AggregatorService: built with the command's settings, runs no round."""

    built: ClassVar[list[AggregatorSettings]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.built.append(kwargs["settings"])

    def run(self, **kwargs: Any) -> None:
        return None


@pytest.mark.anvil
@pytest.mark.parametrize(
    ("extra", "wanted"),
    [
        ([], []),
        (["--max-sample-ratio", "50"], ["max_sample_ratio 50.0 (accepted: at most 10.0) [looser]"]),
        (
            ["--arch", "resnet10", "--statistics", "weighted"],
            ["running statistics combined by 'weighted'"],
        ),
    ],
    ids=["defaults", "looser-threshold", "averaged-statistics"],
)
def test_aggregator_run_prints_the_warnings_at_start(
    anvil: ChainEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    wanted: list[str],
) -> None:
    """The command itself gives ``default_consent_warnings`` of the settings it built from its
    options: each as one WARNING line of its log (stderr and ``aggregator.log``), none with
    the defaults."""
    ledger = anvil.deploy()
    monkeypatch.setattr(service_mod, "AggregatorService", _Idle)
    _Idle.built.clear()
    logger = logging.getLogger("fedtrail")
    handlers = list(logger.handlers)
    folder = tmp_path / "agg"
    args = ["aggregator", "run", "--rpc-url", anvil.w3.provider.endpoint_uri]  # type: ignore[attr-defined]
    args += ["--contract", ledger.address, "--dev-account", "1", "--store"]
    args += [f"local:{tmp_path / 'store'}", "--folder", str(folder), *extra]
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        for handler in set(logger.handlers) - set(handlers):
            logger.removeHandler(handler)
            handler.close()
    assert result.exit_code == 0, result.output
    [settings] = _Idle.built
    warnings = [
        line for line in (folder / "aggregator.log").read_text().splitlines() if " WARNING " in line
    ]
    assert len(warnings) == len(wanted), warnings
    for line, text in zip(warnings, wanted, strict=True):
        assert text in line, line
    assert [w.split(": ", 1)[1] for w in warnings] == default_consent_warnings(settings)
    assert [line for line in result.stderr.splitlines() if " WARNING " in line] == warnings


def test_a_commit_window_below_the_default_floor_is_named() -> None:
    """a43: round 1's window bounds every later round's, and sites decline one below their
    ``[accept] min_commit_seconds`` (30 s by default): the aggregator is told at start."""
    [warning] = default_consent_warnings(AggregatorSettings(round_seconds=10))
    assert "a commit window of 10 s" in warning and "min_commit_seconds (30 s" in warning
    assert default_consent_warnings(AggregatorSettings(round_seconds=30)) == []


def test_a_peer_rounds_short_score_window_is_named() -> None:
    """A peer round's score commit window below the floor shuts out the slowest validators:
    named (by default it is the reveal window, 120 s: nothing to say)."""
    [warning] = default_consent_warnings(
        AggregatorSettings(valuation_mode="peers", score_commit_seconds=10)
    )
    assert "a score commit window of 10 s" in warning
    [warning] = default_consent_warnings(
        AggregatorSettings(valuation_mode="peers", reveal_seconds=20)
    )
    assert "a score commit window of 20 s" in warning
    assert default_consent_warnings(AggregatorSettings(score_commit_seconds=10)) == []
