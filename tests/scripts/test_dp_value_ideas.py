"""Issue 16's experiment script (scripts/bench/dp_value_ideas.py): the truncated game's one-layer
case is leave-one-out and its all-layer case exact Shapley; the projection (now the product's
``valuation.project_shift``) removes the update's first-order shift of the mean logit
difference; the Platt utility ignores any affine change of the logit difference."""

from __future__ import annotations

import random

import numpy as np
import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.metrics import predict_logits
from fedtrail.ml.models import ModelSpec, initial_model, load_federated
from fedtrail.valuation.base import Candidate, Utility, ValuationContext
from fedtrail.valuation.loo import leave_one_out
from fedtrail.valuation.shapley import exact_shapley
from fedtrail.valuation.utility import CoalitionUtility
from scripts.bench import dp_value_ideas


def _random_utility(seed: int) -> Utility:
    rng = random.Random(seed)
    cache: dict[frozenset[str], float] = {}

    def u(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = rng.random()
        return cache[s]

    return u


def test_one_layer_is_leave_one_out_and_all_layers_exact_shapley() -> None:
    players = list("abcde")
    u = _random_utility(3)
    assert dp_value_ideas.truncated(1)(players, u, 0).values == leave_one_out(players, u).values
    full = dp_value_ideas.truncated(5)(players, u, 0).values
    exact = exact_shapley(players, u).values
    assert all(abs(full[p] - exact[p]) < 1e-12 for p in players)
    two = dp_value_ideas.truncated(2)(players, u, 0).values
    assert any(abs(two[p] - full[p]) > 1e-6 for p in players)


def test_projection_removes_the_first_order_shift_of_the_mean_logit_difference() -> None:
    spec = ModelSpec()
    torch.manual_seed(0)
    glob = {k: v.clone() for k, v in initial_model(spec, seed=0).state_dict().items()}
    val = load_bundled().val.subset(np.arange(64))
    model = initial_model(spec, seed=0)
    # an update that only moves the output layer's bias: a pure shift of every image's logit
    last_bias = [k for k, v in glob.items() if k.endswith("bias") and v.numel() == 2][-1]
    delta = {k: torch.zeros_like(v) for k, v in glob.items()}
    delta[last_bias] = torch.tensor([-0.005, 0.005])
    cand = Candidate(site="s", num_samples=10, delta=delta)
    ctx = ValuationContext(
        global_state=glob, spec=spec, candidates=[cand], validation=val, metric="balanced_loss"
    )
    utility = CoalitionUtility(ctx)
    # the projection now lives in the product (valuation.project_shift; the script's --idea
    # project only sets it): the pure shift is removed from the coalition model
    projecting = CoalitionUtility(ctx, project_shift=True)
    [(g, _)] = projecting.shift_basis()

    def mean_diff(state: dict[str, torch.Tensor]) -> float:
        load_federated(model, state)
        z = predict_logits(model, val)
        return float((z[:, 1] - z[:, 0]).mean())

    base = mean_diff(glob)
    plain = mean_diff(utility.state(frozenset({"s"})))
    projected = mean_diff(projecting.state(frozenset({"s"})))
    assert float(np.abs(g).sum()) > 0
    assert abs(plain - base) > 0.009
    assert abs(projected - base) < 0.01 * abs(plain - base)


def test_platt_utility_ignores_affine_changes_of_the_logit_difference() -> None:
    class _Split:
        labels = np.array([0] * 50 + [1] * 30)

    class _Holder:
        _validation = _Split()

    rng = np.random.default_rng(0)
    z = np.zeros((80, 2))
    z[:, 1] = rng.normal(size=80) + _Split.labels
    h = _Holder()
    base = dp_value_ideas._platt_loss(h, z)[0]  # type: ignore[arg-type]
    for scale, shift in [(3.0, 5.0), (0.1, -2.0)]:
        moved = z.copy()
        moved[:, 1] = scale * z[:, 1] + shift
        assert abs(dp_value_ideas._platt_loss(h, moved)[0] - base) < 1e-7  # type: ignore[arg-type]
    shuffled = z.copy()
    shuffled[:, 1] = rng.permutation(z[:, 1])
    assert dp_value_ideas._platt_loss(h, shuffled)[0] < base - 0.01  # type: ignore[arg-type]
