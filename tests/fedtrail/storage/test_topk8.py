"""Tests of fedtrail.storage.topk8 on single tensors, without the codec's header around them.

The codec-level behaviour (blobs, canonical bytes, hostile headers) is in test_codec.py.
"""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from fedtrail.errors import InvalidUpdate
from fedtrail.storage import codec, topk8
from fedtrail.storage.topk8 import TOPK8


def encode(t: torch.Tensor, fraction: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return TOPK8.encode("w", t, fraction)


def decode(t_shape: tuple[int, ...], parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return TOPK8.decode("w", t_shape, 0.5, parts)


def test_registered_under_its_name_and_every_method_has_a_compressor() -> None:
    assert codec._COMPRESSORS["topk8"] is TOPK8
    assert set(codec._COMPRESSORS) == set(get_args(codec.CompressionMethod))


@pytest.mark.parametrize(
    ("fraction", "numel", "k"),
    [(0.05, 105_000, 5250), (0.01, 2, 1), (0.5, 3, 2), (1.0, 7, 7), (1e-9, 10, 1)],
)
def test_keep_rounds_up_and_keeps_at_least_one(fraction: float, numel: int, k: int) -> None:
    assert topk8.keep(fraction, numel) == k


def test_parts_declares_three_tensors_sized_by_k() -> None:
    assert TOPK8.parts("fc.weight", (10, 10), 0.05) == {
        "fc.weight:idx": (("U8", "U16", "U32"), (5,)),
        "fc.weight:q": (("I8",), (5,)),
        "fc.weight:scale": (("F32",), ()),
    }


def test_encode_sends_the_largest_and_keeps_the_rest_as_residual() -> None:
    t = torch.tensor([[0.1, -4.0, 0.2], [3.0, 0.0, -0.3]])
    parts, residual = encode(t, 2 / 6)
    assert parts["w:idx"].dtype == torch.uint8 and parts["w:idx"].tolist() == [1, 2]  # gaps
    assert parts["w:q"].tolist() == [-127, round(3.0 / (4.0 / 127))]
    sent = decode((2, 3), parts)
    assert sent.shape == (2, 3)
    assert (sent != 0).tolist() == [[False, True, False], [True, False, False]]
    torch.testing.assert_close(sent + residual, t, rtol=0, atol=0)


@pytest.mark.parametrize(("numel", "dtype"), [(256, torch.uint8), (257, torch.uint16)])
def test_gap_dtype_is_the_smallest_that_holds_the_largest_gap(
    numel: int, dtype: torch.dtype
) -> None:
    t = torch.zeros(numel)
    t[0], t[-1] = -1.27, 1.27  # gap numel - 1; both exact multiples of the scale
    parts, _ = encode(t, 2 / numel)
    assert parts["w:idx"].dtype == dtype
    assert torch.equal(decode((numel,), parts) != 0, t != 0)


def test_all_zeros_encode_with_unit_scale() -> None:
    parts, residual = encode(torch.zeros(8), 0.25)
    assert float(parts["w:scale"]) == 1.0
    assert not decode((8,), parts).any() and not residual.any()


def _parts(gaps: list[int], q: list[int], scale: float) -> dict[str, torch.Tensor]:
    return {
        "w:idx": torch.tensor(gaps, dtype=torch.uint8),
        "w:q": torch.tensor(q, dtype=torch.int8),
        "w:scale": torch.tensor(scale, dtype=torch.float32),
    }


@pytest.mark.parametrize(
    ("parts", "word"),
    [
        (_parts([1, 0], [1, 1], 1.0), "repeated"),
        (_parts([2, 2], [1, 1], 1.0), "past the 4 entries"),
        (_parts([0, 1], [1, 1], 0.0), "scale"),
        (_parts([0, 1], [1, 1], float("nan")), "scale"),
        (_parts([0, 1], [1, -128], 1.0), "-128"),
        (_parts([0, 1], [127, 1], 3e38), "non-finite"),
    ],
)
def test_decode_refuses_what_only_topk8_can_get_wrong(
    parts: dict[str, torch.Tensor], word: str
) -> None:
    with pytest.raises(InvalidUpdate) as err:
        decode((4,), parts)
    assert word in err.value.reason
