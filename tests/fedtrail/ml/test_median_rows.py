"""The coordinate-wise median sorts each column as a row of a transposed copy: its bits must be
those of the median written plainly (per column, Python's sort, the middle value or the mean of
the two middle ones), with ties, signed zeros and odd and even counts."""

from __future__ import annotations

import numpy as np
import pytest

from fedtrail.ml.aggregation import AggregationError, median_rows


def _plain_median(matrix: np.ndarray) -> np.ndarray:
    n = matrix.shape[0]
    out = []
    for c in range(matrix.shape[1]):
        col = sorted(float(v) + 0.0 for v in matrix[:, c])
        out.append(col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) * 0.5)
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 11, 40])
def test_median_rows_matches_the_plain_median(rows: int) -> None:
    rng = np.random.default_rng(rows)
    m = rng.normal(size=(rows, 300))
    m[:, :40] = np.round(m[:, :40])  # ties
    m[rng.random(m.shape) < 0.1] = 0.0
    m[rng.random(m.shape) < 0.1] = -0.0
    m[:, 50] = -0.0  # a column of negative zeros: the median is +0.0
    got = median_rows(m)
    want = _plain_median(m)
    assert got.dtype == np.float64
    assert np.array_equal(got.view(np.int64), want.view(np.int64))  # bit for bit, zeros' sign
    assert got[50] == 0.0 and not np.signbit(got[50])


def test_median_rows_of_no_rows_raises() -> None:
    with pytest.raises(AggregationError):
        median_rows(np.empty((0, 3)))
