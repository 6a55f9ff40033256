"""The aggregator's poll interval: a NaN made the service poll the chain without pause, an
infinite one crashed its wait with an OverflowError traceback; both are configuration errors
(the CLI's flag: tests/fedtrail/cli/test_ranges.py)."""

from __future__ import annotations

import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import MAX_POLL_INTERVAL
from fedtrail.errors import ConfigError


@pytest.mark.parametrize("value", [float("nan"), float("inf"), MAX_POLL_INTERVAL * 2, 0.0, -1.0])
def test_settings_refuse_a_poll_interval_out_of_range(value: float) -> None:
    with pytest.raises(ConfigError, match="poll_interval must be"):
        AggregatorSettings(poll_interval=value)


def test_settings_take_a_poll_interval_in_range() -> None:
    assert AggregatorSettings(poll_interval=MAX_POLL_INTERVAL).poll_interval == MAX_POLL_INTERVAL
    assert AggregatorSettings(poll_interval=0.01).poll_interval == 0.01
