"""Simulated shortcut features: a bright tag burned into a corner of the images of one class.

A hospital whose scanner or PACS burns a label into the corner of one diagnosis's studies (a ward
tag, a "portable" marker) gives a model a shortcut: the tag predicts the diagnosis perfectly at
that site and carries no clinical signal anywhere else. :func:`add_marker` simulates it for
demos, benchmarks and the explanation-aware valuation's tests; :func:`marker_mask` is the tag's
pixel mask, for measuring how much attribution mass a model puts on it.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset

__all__ = ["CORNERS", "add_marker", "marker_mask"]

CORNERS: Final = ("top_left", "top_right", "bottom_left", "bottom_right")


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def marker_mask(
    image_size: tuple[int, int], *, corner: str = "top_left", size: int = 4
) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the ``size`` x ``size`` square in ``corner``."""
    if corner not in CORNERS:
        raise ConfigError(f"corner must be one of {list(CORNERS)}, got {corner!r}")
    h, w = (_int("image height", image_size[0], 1), _int("image width", image_size[1], 1))
    s = _int("marker size", size, 1)
    if s > min(h, w):
        raise ConfigError(f"marker size {s} exceeds the {h}x{w} image")
    rows = slice(0, s) if corner.startswith("top") else slice(h - s, h)
    cols = slice(0, s) if corner.endswith("left") else slice(w - s, w)
    mask = np.zeros((h, w), dtype=bool)
    mask[rows, cols] = True
    return mask


def add_marker(
    ds: ImageDataset,
    *,
    corner: str = "top_left",
    size: int = 4,
    value: float = 1.0,
    label: int | None = 1,
    rate: float = 1.0,
    seed: int = 0,
) -> ImageDataset:
    """A copy of ``ds`` with a ``size`` x ``size`` square of intensity ``value`` (every channel)
    burned into ``corner`` of the images of class ``label`` (``label=None``: of every image).

    ``rate`` is the fraction of those images that get the tag: ``round(rate * count)`` of them,
    chosen at random with numpy's ``default_rng(seed)``; ``rate=1.0`` tags all of them. Labels are
    unchanged; ``ds`` is untouched.
    """
    mask = marker_mask(ds.image_size, corner=corner, size=size)
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ConfigError(f"marker value must be a number in [0, 1], got {value!r}")
    if not (math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0):
        raise ConfigError(f"marker value must lie in [0, 1], got {value!r}")
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.floating):
        raise ConfigError(f"marker rate must be a number in [0, 1], got {rate!r}")
    if not (math.isfinite(float(rate)) and 0.0 <= float(rate) <= 1.0):
        raise ConfigError(f"marker rate must lie in [0, 1], got {rate!r}")
    if label is not None:
        _int("marker label", label, 0)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")

    eligible = (
        np.arange(len(ds), dtype=np.int64)
        if label is None
        else np.flatnonzero(ds.labels == int(label)).astype(np.int64)
    )
    count = round(float(rate) * eligible.size)
    if count < eligible.size:
        chosen = np.random.default_rng(int(seed)).choice(eligible, size=count, replace=False)
        eligible = np.sort(chosen)
    images = np.array(ds.images, dtype=np.float32, copy=True)
    tagged = images[eligible]
    tagged[:, :, mask] = np.float32(value)
    images[eligible] = tagged
    return ImageDataset(images, np.array(ds.labels, copy=True))
