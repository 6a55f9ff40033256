"""The size bound's shortcut (issue 14's scoring time): with a history, ``_oversized`` takes the
norms the free-rider screen already computed and computes its own exact norm only for updates
near or over the limit, so its verdicts and details are those of the exact rule."""

from __future__ import annotations

import torch

import fedtrail.valuation.round as round_mod
from fedtrail.protocol.codes import Reason
from fedtrail.valuation import Candidate, History, value_round
from fedtrail.valuation.base import ValuationContext
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.round import MAX_UPDATE_TO_MODEL_NORM, model_norm
from tests.fedtrail.valuation.real_sites import SPEC, real_sites


def _scaled(delta: dict[str, torch.Tensor], ratio: float, scale: float) -> dict[str, torch.Tensor]:
    """``delta`` scaled so that its norm is about ``ratio`` times ``scale``."""
    k = ratio * scale / model_norm(delta)
    return {name: (t.to(torch.float64) * k).to(torch.float32) for name, t in delta.items()}


def _candidates() -> tuple[list[Candidate], float]:
    """Updates around the limit (relative offsets outside and inside the shortcut's margin),
    and the global model's norm."""
    rs = real_sites()
    scale = model_norm(rs.global_state)
    cands = [Candidate("honest", rs.num_samples[0], rs.deltas[0])]
    for i, offset in enumerate((-1e-3, -2e-6, -1e-7, 1e-7, 2e-6, 1e-3)):
        ratio = MAX_UPDATE_TO_MODEL_NORM * (1.0 + offset)
        delta = _scaled(rs.deltas[1 + i % 6], ratio, scale)
        cands.append(Candidate(f"near-{i}", rs.num_samples[1], delta))
    return cands, scale


def test_known_norms_give_the_exact_rules_verdicts_and_details() -> None:
    cands, scale = _candidates()
    ctx = ValuationContext(
        global_state=real_sites().global_state,
        spec=SPEC,
        candidates=cands,
        validation=None,
        metric="balanced_loss",
    )
    norms: dict[str, float] = {}
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.99999, "stale_distance": 1e6}
    deltas = {c.site: c.delta for c in cands if c.delta is not None}
    free_riders(deltas, {}, **rule, norms_out=norms)
    assert set(norms) == {c.site for c in cands}
    exact = round_mod._oversized(ctx, cands, scale=scale)
    shortcut = round_mod._oversized(ctx, cands, scale=scale, known_norms=norms)
    assert [(c.status, c.detail) for c in shortcut] == [(c.status, c.detail) for c in exact]
    # the exact rule itself, from each update's own norm: the limit splits the updates
    over = [model_norm(c.delta) / scale > MAX_UPDATE_TO_MODEL_NORM for c in cands if c.delta]
    assert [c.status is Reason.OUTLIER_NORM for c in shortcut] == over
    assert over[1:4] == [False, False, False] and over[-1]


def test_a_wrong_known_norm_below_the_limit_is_trusted_so_the_callers_must_be_exact() -> None:
    """The shortcut trusts what it is given: a norm far below the limit passes an oversized
    update (which is why only the free-rider screen's own norms of the same tensors go in)."""
    cands, scale = _candidates()
    ctx = ValuationContext(
        global_state=real_sites().global_state,
        spec=SPEC,
        candidates=cands,
        validation=None,
        metric="balanced_loss",
    )
    last = cands[-1].site
    assert round_mod._oversized(ctx, cands, scale=scale)[-1].status is Reason.OUTLIER_NORM
    fooled = round_mod._oversized(ctx, cands, scale=scale, known_norms={last: scale})
    assert fooled[-1].status is Reason.OK


def test_with_a_history_an_update_just_over_the_limit_is_still_outlier_norm() -> None:
    rs = real_sites()
    cands, _ = _candidates()
    report = value_round(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=cands,
        validation=rs.validation,
        method="linear_shapley",
        metric="balanced_loss",
        seed=0,
        history=History(),
    )
    reasons = {v.site: v.reason for v in report.sites}
    assert reasons["near-5"] is Reason.OUTLIER_NORM
    assert reasons["near-4"] is Reason.OUTLIER_NORM
    assert all(reasons[f"near-{i}"] is not Reason.OUTLIER_NORM for i in range(3))
