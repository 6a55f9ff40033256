"""Every option that names a rule, method, metric or compression offers exactly the names its
registry knows: adding one to a registry adds it to the CLI, and no hand-written list drifts."""

from __future__ import annotations

from typing import get_args

import click
import pytest

from fedtrail.aggregator.commands import aggregator
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.explain_command import explain
from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import RULES, STATISTICS_RULES, AggregationRule
from fedtrail.ml.explain import METHODS as EXPLAIN_METHODS
from fedtrail.node.commands import node
from fedtrail.simulation.demo import demo
from fedtrail.storage.codec import Compression, CompressionMethod
from fedtrail.valuation import GAMES, LARGE_GAMES, METRICS


def choices(command: click.Command, option: str) -> tuple[str, ...]:
    [param] = [p for p in command.params if p.name == option]
    assert isinstance(param.type, click.Choice)
    return tuple(param.type.choices)


def sub(group: click.Group, name: str) -> click.Command:
    return group.commands[name]


@pytest.mark.parametrize("command", [sub(aggregator, "run"), demo], ids=["aggregator run", "demo"])
def test_aggregation_options_come_from_the_registries(command: click.Command) -> None:
    assert choices(command, "rule") == tuple(RULES)
    assert choices(command, "statistics") == STATISTICS_RULES
    assert choices(command, "valuation") == tuple(GAMES)
    assert choices(command, "metric") == METRICS


def test_compression_and_explanation_choices_come_from_the_registries() -> None:
    compressions = get_args(CompressionMethod)
    assert choices(sub(node, "init"), "compression") == compressions
    assert choices(demo, "compression") == compressions
    for name in compressions:
        Compression(method=name)  # every offered name is one the codec accepts
    assert choices(explain, "method") == EXPLAIN_METHODS


def test_every_offered_rule_is_one_aggregate_applies() -> None:
    for name in RULES:
        assert AggregationRule(name=name).name == name
    with pytest.raises(ConfigError, match="unknown aggregation rule"):
        AggregationRule(name="mean")


def test_large_game_choices_come_from_the_registry_and_each_is_a_setting() -> None:
    offered = choices(sub(aggregator, "run"), "large_game")
    assert offered == ("none", *LARGE_GAMES)
    for name in LARGE_GAMES:
        assert AggregatorSettings(large_game=name).large_game == name
    with pytest.raises(ConfigError, match="large_game"):
        AggregatorSettings(large_game="quadratic")
