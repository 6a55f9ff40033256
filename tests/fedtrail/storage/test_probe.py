"""The explanation check's public probe blob: canonical bytes that round-trip, and every way an
untrusted blob can be wrong (too large, not safetensors, wrong dtype, shape or values, not
canonical) refused with :class:`InvalidProbe` naming it, never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save

from fedtrail.errors import FedtrailError
from fedtrail.storage.probe import (
    MAX_PROBE_BYTES,
    MAX_PROBE_IMAGES,
    InvalidProbe,
    decode_probe,
    encode_probe,
)


def _images(n: int = 4, c: int = 1, size: int = 8) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).random((n, c, size, size), dtype=np.float32))


def _meta() -> dict[str, str]:
    return {"fedtrail": json.dumps({"format": "fedtrail.explanation-probe/1"})}


def test_a_probe_round_trips_bit_for_bit_with_one_encoding() -> None:
    images = _images()
    blob = encode_probe(images)
    assert blob == encode_probe(images.numpy().copy())  # same bytes from any container
    back = decode_probe(blob, channels=1, size=8)
    assert back.dtype == torch.float32 and torch.equal(back, images)
    assert issubclass(InvalidProbe, FedtrailError)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x00" * 16, "not safetensors"),
        (b"", "not safetensors"),
        (save({"probe": _images().double()}, metadata=_meta()), "must be float32"),
        (save({"probe": (_images() * 255).to(torch.uint8)}, metadata=_meta()), "float32"),
        (save({"probe": _images()[0]}, metadata=_meta()), "(N, C, H, W)"),
        (save({"probe": _images(c=2)}, metadata=_meta()), "1 or 3 channels"),
        (save({"probe": _images() * 2}, metadata=_meta()), "[0, 1]"),
        (save({"probe": _images(), "extra": _images()}, metadata=_meta()), "one tensor"),
        (save({"probe": _images()}, metadata={"fedtrail": "{}"}), "canonical"),
        (save({"probe": _images()}), "canonical"),
    ],
    ids=[
        "junk",
        "empty",
        "float64",
        "uint8",
        "3d",
        "two_channels",
        "out_of_range",
        "two_tensors",
        "other_metadata",
        "no_metadata",
    ],
)
def test_an_untrusted_probe_blob_is_refused_by_name(blob: bytes, message: str) -> None:
    with pytest.raises(InvalidProbe, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_probe(blob)


def test_non_finite_probe_values_are_refused() -> None:
    bad = _images()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidProbe, match="NaN or infinite"):
        decode_probe(save({"probe": bad}, metadata=_meta()))
    with pytest.raises(InvalidProbe, match="NaN or infinite"):
        encode_probe(bad)


def test_a_probe_that_does_not_fit_the_model_is_refused() -> None:
    blob = encode_probe(_images(c=3))
    with pytest.raises(InvalidProbe, match="3 channel"):
        decode_probe(blob, channels=1, size=8)
    with pytest.raises(InvalidProbe, match="8x8; the model takes 28x28"):
        decode_probe(blob, channels=3, size=28)


def test_the_size_bounds_hold_before_parsing() -> None:
    with pytest.raises(InvalidProbe, match="over the limit"):
        decode_probe(b"\x00" * (MAX_PROBE_BYTES + 1))
    with pytest.raises(InvalidProbe, match=f"1 to {MAX_PROBE_IMAGES} images"):
        encode_probe(torch.zeros(MAX_PROBE_IMAGES + 1, 1, 2, 2))
