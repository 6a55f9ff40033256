"""The accuracy benchmark under DP (``--dp-epsilon``, issue 16): every site trains through the
node's DP-SGD call (``fedtrail.ml.privacy.train_private``) at ``epsilon / rounds`` per round,
clipping norm 1, delta 1e-5, and never through plain ``train_local``; each update's DP parameters
and epsilon are recorded; an update fault applies to the private update; DP rows are checked
against issue 16's bar, not issue 12's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import Splits, load_bundled
from fedtrail.ml.privacy import DpSettings, PrivateResult
from fedtrail.simulation.faults import SiteFault
from scripts.bench import _sim, accuracy
from tests.scripts.test_bench_sim import _balanced


@pytest.fixture(scope="module")
def tiny() -> Splits:
    s = load_bundled()
    return Splits(
        train=_balanced(s.train, 40), val=_balanced(s.val, 15), test=_balanced(s.test, 15)
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**kw: Any) -> _sim.SimConfig:
    base: dict[str, Any] = {
        "sites": 2,
        "rounds": 2,
        "epochs": 1,
        "alpha": 5.0,
        "min_size": 10,
        "seed": 1,
        "dp_epsilon": 6.0,
    }
    base.update(kw)
    return _sim.SimConfig(**base)


class _Spy:
    """Wraps the real train_private, recording its settings, delta and result."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[DpSettings, float, PrivateResult]] = []

    def __call__(self, *args: Any, settings: DpSettings, delta: float, **kw: Any) -> Any:
        res = self.real(*args, settings=settings, delta=delta, **kw)
        self.calls.append((settings, delta, res))
        return res


def _no_plain(*args: object, **kw: object) -> None:
    raise AssertionError("train_local called in a DP run")


@pytest.mark.parametrize("method", ["fedavg", "valuation"])
def test_dp_routes_every_site_through_train_private(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch, method: _sim.Method
) -> None:
    spy = _Spy(_sim.train_private)
    monkeypatch.setattr(_sim, "train_private", spy)
    monkeypatch.setattr(_sim, "train_local", _no_plain)
    res = _sim.run_method(method, _config(), tiny)
    assert len(spy.calls) == 4  # 2 sites x 2 rounds
    for settings, delta, _ in spy.calls:
        assert settings.target_epsilon == pytest.approx(3.0)  # 6 over 2 rounds
        assert settings.max_grad_norm == 1.0
        assert delta == 1e-5
    for rec in res.rounds:
        assert sorted(rec.privacy) == res.site_names
        for info in rec.privacy.values():
            assert info["delta"] == 1e-5 and info["max_grad_norm"] == 1.0
            assert info["noise_multiplier"] > 0 and info["steps"] >= 1
            assert 0 < info["epsilon"] <= 3.0 + 1e-6
            assert info["epsilon"] == pytest.approx(3.0, rel=0.05)
    assert math.isfinite(res.test["auc"])
    assert res.as_dict()["rounds"][0]["privacy"]


def test_plain_run_never_calls_train_private(tiny: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_private(*args: object, **kw: object) -> None:
        raise AssertionError("train_private called without --dp-epsilon")

    monkeypatch.setattr(_sim, "train_private", no_private)
    res = _sim.run_method("fedavg", _config(dp_epsilon=None, rounds=1), tiny)
    assert res.rounds[0].privacy == {}


def test_local_method_spends_the_whole_budget_in_one_training(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(_sim.train_private)
    monkeypatch.setattr(_sim, "train_private", spy)
    monkeypatch.setattr(_sim, "train_local", _no_plain)
    _sim.run_method("local", _config(), tiny)
    assert [s.target_epsilon for s, _, _ in spy.calls] == [6.0, 6.0]


def test_a_sign_flipper_flips_its_private_update(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(_sim.train_private)
    monkeypatch.setattr(_sim, "train_private", spy)
    sent: list[list[Mapping[str, torch.Tensor]]] = []
    real_aggregate = _sim.aggregate

    def aggregate(
        rule: Any, deltas: Sequence[Mapping[str, torch.Tensor]], w: Any, **kw: Any
    ) -> Any:
        sent.append(list(deltas))
        return real_aggregate(rule, deltas, w, **kw)

    monkeypatch.setattr(_sim, "aggregate", aggregate)
    faults = (SiteFault(), SiteFault(kind="sign_flip", seed=7))
    _sim.run_method("fedavg", _config(rounds=1, faults=faults), tiny)
    (honest_res, flipper_res) = [r for _, _, r in spy.calls]
    (honest_sent, flipper_sent) = sent[0]
    for k, v in flipper_res.local.delta.items():
        assert torch.equal(flipper_sent[k], -v)
        assert torch.equal(honest_sent[k], honest_res.local.delta[k])


def test_dp_epsilon_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        _config(dp_epsilon=0.0)
    with pytest.raises(ConfigError):
        _config(dp_epsilon=math.inf)


def _figures(v_share: list[float], f_share: list[float]) -> dict[str, Any]:
    return {
        "seeds": list(range(len(v_share))),
        "faulty_share": {
            "valuation": v_share,
            "fedavg": f_share,
            "valuation_mean": float(np.mean(v_share)),
            "fedavg_mean": float(np.mean(f_share)),
            "seeds_lower": sum(v < f for v, f in zip(v_share, f_share, strict=True)),
        },
    }


def test_dp_runs_are_checked_against_issue_16s_bar_not_issue_12s() -> None:
    label = accuracy._run_label({"alpha": 1.0, "combiner": "history", "dp_epsilon": 8.0})
    assert label == "1 dp8"
    assert accuracy._run_label({"alpha": 1.0, "combiner": "history"}) == "1"
    below = accuracy._all_bars([(label, "b", _figures([0.1, 0.2], [0.4, 0.4]))])
    assert len(below) == 1 and "issue 16" in below[0][0] and below[0][1]
    above = accuracy._all_bars([(label, "b", _figures([0.5, 0.45], [0.4, 0.4]))])
    assert len(above) == 1 and not above[0][1]


def test_composed_accounting_trains_each_site_at_the_target_that_composes_to_the_total(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtrail.ml.privacy import epsilon_composed

    spy = _Spy(_sim.train_private)
    monkeypatch.setattr(_sim, "train_private", spy)
    config = _config(dp_accounting="composed")
    _sim.run_method("fedavg", config, tiny)
    assert len(spy.calls) == 4  # site 0, site 1 in round 1, then in round 2
    by_site: dict[int, list[Any]] = {}
    for i, (settings, _, result) in enumerate(spy.calls):
        # far above the summed split (6 over 2 rounds = 3 a round): composition is tighter
        assert settings.target_epsilon is not None and settings.target_epsilon > 3.0
        by_site.setdefault(i % 2, []).append(result.params)
    for params in by_site.values():  # each site's rounds compose (RDP) to the run's 6
        assert epsilon_composed(params) == pytest.approx(6.0, rel=0.02)
    assert config.describe()["dp_accounting"] == "composed"
    label = accuracy._run_label(
        {"alpha": 1.0, "combiner": "history", "dp_epsilon": 8.0, "dp_accounting": "composed"}
    )
    assert label == "1 dp8c" and accuracy._dp_of(label) == 8.0


def test_dp_accounting_must_be_known() -> None:
    with pytest.raises(ConfigError, match="dp_accounting"):
        _config(dp_accounting="rdp")  # type: ignore[arg-type]


def test_a_run_under_another_valuation_metric_is_labelled_and_still_judged_as_dp() -> None:
    """``--metric auc`` (the terms' valuation.metric) names itself in the run's label, which
    issue 16's bar still reads as a DP run at its epsilon; the default adds nothing."""
    settings = {"alpha": 1.0, "combiner": "history", "dp_epsilon": 8.0, "dp_accounting": "composed"}
    label = accuracy._run_label({**settings, "metric": "auc"})
    assert label == "1 auc dp8c" and accuracy._dp_of(label) == 8.0
    assert accuracy._run_label({**settings, "metric": "balanced_loss"}) == "1 dp8c"
    above = accuracy._all_bars([(label, "b", _figures([0.5, 0.45], [0.4, 0.4]))])
    assert [passed for _, passed, _ in above] == [False]
