"""IMPLAUSIBLE_SAMPLES: a usable update claiming more than ``Combiner.max_sample_ratio`` times
the median sample count of the round's other usable updates is scored 0 with that reason (and so
gets no weight), inside value_round, so an auditor's replay derives the same verdict."""

from __future__ import annotations

import math

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import onchain_weights
from fedtrail.valuation import Candidate, Combiner, RoundValuation, SiteValuation, value_round
from fedtrail.valuation.combine import sample_reference
from tests.fedtrail.valuation.real_sites import SPEC, real_sites


def delta(i: int) -> dict[str, torch.Tensor]:
    """Distinct updates that agree in direction (cosines well above the outlier threshold)."""
    return {"x": torch.tensor([1.0, 1.0, 1.0, 0.1 * i])}


def value(counts: list[int], combiner: Combiner | None = None) -> dict[str, SiteValuation]:
    report = data_free([Candidate(f"s{i}", n, delta(i)) for i, n in enumerate(counts)], combiner)
    return {v.site: v for v in report.sites}


def data_free(cands: list[Candidate], combiner: Combiner | None = None) -> RoundValuation:
    return value_round(
        global_state={"x": torch.zeros(4)},
        spec=ModelSpec(),
        candidates=cands,
        validation=None,
        method="loo",
        metric="loss",
        seed=0,
        combiner=combiner,
    )


def weights(out: dict[str, SiteValuation]) -> list[int]:
    sites = list(out.values())
    return onchain_weights([v.num_samples for v in sites], [v.score for v in sites])


def test_a_site_claiming_fifty_times_the_median_is_flagged_and_gets_no_weight() -> None:
    out = value([100, 120, 80, 5000])
    flagged = out["s3"]
    assert flagged.reason is Reason.IMPLAUSIBLE_SAMPLES and flagged.score == 0
    assert "claims 5000 samples" in flagged.detail
    # the median of 80, 100, 120 and its own 5000 is 110
    assert "45.5x the median 110 of the usable updates, its own included" in flagged.detail
    assert "more than 10x" in flagged.detail
    assert weights(out)[3] == 0
    assert all(out[s].reason is Reason.OK and out[s].score > 0 for s in ("s0", "s1", "s2"))


def test_a_site_at_five_times_the_median_is_not_flagged() -> None:
    out = value([100, 100, 100, 500])
    assert all(v.reason is Reason.OK for v in out.values())
    assert weights(out)[3] > weights(out)[0]


def test_exactly_the_ratio_ties_and_two_site_rounds_are_not_flagged() -> None:
    assert all(v.reason is Reason.OK for v in value([100, 100, 1000]).values())  # 10x, not more
    assert all(v.reason is Reason.OK for v in value([100, 100, 100]).values())
    assert all(v.reason is Reason.OK for v in value([100, 100_000]).values())  # one other only


def test_only_usable_updates_count_as_the_others() -> None:
    """Two 'others' of which one is unusable: too few to judge, so nothing is flagged; and an
    inflator is judged against the honest counts, not against a second inflator alone."""
    cands = [
        Candidate("s0", 100, delta(0)),
        Candidate("tampered", 100, None, Reason.TAMPERED),
        Candidate("big", 5000, delta(2)),
    ]
    assert {v.site: v.reason for v in data_free(cands).sites}["big"] is Reason.OK
    out = value([100, 100, 100, 6000, 5000])
    assert [out[s].reason for s in ("s3", "s4")] == [Reason.IMPLAUSIBLE_SAMPLES] * 2
    assert "median 100" in out["s3"].detail and "median 100" in out["s4"].detail


def test_the_ratio_is_a_round_term() -> None:
    assert Combiner().max_sample_ratio == 10.0
    out = value([100, 100, 100, 5000], Combiner(max_sample_ratio=100.0))
    assert out["s3"].reason is Reason.OK
    for bad in (1.0, 0.5, -3.0, math.nan, math.inf, True, "10"):
        with pytest.raises(ConfigError, match="max_sample_ratio"):
            Combiner(max_sample_ratio=bad)  # type: ignore[arg-type]


def test_reason_eleven_has_its_explanation_text() -> None:
    assert Reason.IMPLAUSIBLE_SAMPLES == 11
    assert "sample count is implausible" in Reason.IMPLAUSIBLE_SAMPLES.description


def test_a_real_round_with_validation_flags_the_inflated_site() -> None:
    """With real updates and the validation game: the inflator is out before the game, the
    honest sites are valued by it (some positive, none flagged)."""
    sites = real_sites()
    torch.set_num_threads(1)
    counts = list(sites.num_samples[:4])
    counts[3] = 50 * counts[0]
    report = value_round(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=[
            Candidate(f"s{i}", n, d)
            for i, (n, d) in enumerate(zip(counts, sites.deltas[:4], strict=True))
        ],
        validation=sites.validation,
        method="loo",
        metric="loss",
        seed=0,
    )
    out = {v.site: v for v in report.sites}
    assert out["s3"].reason is Reason.IMPLAUSIBLE_SAMPLES and out["s3"].score == 0
    honest = [out[s] for s in ("s0", "s1", "s2")]
    assert all(v.reason is not Reason.IMPLAUSIBLE_SAMPLES for v in honest)
    assert any(v.score > 0 for v in honest) and report.method == "loo"


def test_the_reference_median_with_and_without_the_judged_count() -> None:
    assert sample_reference(300, [300, 1, 1], with_self=True) == 150.5  # (1, 1, 300, 300)
    assert sample_reference(300, [300, 1, 1], with_self=False) == 1.0
    assert sample_reference(500, [100, 40, 1], with_self=True) == 70.0  # (1, 40, 100, 500)
    assert sample_reference(500, [100, 40, 1], with_self=False) == 40.0
    assert sample_reference(5, [7], with_self=True) is None  # fewer than two others


def test_colluders_claiming_one_sample_cannot_zero_the_honest_sites() -> None:
    """Attack review: sites that claim 1 sample drag the median each count is judged against.
    Judged against the others only (logs recorded before ``sample_median_self``), two colluders
    zeroed both honest 300-image sites and one colluder zeroed a 500-image site; with the
    judged count in the median, neither is flagged, and an inflator still is."""
    old = Combiner(sample_median_self=0)
    for counts, honest in (([300, 300, 1, 1], ("s0", "s1")), ([500, 100, 40, 1], ("s0",))):
        now, before = value(counts), value(counts, old)
        assert all(now[s].reason is Reason.OK and now[s].score > 0 for s in honest), counts
        assert all(before[s].reason is Reason.IMPLAUSIBLE_SAMPLES for s in honest), counts
        assert sum(weights(now)[int(s[1])] for s in honest) > 0
    assert value([100, 100, 100, 5000])["s3"].reason is Reason.IMPLAUSIBLE_SAMPLES
    # colluders holding more than half of the round still set the median (honest majority)
    assert value([300, 1, 1])["s0"].reason is Reason.IMPLAUSIBLE_SAMPLES


def test_sample_median_self_is_zero_or_one() -> None:
    for bad in (2, -1, 0.5, True):
        with pytest.raises(ConfigError, match="sample_median_self must be 0 or 1"):
            Combiner(sample_median_self=bad)  # type: ignore[arg-type]
