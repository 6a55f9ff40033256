"""Data-free statistics: cosine to the coordinate-wise median, robust norm z-scores."""

from __future__ import annotations

import math

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.simulation.faults import scale_update, sign_flip
from fedtrail.valuation import Candidate, value_round
from fedtrail.valuation.robust import MAD_TO_SIGMA, robust_statistics


def vec(*xs: float) -> dict[str, torch.Tensor]:
    return {"x": torch.tensor(xs, dtype=torch.float32)}


def test_cosine_to_the_coordinate_wise_median() -> None:
    # coordinate-wise: median(1, 0, 1, 0) = 0.5 and median(0, 1, 1, 0) = 0.5
    stats = robust_statistics({"a": vec(1, 0), "b": vec(0, 1), "c": vec(1, 1), "z": vec(0, 0)})
    assert stats["a"].cosine == pytest.approx(1 / math.sqrt(2))
    assert stats["c"].cosine == pytest.approx(1.0)
    assert stats["z"].cosine == 0.0  # zero vector: no direction
    flipped = robust_statistics({"a": vec(1, 2), "b": vec(1.1, 2), "c": vec(-1, -2)})
    assert flipped["c"].cosine == pytest.approx(-1.0, abs=0.01)


def test_norm_z_uses_median_and_mad() -> None:
    # norms 1, 2, 3, 4, 100: median 3, MAD = median(2, 1, 0, 1, 97) = 1
    stats = robust_statistics({f"s{n}": vec(n, 0) for n in (1, 2, 3, 4, 100)})
    assert stats["s100"].norm == 100.0
    assert stats["s100"].median_norm == 3.0
    assert stats["s100"].norm_z == pytest.approx(97 / MAD_TO_SIGMA)
    assert stats["s3"].norm_z == 0.0
    assert stats["s1"].norm_z == pytest.approx(-2 / MAD_TO_SIGMA)


def test_norm_z_floor_when_norms_are_nearly_equal() -> None:
    # norms 1, 1, 1, 1, 2: MAD 0, so the scale is the floor 0.25 * median 1
    deltas = {f"s{i}": vec(1, 0) for i in range(4)} | {"big": vec(0, 2)}
    assert robust_statistics(deltas)["big"].norm_z == pytest.approx(4.0)
    assert robust_statistics(deltas, norm_scale_floor=0.5)["big"].norm_z == pytest.approx(2.0)
    for bad in (0.0, -1.0, math.inf, True):
        with pytest.raises(ConfigError):
            robust_statistics(deltas, norm_scale_floor=bad)


def test_poisoned_updates_stand_out_among_ten() -> None:
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(500, generator=gen)
    honest = {f"s{i}": {"x": mu + 0.5 * torch.randn(500, generator=gen)} for i in range(10)}
    sent = dict(honest)
    for s in ("s1", "s4", "s7"):
        sent[s] = sign_flip(honest[s])
    sent["s9"] = scale_update(honest["s9"], 20)
    stats = robust_statistics(sent)
    for s in ("s1", "s4", "s7"):
        assert stats[s].cosine < -0.8
    for s in ("s0", "s2", "s3", "s5", "s6", "s8", "s9"):
        assert stats[s].cosine > 0.8
    assert stats["s9"].norm_z > 50
    assert max(abs(stats[s].norm_z) for s in sent if s != "s9") < 3


def test_layouts_must_match_and_empty_is_empty() -> None:
    assert robust_statistics({}) == {}
    with pytest.raises(ConfigError, match="layout"):
        robust_statistics({"a": vec(1, 2), "b": vec(1, 2, 3)})


def test_a_round_computes_the_statistics_over_usable_candidates_only() -> None:
    cands = [
        Candidate("a", 1, vec(1, 0)),
        Candidate("b", 1, vec(1, 0.1)),
        Candidate("c", 1, vec(-1, 0)),
        Candidate("t", 1, None, Reason.TAMPERED),
        Candidate("l", 1, vec(50, 0), Reason.LATE),
    ]
    report = value_round(
        global_state=vec(0, 0),
        spec=ModelSpec(),
        candidates=cands,
        validation=None,
        method="shapley",
        metric="auc",
        seed=0,
    )
    out = {v.site: v for v in report.sites}
    assert out["a"].cosine == pytest.approx(1.0) and out["c"].cosine == pytest.approx(-1.0)
    assert out["a"].median_norm == pytest.approx(1.0)  # the late x50 update is not counted
    assert out["t"].cosine is None and out["l"].cosine is None
    assert (out["l"].score, out["l"].reason) == (0, Reason.LATE)
    assert out["c"].reason is Reason.OUTLIER_DIRECTION


def test_the_norm_scale_floor_is_validated() -> None:
    with pytest.raises(ConfigError):
        robust_statistics({"a": vec(1, 0)}, norm_scale_floor=0)
