"""Rows: the values of aggregation.stack's matrix, read a row or a block at a time, bit for bit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pytest
import torch

from fedtrail.ml.aggregation import AggregationError, deterministic_dot, median_rows, stack
from fedtrail.valuation.rows import BLOCK, NETWORK_ROWS, Rows

Delta = Mapping[str, torch.Tensor]


def _deltas(n: int, width: int, seed: int) -> list[Delta]:
    """n updates of two tensors split across the width, with signed zeros and ties."""
    rng = np.random.default_rng(seed)
    out: list[Delta] = []
    for k in range(n):
        v = (rng.standard_normal(width) * 1e-3).astype(np.float32)
        v[:4] = [-0.0, 0.0, 1.0, -1.0]
        if k % 3 == 0:
            v[4:8] = 0.25  # ties across rows
        out.append(
            {
                "a": torch.from_numpy(v[:3].copy()),
                "b": torch.from_numpy(v[3:].copy().reshape(-1, 1)),
            }
        )
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 10, 17, NETWORK_ROWS, NETWORK_ROWS + 1, 99, 100])
@pytest.mark.parametrize("width", [7, BLOCK + 5])
def test_median_norms_and_dots_are_stacks_bit_for_bit(n: int, width: int) -> None:
    deltas = _deltas(n, width, seed=n + width)
    matrix = stack(deltas).matrix
    rows = Rows.of(deltas)
    want = median_rows(matrix)
    got = rows.median(range(n))
    assert np.array_equal(_bits(got), _bits(want))
    for i in range(n):
        assert rows.norm(i) == math.sqrt(deterministic_dot(matrix[i], matrix[i]))
        assert rows.dot(i, want) == deterministic_dot(matrix[i], want)
    subset = [k for k in range(n) if k % 2 == 0]
    assert np.array_equal(_bits(rows.median(subset)), _bits(median_rows(matrix[subset])))
    if n >= 2:
        diff = matrix[0] - matrix[n - 1]
        assert rows.pair(0, n - 1) == (
            deterministic_dot(matrix[0], matrix[n - 1]),
            deterministic_dot(diff, diff),
        )


@pytest.mark.parametrize("n", [NETWORK_ROWS + 1, 100])
@pytest.mark.parametrize(
    "dtypes", [(torch.float16,), (torch.float32, torch.float16), (torch.float32, torch.float64)]
)
def test_the_median_of_narrow_and_mixed_rows_is_stacks(
    n: int, dtypes: tuple[torch.dtype, ...]
) -> None:
    """Past the comparator network the median sorts float32 when every value is float32 or
    float16 (a float64 value anywhere: float64): the same bits as stack's median either way."""
    deltas = [
        {k: t.to(dtypes[i % len(dtypes)]) for k, t in d.items()}
        for i, d in enumerate(_deltas(n, BLOCK + 5, seed=n))
    ]
    for i in range(0, n, 7):  # values float16 cannot tell apart: ties after widening
        deltas[i] = {k: (t * 1e4).to(t.dtype) for k, t in deltas[i].items()}
    matrix = stack(deltas).matrix
    want = median_rows(matrix)
    assert np.array_equal(_bits(Rows.of(deltas).median(range(n))), _bits(want))
    subset = list(range(1, n, 2))
    got = Rows.of(deltas).median(subset)
    assert np.array_equal(_bits(got), _bits(median_rows(matrix[subset])))


def test_the_gram_matrix_approximates_the_exact_dots() -> None:
    deltas = _deltas(6, 3 * BLOCK + 11, seed=3)
    matrix = stack(deltas).matrix
    gram = Rows.of(deltas).gram([0, 1, 2], [3, 4, 5])
    exact = np.array(
        [[deterministic_dot(matrix[i], matrix[j]) for j in (3, 4, 5)] for i in (0, 1, 2)]
    )
    scale = np.linalg.norm(matrix[:3], axis=1)[:, None] * np.linalg.norm(matrix[3:], axis=1)
    assert np.all(np.abs(gram - exact) <= 1e-12 * scale)


@pytest.mark.parametrize("width", [7, BLOCK + 5])
def test_a_widened_row_is_stacks_row_and_gives_its_dots(width: int) -> None:
    deltas = _deltas(5, width, seed=width)
    matrix = stack(deltas).matrix
    rows = Rows.of(deltas)
    assert rows.names == ("a", "b")
    for i in range(5):
        flat, views = rows.widened(i)
        assert np.array_equal(_bits(flat), _bits(matrix[i]))
        assert [v.shape for v in views] == [tuple(deltas[i][k].shape) for k in rows.names]
        for k, v in zip(rows.names, views, strict=True):
            assert np.shares_memory(v, flat)
            assert np.array_equal(_bits(v), _bits(deltas[i][k].numpy()))
        for j in range(5):
            assert rows.dot_with(flat, j) == rows.pair_dot(i, j)
            assert rows.dot_with(flat, j) == deterministic_dot(matrix[i], matrix[j])


def test_stacked_rows_have_no_names() -> None:
    deltas = _deltas(3, 20, seed=4)
    mixed = [deltas[0], _unusual(deltas[1])[2], deltas[2]]  # a non-contiguous tensor
    rows = Rows.of(mixed)
    assert rows.names == ()
    flat, views = rows.widened(1)
    assert len(views) == 1
    assert np.array_equal(_bits(flat), _bits(stack(mixed).matrix[1]))


def _unusual(delta: Delta) -> list[Delta]:
    """``delta``'s values in every form the in-place path leaves to stack: a non-dict mapping,
    another key order, a non-contiguous tensor, bfloat16, a tensor needing grad."""
    a, b = delta["a"], delta["b"]
    wide = torch.cat([b, b], dim=1)  # (n, 2): column 0 is b, a non-contiguous view
    return [
        MappingProxyType(dict(delta)),
        {"b": b, "a": a},
        {"a": a, "b": wide[:, :1]},
        {"a": a.to(torch.bfloat16), "b": b},
        {"a": a.clone().requires_grad_(True), "b": b},
    ]


@pytest.mark.parametrize("form", range(5))
def test_any_layout_stack_takes_gives_stacks_values(form: int) -> None:
    deltas = _deltas(4, 40, seed=1)
    for position in range(4):
        mixed = list(deltas)
        mixed[position] = _unusual(deltas[position])[form]
        matrix = stack(mixed).matrix
        rows = Rows.of(mixed)
        for i in range(4):
            assert np.array_equal(_bits(rows.row(i)), _bits(matrix[i]))
        assert np.array_equal(_bits(rows.median(range(4))), _bits(median_rows(matrix)))


def test_what_stack_refuses_raises_stacks_error() -> None:
    deltas = _deltas(3, 20, seed=2)
    broken = [deltas[0], {**deltas[1], "b": deltas[1]["b"].clone().fill_(math.nan)}, deltas[2]]
    other = [deltas[0], {"a": deltas[1]["a"]}]
    for bad in (broken, other, []):
        with pytest.raises(AggregationError) as want:
            stack(bad)
        with pytest.raises(AggregationError) as got:
            Rows.of(bad)
        assert str(got.value) == str(want.value)
