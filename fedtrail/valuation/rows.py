"""A round's updates as float64 rows, read one row (or one block of columns) at a time.

The data-free checks (:mod:`~fedtrail.valuation.robust`, :mod:`~fedtrail.valuation.freeride`)
work on the updates flattened to float64, as :func:`fedtrail.ml.aggregation.stack` gives them.
``stack`` builds one fresh ``(updates, width)`` matrix; these checks need one row, or one block
of columns, at a time, and the fresh matrix's memory was most of their cost (measured, SmallCNN
rows of 105,346 values, one thread: 0.66 ms a row to widen into a fresh 99-row matrix against
0.03 ms into a reused row; a coordinate median's sort of 9 rows as one matrix 7 ms). So
:class:`Rows` reads every value straight from the tensor's own memory with numpy's exact widening
to float64 (the cast ``stack`` uses), into small buffers it reuses: every norm, dot product and
median it gives is the one ``stack``'s matrix gives, bit for bit (each sum is the same
:func:`~fedtrail.ml.aggregation.deterministic_sum` of the same products; a median is an order
statistic, whatever sorts it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
import torch

from fedtrail.ml.aggregation import (
    Source,
    deterministic_partials,
    deterministic_sum,
    plain_tensor,
    stack,
)

__all__ = ["Rows"]

F64 = npt.NDArray[np.float64]

BLOCK: Final = 8192
"""Columns per block of :meth:`Rows.median` and :meth:`Rows.gram` (a block of 100 rows is
6.5 MB of float64)."""


class Rows:
    """Updates as float64 rows, without a matrix of them (see the module docstring).

    Build with :meth:`of`: the updates in order, each a list of its tensors' numpy sources in
    the first update's key order (one float64 source of the whole row when they were stacked)."""

    def __init__(self, sources: Sequence[Sequence[Source]], shapes: Sequence[tuple[int, ...]]):
        self._sources = [list(s) for s in sources]
        self._shapes = list(shapes)
        self._slices: list[slice] = []
        offset = 0
        for shape in shapes:
            self._slices.append(slice(offset, offset + math.prod(shape)))
            offset += math.prod(shape)
        self.width: int = offset
        self._buffers: list[F64] = []
        self._views: list[list[F64]] = []  # per buffer, each tensor's part of it
        self._norms: list[float] | None = None
        self._squares: dict[int, F64] = {}  # row -> its squares' partial sums, once computed
        self.names: tuple[str, ...] = ()
        """The tensors' names in a row's order (empty when :meth:`of` stacked the updates)."""

    @classmethod
    def of(
        cls,
        deltas: Sequence[Mapping[str, torch.Tensor]],
        *,
        norms: Sequence[float] | None = None,
        squares: Sequence[F64 | None] | None = None,
    ) -> Rows:
        """The rows of ``deltas`` as :func:`~fedtrail.ml.aggregation.stack` lays them out (the
        first delta's key order). Raises stack's AggregationError when it would: differing
        layouts, non-floating-point or non-finite values, no deltas. Reads the tensors' memory
        in place when every delta is a dict of contiguous CPU float16/32/64 tensors with the
        first one's names and shapes, and every row's norm is finite (the usual case; a NaN or
        an infinity makes its row's norm non-finite, so this is the finiteness check too);
        otherwise stacks them. ``norms``: every row's :attr:`norms` entry when the caller has
        them from a :class:`Rows` of the same tensors (one per delta), not computed again.
        ``squares``: per delta, its :meth:`square_partials` when the caller has them from a
        :class:`Rows` of the same tensors (None where not), not computed again (its norm is
        then theirs, the same bits)."""
        rows = cls._in_place(deltas)
        if rows is not None and norms is not None and len(norms) == len(rows):
            rows._norms = [float(n) for n in norms]
        if rows is not None and squares is not None and len(squares) == len(rows):
            rows._squares = {i: p for i, p in enumerate(squares) if p is not None}
        if rows is not None and all(math.isfinite(n) for n in rows.norms):
            return rows
        st = stack(deltas)
        return cls([[row] for row in st.matrix], [(st.matrix.shape[1],)])

    @classmethod
    def _in_place(cls, deltas: Sequence[Mapping[str, torch.Tensor]]) -> Rows | None:
        if not deltas or type(deltas[0]) is not dict or not deltas[0]:
            return None
        names = list(deltas[0])
        shapes: list[tuple[int, ...]] = []
        out: list[list[Source]] = []
        for delta in deltas:
            if type(delta) is not dict or len(delta) != len(names):
                return None
            row: list[Source] = []
            for k, name in enumerate(names):
                t = delta.get(name)
                if not (plain_tensor(t) and t.is_contiguous()):
                    return None
                try:
                    src = t.numpy()
                except (RuntimeError, TypeError):  # a lazily negated view and the like
                    return None
                if not out:
                    shapes.append(tuple(src.shape))
                elif src.shape != shapes[k]:
                    return None
                row.append(src)
            out.append(row)
        rows = cls(out, shapes)
        rows.names = tuple(names)
        return rows

    def __len__(self) -> int:
        return len(self._sources)

    def _buffer(self, k: int) -> F64:
        while len(self._buffers) <= k:
            buf = np.empty(self.width, dtype=np.float64)
            self._buffers.append(buf)
            self._views.append(
                [
                    buf[sl].reshape(shape)
                    for sl, shape in zip(self._slices, self._shapes, strict=True)
                ]
            )
        return self._buffers[k]

    def row(self, i: int, k: int = 0) -> F64:
        """Row ``i`` widened into reused buffer ``k`` (valid until that buffer is reused)."""
        buf = self._buffer(k)
        for src, view in zip(self._sources[i], self._views[k], strict=True):
            np.copyto(view, src, casting="unsafe")
        return buf

    @property
    def norms(self) -> list[float]:
        """Every row's ``sqrt(deterministic_dot(row, row))``, computed once."""
        if self._norms is None:
            self._norms = []
            for i in range(len(self)):
                parts = self.square_partials(i)
                self._norms.append(math.sqrt(math.fsum(parts.tolist())))
        return self._norms

    def square_partials(self, i: int) -> F64:
        """The 1024 partial sums of row ``i``'s squares
        (:func:`~fedtrail.ml.aggregation.deterministic_partials`; their :func:`math.fsum` is
        the square of its :attr:`norms` entry when that was computed here), computed once:
        entry ``j`` sums the squares of the values ``j``, ``j + 1024``, ... of the row."""
        parts = self._squares.get(i)
        if parts is None:
            # widened, then squared in place: measured 25% faster than a casting product
            buf = self.row(i)
            parts = self._squares[i] = deterministic_partials(np.multiply(buf, buf, out=buf))
        return parts

    def norm(self, i: int) -> float:
        """Row ``i``'s entry of :attr:`norms`."""
        return self.norms[i]

    def dot(self, i: int, vec: F64) -> float:
        """``deterministic_dot(row, vec)`` of row ``i`` and a float64 vector of the width."""
        buf = self.row(i)
        return deterministic_sum(np.multiply(buf, vec, out=buf))

    def widened(self, i: int) -> tuple[F64, list[F64]]:
        """Row ``i`` widened into a fresh array (one allocation; the values :meth:`row` gives)
        and a view of each of its tensors, in :attr:`names`' order and their shapes (one flat
        view when :meth:`of` stacked the updates)."""
        flat = np.empty(self.width, dtype=np.float64)
        views = [
            flat[sl].reshape(shape) for sl, shape in zip(self._slices, self._shapes, strict=True)
        ]
        for src, view in zip(self._sources[i], views, strict=True):
            np.copyto(view, src, casting="unsafe")
        return flat, views

    def dot_with(self, flat: F64, j: int) -> float:
        """:meth:`pair_dot` of a row already widened (``flat``: row ``i``'s values, e.g. the
        base of :meth:`widened`'s views) and row ``j``: the same products, in the same order,
        the same bits."""
        b = self.row(j, 2)
        return deterministic_sum(np.multiply(flat, b, out=self._buffer(1)))

    def pair(self, i: int, j: int) -> tuple[float, float]:
        """``deterministic_dot`` of rows ``i`` and ``j``, and of their difference with itself."""
        a, b = self.row(i, 1), self.row(j, 2)
        dot = deterministic_sum(np.multiply(a, b, out=self._buffer(0)))
        diff = np.subtract(a, b, out=self._buffer(0))
        return dot, deterministic_sum(np.multiply(diff, diff, out=diff))

    def pair_dot(self, i: int, j: int) -> float:
        """The first value of :meth:`pair` alone (the same products and sum, the same bits),
        without the difference's."""
        a, b = self.row(i, 1), self.row(j, 2)
        return deterministic_sum(np.multiply(a, b, out=a))

    def columns(
        self, rows: Sequence[int], lo: int, hi: int, out: npt.NDArray[np.floating[Any]]
    ) -> npt.NDArray[np.floating[Any]]:
        """Columns ``lo:hi`` of ``rows``, written into ``out[:len(rows), :hi - lo]`` (float64,
        or float32 when every value is a float32 or float16 one: exact either way)."""
        block = out[: len(rows), : hi - lo]
        for t, sl in enumerate(self._slices):
            a, b = max(sl.start, lo), min(sl.stop, hi)
            if a >= b:
                continue
            for r, i in enumerate(rows):
                flat = self._sources[i][t].reshape(-1)
                np.copyto(block[r, a - lo : b - lo], flat[a - sl.start : b - sl.start], "unsafe")
        return block

    def median(self, rows: Sequence[int]) -> F64:
        """:func:`~fedtrail.ml.aggregation.median_rows` of ``rows``: per column the middle
        value (the mean of the two middle ones for an even count) with ``-0.0`` read as
        ``+0.0``, a block of columns at a time."""
        n = len(rows)
        if n == 0:
            raise ValueError("no rows to take the median of")
        mid = np.empty(self.width, dtype=np.float64)
        network = _median_network(n) if n <= NETWORK_ROWS else None
        # sorted as float32 when every value is one: widening is exact and keeps the order, so
        # the middle values, widened, are the float64 sort's (measured, 100 rows of 8192
        # columns: 1.3 against 1.9 ms a sort); their mean is taken in float64 as before
        narrow = network is None and all(
            src.dtype in _NARROW for i in rows for src in self._sources[i]
        )
        dtype = np.float32 if narrow else np.float64
        buf = np.empty((n, min(BLOCK, self.width)), dtype=dtype)
        for lo in range(0, self.width, BLOCK):
            hi = min(lo + BLOCK, self.width)
            block = self.columns(rows, lo, hi, buf)
            np.add(block, 0.0, out=block)  # -0.0 -> +0.0: equal values then have equal bits
            if network is not None:
                mid[lo:hi] = _select(cast(F64, block), network)  # float64: not narrow
                continue
            s = np.sort(np.ascontiguousarray(block.T), axis=1)
            if n % 2:
                mid[lo:hi] = s[:, n // 2]
            else:
                low = s[:, n // 2 - 1].astype(np.float64)
                mid[lo:hi] = (low + s[:, n // 2].astype(np.float64)) * 0.5
        return mid

    def gram(self, left: Sequence[int], right: Sequence[int]) -> F64:
        """``(len(left), len(right))`` approximate dot products of rows (torch's BLAS on its
        threads, a block of columns at a time: another summation order of the same products,
        so within the same worst-case rounding error as one product of whole rows)."""
        gram = torch.zeros((len(left), len(right)), dtype=torch.float64)
        lbuf = np.empty((len(left), min(BLOCK, self.width)), dtype=np.float64)
        rbuf = np.empty((len(right), min(BLOCK, self.width)), dtype=np.float64)
        for lo in range(0, self.width, BLOCK):
            hi = min(lo + BLOCK, self.width)
            u = torch.from_numpy(self.columns(left, lo, hi, lbuf))
            r = torch.from_numpy(self.columns(right, lo, hi, rbuf))
            gram.addmm_(u, r.T)
        out: F64 = gram.numpy()
        return out


_NARROW: Final = (np.dtype(np.float32), np.dtype(np.float16))
"""Source dtypes whose values :meth:`Rows.median` may sort as float32 (exactly)."""

NETWORK_ROWS: Final = 64
"""Up to this many rows :meth:`Rows.median` selects the middle values with a comparator network
(element-wise minima and maxima of whole rows of a block) instead of sorting each column
(measured, 8192 columns: 0.12 against 0.68 ms at 9 rows, 2.4 against 3.0 ms at 64, slower than
the sort at 99)."""

Comparator = tuple[int, int, bool, bool]
"""``(i, j, low, high)``, ``i < j``: wire ``i`` takes the minimum (when ``low``: needed later),
wire ``j`` the maximum (when ``high``)."""


@functools.cache
def _median_network(n: int) -> tuple[Comparator, ...]:
    """The comparators of Batcher's odd-even merge sort for ``n`` wires (padded to a power of
    two with wires that would hold ``+inf`` and so never move: comparators touching them are
    left out) that the middle wire(s) depend on. A sorting network sorts every input, so those
    wires end with the middle order statistics: the values a sort gives, bit for bit."""
    width = 1
    while width < n:
        width *= 2
    pairs: list[tuple[int, int]] = []

    def merge(lo: int, size: int, r: int) -> None:
        step = 2 * r
        if step < size:
            merge(lo, size, step)
            merge(lo + r, size, step)
            pairs.extend((i, i + r) for i in range(lo + r, lo + size - r, step))
        else:
            pairs.append((lo, lo + r))

    def sort(lo: int, size: int) -> None:
        if size > 1:
            half = size // 2
            sort(lo, half)
            sort(lo + half, half)
            merge(lo, size, 1)

    sort(0, width)
    needed = {n // 2} if n % 2 else {n // 2 - 1, n // 2}
    kept: list[Comparator] = []
    for i, j in reversed([(i, j) for i, j in pairs if j < n]):
        low, high = i in needed, j in needed
        if low or high:
            kept.append((i, j, low, high))
            needed |= {i, j}
    return tuple(reversed(kept))


def _select(block: F64, network: Sequence[Comparator]) -> F64:
    """The middle value of every column of ``block`` (the mean of the two middle ones for an
    even row count), through ``network``; overwrites ``block``."""
    n = block.shape[0]
    wires: list[F64] = [block[k] for k in range(n)]
    spare: F64 = np.empty_like(wires[0])
    for i, j, low, high in network:
        a, b = wires[i], wires[j]
        if low and high:
            np.minimum(a, b, out=spare)
            np.maximum(a, b, out=b)
            wires[i], spare = spare, a
        elif low:
            np.minimum(a, b, out=a)
        else:
            np.maximum(a, b, out=b)
    mid: F64 = wires[n // 2] if n % 2 else (wires[n // 2 - 1] + wires[n // 2]) * 0.5
    return mid
