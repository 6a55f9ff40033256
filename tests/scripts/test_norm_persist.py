"""scripts/bench/norm_persist.py (an experiment for issue 12 (c)): a site is zeroed only once
the median of its size-adjusted norm ratios, over at least three updates, is above the
threshold; one long update or a larger site's longer one is not enough."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedtrail.protocol.codes import Reason
from fedtrail.valuation.combine import SiteValuation
from scripts.bench import norm_persist


def _site(site: str, n: int, norm: float, *, score: int = 1_000_000) -> SiteValuation:
    return SiteValuation(
        site=site,
        num_samples=n,
        status=Reason.OK,
        cosine=0.9,
        norm=norm,
        norm_z=0.0,
        median_norm=1.0,
        robust_checked=True,
        value=0.1,
        method="shapley",
        score=score,
        reason=Reason.OK,
        detail="d",
    )


@pytest.fixture(autouse=True)
def _fresh() -> None:
    norm_persist._records.clear()


def test_persistent_needs_three_records_above_the_threshold() -> None:
    assert norm_persist.persistent([9.0, 9.0], 2.5, 0) is None
    assert norm_persist.persistent([9.0, 9.0, 1.0], 2.5, 0) == 9.0
    assert norm_persist.persistent([9.0, 1.0, 1.0], 2.5, 0) is None
    # the window reads the latest records only
    assert norm_persist.persistent([9.0, 9.0, 9.0, 1.0, 1.0], 2.5, 3) is None
    assert norm_persist.persistent([9.0, 9.0, 9.0, 1.0, 1.0], 2.5, 0) == 9.0


def test_a_long_update_is_zeroed_from_its_third_round_a_larger_site_is_not() -> None:
    for round_ in range(3):
        sites = [
            _site("small", 100, 1.0),
            _site("median", 100, 1.0),
            _site("boosted", 100, 3.0),  # 3x the median norm on the median count
            _site("large", 400, 3.0),  # 3x the norm on 4x the median count: 0.75 adjusted
        ]
        norm_persist.record(sites)
        out = {v.site: v for v in norm_persist.judged(sites, 2.5, 0)}
        assert out["large"].score == 1_000_000
        assert out["small"].score == 1_000_000
        if round_ < 2:
            assert out["boosted"].score == 1_000_000
        else:
            assert out["boosted"].score == 0
            assert out["boosted"].reason is Reason.LOW_QUALITY
            assert "above 2.5" in out["boosted"].detail
    assert norm_persist._records["large"] == [0.75, 0.75, 0.75]


def test_a_site_already_at_zero_keeps_its_reason() -> None:
    sites = [_site("a", 100, 1.0), _site("b", 100, 1.0), _site("c", 100, 5.0, score=0)]
    for _ in range(3):
        norm_persist.record(sites)
    c = next(v for v in norm_persist.judged(sites, 2.5, 0) if v.site == "c")
    assert c.reason is Reason.OK and c.score == 0


def _along(site: str, n: int, norm: float, cosine: float) -> SiteValuation:
    return replace(_site(site, n, norm), cosine=cosine)


def test_along_judges_from_the_first_update_and_spares_a_long_update_off_the_consensus() -> None:
    sites = [
        _along("median", 100, 1.0, 0.9),
        _along("other", 100, 1.0, 0.9),
        _along("boosted", 100, 3.0, 0.9),  # 2.7 median norms along the median update
        _along("skewed", 100, 5.0, 0.1),  # longer, but 0.5 along the median update
        _along("large", 400, 3.0, 0.9),  # 2.7 along on 4x the median count: 0.675 adjusted
    ]
    norm_persist.record(sites, "along")
    out = {v.site: v for v in norm_persist.judged(sites, 1.5, 0, 1, "along")}
    assert out["boosted"].score == 0
    assert out["boosted"].reason is Reason.LOW_QUALITY
    assert "length along the median update 2.7 " in out["boosted"].detail
    for honest in ("median", "other", "skewed", "large"):
        assert out[honest].score == 1_000_000, honest
    assert norm_persist._records["skewed"] == pytest.approx([0.5])
    assert norm_persist._records["large"] == pytest.approx([0.675])


def test_along_measure_skips_an_update_without_a_cosine() -> None:
    sites = [_along("a", 100, 1.0, 0.9), _along("b", 100, 1.0, 0.9), _site("c", 100, 4.0)]
    sites[2] = replace(sites[2], cosine=None)
    norm_persist.record(sites, "along")
    assert "c" not in norm_persist._records
    with pytest.raises(ValueError, match="measure"):
        norm_persist.record(sites, "cosine")
