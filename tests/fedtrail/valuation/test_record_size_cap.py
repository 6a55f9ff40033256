"""``record_size_cap`` (issue 12 (f)): a site scored from its standing whose accumulated value is
negative keeps ``min(1, m / n)`` of its score (``m`` the median claimed count of the sites
scored from standing), so it weighs no more than the median site; terms without the field keep
the old rule."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation import HISTORY_COMBINER, Candidate, Combiner, RobustStats
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import SiteValuation
from fedtrail.valuation.standing import size_cap_factor

# (f) alpha 1 seed 3's split: site d (the x -0.3 site) holds 1,254 of 2,428 images
COUNTS = {"a": 198, "b": 389, "c": 449, "d": 1254, "e": 138}


def _round(
    counts: dict[str, int], *, outlier: str = ""
) -> tuple[list[Candidate], dict[str, RobustStats]]:
    """Candidates claiming ``counts`` (one ``outlier`` rejected by the norm screen)."""
    cands = [
        Candidate(site=s, num_samples=n, delta={"w": torch.ones(1)}) for s, n in counts.items()
    ]
    robust = {
        s: RobustStats(
            cosine=0.5, norm=1.0, norm_z=1000.0 if s == outlier else 0.0, median_norm=1.0
        )
        for s in counts
    }
    return cands, robust


def _scores(
    combiner: Combiner, records: dict[str, float], counts: dict[str, int]
) -> dict[str, SiteValuation]:
    cands, robust = _round(counts)
    values = {s: 0.1 for s in counts}
    out = combiner.settle(cands, robust, values, records, method="shapley")
    return {v.site: v for v in out}


def test_the_factor_caps_a_large_site_with_a_negative_record_at_the_median_count() -> None:
    counts = list(COUNTS.values())
    assert size_cap_factor(-0.1, 1254, counts, record_size_cap=1) == pytest.approx(389 / 1254)
    assert size_cap_factor(0.0, 1254, counts, record_size_cap=1) == 1.0  # not negative
    assert size_cap_factor(-0.1, 389, counts, record_size_cap=1) == 1.0  # the median site
    assert size_cap_factor(-0.1, 138, counts, record_size_cap=1) == 1.0  # small: never raised
    assert size_cap_factor(-0.1, 1254, counts, record_size_cap=0) == 1.0  # off
    assert size_cap_factor(-0.1, 1254, [], record_size_cap=1) == 1.0


def test_settle_weighs_a_negative_large_site_as_the_median_one() -> None:
    """Records as in (f) seed 3's round 3 (d about the median, so not demoted by the
    reference): d's score is cut to 389/1254 of it, so its weight (count x score) is the
    median site's; a (negative, small) and c (positive, large) are untouched; off: full."""
    records = {"a": -0.35, "b": -0.29, "c": 0.91, "d": -0.30, "e": 0.05}
    got = _scores(HISTORY_COMBINER, records, COUNTS)
    assert got["b"].score == SCORE_SCALE  # the median record: not demoted
    assert got["d"].reason is Reason.OK
    uncapped = _scores(replace(HISTORY_COMBINER, record_size_cap=0), records, COUNTS)
    assert got["d"].score == round(uncapped["d"].score * (389 / 1254))
    assert "weighed as the median site's 389 samples" in got["d"].detail
    for s in "abce":
        assert got[s].score == uncapped[s].score, s
    assert uncapped["d"].score > got["d"].score


def test_the_median_is_over_the_sites_scored_from_standing() -> None:
    """A screened-out site's claim does not count: without e (138) the median of a, b, c, d
    is (389 + 449) / 2."""
    records = {"a": -0.35, "b": -0.29, "c": 0.91, "d": -0.30, "e": 0.05}
    cands, robust = _round(COUNTS, outlier="e")
    values = {s: 0.1 for s in "abcd"}
    got = {v.site: v for v in HISTORY_COMBINER.settle(cands, robust, values, records, method="s")}
    assert got["e"].reason is Reason.OUTLIER_NORM
    off = replace(HISTORY_COMBINER, record_size_cap=0)
    full = {v.site: v for v in off.settle(cands, robust, values, records, method="s")}
    assert got["d"].score == round(full["d"].score * (419 / 1254))


def test_terms_without_the_field_keep_the_old_rule_and_new_terms_carry_it() -> None:
    old = combiner_from(
        ValuationSettings(method="shapley", metric="balanced_loss", standing=True, combiner={})
    )
    assert old.record_size_cap == 0
    assert HISTORY_COMBINER.record_size_cap == Combiner().record_size_cap == 1
    new = combiner_from(
        ValuationSettings(
            method="shapley",
            metric="balanced_loss",
            standing=True,
            combiner={"record_size_cap": 1},
        )
    )
    assert new.record_size_cap == 1


@pytest.mark.parametrize("bad", [2, -1, 0.5, True, "1"])
def test_a_bad_record_size_cap_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="record_size_cap"):
        Combiner(record_size_cap=bad)  # type: ignore[arg-type]
