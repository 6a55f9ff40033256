"""The explanation check's public probe set <-> bytes (safetensors, never pickle).

The aggregator publishes the probe images its explanation check explains, so that anyone can
recompute an ``EXPLANATION_SHIFT`` verdict (:mod:`fedtrail.valuation.explanation`), and commits
the blob's CID and sha256 in the round terms (``valuation.explanation_probe``). The blob holds
one tensor ``probe``: float32, ``(N, C, H, W)``, every value finite and in [0, 1], with one
metadata key of canonical JSON (``{"format": "fedtrail.explanation-probe/1"}``), so its bytes
are the same in every process. An auditor reads it as untrusted input: :func:`decode_probe`
bounds its size, checks dtype, shape and values, and requires the canonical bytes;
:class:`InvalidProbe` names what is wrong.

The probe images are public once published: they must be consented, public or synthetic images,
never a site's or the aggregator's private patient scans.
"""

from __future__ import annotations

import json
import math
from typing import Final

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from fedtrail.errors import FedtrailError

__all__ = [
    "MAX_PROBE_BYTES",
    "MAX_PROBE_IMAGES",
    "PROBE_FORMAT",
    "PROBE_KEY",
    "InvalidProbe",
    "decode_probe",
    "encode_probe",
]

PROBE_FORMAT: Final = "fedtrail.explanation-probe/1"
PROBE_KEY: Final = "probe"
MAX_PROBE_IMAGES: Final = 256
"""Most probe images a blob may hold (the check explains 32): each is explained once per update,
so a larger set is a cost the aggregator could impose on every auditor."""
MAX_PROBE_BYTES: Final = 32 << 20
"""Largest probe blob read (fetch it with ``max_bytes=MAX_PROBE_BYTES``): 32 RGB 224 px images
are 19 MiB; 32 grayscale 28 px ones 100 KB."""
_METADATA_KEY: Final = "fedtrail"
_CHANNELS: Final = (1, 3)


class InvalidProbe(FedtrailError):
    """A probe blob that is too large, not safetensors, or not one float32 ``(N, C, H, W)``
    tensor of finite values in [0, 1] in canonical encoding."""


def _meta() -> str:
    return json.dumps({"format": PROBE_FORMAT}, sort_keys=True, separators=(",", ":"))


def encode_probe(images: torch.Tensor | np.ndarray) -> bytes:
    """Canonical bytes of a probe batch (the blob whose sha256 the terms commit); the batch must
    pass the checks :func:`decode_probe` makes."""
    arr = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
    tensor = torch.from_numpy(arr.copy())
    _check(tensor)
    return _st_save({PROBE_KEY: tensor}, metadata={_METADATA_KEY: _meta()})


def decode_probe(
    blob: bytes, *, channels: int | None = None, size: int | None = None
) -> torch.Tensor:
    """The probe batch of an untrusted blob: float32 ``(N, C, H, W)``. ``channels`` and ``size``
    (pixels a side), when given, are what the model takes: a probe of another shape fails
    here rather than inside the model."""
    if len(blob) > MAX_PROBE_BYTES:
        raise InvalidProbe(f"probe blob is {len(blob)} bytes, over the limit of {MAX_PROBE_BYTES}")
    try:
        tensors = _st_load(bytes(blob))
    except Exception as exc:  # safetensors raises its own SafetensorError (and others) on junk
        raise InvalidProbe(f"probe blob is not safetensors: {exc}") from None
    if set(tensors) != {PROBE_KEY}:
        raise InvalidProbe(f"probe blob must hold one tensor {PROBE_KEY!r}, got {sorted(tensors)}")
    tensor = tensors[PROBE_KEY]
    if tensor.dtype != torch.float32:
        raise InvalidProbe(f"probe images must be float32, got {tensor.dtype}")
    _check(tensor)
    _, c, h, w = tensor.shape
    if channels is not None and c != channels:
        raise InvalidProbe(f"probe images have {c} channel(s); the model takes {channels}")
    if size is not None and (h, w) != (size, size):
        raise InvalidProbe(f"probe images are {h}x{w}; the model takes {size}x{size}")
    if _st_save({PROBE_KEY: tensor}, metadata={_METADATA_KEY: _meta()}) != bytes(blob):
        raise InvalidProbe("probe blob is not in canonical encoding (metadata or layout)")
    return tensor


def _check(tensor: torch.Tensor) -> None:
    if tensor.ndim != 4:
        raise InvalidProbe(f"probe must be an (N, C, H, W) batch, got shape {tuple(tensor.shape)}")
    n, c, h, w = (int(x) for x in tensor.shape)
    if not 1 <= n <= MAX_PROBE_IMAGES:
        raise InvalidProbe(f"probe must hold 1 to {MAX_PROBE_IMAGES} images, got {n}")
    if c not in _CHANNELS:
        raise InvalidProbe(f"probe images must have 1 or 3 channels, got {c}")
    if h < 1 or w < 1 or n * c * h * w * 4 > MAX_PROBE_BYTES:
        raise InvalidProbe(
            f"probe of shape {(n, c, h, w)} is empty or over {MAX_PROBE_BYTES} bytes"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidProbe("probe images contain NaN or infinite values")
    low, high = float(tensor.min()), float(tensor.max())
    if not (math.isfinite(low) and low >= 0.0 and high <= 1.0):
        raise InvalidProbe(f"probe values must lie in [0, 1], got {low}..{high}")
