"""scripts/bench/step_utility.py: a coalition's utility at its best step is the best point of
the quadratic through the global model's utility, the slope along the coalition's mean delta and
the coalition model's utility, over steps in [0, eta_max]."""

from __future__ import annotations

import pytest
import torch

from fedtrail.ml.aggregation import apply_delta, sample_weighted_mean
from fedtrail.ml.metrics import fit_intercept, predict_logits
from fedtrail.ml.models import initial_model, load_federated
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.utility import CoalitionUtility
from scripts.bench import step_utility
from tests.fedtrail.valuation.real_sites import SPEC, RealSites, real_sites

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scaled(sites: RealSites, i: int, scale: float) -> dict[str, torch.Tensor]:
    return {k: v * scale for k, v in sites.deltas[i].items()}


def _utility(sites: RealSites, scale: float) -> CoalitionUtility:
    cands = [Candidate(f"s{i}", sites.num_samples[i], _scaled(sites, i, scale)) for i in range(3)]
    ctx = ValuationContext(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=cands,
        validation=sites.validation,
        metric="balanced_loss",
    )
    return CoalitionUtility(ctx)


def _along(sites: RealSites, members: list[int], eta: float, scale: float) -> float:
    """Minus the fitted balanced loss of global + eta * (the members' sample-weighted mean)."""
    mean = sample_weighted_mean(
        [_scaled(sites, i, scale) for i in members], [sites.num_samples[i] for i in members]
    )
    state = apply_delta(sites.global_state, {k: v * eta for k, v in mean.items()})
    model = initial_model(SPEC, seed=1)
    load_federated(model, state)
    return -fit_intercept(predict_logits(model, sites.validation), sites.validation.labels).loss


@pytest.mark.parametrize("eta_max", [1.0, 2.0])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: the coalition model overshoots
def test_the_utility_is_the_best_point_of_the_quadratic_along_the_ray(
    eta_max: float, scale: float
) -> None:
    sites = real_sites()
    plain = _utility(sites, scale)
    stepped = step_utility.stepped(eta_max)
    util = _utility(sites, scale)
    pair = frozenset({"s0", "s2"})
    f0, f1 = plain(frozenset()), plain(pair)
    assert stepped(util, frozenset()) == f0  # type: ignore[operator]
    value = stepped(util, pair)  # type: ignore[operator]
    assert value >= max(f0, f1)
    # the slope by central differences along the same ray, computed here from scratch
    eps = 1e-3
    slope = (_along(sites, [0, 2], eps, scale) - _along(sites, [0, 2], -eps, scale)) / (2 * eps)
    c = f1 - f0 - slope
    steps = [0.0, 1.0, eta_max] + ([min(max(-slope / (2 * c), 0.0), eta_max)] if c < 0 else [])
    assert value == pytest.approx(max(f0 + slope * e + c * e * e for e in steps), rel=1e-3)
    if scale > 1:
        assert value > max(f0, f1)  # the best step lies inside (0, 1)
