"""Updates that break the model without breaking the codec: finite tensors whose forward pass
overflows are OUTLIER_NORM before the game (they have no defined utility and would stop the
round), and with two updates a huge one cannot make the honest one look like a free-rider."""

from __future__ import annotations

import math

import pytest
import torch

import fedtrail.valuation.round as round_mod
from fedtrail.protocol.codes import Reason
from fedtrail.valuation import value_round
from fedtrail.valuation.base import Candidate
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.standing import History
from tests.fedtrail.valuation.real_sites import SPEC, real_sites


def _overflowing(delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Finite float32 values (the codec accepts them) whose logits overflow to infinity."""
    out = dict(delta)
    out["fc2.weight"] = delta["fc2.weight"] + 3e38
    return out


def _candidates(n: int, broken: int) -> list[Candidate]:
    rs = real_sites()
    cands = [Candidate(f"site-{i}", rs.num_samples[i], rs.deltas[i]) for i in range(n)]
    cands[broken] = Candidate(
        cands[broken].site, cands[broken].num_samples, _overflowing(rs.deltas[broken])
    )
    return cands


def test_an_update_whose_model_overflows_is_outlier_norm_and_the_round_is_valued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the absolute norm bound lifted (this update is also far over it), the forward-pass
    check alone refuses it."""
    monkeypatch.setattr(round_mod, "MAX_UPDATE_TO_MODEL_NORM", math.inf)
    rs = real_sites()
    for history in (None, History()):
        report = value_round(
            global_state=rs.global_state,
            spec=SPEC,
            candidates=_candidates(4, broken=2),
            validation=rs.validation,
            method="shapley",
            metric="balanced_loss",
            seed=0,
            history=history,
        )
        by_site = {v.site: v for v in report.sites}
        bad = by_site["site-2"]
        assert (bad.score, bad.reason) == (0, Reason.OUTLIER_NORM)
        assert "NaN or infinite outputs" in bad.detail
        assert all(by_site[f"site-{i}"].reason is not Reason.OUTLIER_NORM for i in (0, 1, 3))
        assert any(by_site[f"site-{i}"].score > 0 for i in (0, 1, 3))


def test_with_two_sites_a_huge_update_does_not_make_the_other_a_free_rider() -> None:
    """The tiny-norm screen compares with the lower median: of two updates, a huge one cannot
    push the honest one under 1% (it did with the mean of the two middle norms, and the huge
    update then took all the weight). The cost: with two updates a tiny one is not caught by
    norm either (a zero one still is); with three it is."""
    rs = real_sites()
    honest, huge = rs.deltas[0], {k: v * 1e6 for k, v in rs.deltas[1].items()}
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.9999, "stale_distance": 0.01}
    assert free_riders({"a": honest, "b": huge}, {}, **rule) == {}
    tiny = {k: v * 1e-4 for k, v in rs.deltas[1].items()}
    zero = {k: torch.zeros_like(v) for k, v in honest.items()}
    assert free_riders({"a": honest, "b": zero}, {}, **rule) == {"b": "the update is zero"}
    riders = free_riders({"a": honest, "b": tiny, "c": rs.deltas[2]}, {}, **rule)
    assert list(riders) == ["b"] and "of the median" in riders["b"]


def test_in_a_two_site_round_a_huge_finite_update_is_outlier_norm_even_in_the_warm_up() -> None:
    """No median tells which of two updates is odd; an update 1e6 times an honest one (about
    2e4 times the model's own norm, finite outputs or not) is over the absolute bound, and the
    honest site keeps its score in the warm-up round."""
    rs = real_sites()
    huge = {k: v * 1e6 for k, v in rs.deltas[1].items()}
    for history in (None, History()):
        report = value_round(
            global_state=rs.global_state,
            spec=SPEC,
            candidates=[
                Candidate("honest", rs.num_samples[0], rs.deltas[0]),
                Candidate("huge", rs.num_samples[1], huge),
            ],
            validation=rs.validation,
            method="shapley",
            metric="balanced_loss",
            seed=0,
            history=history,
        )
        by_site = {v.site: v for v in report.sites}
        assert by_site["huge"].reason is Reason.OUTLIER_NORM and by_site["huge"].score == 0
        assert "times the global model's" in by_site["huge"].detail
        assert by_site["honest"].reason is Reason.OK and by_site["honest"].score > 0
