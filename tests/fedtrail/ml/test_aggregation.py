"""Aggregation rules: known inputs, robustness to poisoning, validation and bit-reproducibility."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrail.errors import ConfigError, FedtrailError
from fedtrail.ml.aggregation import (
    AggregationError,
    AggregationRule,
    Delta,
    aggregate,
    apply_delta,
    coordinate_median,
    deterministic_sum,
    multi_krum,
    norm_clipped_mean,
    sample_weighted_mean,
    stack,
    trimmed_mean,
    unstacked,
    weighted_mean,
)
from fedtrail.protocol.weights import WEIGHT_SCALE, onchain_weights
from fedtrail.simulation.faults import sign_flip

ROOT = Path(__file__).resolve().parents[3]
E = WEIGHT_SCALE


def d(w: list[float], b: float) -> Delta:
    return {"w": torch.tensor(w, dtype=torch.float32), "b": torch.tensor(b, dtype=torch.float32)}


def pts(*xs: float) -> list[Delta]:
    """One-coordinate deltas."""
    return [{"x": torch.tensor([x], dtype=torch.float32)} for x in xs]


def val(delta: Mapping[str, torch.Tensor], key: str = "x") -> list[float]:
    return [float(v) for v in delta[key].reshape(-1)]


def equal_weights(n: int) -> list[int]:
    return onchain_weights([1] * n, [1] * n)


# ---------------------------------------------------------------- known inputs


def test_weighted_mean_known_values() -> None:
    out = weighted_mean([d([1, 2], 4), d([3, 6], 0)], [E // 4, 3 * E // 4])
    assert list(out) == ["w", "b"]
    assert all(t.dtype == torch.float32 for t in out.values())
    assert val(out, "w") == [2.5, 5.0]
    assert val(out, "b") == [1.0]


def test_weighted_mean_skips_zero_weights_without_reading_them() -> None:
    bad_layout = {"other": torch.zeros(3)}
    out = weighted_mean([None, d([1, 2], 4), bad_layout, d([3, 6], 0)], [0, E // 2, 0, E // 2])
    assert val(out, "w") == [2.0, 4.0]
    with pytest.raises(AggregationError, match="no delta"):
        weighted_mean([None, d([1, 2], 4)], [E // 2, E // 2])


def test_sample_weighted_mean() -> None:
    out = sample_weighted_mean([d([1, 2], 4), d([3, 6], 0), d([9, 9], 9)], [1, 3, 0])
    assert val(out, "w") == [2.5, 5.0]
    with pytest.raises(AggregationError):
        sample_weighted_mean([d([1, 2], 4)], [0])


def test_coordinate_median_odd_and_even() -> None:
    assert val(coordinate_median(pts(5, -1, 3))) == [3.0]
    assert val(coordinate_median(pts(5, -1, 3, 100))) == [4.0]
    two_d = coordinate_median([d([1, 9], 0), d([2, 8], 1), d([3, 7], 5)])
    assert val(two_d, "w") == [2.0, 8.0] and val(two_d, "b") == [1.0]


def test_trimmed_mean_known_values() -> None:
    # n = 5, ratio 0.2: drop 1 largest and 1 smallest per coordinate -> mean(2, 3, 4)
    assert val(trimmed_mean(pts(1, 100, 3, 2, 4), 0.2)) == [3.0]
    # ratio 0.39 still drops floor(0.39 * 5) = 1 each side; ratio 0 is the plain mean
    assert val(trimmed_mean(pts(1, 100, 3, 2, 4), 0.39)) == [3.0]
    assert val(trimmed_mean(pts(1, 100, 3, 2, 4), 0.0)) == [22.0]
    for bad in (0.5, -0.1, math.nan, True):
        with pytest.raises(ConfigError):
            trimmed_mean(pts(1, 2, 3), bad)


def test_multi_krum_known_values() -> None:
    # n = 5, f = 1: score = squared distances to the n - f - 2 = 2 nearest others
    # 0: 1 + 4 = 5; 1: 1 + 1 = 2; 2: 1 + 1 = 2; 3: 1 + 4 = 5; 100: 97^2 + 98^2
    out, selected = multi_krum(pts(0, 1, 2, 3, 100), f=1)
    assert selected == [0, 1, 2, 3]  # m = n - f = 4
    assert val(out) == [1.5]
    out, selected = multi_krum(pts(0, 1, 2, 3, 100), f=1, m=1)
    assert selected == [1]  # tie between 1 and 2 goes to the lower index
    assert val(out) == [1.0]
    out, selected = multi_krum(pts(100, 0, 1, 2, 3), f=1, m=2)
    assert selected == [2, 3] and val(out) == [1.5]


def test_multi_krum_lowers_f_to_what_the_count_allows() -> None:
    """Every count from 1 gives a global model (before session 54: AggregationError for n <
    2f + 3 or m > n, and a round the valuation paid that few could never be finalized):
    f_eff = min(f, (n - 3) // 2), m_eff = min(m, n) or n - f_eff; below 3 every update kept."""
    # n = 5, f = 2 runs as f = 1 (2 nearest others): the outlier dropped, as above
    out, selected = multi_krum(pts(0, 1, 2, 3, 100), f=2)
    assert selected == [0, 1, 2, 3] and val(out) == [1.5]
    # n = 4, f = 1 runs as f = 0: scores over the 2 nearest others, 0: 1 + 4 = 5, 1: 1 + 1 = 2,
    # 2: 4 + 1 = 5, 100: 98^2 + 99^2; m = n - 0 = 4 keeps all; m = 2 keeps 1 and (tie) 0
    out, selected = multi_krum(pts(0, 1, 2, 100), f=1)
    assert selected == [0, 1, 2, 3] and val(out) == [25.75]
    out, selected = multi_krum(pts(0, 1, 2, 100), f=1, m=2)
    assert selected == [0, 1] and val(out) == [0.5]
    # n = 3 (3 of 5 paid under f = 1): 1 nearest other; m = 2 drops the outlier
    out, selected = multi_krum(pts(0, 1, 100), f=1, m=2)
    assert selected == [0, 1] and val(out) == [0.5]
    assert multi_krum(pts(0, 1, 100), f=1)[1] == [0, 1, 2]
    # m above n: every update
    out, selected = multi_krum(pts(0, 1, 2, 3, 4), f=1, m=6)
    assert selected == [0, 1, 2, 3, 4] and val(out) == [2.0]
    # below 3 no update has a neighbour to be scored by: all kept, whatever m (a tie broken by
    # index would make the lower address the whole global step)
    out, selected = multi_krum(pts(100, 0), f=1, m=1)
    assert selected == [0, 1] and val(out) == [50.0]
    out, selected = multi_krum(pts(7), f=3, m=4)
    assert selected == [0] and val(out) == [7.0]
    with pytest.raises(AggregationError, match="no updates"):
        multi_krum([], f=0)
    with pytest.raises(ConfigError):
        multi_krum(pts(0, 1), f=0, m=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(
    "rule",
    [
        AggregationRule(name="weighted"),
        AggregationRule(name="median"),
        AggregationRule(name="trimmed_mean", trim_ratio=0.49),
        AggregationRule(name="krum", krum_f=3),
        AggregationRule(name="krum", krum_f=1, krum_m=7),
        AggregationRule(name="norm_clip"),
        AggregationRule(name="norm_clip", max_norm=0.5),
    ],
    ids=lambda r: f"{r.name}-{r.trim_ratio}-{r.krum_f}-{r.krum_m}-{r.max_norm}",
)
def test_every_rule_gives_a_model_for_every_paid_count(rule: AggregationRule, n: int) -> None:
    """The valuation can leave any count of paid updates from 1 (and zero-weight ones beside
    them): each rule's global step is defined and finite, lies within the paid updates' range
    (each rule is an average of paid updates, clipped ones shrunk towards 0, or a middle value)
    and never reads an unpaid update (None here)."""
    paid = [{"x": torch.tensor([float(v), -float(v)])} for v in (3, 1, 4, 1, 5)[:n]]
    deltas: list[Delta | None] = [None, *paid, None]
    weights = [0, *[E // n] * (n - 1), E - (n - 1) * (E // n), 0]
    out = aggregate(rule, deltas, weights)["x"]
    assert torch.isfinite(out).all()
    lo = min(0.0, *(float(d["x"][0]) for d in paid))
    hi = max(float(d["x"][0]) for d in paid)
    assert lo <= float(out[0]) <= hi and float(out[1]) == -float(out[0]), (rule, n, out)


def test_norm_clipped_mean_known_values() -> None:
    deltas = [{"x": torch.tensor(v)} for v in ([3.0, 4.0], [0.0, 1.0], [6.0, 8.0])]
    weights = [E // 2, E // 4, E // 4]
    # norms 5, 1, 10; the median 5 clips the third to [3, 4]
    out = norm_clipped_mean(deltas, weights)
    assert val(out) == [0.5 * 3 + 0.25 * 0 + 0.25 * 3, 0.5 * 4 + 0.25 * 1 + 0.25 * 4]
    out = norm_clipped_mean(deltas, weights, max_norm=1.0)
    assert val(out) == pytest.approx([0.5 * 0.6 + 0.25 * 0.6, 0.5 * 0.8 + 0.25 + 0.25 * 0.8])
    # a zero-weight update takes no part, not even in the median norm
    out = norm_clipped_mean([*deltas, {"x": torch.tensor([0.0, 0.01])}], [*weights, 0])
    assert val(out) == [2.25, 3.25]


def test_apply_delta_adds_in_float64_in_global_order() -> None:
    g = {"b": torch.tensor([1.0]), "w": torch.tensor([1.0, 2.0])}
    out = apply_delta(g, {"w": torch.tensor([0.5, -1.0]), "b": torch.tensor([2.0])})
    assert list(out) == ["b", "w"]
    assert val(out, "w") == [1.5, 1.0] and val(out, "b") == [3.0]
    assert out["w"].dtype == torch.float32
    with pytest.raises(AggregationError, match="layout"):
        apply_delta(g, {"w": torch.zeros(3), "b": torch.zeros(1)})


def test_deterministic_sum_is_exact_for_representable_sums() -> None:
    v = np.array([1e16, 1.0, -1e16, 1.0] * 1000, dtype=np.float64)
    assert deterministic_sum(v) == 2000.0
    assert deterministic_sum(np.zeros(0)) == 0.0


# ---------------------------------------------------------------- input validation


def test_errors_are_clear() -> None:
    assert issubclass(AggregationError, FedtrailError)
    with pytest.raises(AggregationError, match="no updates"):
        coordinate_median([])
    with pytest.raises(AggregationError, match="missing"):
        coordinate_median([d([1, 2], 0), {"w": torch.zeros(2)}])
    with pytest.raises(AggregationError, match="unexpected"):
        coordinate_median([d([1, 2], 0), {**d([1, 2], 0), "extra": torch.zeros(1)}])
    with pytest.raises(AggregationError, match=r"w is \(3,\) not \(2,\)"):
        coordinate_median([d([1, 2], 0), d([1, 2, 3], 0)])
    with pytest.raises(AggregationError, match="NaN"):
        coordinate_median([d([1, math.nan], 0)])
    with pytest.raises(AggregationError, match="floating point"):
        coordinate_median([{"x": torch.tensor([1, 2])}])
    with pytest.raises(AggregationError, match="holds no tensors"):
        coordinate_median([{}])
    good = [d([1, 2], 0), d([3, 4], 0)]
    with pytest.raises(AggregationError, match="2 updates but 1 weights"):
        weighted_mean(good, [E])
    with pytest.raises(AggregationError, match="not on-chain weights"):
        weighted_mean(good, [E // 2, E // 2 - 1])
    with pytest.raises(AggregationError, match="not on-chain weights"):
        weighted_mean(good, [0, 0])
    with pytest.raises(AggregationError, match="negative"):
        weighted_mean(good, [E + 1, -1])
    with pytest.raises(AggregationError, match="integers"):
        weighted_mean(good, [0.5, 0.5])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "mean"},
        {"trim_ratio": 0.5},
        {"trim_ratio": -0.1},
        {"krum_f": -1},
        {"krum_f": True},
        {"krum_f": 1.0},
        {"krum_m": 0},
        {"max_norm": 0.0},
        {"max_norm": math.inf},
        {"max_norm": math.nan},
    ],
)
def test_rule_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AggregationRule(**kwargs)  # type: ignore[arg-type]


def test_aggregate_dispatches_and_excludes_zero_weights() -> None:
    xs = pts(0, 1, 2, 3, 100, 4)
    deltas: list[Delta | None] = [*xs[:5], None, xs[5]]
    weights = [E // 6, E // 6, E // 6, E // 6, E // 6, 0, E - 5 * (E // 6)]
    used = [xs[i] for i in (0, 1, 2, 3, 4, 5)]
    cases = {
        AggregationRule(): weighted_mean(deltas, weights),
        AggregationRule(name="median"): coordinate_median(used),
        AggregationRule(name="trimmed_mean", trim_ratio=0.2): trimmed_mean(used, 0.2),
        AggregationRule(name="krum", krum_f=1, krum_m=2): multi_krum(used, 1, 2)[0],
        AggregationRule(name="norm_clip", max_norm=2.0): norm_clipped_mean(deltas, weights, 2.0),
    }
    for rule, expected in cases.items():
        out = aggregate(rule, deltas, weights)
        assert val(out) == val(expected), rule
    assert val(aggregate(AggregationRule(name="median"), deltas, weights)) == [2.5]
    assert val(aggregate(AggregationRule(name="krum", krum_m=2), deltas, weights)) == [1.5]
    # six paid allow f = 1 only: krum_f 2 runs as 1 (before session 54: AggregationError)
    two = aggregate(AggregationRule(name="krum", krum_f=2), deltas, weights)
    assert val(two) == val(multi_krum(used, 1)[0]) == [2.0]
    with pytest.raises(ConfigError):
        aggregate("median", deltas, weights)  # type: ignore[arg-type]


# ---------------------------------------------------------------- running statistics


def _bn_updates() -> tuple[list[Delta | None], list[int]]:
    """Four updates of a weight and a running mean; the last one shifts its statistic by 1e3,
    the third has weight 0 (excluded) and a statistic that would move the median."""
    rows = [(0.1, 0.5), (0.2, 0.7), (9.0, -50.0), (0.3, 1000.6)]
    deltas: list[Delta | None] = [
        OrderedDict(
            [
                ("w", torch.tensor([w, -w], dtype=torch.float32)),
                ("bn.running_mean", torch.tensor([m, m / 2], dtype=torch.float32)),
            ]
        )
        for w, m in rows
    ]
    return deltas, [E // 4, E // 4, 0, E - 2 * (E // 4)]


def test_statistics_are_the_median_of_the_weighted_updates_whatever_the_rule() -> None:
    deltas, weights = _bn_updates()
    used = [d for d, w in zip(deltas, weights, strict=True) if w > 0]
    stats = ("bn.running_mean",)
    for rule in (AggregationRule(), AggregationRule(name="norm_clip", max_norm=5.0)):
        out = aggregate(rule, deltas, weights, statistics=stats)
        plain = aggregate(dataclasses.replace(rule, statistics="weighted"), deltas, weights)
        # the weights' tensor is the rule's; the statistic the median of the three kept rows,
        # recomputed here with numpy (odd count: the middle value)
        assert torch.equal(out["w"], plain["w"])
        expected = np.median(
            np.stack([d["bn.running_mean"].numpy().astype(np.float64) for d in used]), axis=0
        ).astype(np.float32)
        assert out["bn.running_mean"].numpy().tolist() == expected.tolist()
        assert expected.tolist() == pytest.approx([0.7, 0.35])
        assert list(out) == ["w", "bn.running_mean"]
    # averaged, the shifted site drags the statistic to ~500
    assert (
        float(
            aggregate(AggregationRule(statistics="weighted"), deltas, weights)["bn.running_mean"][0]
        )
        > 400
    )
    median_rule = AggregationRule(name="median", statistics="weighted")
    assert val(aggregate(median_rule, deltas, weights, statistics=stats), "bn.running_mean") == [
        pytest.approx(0.7),
        pytest.approx(0.35),
    ]
    with pytest.raises(AggregationError, match="not tensors"):
        aggregate(AggregationRule(), deltas, weights, statistics=("bn.running_var",))


def test_anchored_statistics_keep_one_paid_poisoner_of_two_inside_the_honest_range() -> None:
    deltas, _ = _bn_updates()
    # only the honest first and the shifted last update paid (each half of the weight)
    weights = [E // 2, 0, 0, E - E // 2]
    stats = ("bn.running_mean",)
    for name in ("weighted", "median", "norm_clip", "trimmed_mean"):
        anchored = aggregate(AggregationRule(name=name), deltas, weights, statistics=stats)
        # the median of {0.5, 1000.6, 0 (the start model)}: the honest value, not their mean
        assert val(anchored, "bn.running_mean") == [pytest.approx(0.5), pytest.approx(0.25)]
        plain = aggregate(
            AggregationRule(name=name, statistics="median"), deltas, weights, statistics=stats
        )
        # the median of the two paid updates alone is their mean: half the poisoner's shift
        assert float(plain["bn.running_mean"][0]) == pytest.approx(500.55)
    # the only paid update: its statistics meet two start-model votes and move nothing
    alone = aggregate(AggregationRule(), deltas, [0, 0, 0, E], statistics=stats)
    assert val(alone, "bn.running_mean") == [0.0, 0.0]
    assert val(alone, "w") == [pytest.approx(0.3), pytest.approx(-0.3)]
    # three or more paid: the start model has no vote, exactly the plain median
    deltas3, weights3 = _bn_updates()
    for name in ("weighted", "median"):
        a = aggregate(AggregationRule(name=name), deltas3, weights3, statistics=stats)
        m = aggregate(
            AggregationRule(name=name, statistics="median"), deltas3, weights3, statistics=stats
        )
        assert torch.equal(a["bn.running_mean"], m["bn.running_mean"])


def test_terms_carry_the_statistics_setting_only_for_a_model_with_statistics() -> None:
    rule = AggregationRule(name="krum", krum_f=2)
    plain = rule.to_terms(statistics=False)
    assert "statistics" not in plain and plain["krum_f"] == 2
    assert rule.to_terms(statistics=True)["statistics"] == "anchored_median"
    # read back, each means what the aggregator did for its model
    assert AggregationRule.from_terms(rule.to_terms(statistics=True)) == rule
    assert AggregationRule.from_terms(plain).statistics == "weighted"


def test_terms_without_a_statistics_setting_replay_as_weighted() -> None:
    assert AggregationRule().statistics == "anchored_median"
    assert AggregationRule.from_terms({"name": "weighted"}).statistics == "weighted"
    assert AggregationRule.from_terms({"name": "krum", "krum_f": 2}).krum_f == 2
    current = dataclasses.asdict(AggregationRule(name="trimmed_mean"))
    assert AggregationRule.from_terms(current) == AggregationRule(name="trimmed_mean")
    with pytest.raises(ConfigError, match="statistics rule"):
        AggregationRule(statistics="mean")
    with pytest.raises(ConfigError, match="mu"):
        AggregationRule.from_terms({"name": "weighted", "mu": 0.1})


# ---------------------------------------------------------------- poisoning


def _distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((a[k].double() - b[k].double()).square().sum()) for k in a))


def _norm(a: Mapping[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(a[k].double().square().sum()) for k in a))


def _honest_and_poisoned(factor: float) -> tuple[list[Delta], list[Delta]]:
    gen = torch.Generator().manual_seed(7)
    mu = {"w": torch.randn(40, 25, generator=gen), "b": torch.randn(25, generator=gen)}
    honest = [
        {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in mu.items()} for _ in range(10)
    ]
    sent = [sign_flip(h, factor) if i in (2, 5, 8) else h for i, h in enumerate(honest)]
    return honest, sent


@pytest.mark.parametrize("factor", [1.0, 5.0])
def test_robust_rules_resist_three_of_ten_sign_flipped(factor: float) -> None:
    honest, sent = _honest_and_poisoned(factor)
    weights = equal_weights(10)
    honest_idx = [i for i in range(10) if i not in (2, 5, 8)]
    target = sample_weighted_mean([honest[i] for i in honest_idx], [1] * 7)
    scale = _norm(target)
    dist = {
        rule.name: _distance(aggregate(rule, sent, weights), target) / scale
        for rule in (
            AggregationRule(),
            AggregationRule(name="median"),
            AggregationRule(name="trimmed_mean", trim_ratio=0.3),
            AggregationRule(name="krum", krum_f=3),
            AggregationRule(name="norm_clip"),
        )
    }
    # plain mean: (7 h - 3 factor h) / 10 -> 0.6 (factor 1) or 1.8 (factor 5) of |h| away
    assert dist["weighted"] > 0.55
    # per coordinate the three flipped values sit on one side, so median and trimmed mean are
    # shifted by about half the honest spread (0.3 per coordinate here): measured 0.17-0.18
    assert dist["median"] < 0.25
    assert dist["trimmed_mean"] < 0.25
    assert dist["krum"] < 1e-6  # selects exactly the seven honest updates
    _, selected = multi_krum(sent, f=3)
    assert selected == honest_idx
    # clipping bounds magnitudes only: it helps against scaled flips (measured 0.60 against
    # the mean's 1.79), not against plain ones (0.60 against 0.59)
    if factor > 1:
        assert dist["norm_clip"] < 0.7 < dist["weighted"]


# ---------------------------------------------------------------- determinism


def _fixture_deltas() -> list[Delta]:
    gen = torch.Generator().manual_seed(123)
    shapes = {"conv.weight": (8, 1, 3, 3), "conv.bias": (8,), "fc.weight": (10, 392)}
    return [
        {k: torch.randn(s, generator=gen) * (1 + i) for k, s in shapes.items()} for i in range(7)
    ]


def _digest(delta: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in delta.items():
        h.update(k.encode() + b"\0" + v.contiguous().numpy().tobytes())
    return h.hexdigest()


def digests() -> dict[str, str]:
    """sha256 of every rule's output on fixed inputs (also run in a subprocess)."""
    deltas = _fixture_deltas()
    weights = onchain_weights([10, 30, 20, 50, 5, 40, 25], [1, 900_000, 3, 1_000_000, 0, 7, 11])
    out: dict[str, str] = {}
    for rule in (
        AggregationRule(),
        AggregationRule(name="median"),
        AggregationRule(name="trimmed_mean"),
        AggregationRule(name="krum"),
        AggregationRule(name="norm_clip"),
    ):
        out[rule.name] = _digest(aggregate(rule, deltas, weights))
    out["apply"] = _digest(apply_delta(deltas[0], deltas[1]))
    return out


def test_same_inputs_same_bytes() -> None:
    first, second = digests(), digests()
    assert first == second


def test_same_bytes_in_another_process_with_other_threads() -> None:
    here = digests()
    code = (
        "import json, torch; torch.set_num_threads(2); "
        "from tests.fedtrail.ml.test_aggregation import digests; print(json.dumps(digests()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here


def test_weighted_mean_matches_a_float64_reference() -> None:
    deltas = _fixture_deltas()
    weights = onchain_weights([10, 30, 20, 50, 5, 40, 25], [1, 900_000, 3, 1_000_000, 0, 7, 11])
    out = weighted_mean(deltas, weights)
    for k in out:
        ref = sum((w / E) * deltas[i][k].double() for i, w in enumerate(weights) if w)
        assert torch.equal(out[k], torch.as_tensor(ref).float())


values = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 7).flatmap(
        lambda n: st.lists(st.lists(values, min_size=3, max_size=3), min_size=n, max_size=n)
    ),
    perm_seed=st.integers(0, 2**32 - 1),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.45]),
)
def test_order_free_rules_ignore_order_and_stay_in_range(
    rows: list[list[float]], perm_seed: int, ratio: float
) -> None:
    deltas = [{"x": torch.tensor(r, dtype=torch.float32)} for r in rows]
    perm = np.random.default_rng(perm_seed).permutation(len(deltas)).tolist()
    shuffled = [deltas[i] for i in perm]
    arr = np.array(rows, dtype=np.float32)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    for fn in (coordinate_median, lambda ds: trimmed_mean(ds, ratio)):
        a, b = fn(deltas), fn(shuffled)
        assert _digest(a) == _digest(b)
        x = a["x"].numpy()
        assert (lo <= x).all() and (x <= hi).all()


# ---------------------------------------------------------------- pinned output bytes
# The audit replays aggregation and compares bytes, so a faster implementation must give the
# very same bits. These sha256 values were recorded from the implementation before the
# issue-18 speed-up (one float64 row per update, per-update finiteness check) and must never
# change.


def _smallcnn_deltas(n: int, seed: int) -> list[Delta]:
    from fedtrail.ml.models import ModelSpec

    gen = torch.Generator().manual_seed(seed)
    layout = ModelSpec().tensor_layout()
    return [
        {
            k: torch.randn(shape, generator=gen) * 10.0 ** (i % 5 - 2)
            for k, (shape, _) in layout.items()
        }
        for i in range(n)
    ]


def _pinned_weights(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    samples = [int(x) for x in rng.integers(1, 1000, n)]
    scores = [int(x) for x in rng.integers(0, 1_000_000, n)]
    scores[1] = 0  # one excluded update
    return onchain_weights(samples, scores)


def _mixed_deltas() -> list[Delta]:
    """Other float dtypes, non-contiguous and strided tensors, key orders that differ."""
    gen = torch.Generator().manual_seed(7)
    out: list[Delta] = []
    for i, dtype in enumerate((torch.float32, torch.float16, torch.bfloat16, torch.float64)):
        w = torch.randn(12, 9, generator=gen).to(dtype).t()  # non-contiguous (9, 12)
        b = torch.randn(30, generator=gen).to(dtype)[::3]  # strided (10,)
        out.append({"w": w, "b": b} if i % 2 == 0 else {"b": b, "w": w})
    return out


PINNED = {
    "smallcnn10.weighted": "6a5a05d4eed5787705879db41fae75d346fef5dc4f77c450cbe24ce8f04786f6",
    "smallcnn10.sample": "4c5e96fe8087e8e06757b68ec54dfb0c250d907806569ac7adec4568095c2eda",
    "smallcnn10.median": "9d0359deb32030ff22f3cf3c94ae299ec1164401244cbe19a283d5b7abefc0a0",
    "smallcnn10.trimmed_mean": "882125c15e2a39e17e6fc2e169c2e5cba7586e353797ef1ced715065a0ce3520",
    "smallcnn10.krum": "d097d6312a0ade2a1880c19df0886ac9c4cd2a7eca42dd227350212db03a6842",
    "smallcnn10.norm_clip": "a70492b8d1ded747f464c40fb133cb6503f7db74e5c6999ec6cda25c4fd99a25",
    "smallcnn100.weighted": "964116e0a1c9bf8fb5071265de23ed629370b44586bc330eb51a5ef2b7ea4bae",
    "smallcnn100.sample": "065cc56d3177a7175b05eefb5a98e0a8a7ba9aa537ccc6d92e40fd2768320fa3",
    "mixed.weighted": "5643177c7e39928f2794b876b7716e39da0b6d9d8c8835909476d5323e93128f",
    "mixed.median": "6d3b16db6fcd129f68a902af4a383cf80a4aff6b508ed12d51f1dad30bf3e3bb",
    "mixed.apply": "f41053062127b27ebeabf62b2f1b7ec4b9291e062aac790dbfb106d1c5f72dc4",
    "fixture.weighted": "0158554bf14a334bf7e993f69dd5fa788b3da2e7278223eb1d6afc3663c7763a",
    "fixture.median": "cb6a8ba717faf42606ea46032c044cd1af716141622ae4a0b3a736bdbdedd160",
    "fixture.trimmed_mean": "1f6459070badee47cef11bbcd3834662f421a5a6f6c205915a5e3b89c8ff086f",
    "fixture.krum": "55c3549cd32b48b47542b42313375b2cdf76adb095ce4ebb8a89e3d4ea24e65b",
    "fixture.norm_clip": "937fd4d1ae50a9e9d12f16cb21d13b85ab19cb071395272a1361bccf1fa81f0d",
    "fixture.apply": "234f58a42497556029de6473c06c7ba6b446fdd5debf316c7d1cc2aa3047df0d",
}


def pinned_digests() -> dict[str, str]:
    out: dict[str, str] = {}
    for n in (10, 100):
        deltas = _smallcnn_deltas(n, seed=n)
        weights = _pinned_weights(n, seed=n)
        none_for_zero = [dl if w else None for dl, w in zip(deltas, weights, strict=True)]
        out[f"smallcnn{n}.weighted"] = _digest(weighted_mean(none_for_zero, weights))
        out[f"smallcnn{n}.sample"] = _digest(
            sample_weighted_mean(deltas, [3 + i for i in range(n)])
        )
        if n == 10:
            for rule in (
                AggregationRule(name="median"),
                AggregationRule(name="trimmed_mean"),
                AggregationRule(name="krum"),
                AggregationRule(name="norm_clip"),
            ):
                out[f"smallcnn{n}.{rule.name}"] = _digest(aggregate(rule, deltas, weights))
    mixed = _mixed_deltas()
    mixed_weights = onchain_weights([5, 7, 11, 13], [3, 1, 4, 1])
    out["mixed.weighted"] = _digest(weighted_mean(mixed, mixed_weights))
    out["mixed.median"] = _digest(coordinate_median(mixed))
    out["mixed.apply"] = _digest(apply_delta(mixed[0], mixed[1]))
    out.update({f"fixture.{k}": v for k, v in digests().items()})
    return out


def test_outputs_are_bit_identical_to_the_pinned_bytes() -> None:
    assert pinned_digests() == PINNED


def test_the_fast_paths_report_the_same_update_as_a_check_in_turn() -> None:
    """Finiteness is checked on the sum; the error still names the first bad update."""
    nan, inf = math.nan, math.inf
    good = d([1, 2], 3)
    weights = equal_weights(4)
    with pytest.raises(AggregationError, match="update 2 contains NaN"):
        weighted_mean([good, good, d([1, nan], 0), d([inf, 1], 0)], weights)
    with pytest.raises(AggregationError, match="update 1 contains NaN"):
        weighted_mean([good, d([-inf, 1], 0), d([inf, 1], 0), good], weights)
    # a bad update earlier than a layout error is reported first, as before
    with pytest.raises(AggregationError, match="update 1 contains NaN"):
        weighted_mean([good, d([nan, 1], 0), {"w": torch.zeros(2)}, good], weights)
    with pytest.raises(AggregationError, match=r"update 1: tensor 'b' is torch\.int64"):
        weighted_mean([good, {"w": torch.zeros(2), "b": torch.tensor(1)}], equal_weights(2))
    # a zero sample count does not exempt an update from the check
    with pytest.raises(AggregationError, match="update 1 contains NaN"):
        sample_weighted_mean([good, d([nan, 1], 0), good], [1, 0, 1])
    # finite float64 inputs beyond float32's range: no error, the one cast gives inf (as before)
    big = {"x": torch.tensor([1e308], dtype=torch.float64)}
    with np.errstate(over="ignore"):
        out = weighted_mean([big, big], [E // 2, E // 2])
    assert val(out) == [math.inf]


def test_parameters_and_other_mappings_take_the_full_checks() -> None:
    base = d([1, 2], 3)
    as_param = {k: torch.nn.Parameter(v.clone()) for k, v in base.items()}
    other = dict(reversed(list(d([3, 6], 1).items())))
    od = OrderedDict(d([5, 0], 2))
    out = weighted_mean([as_param, other, od], onchain_weights([1, 1, 2], [1, 1, 1]))
    assert val(out, "w") == [3.5, 2.0]
    assert val(out, "b") == [2.0]


def _reference(deltas: list[Delta], weights: list[int]) -> dict[str, torch.Tensor]:
    """The rule's definition, term by term in float64 (acc = 0; acc += w_i / 1e18 * x_i)."""
    out = {}
    for k in deltas[0]:
        acc = torch.zeros(deltas[0][k].shape, dtype=torch.float64)
        for i, w in enumerate(weights):
            if w:
                acc = acc + (w / E) * deltas[i][k].double()
        out[k] = acc.float()
    return out


def test_reused_work_rows_leak_nothing_between_calls_layouts_or_threads() -> None:
    """The weighted rule keeps its float64 work rows per thread between calls (fresh ones cost
    page faults); a result must not alias them, a call with another layout or in another
    thread must not see another's partial sums, and every result is the rule's definition."""
    import concurrent.futures

    small, big = pts(1.0, -2.0, 4.0), _smallcnn_deltas(4, seed=3)
    cases = [(small, equal_weights(3)), (big, _pinned_weights(4, seed=3))]
    expected = [_reference(d_, w) for d_, w in cases]
    first = weighted_mean(*cases[1])
    kept = {k: v.clone() for k, v in first.items()}
    for _ in range(3):  # alternate layouts in this thread
        for (deltas, weights), want in zip(cases, expected, strict=True):
            got = weighted_mean(deltas, weights)
            assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(torch.equal(first[k], kept[k]) for k in kept)  # not overwritten later

    def run(i: int) -> bool:
        deltas, weights = cases[i % 2]
        got = weighted_mean(deltas, weights)
        return all(torch.equal(got[k], expected[i % 2][k]) for k in got)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(64)))


def test_unstacked_rows_are_stacks_rows_bit_for_bit_and_it_refuses_what_stack_refuses() -> None:
    """Each row :class:`Unstacked` widens is the same float64 bits as that delta's row of
    :func:`stack`'s matrix (float16, float32 and float64 tensors, another key order, a
    non-contiguous view, signed zeros and subnormals), its layout is stack's, and a layout or
    finiteness error is stack's error, message included."""
    gen = torch.Generator().manual_seed(11)
    first = {"a": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)}
    first["a"][0, 0] = -0.0
    first["b"][1] = 1e-40  # a float32 subnormal
    deltas = [
        first,
        {"b": torch.randn(5, generator=gen).double(), "a": torch.randn(4, 3, generator=gen).T},
        {k: v.half() for k, v in first.items()},
    ]
    stacked, flat = stack(deltas), unstacked(deltas)
    assert (flat.names, flat.shapes, flat.width) == (stacked.names, stacked.shapes, 17)
    assert len(flat) == 3
    out = np.full(flat.width, np.nan)
    for i in range(3):
        assert flat.row(i, out) is out
        assert out.tobytes() == stacked.matrix[i].tobytes()
    assert flat.unflatten(stacked.matrix[1])["a"].dtype == torch.float32
    bad = [first, {"a": first["a"], "b": torch.full((5,), math.inf)}]
    wrong = [first, {"a": first["a"], "b": torch.zeros(6)}]
    for refused in (bad, wrong):
        with pytest.raises(AggregationError) as want:
            stack(refused)
        with pytest.raises(AggregationError) as got:
            unstacked(refused)
        assert str(got.value) == str(want.value)
