"""The issue-12 (c) experiment (scripts/bench/delta_clip.py): valuation runs aggregate with each
update clipped to c x the round's median norm; FedAvg runs and other code stay unclipped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedtrail.ml.aggregation import AggregationRule, aggregate, norm_clipped_mean
from scripts.bench import _sim, delta_clip

WEIGHTS = [250_000_000_000_000_000] * 4


def _deltas() -> list[dict[str, torch.Tensor]]:
    # norms 1, 2, 3, 10: median 2.5
    return [
        {"w": torch.tensor([1.0, 0.0])},
        {"w": torch.tensor([0.0, 2.0])},
        {"w": torch.tensor([3.0, 0.0])},
        {"w": torch.tensor([6.0, 8.0])},
    ]


def test_factors_clip_only_norms_above_c_times_the_median() -> None:
    limit, factors = delta_clip.clip_factors([1.0, 2.0, 3.0, 10.0], 2.0)
    assert limit == 5.0
    assert factors == [1.0, 1.0, 1.0, 0.5]


def test_a_zero_median_clips_nothing() -> None:
    limit, factors = delta_clip.clip_factors([0.0, 0.0, 4.0], 1.0)
    assert math.isinf(limit)
    assert factors == [1.0, 1.0, 1.0]


def test_install_refuses_a_multiple_below_one() -> None:
    with pytest.raises(ValueError):
        delta_clip.install(0.5)


def test_a_valuation_round_aggregates_through_norm_clip_and_counts_clipped_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("_run_federated", "aggregate", "value_round"):
        monkeypatch.setattr(_sim, name, getattr(_sim, name))
    delta_clip.install(2.0)
    rule = AggregationRule(name="weighted")
    deltas = _deltas()
    # outside a valuation run (FedAvg): the plain weighted mean
    plain = _sim.aggregate(rule, deltas, WEIGHTS)
    assert torch.equal(plain["w"], aggregate(rule, deltas, WEIGHTS)["w"])
    stats = delta_clip.RunStats()
    monkeypatch.setattr(
        delta_clip,
        "_context",
        {"faulty": {"x10"}, "stats": stats, "sent_sites": ["a", "b", "c", "x10"]},
    )
    got = _sim.aggregate(rule, deltas, WEIGHTS)
    want = norm_clipped_mean(deltas, WEIGHTS, 5.0)
    assert torch.equal(got["w"], want["w"])
    assert not torch.equal(got["w"], plain["w"])
    assert (stats.honest_clipped, stats.honest_used) == (0, 3)
    assert (stats.faulty_clipped, stats.faulty_used) == (1, 1)
    # influence: w * factor * norm = 1, 2, 3 and 0.5 * 10 for the faulty site
    assert stats.influence == [pytest.approx(5.0 / 11.0)]


def _doc(faulty_weight: int) -> dict[str, object]:
    honest = 10**18 - faulty_weight
    run = {
        "method": "valuation",
        "seed": 0,
        "site_names": ["a", "x10"],
        "site_faults": ["none", "scale"],
        "test": {"auc": 0.9, "f1_calibrated": 0.8},
        "rounds": [
            {
                "skipped": False,
                "submitted": ["a", "x10"],
                "weights": [honest, faulty_weight],
                "scores": [1_000_000, 1_000_000],
                "norm_ratios": {"a": 1.0, "x10": 4.0},
            }
        ],
    }
    return {"settings": {"alpha": 3.0}, "scenarios": {"c": {"runs": [run]}}}


@pytest.mark.parametrize(("faulty_weight", "rc"), [(10**17, 1), (2 * 10**16, 0)])
def test_the_report_exits_1_when_the_poisoned_share_is_above_the_bar(
    tmp_path: Path, faulty_weight: int, rc: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_doc(faulty_weight)), encoding="utf-8")
    assert delta_clip.report([str(path)]) == rc
    out = capsys.readouterr().out
    assert f"share {faulty_weight / 1e18:.3f}" in out
    # the unclipped aggregate's influence: 4 x the weight against 1 x the rest
    influence = 4 * faulty_weight / (4 * faulty_weight + 10**18 - faulty_weight)
    assert f"influence {influence:.3f}" in out


def test_clip_rounds_1_clips_the_warm_up_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rounds=1`` (accuracy.py --clip-rounds 1): the first valued round's aggregate is
    clipped, the next one is the plain weighted mean."""
    for name in ("_run_federated", "aggregate"):
        monkeypatch.setattr(_sim, name, getattr(_sim, name))
    monkeypatch.setattr(_sim, "value_round", lambda **kwargs: None)
    delta_clip.install(2.0, rounds=1)
    stats = delta_clip.RunStats()
    monkeypatch.setattr(delta_clip, "_context", {"faulty": {"x10"}, "stats": stats, "round": 0})
    candidates = [type("C", (), {"site": s})() for s in ("a", "b", "c", "x10")]
    rule = AggregationRule(name="weighted")
    deltas = _deltas()
    plain = aggregate(rule, deltas, WEIGHTS)["w"]
    _sim.value_round(candidates=candidates)
    assert torch.equal(
        _sim.aggregate(rule, deltas, WEIGHTS)["w"], norm_clipped_mean(deltas, WEIGHTS, 5.0)["w"]
    )
    _sim.value_round(candidates=candidates)
    assert torch.equal(_sim.aggregate(rule, deltas, WEIGHTS)["w"], plain)
    assert (stats.faulty_clipped, stats.faulty_used) == (1, 1)


def test_install_refuses_zero_rounds() -> None:
    with pytest.raises(ValueError):
        delta_clip.install(2.0, rounds=0)
