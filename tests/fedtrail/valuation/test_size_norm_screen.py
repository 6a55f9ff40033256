"""The second norm screen (``size_norm_z``, off by default): the robust norm z after the
claimed count's uncapped allowance ``max(1, n / m)``, beside ``max_norm_z`` on the raw norm.

Found at stop 61 (``scripts/bench/large_game_poison.py --sites 100 --label-skew 1``): under
label skew honest large sites (more local steps) set the top of the norm spread, so a small
site's update boosted x40 sits inside it (robust z 3.4 against the 20 allowed) and is paid. The
allowance takes the large sites off the top, so a tighter bound stops a boosted small site; a
site that inflates its claimed count gets back at most the raw screen it faces today."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, replace

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import HISTORY_COMBINER, Candidate
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.limits import ThresholdLimits
from fedtrail.valuation.robust import RobustStats

ON = replace(HISTORY_COMBINER, size_norm_z=6.0)
MEDIAN, SCALE = 1.0, 0.25


def _stats(norm: float) -> RobustStats:
    return RobustStats(cosine=0.5, norm=norm, norm_z=(norm - MEDIAN) / SCALE, median_norm=MEDIAN)


def _screen(combiner: object, norms: dict[str, float], counts: dict[str, int]) -> dict[str, Reason]:
    assert isinstance(combiner, type(HISTORY_COMBINER))
    cands = [Candidate(s, counts[s], {"w": torch.zeros(1)}) for s in norms]
    robust = {s: _stats(n) for s, n in norms.items()}
    return {s: reason for s, (reason, _) in combiner.screen(cands, robust).items()}


NORMS = {"h0": 1.0, "h1": 0.9, "h2": 1.1, "big": 4.5, "boost": 3.5}
COUNTS = {"h0": 20, "h1": 22, "h2": 18, "big": 80, "boost": 15}
"""A round in the shape of stop 61's: the median count 20, an honest 80-image site at 4.5x the
median norm (its four local steps; robust z 14), a 15-image site's update boosted to 3.5x
(robust z 10: its own honest norm was about 0.09x the median)."""


def test_a_boosted_small_site_is_outlier_norm_and_an_honest_large_one_is_not() -> None:
    off = _screen(HISTORY_COMBINER, NORMS, COUNTS)
    assert set(off.values()) == {Reason.OK}  # today: both under max_norm_z 20
    on = _screen(ON, NORMS, COUNTS)
    assert on["boost"] is Reason.OUTLIER_NORM
    assert {s: r for s, r in on.items() if s != "boost"} == dict.fromkeys(
        ["h0", "h1", "h2", "big"], Reason.OK
    )
    # the large site's allowance is 80 / 20 = 4: z (4.5 / 4 - 1) / 0.25 = 0.5
    assert ON.size_screen_z(_stats(4.5), 80, list(COUNTS.values())) == pytest.approx(0.5)
    assert HISTORY_COMBINER.size_screen_z(_stats(4.5), 80, list(COUNTS.values())) is None
    cands = [Candidate(s, COUNTS[s], {"w": torch.zeros(1)}) for s in NORMS]
    detail = ON.screen(cands, {s: _stats(n) for s, n in NORMS.items()})["boost"][1]
    assert "> size_norm_z 6" in detail and "robust z 10.0" in detail


def test_an_inflated_count_buys_no_more_than_todays_screen() -> None:
    """The boosted site claiming 8x the median count: the allowance excuses it under the
    second screen, but not the raw one: x40 of a median update (z 156) stays OUTLIER_NORM,
    and what passes is what passes today."""
    counts = {**COUNTS, "boost": 160}
    assert _screen(ON, NORMS, counts)["boost"] is Reason.OK
    assert _screen(HISTORY_COMBINER, NORMS, counts)["boost"] is Reason.OK
    huge = {**NORMS, "boost": 40.0}
    assert _screen(ON, huge, counts)["boost"] is Reason.OUTLIER_NORM
    assert _screen(HISTORY_COMBINER, huge, counts)["boost"] is Reason.OUTLIER_NORM


def test_it_only_adds_rejections() -> None:
    """Whatever the counts and norms, an update the raw screen rejects the combined one
    rejects too (the allowance is at least 1)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        norms = {f"s{i}": float(torch.rand(1, generator=gen)) * 40 for i in range(6)}
        counts = {f"s{i}": int(torch.randint(1, 500, (1,), generator=gen)) for i in range(6)}
        off, on = _screen(HISTORY_COMBINER, norms, counts), _screen(ON, norms, counts)
        assert all(on[s] is Reason.OUTLIER_NORM for s, r in off.items() if r is not Reason.OK)


def test_terms_without_it_replay_it_off_and_sites_must_consent() -> None:
    recorded = asdict(HISTORY_COMBINER)
    del recorded["size_norm_z"]
    settings = ValuationSettings(
        method="shapley",
        metric="balanced_loss",
        standing=True,
        explanation_check=False,
        combiner=recorded,
    )
    assert combiner_from(settings).size_norm_z == 0.0
    on = replace(settings, combiner=asdict(ON))
    assert combiner_from(on).size_norm_z == 6.0
    # off by default: a site that did not consent refuses terms that turn it on
    assert ThresholdLimits().breaches(ON) == ["size_norm_z 6.0 (accepted: only off (0))"]
    assert ThresholdLimits().breaches(HISTORY_COMBINER) == []
    consent = ThresholdLimits(size_norm_z=6.0)
    assert consent.breaches(ON) == []
    assert consent.breaches(replace(ON, size_norm_z=3.0)) == [
        "size_norm_z 3.0 (accepted: at least 6.0)"
    ]
    assert ThresholdLimits.accepting(ON).breaches(ON) == []
    with pytest.raises(ConfigError, match="size_norm_z"):
        replace(HISTORY_COMBINER, size_norm_z=-1.0)


def test_colluders_inflating_their_counts_cannot_get_an_honest_large_site_rejected() -> None:
    """h-309 (reviewing h-301): the honest 80-image site at 4.5x the median norm (raw z 14,
    under ``max_norm_z``; 0.5 after its 4x allowance) with two of the round's 20-image sites
    claiming 80 images each. The median count becomes 80; judged against it the large site's
    allowance is 1 and its z 14 > 6: OUTLIER_NORM under ``size_norm_z`` 6, though its update and
    count are unchanged. The colluders' own claims are the median (ratio 1: no
    IMPLAUSIBLE_SAMPLES) and their updates are unchanged; the raw screen (``norm_size_cap`` 1)
    is not moved. h-312: under the terms' ``size_norm_count`` (the federation's typical count,
    20 here) the allowance is judged against ``min(m, 20)``, which no claim raises; terms
    without it (0) keep session 62's rule, and its flaw."""
    capped = replace(ON, size_norm_count=20.0)
    inflated = {**COUNTS, "h0": 80, "h1": 80}
    assert _screen(HISTORY_COMBINER, NORMS, inflated)["big"] is Reason.OK  # the raw screen
    assert _screen(capped, NORMS, COUNTS) == _screen(ON, NORMS, COUNTS)  # m 20: as before
    assert _screen(capped, NORMS, inflated)["big"] is Reason.OK
    assert capped.size_screen_z(_stats(4.5), 80, list(inflated.values())) == pytest.approx(0.5)
    assert _screen(ON, NORMS, inflated)["big"] is Reason.OUTLIER_NORM  # size_norm_count 0
    # whatever the colluders claim (within max_sample_ratio 10 of the median), the allowance
    # judged against at most 20 is at least 80 / 20
    for claim in (21, 40, 80, 199):
        many = {**COUNTS, "h0": claim, "h1": claim, "h2": claim}
        assert _screen(capped, NORMS, many)["big"] is Reason.OK, claim
    # the boosted small site stays OUTLIER_NORM: the count only lowers the reference
    assert _screen(capped, NORMS, inflated)["boost"] is Reason.OUTLIER_NORM


def test_the_count_only_takes_size_norm_z_rejections_back() -> None:
    """A cap below the round's median claim raises every allowance (a federation's count set
    too low excuses more, never past the raw screen); one at or above it changes nothing."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        norms = {f"s{i}": float(torch.rand(1, generator=gen)) * 40 for i in range(6)}
        counts = {f"s{i}": int(torch.randint(1, 500, (1,), generator=gen)) for i in range(6)}
        cap = float(torch.randint(1, 600, (1,), generator=gen))
        old, new = (
            _screen(ON, norms, counts),
            _screen(replace(ON, size_norm_count=cap), norms, counts),
        )
        raw = _screen(HISTORY_COMBINER, norms, counts)
        assert all(old[s] is Reason.OUTLIER_NORM for s, r in new.items() if r is not Reason.OK)
        assert all(new[s] is Reason.OUTLIER_NORM for s, r in raw.items() if r is not Reason.OK)
        if cap >= statistics.median(counts.values()):
            assert new == old


def test_terms_without_the_count_replay_session_62s_rule() -> None:
    recorded = asdict(ON)
    del recorded["size_norm_count"]
    settings = ValuationSettings(
        method="shapley",
        metric="balanced_loss",
        standing=True,
        explanation_check=False,
        combiner=recorded,
    )
    assert combiner_from(settings).size_norm_count == 0.0
    on = replace(settings, combiner=asdict(replace(ON, size_norm_count=20.0)))
    assert combiner_from(on).size_norm_count == 20.0
    # no consent limit: it only takes size_norm_z's rejections back
    assert ThresholdLimits.accepting(ON).breaches(replace(ON, size_norm_count=1.0)) == []
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ConfigError, match="size_norm_count"):
            replace(ON, size_norm_count=bad)
