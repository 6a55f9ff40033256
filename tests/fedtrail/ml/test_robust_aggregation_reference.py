"""The robust aggregation rules against references written here from their papers, in plain
float64 numpy, and against Flower's own implementations (``flwr.server.strategy.aggregate``).

* coordinate median (Yin et al. 2018): ``np.median`` (even count: mean of the two middles);
* trimmed mean (Yin et al. 2018): drop ``floor(beta * n)`` values at each end per coordinate
  (scipy's ``trim_mean`` and Flower's ``_trim_mean`` convention, ``int(beta * n)``);
* multi-Krum (Blanchard et al. 2017): score = sum of the squared distances to the ``n - f - 2``
  closest other updates, the ``m`` lowest scores selected (computed once, not iteratively as
  Bulyan's El Mhamdi et al. 2018 recursion), their plain (unweighted) mean;
* norm clipping (Sun et al. 2019): ``delta * min(1, M / ||delta||)`` with ``M`` the median norm,
  then the on-chain weighted mean.

Tolerances: fedtrail widens to float64, sums in the given order and casts once to float32. Where
the reference sums in the same order the results are compared for equality; where numpy or
Flower reduce in another order (pairwise ``np.mean``, ``np.linalg.norm``, ``reduce(np.add)`` in
score order) the float64 results differ in the last bits, which can move the float32 cast by one
unit in the last place: those comparisons allow one float32 ulp of the reference value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.server.strategy.aggregate import (
    _trim_mean,
    aggregate_krum,
    aggregate_median,
)
from scipy.stats import trim_mean

from fedtrail.ml.aggregation import (
    coordinate_median,
    multi_krum,
    norm_clipped_mean,
    trimmed_mean,
)
from fedtrail.protocol.weights import WEIGHT_SCALE

SHAPES = {"conv.weight": (3, 1, 3, 3), "conv.bias": (3,), "fc.weight": (2, 12), "fc.bias": (2,)}


def _updates(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    """n float32 updates; even seeds round values to one decimal so columns hold ties and
    zeros of both signs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = {k: rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2) for k, s in SHAPES.items()}
        if seed % 2 == 0:
            u = {
                k: np.round(v, 1) * np.where(rng.random(v.shape) < 0.5, -1, 1) for k, v in u.items()
            }
        out.append({k: v.astype(np.float32) for k, v in u.items()})
    return out


def _tensors(u: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.copy()) for k, v in u.items()}


def _flat(u: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([u[k].astype(np.float64).ravel() for k in SHAPES])


def _flat_result(d: dict[str, torch.Tensor]) -> np.ndarray:
    assert list(d) == list(SHAPES)
    assert all(d[k].dtype == torch.float32 and tuple(d[k].shape) == SHAPES[k] for k in SHAPES)
    return np.concatenate([d[k].numpy().ravel() for k in SHAPES])


def _within_one_ulp(got: np.ndarray, want64: np.ndarray) -> None:
    want = want64.astype(np.float32)
    ulp = np.spacing(np.abs(want))
    assert (np.abs(got.astype(np.float64) - want.astype(np.float64)) <= ulp).all()


@pytest.mark.parametrize("seed", range(12))
def test_coordinate_median(seed: int) -> None:
    n = 1 + seed  # odd and even counts
    ups = _updates(seed, n)
    x = np.stack([_flat(u) for u in ups])
    got = _flat_result(coordinate_median([_tensors(u) for u in ups]))
    # the median of float32 values in float64 is exact or the mean of two (exact sum, halved):
    # one cast, equal values (the sign of a zero may differ: fedtrail normalises -0.0)
    np.testing.assert_array_equal(got, np.median(x, axis=0).astype(np.float32))
    flower = aggregate_median([([u[k].astype(np.float64) for k in SHAPES], 1) for u in ups])
    np.testing.assert_array_equal(
        got, np.concatenate([a.ravel() for a in flower]).astype(np.float32)
    )


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.2, 0.25, 0.3, 0.49])
def test_trimmed_mean(seed: int, ratio: float) -> None:
    n = 1 + seed
    ups = _updates(seed, n)
    x = np.stack([_flat(u) for u in ups])
    got = _flat_result(trimmed_mean([_tensors(u) for u in ups], ratio))
    k = math.floor(ratio * n)
    s = np.sort(x, axis=0)
    kept = s[k : n - k]
    # the same order: sorted values, smallest first, summed one by one, divided once
    acc = kept[0].copy()
    for row in kept[1:]:
        acc = acc + row
    np.testing.assert_array_equal(got, (acc / kept.shape[0]).astype(np.float32))
    _within_one_ulp(got, trim_mean(x, ratio, axis=0))
    _within_one_ulp(got, _trim_mean(x, ratio))


def _krum_reference(x: np.ndarray, f: int, m: int) -> list[int]:
    n = x.shape[0]
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    scores = [np.sort(np.delete(d[i], i))[: n - f - 2].sum() for i in range(n)]
    return sorted(np.argsort(scores, kind="stable")[:m].tolist())


@pytest.mark.parametrize("seed", range(12))
def test_multi_krum(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    f = int(rng.integers(0, 4))
    n = 2 * f + 3 + int(rng.integers(0, 4))
    m = None if seed % 3 == 0 else int(rng.integers(1, n + 1))
    ups = _updates(seed, n)
    for b in rng.choice(n, size=f, replace=False):  # f Byzantine updates, scaled far away
        ups[b] = {k: (v * 50 + 3).astype(np.float32) for k, v in ups[b].items()}
    x = np.stack([_flat(u) for u in ups])
    m_eff = n - f if m is None else m
    got, selected = multi_krum([_tensors(u) for u in ups], f, m)
    want = _krum_reference(x, f, m_eff)
    assert selected == want
    got_flat = _flat_result(got)
    acc = x[want[0]].copy()
    for r in want[1:]:
        acc = acc + x[r]
    np.testing.assert_array_equal(got_flat, (acc / len(want)).astype(np.float32))
    _within_one_ulp(got_flat, x[want].mean(axis=0))
    # Flower's multi-Krum with equal example counts averages without weights
    flower = aggregate_krum([([u[k].astype(np.float64) for k in SHAPES], 1) for u in ups], f, m_eff)
    _within_one_ulp(got_flat, np.concatenate([a.ravel() for a in flower]))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_norm_clipped_mean(seed: int, max_norm: float | None) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 1 + seed
    ups = _updates(seed, n)
    x = np.stack([_flat(u) for u in ups])
    raw = rng.integers(0, 1000, size=n)
    raw[0] += 1
    if n > 2:
        raw[1] = 0  # excluded: neither its norm nor its delta counts
    # integer weights summing to exactly 1e18 (the remainder to the first positive one)
    weights = [int(r) * WEIGHT_SCALE // int(raw.sum()) for r in raw]
    weights[0] += WEIGHT_SCALE - sum(weights)
    used = [i for i in range(n) if weights[i] > 0]
    norms = np.linalg.norm(x[used], axis=1)
    limit = float(np.median(norms)) if max_norm is None else max_norm
    clipped = [x[i] * min(1.0, limit / float(np.linalg.norm(x[i]))) for i in used]
    want = sum(
        (weights[i] / WEIGHT_SCALE * c for i, c in zip(used, clipped, strict=True)),
        np.zeros(x.shape[1]),
    )
    deltas: list[dict[str, torch.Tensor] | None] = [_tensors(u) for u in ups]
    got = _flat_result(norm_clipped_mean(deltas, weights, max_norm))
    _within_one_ulp(got, want)
