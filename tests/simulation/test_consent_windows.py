"""Simulated sites consent to their simulated aggregator's windows (``min_commit_seconds``
lowered to its commit window, and to a peer round's score commit window), as to its thresholds:
a bench with short windows runs; a table already lower stays as it is."""

from __future__ import annotations

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.simulation.federation import _consenting
from fedtrail.valuation.limits import ThresholdLimits


def test_the_floor_goes_down_to_the_aggregators_windows_only() -> None:
    default = ThresholdLimits()
    assert _consenting(default, AggregatorSettings(round_seconds=60)).min_commit_seconds == 30
    assert _consenting(default, AggregatorSettings(round_seconds=12)).min_commit_seconds == 12
    peers = AggregatorSettings(valuation_mode="peers", round_seconds=60, reveal_seconds=20)
    assert _consenting(default, peers).min_commit_seconds == 20
    scored = AggregatorSettings(valuation_mode="peers", score_commit_seconds=15)
    assert _consenting(default, scored).min_commit_seconds == 15
    low = ThresholdLimits(min_commit_seconds=5)
    assert _consenting(low, AggregatorSettings(round_seconds=12)).min_commit_seconds == 5
