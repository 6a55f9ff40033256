"""Compression ``topk8``: top-k sparsification with int8 values, encoder and decoder.

Per tensor it sends the k = ceil(fraction * numel) largest-magnitude entries of (delta +
residual): indices delta-encoded as the smallest unsigned dtype that holds the largest gap, values
quantized to int8 with a symmetric float32 scale. What was not sent (including quantization error)
becomes the new residual, which stays at the node and is added to the next round's delta (error
feedback, ``fedtrail.storage.residual``), so nothing is lost over rounds, only delayed.

One model tensor ``name`` travels as three blob tensors: ``name:idx`` (gaps), ``name:q`` (int8
values) and ``name:scale`` (a float32 scalar). The codec (``fedtrail.storage.codec``) owns the
header and byte-range checks and calls ``TOPK8`` through its registry of methods; this module
knows nothing about headers, only how one tensor becomes parts and back. The decoder checks what
only this format can get wrong (repeated or out-of-range indices, a bad scale, -128, overflow).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Final

import torch

from fedtrail.errors import InvalidUpdate

__all__ = ["TOPK8", "Topk8", "keep"]

# Suffixes of the three tensors that carry one compressed tensor. ":" never occurs in a torch
# state-dict key, so these cannot collide with a model's own names.
IDX: Final = ":idx"
Q: Final = ":q"
SCALE: Final = ":scale"

# Index gap dtypes, smallest first: the encoder takes the first that holds the largest gap.
_GAP_DTYPES: Final = (
    ("U8", torch.uint8, 0xFF),
    ("U16", torch.uint16, 0xFFFF),
    ("U32", torch.uint32, 0xFFFFFFFF),
)
_GAP_CODES: Final = tuple(code for code, _, _ in _GAP_DTYPES)
_SMALLEST_SCALE: Final = 2.0**-149  # smallest positive float32 (subnormal)


def keep(fraction: float, numel: int) -> int:
    """How many entries top-k keeps of a tensor with ``numel`` entries (at least one)."""
    return min(numel, max(1, math.ceil(fraction * numel)))


class Topk8:
    """The ``topk8`` method, shaped as the codec's registry expects (``codec.Compressor``)."""

    takes_fraction: Final = True

    def parts(
        self, name: str, shape: tuple[int, ...], fraction: float
    ) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
        """The blob tensors that carry ``name``: allowed safetensors dtypes and shape of each."""
        k = keep(fraction, math.prod(shape))
        return {
            name + IDX: (_GAP_CODES, (k,)),
            name + Q: (("I8",), (k,)),
            name + SCALE: (("F32",), ()),
        }

    def encode(
        self, name: str, tensor: torch.Tensor, fraction: float
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The parts that carry ``tensor`` and the residual (what they do not carry)."""
        flat = tensor.reshape(-1)
        gaps, q, scale, sent = _select(flat, keep(fraction, flat.numel()))
        parts = {name + IDX: gaps, name + Q: q, name + SCALE: scale}
        return parts, (flat - sent).reshape(tensor.shape)

    def decode(
        self,
        name: str,
        shape: tuple[int, ...],
        fraction: float,
        parts: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """The dense float32 tensor ``name`` from parts whose dtypes and shapes are checked."""
        numel = math.prod(shape)
        gaps, q, scale = parts[name + IDX], parts[name + Q], parts[name + SCALE]
        idx = gaps.to(torch.int64).cumsum(0)
        if idx.numel() > 1 and int(gaps[1:].to(torch.int64).min()) < 1:
            raise InvalidUpdate(f"tensor {name}{IDX} has repeated indices (a gap of 0)")
        if int(idx[-1]) >= numel:
            raise InvalidUpdate(
                f"tensor {name}{IDX} points at entry {int(idx[-1])}, "
                f"past the {numel} entries of {name}"
            )
        s = float(scale)
        if not (math.isfinite(s) and s > 0.0):
            raise InvalidUpdate(f"tensor {name}{SCALE} is {s!r}; it must be finite and positive")
        if int(q.min()) < -127:
            raise InvalidUpdate(f"tensor {name}{Q} holds -128, outside the symmetric range")
        dense = torch.zeros(numel, dtype=torch.float32)
        dense[idx] = _dequantize(q, scale)
        _check_finite(dense, f"tensor {name} (dequantized)")
        return dense.reshape(shape)


TOPK8: Final = Topk8()


def _select(
    flat: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k by magnitude with int8 values; returns (gaps, q, scale, dense dequantized sent).

    Ties at the k-th magnitude go to the lowest positions, so the selection (and the bytes) never
    depend on how ``topk`` orders equal values.
    """
    n = flat.numel()
    if k >= n:
        idx = torch.arange(n)
    else:
        mag = flat.abs()
        threshold = torch.topk(mag, k, sorted=False).values.min()
        kept = mag > threshold
        ties = torch.nonzero(mag == threshold).reshape(-1)[: k - int(kept.sum())]
        kept[ties] = True
        idx = torch.nonzero(kept).reshape(-1)  # ascending
    vals = flat[idx]
    amax = float(vals.abs().max())
    scale_f = struct.unpack("<f", struct.pack("<f", amax / 127.0))[0] if amax > 0 else 1.0
    if scale_f == 0.0:  # amax so tiny that amax/127 underflows float32
        scale_f = _SMALLEST_SCALE
    scale = torch.tensor(scale_f, dtype=torch.float32)
    if not bool(torch.isfinite(scale * 127)):  # amax near the float32 limit: one ulp down fits
        scale = torch.nextafter(scale, torch.zeros(()))
    q = torch.round(vals / scale).clamp_(-127, 127).to(torch.int8)
    sent = torch.zeros_like(flat)
    sent[idx] = _dequantize(q, scale)
    _check_finite(sent, "quantized values")
    gaps64 = torch.diff(idx, prepend=idx.new_zeros(1))
    top = int(gaps64.max())
    for _code, dtype, limit in _GAP_DTYPES:
        if top <= limit:
            return gaps64.to(dtype), q, scale, sent
    raise AssertionError("unreachable: tensors are limited to 2**32 entries")  # pragma: no cover


def _dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The one dequantization the encoder's residual and the decoder share, bit for bit."""
    return q.to(torch.float32) * scale


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise InvalidUpdate(f"{what} has non-finite values (NaN or Inf)")
