"""The record floor experiment (scripts/bench/record_floor.py): every scored site's accumulated
value kept at or above its reference minus the floor; the screens' rejects keep theirs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedtrail.protocol.codes import Reason
from fedtrail.valuation.combine import RoundValuation, SiteValuation

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))

import record_floor


def _site(site: str, reason: Reason, cosine: float, value: float | None) -> SiteValuation:
    return SiteValuation(
        site=site,
        num_samples=10,
        status=Reason.OK,
        cosine=cosine,
        norm=1.0,
        norm_z=0.0,
        median_norm=1.0,
        robust_checked=True,
        value=value,
        method="shapley" if value is not None else None,
        score=0,
        reason=reason,
        detail="",
    )


def _report(accumulated: dict[str, float], sites: list[SiteValuation]) -> RoundValuation:
    return RoundValuation(sites=sites, method="shapley", accumulated=accumulated)


def test_a_sunk_record_is_raised_to_the_floor_and_a_positive_median_is_the_reference() -> None:
    sites = [
        _site("a", Reason.OK, 0.9, 0.3),
        _site("b", Reason.OK, 0.8, 0.2),
        _site("c", Reason.LOW_QUALITY, 0.5, -0.4),
        _site("d", Reason.FREE_RIDER, 0.9, None),  # screened out: its record is not touched
    ]
    got = record_floor.floored(
        _report({"a": 1.0, "b": 0.4, "c": -1.7, "d": -3.0}, sites), 0.5, -0.7
    )
    assert got.accumulated == {"a": 1.0, "b": 0.4, "c": -0.5, "d": -3.0}


def test_a_negative_median_lowers_the_floor_and_relief_measures_against_zero() -> None:
    sites = [
        _site("a", Reason.OK, 0.9, 0.1),
        _site("b", Reason.OK, 0.8, -0.1),
        _site("c", Reason.LOW_QUALITY, 0.5, -0.4),
        _site("e", Reason.LOW_QUALITY, -0.9, -0.4),  # below relief_cosine: reference 0
    ]
    acc = {"a": 0.1, "b": -0.3, "c": -2.0, "e": -2.0}  # median of the four: -1.15
    got = record_floor.floored(_report(acc, sites), 0.5, -0.7)
    assert got.accumulated is not None
    assert got.accumulated["c"] == pytest.approx(-1.65)
    assert got.accumulated["e"] == pytest.approx(-0.5)
    assert got.accumulated["a"] == 0.1 and got.accumulated["b"] == -0.3


def test_no_standing_is_left_alone() -> None:
    report = RoundValuation(sites=[_site("a", Reason.OK, 0.9, 0.3)], method="shapley")
    assert record_floor.floored(report, 0.5, -0.7) is report
