"""The aggregator's privacy settings: written into every round's terms, refused when incomplete."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.cli import EXIT_USAGE, cli
from fedtrail.errors import ConfigError
from fedtrail.protocol.terms import PrivacyTerms


def test_settings_give_the_terms_privacy_only_when_a_delta_is_set() -> None:
    assert AggregatorSettings().privacy() is None
    assert AggregatorSettings(dp_delta=1e-5).privacy() == PrivacyTerms(delta=1e-5)
    assert AggregatorSettings(dp_delta=1e-5, dp_required=True).privacy() == PrivacyTerms(
        delta=1e-5, required=True
    )


@pytest.mark.parametrize("kwargs", [{"dp_required": True}, {"dp_delta": 1.5}, {"dp_delta": -1e-5}])
def test_settings_refuse_incomplete_or_bad_privacy(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AggregatorSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dp-required"], "--dp-required needs --dp-delta"),
        (["--dp-delta", "0"], "range"),
        (["--dp-delta", "1"], "range"),
    ],
)
def test_run_refuses_bad_privacy_flags_as_usage_errors(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(cli, ["aggregator", "run", *args])
    assert result.exit_code == EXIT_USAGE, result.output
    assert needle in result.output
