"""The weighted aggregation against references written outside fedtrail: a plain float64 numpy
weighted mean of the updates (the DESIGN's rule: float64 accumulation in site order, one cast to
float32) and Flower's own ``flwr.server.strategy.aggregate.aggregate`` fed the same updates
with ``n_i * s_i`` as their example counts (the contract's weight is that product over its
sum). Random layouts, 1-12 sites, zero scores among them, counts up to 2^48 - 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtrail.ml.aggregation import weighted_mean
from fedtrail.protocol.weights import onchain_weights

SHAPES = {"conv.weight": (4, 1, 3, 3), "conv.bias": (4,), "fc.weight": (2, 36), "fc.bias": (2,)}


def _round(seed: int) -> tuple[list[dict[str, np.ndarray]], list[int], list[int]]:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 13))
    updates = [
        {
            name: (rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 2)).astype(np.float32)
            for name, shape in SHAPES.items()
        }
        for _ in range(k)
    ]
    ns = [int(x) for x in rng.integers(1, 2**48 - 1 if seed % 2 else 5000, size=k)]
    ss = [int(x) for x in rng.integers(0, 1_000_001, size=k)]
    ss[int(rng.integers(0, k))] = int(rng.integers(1, 1_000_001))  # some weight somewhere
    if k > 2:
        ss[int(rng.integers(0, k))] = 0  # and a zero score
    return updates, ns, ss


def _ours(updates: list[dict[str, np.ndarray]], weights: list[int]) -> dict[str, np.ndarray]:
    deltas = [{k: torch.from_numpy(v.copy()) for k, v in u.items()} for u in updates]
    return {k: t.numpy() for k, t in weighted_mean(deltas, weights).items()}


@pytest.mark.parametrize("seed", range(24))
def test_weighted_mean_is_the_float64_numpy_mean_cast_once(seed: int) -> None:
    updates, ns, ss = _round(seed)
    weights = onchain_weights(ns, ss)
    got = _ours(updates, weights)
    for name in SHAPES:
        acc = np.zeros(SHAPES[name], dtype=np.float64)
        for u, w in zip(updates, weights, strict=True):
            if w:
                acc = acc + (w / 1e18) * u[name].astype(np.float64)
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], acc.astype(np.float32))
        # np.average (another summation order, normalised by the weights' sum): within one
        # float32 step of it
        avg = np.average(
            np.stack([u[name].astype(np.float64) for u in updates]), axis=0, weights=weights
        ).astype(np.float32)
        step = np.spacing(np.maximum(np.abs(avg), np.abs(got[name])))
        assert np.all(np.abs(got[name].astype(np.float64) - avg) <= step)


@pytest.mark.parametrize("seed", range(24))
def test_weighted_mean_agrees_with_flowers_aggregate(seed: int) -> None:
    from flwr.server.strategy.aggregate import aggregate

    updates, ns, ss = _round(seed)
    weights = onchain_weights(ns, ss)
    got = _ours(updates, weights)
    names = list(SHAPES)
    products = [n * s for n, s in zip(ns, ss, strict=True)]
    # Flower on float64 copies: its own arithmetic, no float32 accumulation error
    wide = aggregate(
        [
            ([u[k].astype(np.float64) for k in names], p)
            for u, p in zip(updates, products, strict=True)
        ]
    )
    # and as a Flower user would call it, on the float32 arrays (float32 accumulation)
    narrow = aggregate([([u[k] for k in names], p) for u, p in zip(updates, products, strict=True)])
    for name, ref64, ref32 in zip(names, wide, narrow, strict=True):
        bound = sum(
            abs(w / 1e18) * np.abs(u[name].astype(np.float64))
            for u, w in zip(updates, weights, strict=True)
        )
        step = np.spacing(np.maximum(np.abs(ref64), bound).astype(np.float32))
        assert np.all(np.abs(got[name] - ref64) <= step)
        k = len(updates)
        assert np.all(np.abs(got[name] - ref32.astype(np.float64)) <= (k + 2) * step)


def test_one_site_with_all_the_weight_is_its_update_bit_for_bit() -> None:
    updates, _, _ = _round(3)
    weights = [0] * len(updates)
    weights[-1] = 10**18
    got = _ours(updates, weights)
    for name in SHAPES:
        np.testing.assert_array_equal(got[name], updates[-1][name])


@pytest.mark.parametrize("seed", range(24))
def test_the_next_global_model_is_the_mean_cast_then_added_and_cast(seed: int) -> None:
    """What the aggregator and ``audit verify`` compute (``aggregate`` then ``apply_delta``):
    ``float32(global + float32(sum_i w_i/1e18 * delta_i))``, both sums in float64: two casts.
    Found by an independent reader that followed the README's older 'one float32 cast'
    (``float32(global + sum_i ...)``): it missed 5-1,065 of the 105,346 values of a real round."""
    from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta

    updates, ns, ss = _round(seed)
    weights = onchain_weights(ns, ss)
    rng = np.random.default_rng(1000 + seed)
    start = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in SHAPES.items()}
    used = [(u, w) for u, w in zip(updates, weights, strict=True) if w]
    delta = aggregate(
        AggregationRule(),
        [{k: torch.from_numpy(v.copy()) for k, v in u.items()} for u, _ in used],
        [w for _, w in used],
    )
    new = apply_delta({k: torch.from_numpy(v.copy()) for k, v in start.items()}, delta)
    for name in SHAPES:
        acc = np.zeros(SHAPES[name], dtype=np.float64)
        for u, w in used:
            acc = acc + (w / 1e18) * u[name].astype(np.float64)
        mean = acc.astype(np.float32)
        want = (start[name].astype(np.float64) + mean.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(new[name].numpy(), want)
