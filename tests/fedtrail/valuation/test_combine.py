"""The combiner and value_round: reasons and scores for every kind of update."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedtrail.valuation.round as round_module
from fedtrail.errors import ConfigError
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE, ZeroTotalWeight, onchain_weights
from fedtrail.simulation.faults import scale_update, sign_flip
from fedtrail.valuation import (
    METHODS,
    Candidate,
    Combiner,
    RoundValuation,
    SiteValuation,
    ValuationContext,
    any_positive,
    value_round,
)
from fedtrail.valuation.robust import RobustStats
from tests.fedtrail.valuation.real_sites import SPEC, RealSites, real_sites

D = {"x": torch.zeros(2)}


def rs(cosine: float, norm_z: float = 0.0) -> RobustStats:
    return RobustStats(cosine=cosine, norm=1.0 + norm_z / 4, norm_z=norm_z, median_norm=1.0)


def by_site(vals: list[SiteValuation]) -> dict[str, SiteValuation]:
    return {v.site: v for v in vals}


# ---------------------------------------------------------------- the combiner alone


def test_combiner_maps_components_to_scores_and_reasons() -> None:
    cands = [
        Candidate("best", 10, D),
        Candidate("half", 30, D),
        Candidate("useless", 10, D),
        Candidate("harmful", 10, D),
        Candidate("flipped", 10, D),
        Candidate("scaled", 10, D),
        Candidate("both", 10, D),
        Candidate("tampered", 10, None, Reason.TAMPERED, "sha256 mismatch"),
        Candidate("malformed", 10, None, Reason.MALFORMED, "bad dtype"),
        Candidate("copy", 10, D, Reason.DUPLICATE, "same bytes as best"),
        Candidate("late", 10, D, Reason.LATE),
        Candidate("shifted", 10, D, Reason.EXPLANATION_SHIFT),
    ]
    robust = {
        "best": rs(0.9),
        "half": rs(0.7, 2.0),
        "useless": rs(0.8),
        "harmful": rs(0.1),
        "flipped": rs(-0.9),
        "scaled": rs(0.9, 75.0),
        "both": rs(-0.9, 75.0),
    }
    values = {"best": 0.04, "half": 0.02, "useless": 0.0, "harmful": -0.01}
    out = by_site(Combiner().combine(cands, robust, values, method="shapley"))
    assert [v.site for v in Combiner().combine(cands, robust, values)] == [c.site for c in cands]
    expect = {
        "best": (SCORE_SCALE, Reason.OK),
        "half": (SCORE_SCALE // 2, Reason.OK),
        "useless": (0, Reason.LOW_GAIN),
        "harmful": (0, Reason.LOW_GAIN),
        "flipped": (0, Reason.OUTLIER_DIRECTION),
        "scaled": (0, Reason.OUTLIER_NORM),
        "both": (0, Reason.OUTLIER_DIRECTION),
        "tampered": (0, Reason.TAMPERED),
        "malformed": (0, Reason.MALFORMED),
        "copy": (0, Reason.DUPLICATE),
        "late": (0, Reason.LATE),
        "shifted": (0, Reason.EXPLANATION_SHIFT),
    }
    assert {s: (v.score, v.reason) for s, v in out.items()} == expect
    assert out["tampered"].detail == "sha256 mismatch"
    assert out["tampered"].cosine is None and out["tampered"].value is None
    assert out["late"].detail == Reason.LATE.description
    assert out["best"].value == 0.04 and out["best"].method == "shapley"
    assert out["flipped"].value is None and out["flipped"].cosine == -0.9
    assert "cosine -0.900" in out["flipped"].explanation
    assert "75.0 > 10.0" in out["scaled"].detail
    assert out["useless"].explanation == "low gain: shapley value 0 <= 0"
    json.dumps([v.components for v in out.values()])


def test_robust_thresholds_need_enough_updates() -> None:
    cands = [Candidate("a", 1, D), Candidate("b", 1, D)]
    robust = {"a": rs(0.9), "b": rs(-0.9, 50.0)}
    out = by_site(Combiner().combine(cands, robust, {"a": 0.1, "b": 0.05}))
    assert out["b"].reason is Reason.OK and out["b"].score == SCORE_SCALE // 2
    assert not out["b"].robust_checked
    strict = by_site(Combiner(min_robust_sites=2).combine(cands, robust, {"a": 0.1}))
    assert strict["b"].reason is Reason.OUTLIER_DIRECTION and strict["b"].robust_checked


def test_data_free_scores_follow_the_cosine() -> None:
    cands = [Candidate(s, 1, D) for s in "abcd"]
    robust = {"a": rs(0.8), "b": rs(0.4), "c": rs(-0.2), "d": rs(0.0)}
    out = by_site(Combiner().combine(cands, robust, None))
    assert (out["a"].score, out["b"].score) == (SCORE_SCALE, SCORE_SCALE // 2)
    assert out["a"].method == "cosine" and out["a"].value is None
    assert out["c"].reason is out["d"].reason is Reason.OUTLIER_DIRECTION


def test_combiner_refuses_missing_values_and_bad_thresholds() -> None:
    with pytest.raises(ConfigError, match="no validation value"):
        Combiner().combine([Candidate("a", 1, D)], {"a": rs(0.9)}, {})
    with pytest.raises(ConfigError, match="not finite"):
        Combiner().combine([Candidate("a", 1, D)], {"a": rs(0.9)}, {"a": math.nan})
    with pytest.raises(ConfigError, match="no robust statistics"):
        Combiner().combine([Candidate("a", 1, D)], {}, {"a": 1.0})
    for kwargs in (
        {"min_cosine": 1.5},
        {"min_cosine": math.nan},
        {"max_norm_z": 0},
        {"norm_scale_floor": -1},
        {"min_gain": math.inf},
        {"min_robust_sites": 0},
        {"min_robust_sites": 2.5},
    ):
        with pytest.raises(ConfigError):
            Combiner(**kwargs)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=12))
def test_scores_increase_with_the_value(values: list[float]) -> None:
    cands = [Candidate(f"s{i}", 5, D) for i in range(len(values))]
    out = Combiner().combine(
        cands,
        {c.site: rs(0.9) for c in cands},
        {c.site: v for c, v in zip(cands, values, strict=True)},
    )
    for v, res in zip(values, out, strict=True):
        assert 0 <= res.score <= SCORE_SCALE
        assert (res.score > 0) == (v > 0) == (res.reason is Reason.OK)
    for a, ra in zip(values, out, strict=True):
        for b, rb in zip(values, out, strict=True):
            if a > b:
                assert ra.score >= rb.score


# ---------------------------------------------------------------- value_round without models


def data_free(cands: list[Candidate], method: str = "shapley") -> RoundValuation:
    return value_round(
        global_state={"x": torch.zeros(3)},
        spec=ModelSpec(),
        candidates=cands,
        validation=None,
        method=method,
        metric="auc",
        seed=0,
    )


def v3(*xs: float) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(xs, dtype=torch.float32)}


def test_value_round_checks_layout_samples_and_duplicates() -> None:
    cands = [
        Candidate("a", 10, v3(1, 1, 1)),
        Candidate("b", 10, v3(1, 2, 1)),
        Candidate("copy", 10, v3(1, 1, 1)),
        Candidate("shape", 10, v3(1, 1)),
        Candidate("names", 10, {"y": torch.zeros(3)}),
        Candidate("nan", 10, v3(1, math.nan, 1)),
        Candidate("ints", 10, {"x": torch.ones(3, dtype=torch.int64)}),
        Candidate("nobody", 0, v3(1, 1, 2)),
        Candidate("c", 10, v3(2, 1, 1)),
    ]
    report = data_free(cands)
    out = by_site(report.sites)
    assert report.method == "cosine" and report.evaluations == 0
    assert [v.site for v in report.sites] == [c.site for c in cands]
    assert out["copy"].reason is Reason.DUPLICATE and "same update as a" in out["copy"].detail
    assert out["copy"].status is Reason.DUPLICATE
    for s in ("shape", "names", "nan", "ints", "nobody"):
        assert out[s].reason is Reason.MALFORMED and out[s].score == 0, s
    assert "shape" in out["shape"].detail and "NaN" in out["nan"].detail
    assert "no training samples" in out["nobody"].detail
    assert all(out[s].score > 0 and out[s].reason is Reason.OK for s in "abc")
    assert any_positive(report.sites)


def test_duplicates_are_byte_equal_updates_not_equal_checksums() -> None:
    """_prechecked fingerprints only the updates whose cheap checksum (per tensor, the sum of
    its 32-bit words) an earlier one shares: updates with equal checksums but other bytes are
    not duplicates, and copies still name the first sender, in the candidates' order."""
    words = torch.tensor([1.0, 2.0, 3.0]).view(torch.int32)
    twin = (words + torch.tensor([1, -1, 0], dtype=torch.int32)).view(torch.float32)
    original = {"x": words.view(torch.float32).clone()}
    assert not torch.equal(twin, original["x"])
    assert round_module._checksum(round_module._float32({"x": twin}, ["x"])) == (
        round_module._checksum(round_module._float32(original, ["x"]))
    )
    cands = [
        Candidate("a", 10, original),
        Candidate("twin", 10, {"x": twin}),
        Candidate("c", 10, v3(2, 1, 1)),
        Candidate("copy-of-twin", 10, {"x": twin.clone()}),
        Candidate("copy-of-a", 10, {"x": original["x"].clone()}),
    ]
    out = by_site(data_free(cands).sites)
    assert out["twin"].status is Reason.OK and out["a"].status is Reason.OK
    assert out["copy-of-twin"].status is Reason.DUPLICATE
    assert "same update as twin's" in out["copy-of-twin"].detail
    assert out["copy-of-a"].status is Reason.DUPLICATE
    assert "same update as a's" in out["copy-of-a"].detail


def test_all_zero_round_is_reported_not_hidden() -> None:
    cands = [
        Candidate("t", 10, None, Reason.TAMPERED),
        Candidate("m", 10, None, Reason.MALFORMED),
        Candidate("l", 10, v3(1, 1, 1), Reason.LATE),
    ]
    report = data_free(cands)
    assert [(v.score, v.reason) for v in report.sites] == [
        (0, Reason.TAMPERED),
        (0, Reason.MALFORMED),
        (0, Reason.LATE),
    ]
    assert report.method is None and not any_positive(report.sites)
    with pytest.raises(ZeroTotalWeight):
        onchain_weights([v.num_samples for v in report.sites], [v.score for v in report.sites])
    assert data_free([]).sites == []
    with pytest.raises(ConfigError, match="method"):
        data_free(cands, method="banzhaf")
    assert METHODS == ("shapley", "mc_shapley", "loo")
    with pytest.raises(ConfigError, match="metric"):
        value_round(
            global_state=D,
            spec=ModelSpec(),
            candidates=[],
            validation=None,
            method="loo",
            metric="f1",
            seed=0,
        )
    with pytest.raises(ConfigError, match="explanation check needs a probe set or a validation"):
        value_round(
            global_state=D,
            spec=ModelSpec(),
            candidates=[],
            validation=None,
            method="loo",
            metric="auc",
            seed=0,
            explanation_check=True,
        )


# ---------------------------------------------------------------- real updates


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sites() -> RealSites:
    return real_sites()


def real_context(sites: RealSites, **kwargs: object) -> ValuationContext:
    """Five honest sites, one sign-flipped, one scaled x20, and four unusable updates."""
    n, deltas = sites.num_samples, sites.deltas
    cands = [Candidate(f"honest{i}", n[i], deltas[i]) for i in range(5)]
    cands.insert(2, Candidate("flipped", n[5], sign_flip(deltas[5])))
    cands.append(Candidate("scaled", n[6], scale_update(deltas[6], 20.0)))
    cands += [
        Candidate("tampered", 200, None, Reason.TAMPERED, "sha256 of the stored bytes differs"),
        Candidate("malformed", 200, None, Reason.MALFORMED, "tensor fc1.weight is float16"),
        Candidate("copycat", n[0], {k: v.clone() for k, v in deltas[0].items()}),
        Candidate("late", n[1], deltas[1], Reason.LATE, "submitted after the deadline"),
    ]
    return ValuationContext(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=cands,
        validation=sites.validation,
        **kwargs,  # type: ignore[arg-type]
    )


def value(ctx: ValuationContext, method: str = "shapley") -> RoundValuation:
    """The round's valuation of ``ctx``'s inputs."""
    return value_round(
        global_state=ctx.global_state,
        spec=ctx.spec,
        candidates=ctx.candidates,
        validation=ctx.validation,
        method=method,
        metric=ctx.metric,
        seed=ctx.seed,
    )


def assert_verdicts(vals: list[SiteValuation]) -> dict[str, SiteValuation]:
    out = by_site(vals)
    for i in range(5):
        v = out[f"honest{i}"]
        assert v.reason is Reason.OK and v.score > 0, v
    assert out["flipped"].reason is Reason.OUTLIER_DIRECTION and out["flipped"].score == 0
    assert out["scaled"].reason is Reason.OUTLIER_NORM and out["scaled"].score == 0
    for site, reason in (
        ("tampered", Reason.TAMPERED),
        ("malformed", Reason.MALFORMED),
        ("copycat", Reason.DUPLICATE),
        ("late", Reason.LATE),
    ):
        assert (out[site].score, out[site].reason) == (0, reason), site
    return out


def test_real_round_with_exact_shapley(sites: RealSites) -> None:
    report = value(real_context(sites))
    out = assert_verdicts(report.sites)
    # only the five honest updates enter the game
    assert report.method == "shapley" and report.evaluations == 2**5
    assert report.v_empty is not None and report.v_full is not None
    assert report.v_full > report.v_empty + 0.2  # training lifts the AUC from ~0.5
    assert out["flipped"].cosine is not None and out["flipped"].cosine < -0.8
    assert out["scaled"].norm_z is not None and out["scaled"].norm_z > 30
    honest = sorted((out[f"honest{i}"] for i in range(5)), key=lambda v: v.value or 0.0)
    assert [v.score for v in honest] == sorted(v.score for v in honest)
    assert honest[-1].score == SCORE_SCALE
    assert all(v.method == "shapley" for v in honest)
    json.dumps([v.components for v in report.sites])
    weights = onchain_weights(
        [v.num_samples for v in report.sites], [v.score for v in report.sites]
    )
    assert [w > 0 for w in weights] == [v.score > 0 for v in report.sites]


def test_real_round_switches_to_monte_carlo_above_the_exact_limit(
    sites: RealSites, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(round_module, "AUTO_EXACT_SITES", 4)
    report = value(real_context(sites, seed=5))
    assert report.method == "mc_shapley" and report.permutations > 0
    assert report.evaluations < 2**5
    out = assert_verdicts(report.sites)
    assert out["honest0"].method == "mc_shapley"


def test_real_round_with_leave_one_out_on_the_loss(sites: RealSites) -> None:
    report = value(real_context(sites, metric="loss"), method="loo")
    assert report.method == "loo" and report.evaluations == 5 + 2
    out = by_site(report.sites)
    assert out["flipped"].reason is Reason.OUTLIER_DIRECTION
    assert out["scaled"].reason is Reason.OUTLIER_NORM
    # leave-one-out of near-redundant IID updates is small and may be either sign
    for i in range(5):
        v = out[f"honest{i}"]
        assert v.reason in (Reason.OK, Reason.LOW_GAIN) and v.value is not None
        assert abs(v.value) < 0.05


def test_no_gain_falls_back_to_the_data_free_scores(sites: RealSites) -> None:
    """Every update sign-flipped: they agree with each other (positive cosines) but each one
    lowers the validation AUC, so the game gives no positive value and the cosine decides."""
    n, deltas = sites.num_samples, sites.deltas
    cands = [Candidate(f"s{i}", n[i], sign_flip(deltas[i])) for i in range(4)]
    ctx = ValuationContext(
        global_state=sites.global_state, spec=SPEC, candidates=cands, validation=sites.validation
    )
    report = value(ctx)
    assert report.fallback and report.method == "cosine"
    assert report.evaluations == 2**4  # the validation game was played first
    assert report.v_full is not None and report.v_empty is not None
    assert report.v_full < report.v_empty
    for v in report.sites:
        assert v.score > 0 and v.reason is Reason.OK and v.method == "cosine"
        assert v.detail.startswith("no update improved the validation auc, data-free fallback; ")
    no_split = replace(ctx, validation=None)
    data_only = value(no_split)
    assert not data_only.fallback
    assert [v.score for v in data_only.sites] == [v.score for v in report.sites]
