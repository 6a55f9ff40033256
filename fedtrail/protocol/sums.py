"""README *Flattening and sums*: the one scalar sum every public rule and the aggregation use,
the same bit for bit on every machine. Here, below both the protocol's rules
(:mod:`fedtrail.protocol.duplicates`) and the aggregation (:mod:`fedtrail.ml.aggregation`, which
re-exports it), so neither writes it again."""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

SUM_BLOCK: Final = 1024
"""The block width: a sum cuts its values into blocks of this many (the last zero-padded), adds
the blocks element-wise in order, then the partial sums with :func:`math.fsum`."""
_BLOCK = SUM_BLOCK


def deterministic_sum(v: F64) -> float:
    """Sum of a 1-D float64 array that is the same bit for bit on every machine.

    The array is cut into 1024-wide blocks (zero-padded) that are added element-wise, block
    after block, and the 1024 partial sums (:func:`deterministic_partials`) are added with
    :func:`math.fsum` (exactly rounded).
    """
    a = np.ascontiguousarray(v, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    if a.size < _BLOCK:
        # one zero-padded block: its partial sums are the values and +0.0s, and fsum (exactly
        # rounded) of them is fsum of the values; + 0.0 gives the padding's sign of a zero sum
        return math.fsum(a.tolist()) + 0.0
    return math.fsum(deterministic_partials(a).tolist())


def deterministic_partials(v: F64) -> F64:
    """The 1024 partial sums :func:`deterministic_sum` adds (a fresh array): entry ``j`` is the
    sum of ``v[j]``, ``v[j + 1024]``, ``v[j + 2048]``, ... in that order (zeros past the end;
    all zeros for an empty ``v``)."""
    a = np.ascontiguousarray(v, dtype=np.float64).ravel()
    full, tail = divmod(a.size, _BLOCK)
    if not full:
        padded: F64 = np.zeros(_BLOCK, dtype=np.float64)
        padded[:tail] = a
        return padded
    # numpy reduces a C-ordered (rows, 1024) array over axis 0 row after row, the same
    # additions in the same order as a Python loop over the blocks, in one call
    acc: F64 = np.add.reduce(a[: full * _BLOCK].reshape(full, _BLOCK), axis=0)
    if tail:  # the zero-padded last block, padding included (0.0 turns a -0.0 into 0.0)
        acc[:tail] += a[full * _BLOCK :]
        acc[tail:] += 0.0
    return acc
