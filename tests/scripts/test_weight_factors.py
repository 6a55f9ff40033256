"""scripts/bench/weight_factors.py (an experiment for issue 12 (c)): a paid update's score is
multiplied by (K / ratio) ** P above K median norms and by F when its cosine to the median is
below credit_cosine; scores of 0 and updates without robust statistics are left alone."""

from __future__ import annotations

import pytest

from fedtrail.protocol.codes import Reason
from fedtrail.valuation.combine import SiteValuation
from scripts.bench import weight_factors


def _site(site: str, norm: float, cosine: float, *, score: int = 1_000_000) -> SiteValuation:
    return SiteValuation(
        site=site,
        num_samples=100,
        status=Reason.OK,
        cosine=cosine,
        norm=norm,
        norm_z=0.0,
        median_norm=2.0,
        robust_checked=True,
        value=0.1,
        method="shapley",
        score=score,
        reason=Reason.OK,
        detail="d",
    )


def _scores(sites: list[SiteValuation], k: float, p: float, f: float) -> dict[str, int]:
    out = weight_factors.weighted(sites, max_norm_ratio=k, power=p, against=f, credit_cosine=-0.7)
    return {v.site: v.score for v in out}


def test_factors_by_hand() -> None:
    sites = [
        _site("inside", 4.0, 0.9),  # 2x the median norm: at the bound
        _site("long", 12.0, 0.9),  # 6x
        _site("against", 2.0, -0.8),
        _site("both", 8.0, -0.95),  # 4x and against
        _site("unpaid", 12.0, -0.9, score=0),
    ]
    assert _scores(sites, 2.0, 1.0, 1.0) == {
        "inside": 1_000_000,
        "long": 333_333,
        "against": 1_000_000,
        "both": 500_000,
        "unpaid": 0,
    }
    assert _scores(sites, 2.0, 2.0, 0.25) == {
        "inside": 1_000_000,
        "long": 111_111,
        "against": 250_000,
        "both": 62_500,
        "unpaid": 0,
    }
    # both factors off
    assert _scores(sites, 0.0, 2.0, 1.0) == {v.site: v.score for v in sites}
    out = weight_factors.weighted(
        sites, max_norm_ratio=2.0, power=2.0, against=0.25, credit_cosine=-0.7
    )
    assert all(v.reason is Reason.OK for v in out)
    assert "weight_factors experiment" in out[1].detail and out[0].detail == "d"


def test_an_update_without_robust_statistics_keeps_its_score() -> None:
    v = _site("few", 12.0, -0.9)
    unchecked = SiteValuation(**{**v.__dict__, "robust_checked": False})
    out = weight_factors.weighted(
        [unchecked], max_norm_ratio=2.0, power=2.0, against=0.25, credit_cosine=-0.7
    )
    assert out[0].score == 1_000_000


@pytest.mark.parametrize(
    ("k", "p", "f"), [(-1.0, 1.0, 1.0), (2.0, 0.0, 1.0), (2.0, 1.0, 0.0), (2.0, 1.0, 1.5)]
)
def test_install_refuses_bad_settings(k: float, p: float, f: float) -> None:
    with pytest.raises(ValueError):
        weight_factors.install(max_norm_ratio=k, power=p, against=f)
