"""The aggregator's validator game for peer rounds: the default, refused when unknown."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.cli import EXIT_USAGE, cli
from fedtrail.errors import ConfigError


def test_settings_refuse_an_unknown_validator_game() -> None:
    assert AggregatorSettings().validator_game == "linear_shapley"
    assert AggregatorSettings(validator_game=None).validator_game is None
    with pytest.raises(ConfigError, match="validator_game must be one of"):
        AggregatorSettings(validator_game="mc_shapley")


def test_run_refuses_an_unknown_validator_game_as_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["aggregator", "run", "--validator-game", "mc_shapley"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--validator-game" in result.output
