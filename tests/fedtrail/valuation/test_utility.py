"""Coalition models on the real validation split, and the games played on them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import apply_delta, sample_weighted_mean
from fedtrail.ml.metrics import evaluate
from fedtrail.ml.models import initial_model
from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.loo import leave_one_out
from fedtrail.valuation.shapley import exact_shapley
from fedtrail.valuation.utility import CoalitionUtility
from tests.fedtrail.valuation.real_sites import SPEC, RealSites, real_sites


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sites() -> RealSites:
    return real_sites()


def context(sites: RealSites, k: int = 3, **kwargs: object) -> ValuationContext:
    cands = [Candidate(f"s{i}", sites.num_samples[i], sites.deltas[i]) for i in range(k)]
    cands.append(Candidate("bad", 10, None, Reason.TAMPERED))
    return ValuationContext(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=cands,
        validation=sites.validation,
        **kwargs,  # type: ignore[arg-type]
    )


def metric_of(state: dict[str, torch.Tensor], sites: RealSites) -> tuple[float, float]:
    model = initial_model(SPEC, seed=1)
    model.load_state_dict(state)
    m = evaluate(model, sites.validation)
    return m.auc, m.loss


def test_coalition_model_is_global_plus_fedavg(sites: RealSites) -> None:
    util = CoalitionUtility(context(sites))
    assert util.players == ("s0", "s1", "s2")
    assert util(frozenset()) == metric_of(sites.global_state, sites)[0]
    pair = frozenset({"s2", "s0"})
    mean = sample_weighted_mean([sites.deltas[0], sites.deltas[2]], sites.num_samples[:3:2])
    expected = apply_delta(sites.global_state, mean)
    built = util.state(pair)
    assert all(torch.equal(built[k], expected[k]) for k in expected)
    assert util(pair) == metric_of(expected, sites)[0]
    loss_util = CoalitionUtility(context(sites, metric="loss"))
    assert loss_util(pair) == -metric_of(expected, sites)[1]
    with pytest.raises(ConfigError, match="unknown players"):
        util(frozenset({"bad"}))


def test_coalition_utility_needs_validation_and_usable_players(sites: RealSites) -> None:
    ctx = context(sites)
    with pytest.raises(ConfigError, match="validation split"):
        CoalitionUtility(
            ValuationContext(global_state=sites.global_state, spec=SPEC, candidates=[])
        )
    with pytest.raises(ConfigError, match="usable"):
        CoalitionUtility(ctx, [ctx.candidates[-1]])
    wrong = Candidate("w", 5, {"conv1.weight": torch.zeros(2)})
    with pytest.raises(ConfigError, match="coalition models"):
        CoalitionUtility(ctx, [wrong])


def test_games_on_coalition_models_credit_trained_updates(sites: RealSites) -> None:
    ctx = context(sites)
    util = CoalitionUtility(ctx)
    shapley = exact_shapley(util.players, util)
    assert shapley.evaluations == 8
    assert set(shapley.values) == {"s0", "s1", "s2"}
    assert all(v > 0.05 for v in shapley.values.values())  # each lifts the AUC from ~0.5
    assert sum(shapley.values.values()) == pytest.approx(shapley.v_full - shapley.v_empty)
    again = CoalitionUtility(ctx)
    assert exact_shapley(again.players, again).values == shapley.values  # deterministic
    loo = leave_one_out(util.players, util)
    assert loo.evaluations == 5 and loo.v_full == shapley.v_full
