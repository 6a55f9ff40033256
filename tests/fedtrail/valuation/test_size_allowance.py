"""The screens' allowance for a site's claimed sample count (``norm_size_cap``,
``tiny_size_power``): an honest small or large hospital keeps its weight, a zero, tiny or
boosted update is still rejected, and logs recorded before the allowance replay without it."""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import HISTORY_COMBINER, Candidate
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import size_adjusted_z, size_factor
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.robust import RobustStats, robust_statistics

WIDTH = 64
MODEL_NORM = 1000.0
OFF = replace(HISTORY_COMBINER, norm_size_cap=1.0, tiny_size_power=0.0)
"""The rule before the allowance (what a log recorded without the two fields replays)."""
ON = replace(HISTORY_COMBINER, norm_size_cap=10.0)
"""The norm allowance turned on (off by default: attack a10; the free-rider one is on)."""


def _update(norm: float, seed: int) -> dict[str, torch.Tensor]:
    """A random direction with the given L2 norm."""
    v = torch.randn(WIDTH, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {"w": (v * (norm / float(v.norm()))).to(torch.float32)}


def _riders(norms: dict[str, float], samples: dict[str, int], power: float) -> dict[str, str]:
    return free_riders(
        {s: _update(n, i) for i, (s, n) in enumerate(norms.items())},
        {},
        min_norm_ratio=HISTORY_COMBINER.free_rider_norm,
        stale_cosine=HISTORY_COMBINER.stale_cosine,
        stale_distance=HISTORY_COMBINER.stale_distance,
        model_norm=MODEL_NORM,
        min_model_ratio=1e-3,
        samples=samples,
        size_power=power,
    )


def test_a_small_honest_site_is_no_free_rider_but_a_tiny_or_zero_update_still_is() -> None:
    """Measured (scripts/bench/honest_screens.py, dense): 20-image sites among 150-image ones
    fell to 0.023% of the model's norm, under the 0.1% floor, and were zeroed FREE_RIDER in 7
    of 20 rounds. With the floor lowered by (20 / 150) ** 2 they pass; an update claiming the
    median count is held to the full floor, and a zero update to nothing."""
    norms = {"h0": 3.0, "h1": 3.2, "h2": 2.8, "h3": 3.1, "small": 0.23, "zero": 0.0}
    samples = {"h0": 150, "h1": 150, "h2": 150, "h3": 150, "small": 20, "zero": 20}
    before = _riders(norms, samples, 0.0)
    assert set(before) == {"small", "zero"}
    assert "below 0.1%)" in before["small"]
    assert set(_riders(norms, samples, 2.0)) == {"zero"}
    # the same short update claiming the median count: the full floor
    assert set(_riders(norms, {**samples, "small": 150}, 2.0)) == {"small", "zero"}


def test_with_two_updates_a_tiny_one_claiming_few_samples_is_still_a_free_rider() -> None:
    """Two updates: the lower median is the tiny one itself, so only the model floor sees it.
    Claiming 20 beside 150 lowers it to (20 / 85) ** 2 of 0.1% (85: the median of both
    counts), 0.055 here: an update of 0.01 is still FREE_RIDER, an honest-sized 0.25 is not."""
    got = _riders({"h": 3.0, "tiny": 0.01}, {"h": 150, "tiny": 20}, 2.0)
    assert set(got) == {"tiny"}
    assert "x (20 claimed / median 85) ** 2 = 5.54e-05" in got["tiny"]
    assert _riders({"h": 3.0, "short": 0.25}, {"h": 150, "short": 20}, 2.0) == {}


def _screen(
    norms: dict[str, float], samples: dict[str, int], comb: object = HISTORY_COMBINER
) -> dict[str, Reason]:
    deltas = {s: _update(n, i) for i, (s, n) in enumerate(norms.items())}
    robust = robust_statistics(deltas, norm_scale_floor=HISTORY_COMBINER.norm_scale_floor)
    cands = [Candidate(s, samples[s], deltas[s]) for s in norms]
    assert isinstance(comb, type(HISTORY_COMBINER))
    return {s: reason for s, (reason, _) in comb.screen(cands, robust).items()}


LARGE = {"h90": 1.0, "h120": 1.0, "h200": 1.1, "big": 12.0}
LARGE_N = {"h90": 90, "h120": 120, "h200": 200, "big": 1000}


def test_a_large_honest_site_is_no_norm_outlier() -> None:
    """Measured: a 1,000-image site beside sites of 90-200 images reached 12x the lower median
    norm (robust z 41 > 20) and was OUTLIER_NORM. It claims 6.25x the median count (160), so
    its norm is judged at 12 / 6.25 = 1.9x: robust z 3.3, where the terms turn the allowance on
    (``norm_size_cap`` 10); under the defaults it is off, and the false positive stays."""
    assert _screen(LARGE, LARGE_N, OFF)["big"] is Reason.OUTLIER_NORM
    assert _screen(LARGE, LARGE_N)["big"] is Reason.OUTLIER_NORM
    assert set(_screen(LARGE, LARGE_N, ON).values()) == {Reason.OK}


def test_boosted_updates_stay_norm_outliers_whatever_they_claim() -> None:
    """x10 and x30 of an honest update, of a median-sized site (allowance 1x) and of the large
    honest site (allowance 6.67x), beside four honest sites of 90-200 images and the large
    one: each is still above max_norm_z once its allowance is taken off, as before it."""
    norms = {**LARGE, "h150": 0.95, "c150": 1.0}
    samples = {**LARGE_N, "h150": 150, "c150": 150}
    assert set(_screen(norms, samples, ON).values()) == {Reason.OK}
    for factor in (10.0, 30.0):
        for comb in (ON, OFF):
            boosted = _screen({**norms, "c150": factor}, samples, comb)
            assert boosted["c150"] is Reason.OUTLIER_NORM
            big = _screen({**norms, "big": 12.0 * factor}, samples, comb)
            assert big["big"] is Reason.OUTLIER_NORM
    # the allowance is capped: a count 6.67x the median excuses no more than norm_size_cap
    capped = replace(ON, norm_size_cap=1.5)
    assert _screen(LARGE, LARGE_N, capped)["big"] is Reason.OUTLIER_NORM


def test_the_adjusted_z_uses_the_rounds_own_median_and_scale() -> None:
    stats = RobustStats(cosine=1.0, norm=12.0, norm_z=41.0, median_norm=1.0)
    # scale (12 - 1) / 41; the norm judged 12 / 4 = 3: z (3 - 1) * 41 / 11
    assert size_adjusted_z(stats, 4.0) == 41.0 * (3.0 - 1.0) / 11.0
    assert size_adjusted_z(stats, 1.0) == 41.0
    below = RobustStats(cosine=1.0, norm=0.5, norm_z=-2.0, median_norm=1.0)
    assert size_adjusted_z(below, 4.0) == -2.0
    assert size_factor(1000, [90, 120, 200, 1000]) == 1000 / 160
    assert size_factor(5, [0, 0, 5]) == 1.0
    assert ON.norm_allowance(1000, [90, 120, 200, 1000]) == 6.25
    assert ON.norm_allowance(90, [90, 120, 200, 1000]) == 1.0
    assert ON.norm_allowance(10_000, [100, 100, 10_000]) == 10.0
    assert HISTORY_COMBINER.norm_allowance(1000, [90, 120, 200, 1000]) == 1.0  # off by default


def test_logs_recorded_before_the_allowance_replay_without_it() -> None:
    """A recorded set of thresholds without the two fields (every log before them) and a round
    that recorded none replay the old rule; new terms record the new defaults."""
    full = asdict(HISTORY_COMBINER)
    older = {k: v for k, v in full.items() if k not in {"norm_size_cap", "tiny_size_power"}}
    for recorded, expected in (
        (full, (1.0, 2.0)),
        (asdict(ON), (10.0, 2.0)),
        (older, (1.0, 0.0)),
        (None, (1.0, 0.0)),
    ):
        comb = combiner_from(
            ValuationSettings(method="shapley", metric="x", standing=True, combiner=recorded)
        )
        assert (comb.norm_size_cap, comb.tiny_size_power) == expected
