"""Aggregation rules: pure, deterministic functions over model update deltas.

A delta maps tensor names to floating-point tensors (``new - global``); every delta of a round has
the same names and shapes. Deltas are given in a fixed order chosen by the caller — the sites'
address order — and every rule is bit-reproducible for that order (DESIGN.md, Determinism):

* each delta is flattened (in the first delta's key order) into a float64 numpy row; the
  widening is numpy's exact cast from the tensor's own memory (no torch kernel, so no thread
  pool is involved);
* sums run over the deltas in the given order with explicit loops of element-wise numpy
  operations (every element sees the same IEEE operations in the same order, whatever the CPU,
  SIMD width or thread count); torch reductions and BLAS are never used; the weighted rules
  stream the deltas (one float64 row buffer, reused) instead of holding them all as float64;
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
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Final, TypeGuard

import numpy as np
import numpy.typing as npt
import torch

from fedtrail.errors import ConfigError, FedtrailError
from fedtrail.protocol.sums import SUM_BLOCK, deterministic_partials, deterministic_sum
from fedtrail.protocol.weights import WEIGHT_SCALE, as_floats

__all__ = [
    "RULES",
    "RULE_NAMES",
    "STATISTICS_RULES",
    "AggregationError",
    "AggregationRule",
    "Delta",
    "Stacked",
    "Unstacked",
    "aggregate",
    "apply_delta",
    "coordinate_median",
    "deterministic_dot",
    "deterministic_partials",
    "deterministic_sum",
    "median_rows",
    "multi_krum",
    "norm_clipped_mean",
    "sample_weighted_mean",
    "stack",
    "trimmed_mean",
    "unstacked",
    "weighted_mean",
]

Delta = dict[str, torch.Tensor]
"""An update (or aggregate): tensor name -> tensor, in state-dict order."""

F64 = npt.NDArray[np.float64]

_BLOCK = SUM_BLOCK


class AggregationError(FedtrailError, ValueError):
    """The inputs cannot be aggregated: none given, layouts that differ, non-finite values, or
    weights that are not valid on-chain weights. (No rule refuses a count of updates from 1:
    before session 54 multi-Krum did.)"""


# ---------------------------------------------------------------- deterministic reductions


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
        return _unflatten(self.names, self.shapes, vec)


def _unflatten(names: Sequence[str], shapes: Sequence[tuple[int, ...]], vec: F64) -> Delta:
    out: Delta = {}
    flat = np.ascontiguousarray(vec, dtype=np.float64)
    offset = 0
    for name, shape in zip(names, shapes, strict=True):
        size = math.prod(shape)
        # astype makes a fresh array: each tensor owns its memory
        out[name] = torch.from_numpy(flat[offset : offset + size].astype(np.float32).reshape(shape))
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


_NUMPY_DTYPES: Final = (torch.float16, torch.float32, torch.float64)
_FLOAT_NUMPY: Final = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

Source = npt.NDArray[np.floating[Any]]
"""A tensor's values as numpy (float16/32/64): widening it to float64 is exact."""


def plain_tensor(t: object) -> TypeGuard[torch.Tensor]:
    """Whether ``t`` is a CPU float16/32/64 tensor outside autograd: one numpy can view
    without a copy (the fast paths' test, here and in :mod:`fedtrail.valuation.rows`)."""
    return (
        isinstance(t, torch.Tensor)
        and t.is_cpu
        and t.dtype in _NUMPY_DTYPES
        and not t.requires_grad
    )


def _source(t: torch.Tensor) -> Source:
    """The tensor's values as a numpy array that widens exactly to float64.

    float16/32/64 on the CPU are a view of the tensor's own memory (any strides), so the one
    conversion is numpy's exact cast into the destination row, in this thread (no torch thread
    pool); other dtypes (bfloat16) and devices go through torch's exact cast to float64 first.
    """
    if t.is_cpu and t.dtype in _NUMPY_DTYPES:
        try:
            return t.numpy() if not t.requires_grad else t.detach().numpy()
        except (RuntimeError, TypeError):  # a lazily negated view and the like
            pass
    return t.detach().to("cpu", torch.float64).numpy()


def _layout_error(
    i: int, layout: dict[str, tuple[int, ...]], ref: dict[str, tuple[int, ...]]
) -> str:
    missing = sorted(set(ref) - set(layout))
    extra = sorted(set(layout) - set(ref))
    bad = sorted(n for n in set(layout) & set(ref) if layout[n] != ref[n])
    return f"update {i} has a different layout from update 0: " + "; ".join(
        part
        for part in (
            f"missing {missing}" if missing else "",
            f"unexpected {extra}" if extra else "",
            ", ".join(f"{n} is {layout[n]} not {ref[n]}" for n in bad),
        )
        if part
    )


@dataclass(frozen=True)
class _Plan:
    """The first delta's layout: names, shapes and each tensor's slice of a flat row."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    slices: tuple[slice, ...]
    width: int

    def views(self, row: F64) -> tuple[F64, ...]:
        """Each tensor's part of a flat ``row``, shaped like the tensor (views, no copies)."""
        return tuple(
            row[sl].reshape(shape) for sl, shape in zip(self.slices, self.shapes, strict=True)
        )


def _sources(
    deltas: Sequence[Mapping[str, torch.Tensor]],
) -> tuple[_Plan, list[list[Source]]]:
    """The first delta's layout, and every delta's tensors as numpy in that order.

    Each delta is checked against the first one's layout (names and shapes, in any key order,
    floating-point tensors), with the error messages of :func:`_layout`. Finiteness is left to
    the callers, who check one aggregate array; so that an error names the same update as a
    check of every update in turn would, a layout error at update ``i`` is raised only after
    updates ``0..i-1`` were found finite.
    """
    if len(deltas) == 0:
        raise AggregationError("no updates to aggregate")
    ref = _layout(deltas[0], "update 0")
    ref_shapes = dict(ref)
    names = tuple(n for n, _ in ref)
    shapes = tuple(s for _, s in ref)
    slices = []
    offset = 0
    for shape in shapes:
        size = math.prod(shape)
        slices.append(slice(offset, offset + size))
        offset += size
    plan = _Plan(names=names, shapes=shapes, slices=tuple(slices), width=offset)
    out = [[_source(deltas[0][n]) for n in names]]
    for i in range(1, len(deltas)):
        row = _fast_sources(deltas[i], plan)
        if row is None:
            try:
                layout = dict(_layout(deltas[i], f"update {i}"))
                if layout != ref_shapes:
                    raise AggregationError(_layout_error(i, layout, ref_shapes))
            except AggregationError:
                _check_finite(out)
                raise
            row = [_source(deltas[i][n]) for n in names]
        out.append(row)
    return plan, out


def _fast_sources(delta: Mapping[str, torch.Tensor], plan: _Plan) -> list[Source] | None:
    """A delta's sources when it is a dict holding exactly the plan's names with floating-point
    tensors of the plan's shapes (the usual case, checked cheaply); None: check it in full."""
    if type(delta) is not dict or len(delta) != len(plan.names):
        return None
    row = []
    for name, shape in zip(plan.names, plan.shapes, strict=True):
        t = delta.get(name)
        if not isinstance(t, torch.Tensor):
            return None
        try:
            # refuses tensors in autograd, off the CPU, and lazily conjugated or negated views
            src = t.numpy()
        except (RuntimeError, TypeError):
            return None
        if src.dtype not in _FLOAT_NUMPY or src.shape != shape:
            return None
        row.append(src)
    return row


def _fill(views: Sequence[F64], sources: Sequence[Source]) -> None:
    """Write one delta's sources into the float64 ``views`` of a row (exact widening)."""
    for view, src in zip(views, sources, strict=True):
        np.copyto(view, src, casting="unsafe")


def _check_finite(sources: Sequence[Sequence[Source]]) -> None:
    """Raise for the first delta (in order) holding a NaN or an infinity.

    The slow path: the fast paths check one aggregate array and come here only when it is not
    finite, so the error names the same update as a check of every update in turn would.
    """
    for i, row in enumerate(sources):
        if not all(np.isfinite(src).all() for src in row):
            raise AggregationError(f"update {i} contains NaN or infinite values")


def stack(deltas: Sequence[Mapping[str, torch.Tensor]]) -> Stacked:
    """Flatten deltas into a float64 matrix, checking they share one layout and are finite.

    The key order of the first delta fixes the layout; the others must hold the same names with
    the same shapes (in any order).
    """
    plan, sources = _sources(deltas)
    matrix = np.empty((len(deltas), plan.width), dtype=np.float64)
    for i, row in enumerate(sources):
        _fill(plan.views(matrix[i]), row)
    if not np.isfinite(matrix).all():
        _check_finite(sources)
    return Stacked(names=plan.names, shapes=plan.shapes, matrix=matrix)


@dataclass(frozen=True, eq=False)
class Unstacked:
    """Deltas checked as :func:`stack` checks them (one layout, finite values) but left in their
    own memory: :meth:`row` widens one of them into a caller's float64 row, the same values as
    that delta's row of :func:`stack`'s matrix, bit for bit (the same exact cast into the same
    layout), without the ``(n_deltas, n_values)`` matrix (measured 2 ms for ten SmallCNN
    updates, most of it the fresh matrix's page faults)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    width: int
    _plan: _Plan
    _sources: list[list[Source]]

    def __len__(self) -> int:
        return len(self._sources)

    def row(self, i: int, out: F64) -> F64:
        """Delta ``i`` widened into ``out`` (a float64 vector of :attr:`width`); returns it."""
        _fill(self._plan.views(out), self._sources[i])
        return out

    def unflatten(self, vec: F64) -> Delta:
        """A flat float64 vector back to named float32 tensors (as :meth:`Stacked.unflatten`)."""
        return _unflatten(self.names, self.shapes, vec)


def unstacked(deltas: Sequence[Mapping[str, torch.Tensor]]) -> Unstacked:
    """:func:`stack`'s checks and layout without its matrix (see :class:`Unstacked`); raises
    AggregationError where :func:`stack` would, with the same messages."""
    plan, sources = _sources(deltas)
    _check_finite(sources)
    return Unstacked(
        names=plan.names, shapes=plan.shapes, width=plan.width, _plan=plan, _sources=sources
    )


SCRATCH_LIMIT: Final = 1 << 22
"""Layouts of at most this many values (32 MiB a float64 row) reuse two work rows per thread
(:func:`_scratch`); larger ones allocate them per call."""

_scratch_rows = threading.local()


def _scratch(width: int) -> tuple[F64, F64]:
    """Two float64 rows of ``width`` for :func:`_weighted_sum`, kept by the calling thread.
    Fresh multi-megabyte arrays come from ``mmap`` (or a heap glibc trims back after each call)
    and fault in page by page: 650 minor faults and 0.8 of the 1.07 ms a one-update SmallCNN
    aggregation took. The rows hold no result between calls (the sum leaves as fresh float32
    tensors), so reusing them changes no bit."""
    if width > SCRATCH_LIMIT:
        return np.empty(width, dtype=np.float64), np.empty(width, dtype=np.float64)
    rows: tuple[F64, F64] | None = getattr(_scratch_rows, "rows", None)
    if rows is None or rows[0].shape[0] != width:
        rows = (np.empty(width, dtype=np.float64), np.empty(width, dtype=np.float64))
        _scratch_rows.rows = rows
    return rows


def _weighted_sum(
    deltas: Sequence[Mapping[str, torch.Tensor]], coefficients: Sequence[float]
) -> Delta:
    """``sum_i c_i * delta_i`` over the deltas with ``c_i != 0``, in order, cast once to
    float32: ``acc = 0``, then ``acc += c_i * row_i`` with :func:`stack`'s float64 rows (the
    rule's bits, pinned by the tests), streamed through one reused float64 row instead of an
    ``(n, width)`` matrix (84 MB at 100 SmallCNN updates).

    Every delta is validated as :func:`stack` does (layout, finiteness), including those with a
    zero coefficient. Finiteness is checked once, on the sum: with finite coefficients a
    non-finite term makes it non-finite (the zero-coefficient deltas are checked apart).
    """
    plan, sources = _sources(deltas)
    acc, term = _scratch(plan.width)
    acc.fill(0.0)
    views = plan.views(term)
    suspect = False
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite input raises below
        for row, c in zip(sources, coefficients, strict=True):
            if c == 0.0:
                suspect = suspect or not all(np.isfinite(src).all() for src in row)
                continue
            # three passes over one reused row: widen exactly, scale, add (no temporaries)
            _fill(views, row)
            np.multiply(term, c, out=term)
            np.add(acc, term, out=acc)
    if suspect or not np.isfinite(acc).all():
        # an overflow of finite values can also land here; it passes through, as before
        _check_finite(sources)
    return _unflatten(plan.names, plan.shapes, acc)


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
    return _weighted_sum(used, as_floats([weights[i] for i in idx]))


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
    total = sum(ns)
    return _weighted_sum(deltas, [n / total for n in ns])


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
    # each column sorted as a contiguous row of the transposed copy (2.5-4x faster than a
    # sort along axis 0 at 100 x 105,346); with -0.0 normalised every sort order gives the same
    # values, so the bits are those of _sorted_columns
    s = np.sort(np.ascontiguousarray(matrix.T, dtype=np.float64) + 0.0, axis=1)
    mid: F64 = s[:, n // 2].copy() if n % 2 else (s[:, n // 2 - 1] + s[:, n // 2]) * 0.5
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
    updates among ``n >= 2f + 3``, defined for every ``n >= 1``.

    It runs with ``f_eff = min(f, max(0, (n - 3) // 2))``, the largest ``f' <= f`` with ``n >=
    2f' + 3`` (0 below three updates). Each update's score is the sum of its squared L2
    distances to its ``n - f_eff - 2`` nearest other updates; the ``m_eff`` lowest-scoring
    updates are selected (ties go to the lower index), ``m_eff = min(m, n)``, or ``n - f_eff``
    when ``m`` is None, and averaged without weights. Below three updates no update has a
    neighbour to be scored by, and every one is selected (a tie broken by index would make the
    lower address the global step). Returns the average and the selected indices (ascending,
    into ``deltas``).

    Before session 54 it raised AggregationError for ``n < 2f + 3`` or ``m > n``; the valuation
    can pay that few (3 of 5 under ``f`` 1), and such a round, left Valued, could be neither
    finalized nor cancelled (the ledger cancels an aggregator round only while it is Open).
    """
    f = _check_count("krum_f", f, 0)
    st = stack(deltas)
    n = st.matrix.shape[0]
    m_req = None if m is None else _check_count("krum_m", m, 1)
    if n < KRUM_MIN_SCORED:
        selected = list(range(n))
        return st.unflatten(_mean_rows(st.matrix, selected)), selected
    f_eff = min(f, (n - 3) // 2)
    m_eff = n - f_eff if m_req is None else min(m_req, n)
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            diff = st.matrix[i] - st.matrix[j]
            dist[i, j] = dist[j, i] = deterministic_dot(diff, diff)
    k = n - f_eff - 2
    scores = []
    for i in range(n):
        others = sorted(dist[i, j] for j in range(n) if j != i)
        scores.append(math.fsum(others[:k]))
    ranked = sorted(range(n), key=lambda i: (scores[i], i))
    selected = sorted(ranked[:m_eff])
    return st.unflatten(_mean_rows(st.matrix, selected)), selected


KRUM_MIN_SCORED: Final = 3
""":func:`multi_krum` scores updates only from this many on; below it every one is kept."""


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

    ``statistics`` is how the running statistics (BatchNorm's ``running_mean``/``running_var``,
    :meth:`~fedtrail.ml.models.ModelSpec.statistic_names`) are combined: ``anchored_median``
    (default since session 51) takes their coordinate median over the positive-weight updates
    and, while fewer than three are paid, the start model's statistics as the missing votes,
    whatever ``name`` is; ``median`` the median over the positive-weight updates alone (the
    default before: with two paid updates their mean, so one paid poisoner of two moved the
    statistics by half its shift, and the only one paid by all of it); ``weighted`` treats
    them like every other tensor. A statistic is not a gradient step: a
    site can shift it by any amount without changing one weight, and the valuation pays the
    shift a round late. Measured (``scripts/bench/bn_poison.py``: resnet10, 28 px, 5 sites,
    alpha 3, seed 0, 3 rounds, one site adding 1e3 to every ``running_mean``): with
    ``weighted`` the global test AUC was 0.500 in all three rounds and the poisoner kept weight
    0.25, 0.25, 0.13; with ``median`` 0.692, 0.921, 0.902 and the poisoner LOW_QUALITY (weight
    0) from round 2. Clean, ``median`` gave 0.815, 0.917, 0.943 against 0.869, 0.926, 0.946.
    Terms written before the setting existed carry no ``statistics`` and replay as
    ``weighted`` (:meth:`from_terms`).
    """

    name: str = "weighted"
    trim_ratio: float = 0.2
    krum_f: int = 1
    krum_m: int | None = None
    max_norm: float | None = None
    statistics: str = "anchored_median"

    @classmethod
    def from_terms(cls, doc: Mapping[str, Any]) -> AggregationRule:
        """The rule a round's terms (or log) committed to. A document without ``statistics``
        predates the setting and meant ``weighted``. ConfigError for an unknown setting."""
        settings = dict(doc)
        settings.setdefault("statistics", "weighted")
        try:
            return cls(**settings)
        except TypeError as exc:
            raise ConfigError(f"aggregation rule {settings}: {exc}") from None

    def to_terms(self, *, statistics: bool) -> dict[str, Any]:
        """The rule as a round's terms carry it; ``statistics``: whether the model has running
        statistics. Without them the ``statistics`` setting changes nothing and is left out, so
        the terms stay byte for byte those written before the setting existed, which every
        earlier node and auditor reads (they refuse a rule with an unknown key)."""
        doc = asdict(self)
        if not statistics:
            del doc["statistics"]
        return doc

    def __post_init__(self) -> None:
        if self.name not in RULE_NAMES:
            raise ConfigError(
                f"unknown aggregation rule {self.name!r}; known: {', '.join(RULE_NAMES)}"
            )
        if self.statistics not in STATISTICS_RULES:
            raise ConfigError(
                f"unknown statistics rule {self.statistics!r}; known: {', '.join(STATISTICS_RULES)}"
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
    *,
    statistics: Sequence[str] = (),
) -> Delta:
    """Aggregate one round's updates (address order) with their on-chain weights by ``rule``.

    ``statistics`` names the running-statistic tensors (the spec's
    :meth:`~fedtrail.ml.models.ModelSpec.statistic_names`); under ``rule.statistics ==
    "median"`` they become the coordinate median of the positive-weight updates' values (with
    the start model's as votes up to three under ``"anchored_median"``).
    Zero-weight updates are excluded by every rule and may be ``None``. Raises
    :class:`AggregationError` when the weights are not valid on-chain weights (integers >= 0
    summing to 1e18), when a positive-weight update is missing or differs in layout, when a
    statistic is not in the updates. Every rule gives a global model for every count of
    positive-weight updates from 1 (multi-Krum lowers its ``f`` to what the count allows).
    """
    if not isinstance(rule, AggregationRule):
        raise ConfigError(f"rule must be an AggregationRule, got {type(rule).__name__}")
    out = RULES[rule.name](rule, deltas, weights)
    anchored = rule.statistics == "anchored_median"
    if statistics and (anchored or (rule.statistics == "median" and rule.name != "median")):
        missing = [name for name in statistics if name not in out]
        if missing:
            raise AggregationError(f"statistics {missing[:3]} are not tensors of the updates")
        votes = [{name: d[name] for name in statistics} for d in _used(deltas, weights)[1]]
        if anchored and len(votes) < ANCHOR_VOTES:
            # the start model's statistics (a zero delta) vote until there are three votes, so
            # one paid update can never move them outside what another paid update or the
            # start model says: the median of two is their mean, the poisoner's half
            zero = {name: torch.zeros_like(t) for name, t in votes[0].items()} if votes else {}
            votes += [zero] * (ANCHOR_VOTES - len(votes))
        out.update(coordinate_median(votes))
    return out


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

STATISTICS_RULES: Final[tuple[str, ...]] = ("anchored_median", "median", "weighted")
"""How :func:`aggregate` combines running statistics (:attr:`AggregationRule.statistics`)."""

ANCHOR_VOTES: Final = 3
"""``anchored_median``: the fewest votes its median is taken over; while fewer updates are paid,
the start model's statistics (a zero delta) fill the rest."""
