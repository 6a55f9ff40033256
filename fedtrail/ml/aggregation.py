"""Aggregation rules: pure, deterministic functions over model update deltas.

A delta maps tensor names to floating-point tensors (``new - global``); every delta of a round has
the same names and shapes. Deltas are given in a fixed order chosen by the caller — the sites'
address order — and every rule is bit-reproducible for that order (DESIGN.md, Determinism):

* each delta is flattened (in the first delta's key order) into a float64 numpy row;
* sums run over the deltas in the given order with explicit loops of element-wise numpy
  operations (every element sees the same IEEE operations in the same order, whatever the CPU,
  SIMD width or thread count); torch reductions and BLAS are never used;
* scalar reductions (norms, dot products, distances) go through :func:`deterministic_sum`: fixed
  1024-wide blocks added row by row, then :func:`math.fsum` (exactly rounded) of the block sums;
* sorts (median, trimmed mean) see ``-0.0`` normalised to ``+0.0``, so the unstable order of
  equal values cannot change a bit of the result;
* the result is cast to float32 once, at the end.

The default rule is :func:`weighted_mean` with the on-chain weights (integers summing to
``WEIGHT_SCALE`` = 1e18, turned into floats by :func:`fedtrail.protocol.weights.as_floats` — the one
conversion the auditor shares). The robust rules (:func:`coordinate_median`,
:func:`trimmed_mean`, :func:`multi_krum`, :func:`norm_clipped_mean`) are selected through
:class:`AggregationRule` and :func:`aggregate`, which also drops every zero-weight update first:
a zero on-chain score means "excluded" (tampered, malformed, poisoned or useless).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from fedtrail.errors import ConfigError, FedtrailError
from fedtrail.protocol.weights import WEIGHT_SCALE, as_floats

__all__ = [
    "RULES",
    "RULE_NAMES",
    "AggregationError",
    "AggregationRule",
    "Delta",
    "Stacked",
    "aggregate",
    "apply_delta",
    "coordinate_median",
    "deterministic_dot",
    "deterministic_sum",
    "median_rows",
    "multi_krum",
    "norm_clipped_mean",
    "sample_weighted_mean",
    "stack",
    "trimmed_mean",
    "weighted_mean",
]

Delta = dict[str, torch.Tensor]
"""An update (or aggregate): tensor name -> tensor, in state-dict order."""

F64 = npt.NDArray[np.float64]

_BLOCK = 1024


class AggregationError(FedtrailError, ValueError):
    """The inputs cannot be aggregated: none given, layouts that differ, non-finite values,
    weights that are not valid on-chain weights, or too few updates for the rule."""


# ---------------------------------------------------------------- deterministic reductions


def deterministic_sum(v: F64) -> float:
    """Sum of a 1-D float64 array that is the same bit for bit on every machine.

    The array is cut into 1024-wide blocks (zero-padded) that are added element-wise, block
    after block, and the 1024 partial sums are added with :func:`math.fsum` (exactly rounded).
    """
    a = np.ascontiguousarray(v, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    rows = -(-a.size // _BLOCK)
    padded = np.zeros(rows * _BLOCK, dtype=np.float64)
    padded[: a.size] = a
    blocks = padded.reshape(rows, _BLOCK)
    acc = blocks[0].copy()
    for r in range(1, rows):
        acc += blocks[r]
    return math.fsum(acc.tolist())


def deterministic_dot(a: F64, b: F64) -> float:
    """``sum(a * b)`` through :func:`deterministic_sum`."""
    return deterministic_sum(np.multiply(a, b))


def _norm(v: F64) -> float:
    return math.sqrt(deterministic_dot(v, v))


# ---------------------------------------------------------------- flattening


@dataclass(frozen=True, eq=False)
class Stacked:
    """Deltas flattened into the rows of one float64 matrix, with the layout to undo it."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    matrix: F64
    """``(n_deltas, n_values)`` float64, one row per delta in the given order."""

    def unflatten(self, vec: F64) -> Delta:
        """A flat float64 vector back to named float32 tensors (the one cast to float32)."""
        out: Delta = {}
        flat32 = np.ascontiguousarray(vec, dtype=np.float64).astype(np.float32)
        offset = 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name] = torch.from_numpy(flat32[offset : offset + size].reshape(shape).copy())
            offset += size
        return out


def _layout(delta: Mapping[str, torch.Tensor], what: str) -> list[tuple[str, tuple[int, ...]]]:
    if not isinstance(delta, Mapping):
        raise AggregationError(f"{what} is not a mapping of tensor names to tensors")
    if not delta:
        raise AggregationError(f"{what} holds no tensors")
    layout = []
    for name, t in delta.items():
        if not isinstance(t, torch.Tensor):
            raise AggregationError(f"{what}: {name!r} is not a tensor")
        if not t.is_floating_point():
            raise AggregationError(f"{what}: tensor {name!r} is {t.dtype}, not floating point")
        layout.append((name, tuple(t.shape)))
    return layout


def _as_f64(t: torch.Tensor) -> F64:
    return np.asarray(t.detach().to("cpu", torch.float64).numpy().ravel(), dtype=np.float64)


def stack(deltas: Sequence[Mapping[str, torch.Tensor]]) -> Stacked:
    """Flatten deltas into a float64 matrix, checking they share one layout and are finite.

    The key order of the first delta fixes the layout; the others must hold the same names with
    the same shapes (in any order).
    """
    if len(deltas) == 0:
        raise AggregationError("no updates to aggregate")
    ref = _layout(deltas[0], "update 0")
    ref_shapes = dict(ref)
    names = tuple(n for n, _ in ref)
    shapes = tuple(s for _, s in ref)
    width = sum(math.prod(s) for s in shapes)
    matrix = np.empty((len(deltas), width), dtype=np.float64)
    for i, delta in enumerate(deltas):
        layout = dict(_layout(delta, f"update {i}")) if i else ref_shapes
        if layout != ref_shapes:
            missing = sorted(set(ref_shapes) - set(layout))
            extra = sorted(set(layout) - set(ref_shapes))
            bad = sorted(n for n in set(layout) & set(ref_shapes) if layout[n] != ref_shapes[n])
            raise AggregationError(
                f"update {i} has a different layout from update 0: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {missing}" if missing else "",
                        f"unexpected {extra}" if extra else "",
                        ", ".join(f"{n} is {layout[n]} not {ref_shapes[n]}" for n in bad),
                    )
                    if part
                )
            )
        row = np.concatenate([_as_f64(delta[n]) for n in names])
        if not np.isfinite(row).all():
            raise AggregationError(f"update {i} contains NaN or infinite values")
        matrix[i] = row
    return Stacked(names=names, shapes=shapes, matrix=matrix)


def _sorted_columns(matrix: F64) -> F64:
    # + 0.0 turns -0.0 into +0.0, so the order of equal values cannot matter
    return np.sort(matrix + 0.0, axis=0, kind="stable")


def _mean_rows(matrix: F64, rows: Sequence[int]) -> F64:
    """Unweighted mean of the given rows: summed in the given order, divided once."""
    if not rows:
        raise AggregationError("no updates left to average")
    acc = matrix[rows[0]].copy()
    for r in rows[1:]:
        acc += matrix[r]
    out: F64 = acc / float(len(rows))
    return out


def _weighted_rows(matrix: F64, coefficients: Sequence[float]) -> F64:
    """``sum_i c_i * row_i`` over the rows with ``c_i != 0``, in order."""
    acc = np.zeros(matrix.shape[1], dtype=np.float64)
    for i, c in enumerate(coefficients):
        if c != 0.0:
            acc += c * matrix[i]
    return acc


# ---------------------------------------------------------------- weights


def _check_weights(n: int, weights: Sequence[int]) -> list[int]:
    if len(weights) != n:
        raise AggregationError(f"{n} updates but {len(weights)} weights")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | np.integer):
            raise AggregationError(f"weight {i} is {w!r}; on-chain weights are integers")
        if w < 0:
            raise AggregationError(f"weight {i} is negative ({w})")
        out.append(int(w))
    total = sum(out)
    if total != WEIGHT_SCALE:
        raise AggregationError(
            f"weights sum to {total}, not {WEIGHT_SCALE}: they are not on-chain weights"
        )
    return out


def _used(
    deltas: Sequence[Mapping[str, torch.Tensor] | None], weights: Sequence[int]
) -> tuple[list[int], list[Mapping[str, torch.Tensor]]]:
    """Indices and deltas of the updates with a positive weight (the others may be None)."""
    ws = _check_weights(len(deltas), weights)
    idx = [i for i, w in enumerate(ws) if w > 0]
    used: list[Mapping[str, torch.Tensor]] = []
    for i in idx:
        d = deltas[i]
        if d is None:
            raise AggregationError(f"update {i} has weight {ws[i]} but no delta")
        used.append(d)
    return idx, used


# ---------------------------------------------------------------- rules


def weighted_mean(
    deltas: Sequence[Mapping[str, torch.Tensor] | None], weights: Sequence[int]
) -> Delta:
    """``sum_i w_i * delta_i`` with the on-chain weights (integers summing to 1e18).

    Weights become floats through :func:`fedtrail.protocol.weights.as_floats`; they are not
    normalised again (they already sum to one). Zero-weight updates are skipped: they are neither
    read nor validated and may be ``None``.
    """
    idx, used = _used(deltas, weights)
    st = stack(used)
    fractions = as_floats([weights[i] for i in idx])
    return st.unflatten(_weighted_rows(st.matrix, fractions))


def sample_weighted_mean(
    deltas: Sequence[Mapping[str, torch.Tensor]], num_samples: Sequence[int]
) -> Delta:
    """FedAvg without valuation: ``sum_i (n_i / sum_j n_j) * delta_i`` (used for coalition
    models in the valuation). Zero-sample updates are skipped."""
    if len(num_samples) != len(deltas):
        raise AggregationError(f"{len(deltas)} updates but {len(num_samples)} sample counts")
    ns = [int(n) for n in num_samples]
    if any(n < 0 for n in ns) or sum(ns) == 0:
        raise AggregationError("sample counts must be non-negative with a positive total")
    st = stack(deltas)
    total = sum(ns)
    return st.unflatten(_weighted_rows(st.matrix, [n / total for n in ns]))


def coordinate_median(deltas: Sequence[Mapping[str, torch.Tensor]]) -> Delta:
    """Coordinate-wise median (Yin et al. 2018); for an even count, the mean of the two middle
    values. Unweighted: every given update counts once."""
    st = stack(deltas)
    return st.unflatten(median_rows(st.matrix))


def median_rows(matrix: F64) -> F64:
    """Coordinate-wise median of a matrix's rows (float64, deterministic)."""
    n = matrix.shape[0]
    if n == 0:
        raise AggregationError("no rows to take the median of")
    s = _sorted_columns(matrix)
    mid: F64 = s[n // 2].copy() if n % 2 else (s[n // 2 - 1] + s[n // 2]) * 0.5
    return mid


def _check_trim(trim_ratio: float) -> float:
    if isinstance(trim_ratio, bool) or not isinstance(trim_ratio, int | float):
        raise ConfigError(f"trim_ratio must be a number, got {trim_ratio!r}")
    if not 0.0 <= trim_ratio < 0.5:
        raise ConfigError(f"trim_ratio must lie in [0, 0.5), got {trim_ratio}")
    return float(trim_ratio)


def trimmed_mean(deltas: Sequence[Mapping[str, torch.Tensor]], trim_ratio: float) -> Delta:
    """Coordinate-wise trimmed mean: per coordinate, drop the ``floor(trim_ratio * n)`` largest
    and as many smallest values and average the rest (unweighted). ``trim_ratio`` in [0, 0.5)."""
    ratio = _check_trim(trim_ratio)
    st = stack(deltas)
    n = st.matrix.shape[0]
    k = math.floor(ratio * n)
    s = _sorted_columns(st.matrix)
    return st.unflatten(_mean_rows(s, list(range(k, n - k))))


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def multi_krum(
    deltas: Sequence[Mapping[str, torch.Tensor]], f: int, m: int | None = None
) -> tuple[Delta, list[int]]:
    """Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018) tolerating ``f`` Byzantine
    updates among ``n >= 2f + 3``.

    Each update's score is the sum of its squared L2 distances to its ``n - f - 2`` nearest
    other updates; the ``m`` (default ``n - f``) lowest-scoring updates are selected (ties go to
    the lower index) and averaged without weights. Returns the average and the selected indices
    (ascending, into ``deltas``).
    """
    f = _check_count("krum_f", f, 0)
    st = stack(deltas)
    n = st.matrix.shape[0]
    if n < 2 * f + 3:
        raise AggregationError(
            f"multi-Krum with f={f} needs at least {2 * f + 3} updates, got {n}; lower krum_f"
        )
    m_eff = n - f if m is None else _check_count("krum_m", m, 1)
    if m_eff > n:
        raise AggregationError(f"multi-Krum cannot select m={m_eff} of {n} updates")
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            diff = st.matrix[i] - st.matrix[j]
            dist[i, j] = dist[j, i] = deterministic_dot(diff, diff)
    k = n - f - 2
    scores = []
    for i in range(n):
        others = sorted(dist[i, j] for j in range(n) if j != i)
        scores.append(math.fsum(others[:k]))
    ranked = sorted(range(n), key=lambda i: (scores[i], i))
    selected = sorted(ranked[:m_eff])
    return st.unflatten(_mean_rows(st.matrix, selected)), selected


def norm_clipped_mean(
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
    max_norm: float | None = None,
) -> Delta:
    """Weighted mean (on-chain weights) of the updates after clipping each one's L2 norm to
    ``max_norm`` (Sun et al. 2019): ``delta * min(1, max_norm / ||delta||)``.

    ``max_norm`` defaults to the median norm of the positive-weight updates. Clipping bounds the
    magnitude of any one update (boosted / scaled poisoning); it does not change directions, so
    a sign-flipped update still pulls against the others with at most the median norm.
    Zero-weight updates are skipped (and may be ``None``).
    """
    idx, used = _used(deltas, weights)
    st = stack(used)
    norms = [_norm(st.matrix[r]) for r in range(len(used))]
    if max_norm is None:
        limit = float(median_rows(np.asarray(norms, dtype=np.float64)[:, None])[0])
    else:
        limit = _check_max_norm(max_norm)
    fractions = as_floats([weights[i] for i in idx])
    acc = np.zeros(st.matrix.shape[1], dtype=np.float64)
    for r, (norm, w) in enumerate(zip(norms, fractions, strict=True)):
        factor = limit / norm if norm > limit else 1.0
        acc += (w * factor) * st.matrix[r]
    return st.unflatten(acc)


def _check_max_norm(max_norm: object) -> float:
    if isinstance(max_norm, bool) or not isinstance(max_norm, int | float):
        raise ConfigError(f"max_norm must be a number, got {max_norm!r}")
    v = float(max_norm)
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"max_norm must be a positive finite number, got {max_norm!r}")
    return v


def apply_delta(
    global_state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The next global model: ``global + delta`` added in float64, cast once to float32, in
    ``global_state``'s key order. Both must hold the same names and shapes."""
    st = stack([global_state, delta])
    return st.unflatten(st.matrix[0] + st.matrix[1])


# ---------------------------------------------------------------- selectable rule


@dataclass(frozen=True, kw_only=True)
class AggregationRule:
    """Which rule :func:`aggregate` applies, with its settings.

    ``weighted`` (default): :func:`weighted_mean` with the on-chain weights. ``median``:
    :func:`coordinate_median`; ``trimmed_mean``: :func:`trimmed_mean` with ``trim_ratio``;
    ``krum``: :func:`multi_krum` with ``krum_f`` and ``krum_m``; ``norm_clip``:
    :func:`norm_clipped_mean` with ``max_norm`` (None: the median norm). The robust rules see
    only the updates with a positive on-chain weight; ``median``, ``trimmed_mean`` and ``krum``
    then ignore the weights' sizes (every kept update counts once).
    """

    name: str = "weighted"
    trim_ratio: float = 0.2
    krum_f: int = 1
    krum_m: int | None = None
    max_norm: float | None = None

    def __post_init__(self) -> None:
        if self.name not in RULE_NAMES:
            raise ConfigError(
                f"unknown aggregation rule {self.name!r}; known: {', '.join(RULE_NAMES)}"
            )
        _check_trim(self.trim_ratio)
        _check_count("krum_f", self.krum_f, 0)
        if self.krum_m is not None:
            _check_count("krum_m", self.krum_m, 1)
        if self.max_norm is not None:
            _check_max_norm(self.max_norm)


def aggregate(
    rule: AggregationRule,
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
) -> Delta:
    """Aggregate one round's updates (address order) with their on-chain weights by ``rule``.

    Zero-weight updates are excluded by every rule and may be ``None``. Raises
    :class:`AggregationError` when the weights are not valid on-chain weights (integers >= 0
    summing to 1e18), when a positive-weight update is missing or differs in layout, or when the
    rule needs more updates than remain (multi-Krum: ``2 * krum_f + 3``).
    """
    if not isinstance(rule, AggregationRule):
        raise ConfigError(f"rule must be an AggregationRule, got {type(rule).__name__}")
    return RULES[rule.name](rule, deltas, weights)


Rule = Callable[
    [AggregationRule, Sequence[Mapping[str, torch.Tensor] | None], Sequence[int]], Delta
]


def _weighted(
    rule: AggregationRule,
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
) -> Delta:
    return weighted_mean(deltas, weights)


def _median(
    rule: AggregationRule,
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
) -> Delta:
    return coordinate_median(_used(deltas, weights)[1])


def _trimmed_mean(
    rule: AggregationRule,
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
) -> Delta:
    return trimmed_mean(_used(deltas, weights)[1], rule.trim_ratio)


def _krum(
    rule: AggregationRule,
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
) -> Delta:
    return multi_krum(_used(deltas, weights)[1], rule.krum_f, rule.krum_m)[0]


def _norm_clip(
    rule: AggregationRule,
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    weights: Sequence[int],
) -> Delta:
    return norm_clipped_mean(deltas, weights, rule.max_norm)


RULES: Final[Mapping[str, Rule]] = MappingProxyType(
    {
        "weighted": _weighted,
        "median": _median,
        "trimmed_mean": _trimmed_mean,
        "krum": _krum,
        "norm_clip": _norm_clip,
    }
)
"""Rule name -> how :func:`aggregate` applies it (the ``--rule`` choices come from here)."""

RULE_NAMES: Final[tuple[str, ...]] = tuple(RULES)
