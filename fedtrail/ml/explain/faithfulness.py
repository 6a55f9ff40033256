"""Faithfulness of attribution heatmaps: do the pixels a map ranks first matter to the model?

A heatmap can look plausible to a clinician and still not say what the model uses. Deletion and
insertion (Petsiuk et al., RISE, 2018) test it against the model itself:

deletion
    the pixels are removed in the map's order, most attributed first, ``steps`` equal shares of
    the image at a time (10 steps: 10% of the pixels per step), each removed pixel set to the
    ``baseline`` in every channel; the curve is the probability of the explained class after
    each step (``steps + 1`` points, the first on the intact image). A faithful map makes the
    probability fall fast: the **lower** the area under the curve, the better.
insertion
    the reverse: from the all-baseline image the pixels come back in the map's order; the
    probability should rise fast: the **higher** the area, the better.

Areas are trapezoids over the removed (inserted) fraction 0..1, so they lie in [0, 1]. A
random ordering is the yardstick (:func:`random_heatmaps`): a method whose deletion area is not
clearly below the random one's explains no better than chance on these images. Ties in a map
(Grad-CAM's zero regions, LIME's cells) are broken by a seeded random order, so a map that says
nothing about some pixels is scored as random there, never by pixel position.

Everything is deterministic: the orderings come from numpy generators seeded with ``seed``; the
forward passes run in eval mode under ``torch.no_grad`` in batches of ``batch_size`` (the same
numbers for the same model, inputs, settings and torch thread count). The model is left as it
was (training flags restored, weights untouched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.explain.attribution import _eval_mode, _model_device

__all__ = [
    "STEPS",
    "Faithfulness",
    "area",
    "measure_faithfulness",
    "perturbation_curves",
    "pixel_order",
    "random_heatmaps",
]

STEPS: Final = 10
"""Default number of steps: 10% of the pixels per step."""

Mode = Literal["deletion", "insertion"]


@dataclass(frozen=True)
class Faithfulness:
    """Mean deletion and insertion areas of one method's maps over a set of images, and of a
    random ordering of the same images (the chance level). Lower deletion, higher insertion:
    more faithful."""

    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    images: int
    steps: int

    def to_json(self) -> dict[str, float | int]:
        """The round log's ``explanations.faithfulness`` object (areas rounded to 6 digits)."""
        return {
            "deletion_auc": round(self.deletion_auc, 6),
            "insertion_auc": round(self.insertion_auc, 6),
            "random_deletion_auc": round(self.random_deletion_auc, 6),
            "random_insertion_auc": round(self.random_insertion_auc, 6),
            "images": self.images,
            "steps": self.steps,
        }


def random_heatmaps(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(n, height, width)`` uniform noise maps from a generator seeded with ``seed``: a random
    pixel ordering, the chance level of deletion and insertion."""
    gen = np.random.default_rng(seed)
    maps: np.ndarray = gen.random((n, height, width))
    return maps


def pixel_order(heatmaps: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(N, H*W)`` pixel indices of each map, most attributed first (by absolute value); equal
    values in a seeded random order."""
    heat = np.abs(np.asarray(heatmaps, dtype=np.float64))
    if heat.ndim != 3 or heat.shape[0] == 0:
        raise ConfigError(f"heatmaps must be a non-empty (N, H, W) array, got {heat.shape}")
    if not np.isfinite(heat).all():
        raise ConfigError("heatmaps contain NaN or infinite values")
    flat = heat.reshape(heat.shape[0], -1)
    tie = np.random.default_rng(seed).random(flat.shape)
    # lexsort sorts by the last key first: attribution descending, then the random tie-break
    order: np.ndarray = np.lexsort((tie, -flat), axis=1)
    return order


def perturbation_curves(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    heatmaps: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    mode: Mode = "deletion",
    steps: int = STEPS,
    baseline: float = 0.0,
    bias: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """``(N, steps + 1)`` float64 probabilities of each image's target class as its pixels are
    removed (``mode="deletion"``) or inserted (``"insertion"``) in the heatmap's order.

    The probability is ``softmax(logits + bias)`` (``bias``: the round's calibrated intercept;
    None for none), the one the decision and its caption use."""
    if mode not in ("deletion", "insertion"):
        raise ConfigError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not math.isfinite(baseline):
        raise ConfigError(f"baseline must be finite, got {baseline!r}")
    x = torch.as_tensor(np.asarray(inputs) if isinstance(inputs, np.ndarray) else inputs)
    x = x.detach().to("cpu", torch.float32)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ConfigError(f"inputs must be a non-empty (N, C, H, W) batch, got {tuple(x.shape)}")
    n, c, h, w = (int(d) for d in x.shape)
    heat = np.asarray(heatmaps)
    if heat.shape != (n, h, w):
        raise ConfigError(f"heatmaps {heat.shape} do not fit inputs {(n, c, h, w)}")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if t.shape != (n,):
        raise ConfigError(f"targets must be {n} class ids, got {t.shape}")
    shift: torch.Tensor | None = None
    if bias is not None:
        if not all(math.isfinite(float(b)) for b in bias):
            raise ConfigError(f"bias must be finite numbers, got {bias!r}")
        shift = torch.tensor([float(b) for b in bias], dtype=torch.float64)

    order = pixel_order(heat, seed)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None, :], axis=1)
    counts = np.rint(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    # removed[n, s, p]: pixel p is changed at step s (its rank is below that step's count)
    changed = torch.from_numpy(rank.reshape(n, 1, 1, h, w) < counts.reshape(1, -1, 1, 1, 1))
    device = _model_device(model)
    probs = np.empty((n, steps + 1), dtype=np.float64)
    per_chunk = max(1, batch_size // (steps + 1))
    with _eval_mode(model), torch.no_grad():
        for start in range(0, n, per_chunk):
            stop = min(start + per_chunk, n)
            img = x[start:stop, None]  # (k, 1, C, H, W)
            fill = torch.full_like(img, baseline)
            mask = changed[start:stop]
            if mode == "deletion":
                batch = torch.where(mask, fill, img)
            else:
                batch = torch.where(mask, img, fill)
            flat = batch.reshape(-1, c, h, w).to(device)
            logits = torch.cat(
                [model(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)]
            ).to("cpu", torch.float64)
            if logits.ndim != 2:
                raise ConfigError(f"the model must return (N, classes) logits, got {logits.shape}")
            if shift is not None:
                if shift.shape[0] != logits.shape[1]:
                    raise ConfigError(f"bias must have {logits.shape[1]} numbers")
                logits = logits + shift
            if int(t[start:stop].min()) < 0 or int(t[start:stop].max()) >= logits.shape[1]:
                raise ConfigError(f"targets must lie in [0, {logits.shape[1] - 1}]")
            p = torch.softmax(logits, dim=1).reshape(stop - start, steps + 1, -1)
            idx = torch.from_numpy(t[start:stop]).view(-1, 1, 1).expand(-1, steps + 1, 1)
            probs[start:stop] = p.gather(2, idx)[..., 0].numpy()
    return probs


def area(curves: np.ndarray) -> np.ndarray:
    """``(N,)`` trapezoid area under each ``(N, steps + 1)`` curve over the fraction 0..1."""
    y = np.asarray(curves, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ConfigError(f"curves must be (N, steps + 1) with steps >= 1, got {y.shape}")
    steps = y.shape[1] - 1
    out: np.ndarray = (y[:, :-1] + y[:, 1:]).sum(axis=1) / (2 * steps)
    return out


def measure_faithfulness(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    heatmaps: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    steps: int = STEPS,
    baseline: float = 0.0,
    bias: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> Faithfulness:
    """Mean deletion and insertion areas of ``heatmaps`` on ``inputs`` for ``targets``, and of
    a random ordering (:func:`random_heatmaps` seeded with ``seed``) of the same images."""
    heat = np.asarray(heatmaps)
    if heat.ndim != 3:
        raise ConfigError(f"heatmaps must be (N, H, W), got {heat.shape}")
    n, h, w = heat.shape
    rand = random_heatmaps(n, h, w, seed=seed)

    def mean_area(maps: np.ndarray, mode: Mode) -> float:
        curves = perturbation_curves(
            model,
            inputs,
            maps,
            targets,
            mode=mode,
            steps=steps,
            baseline=baseline,
            bias=bias,
            seed=seed,
            batch_size=batch_size,
        )
        return float(area(curves).mean())

    return Faithfulness(
        deletion_auc=mean_area(heat, "deletion"),
        insertion_auc=mean_area(heat, "insertion"),
        random_deletion_auc=mean_area(rand, "deletion"),
        random_insertion_auc=mean_area(rand, "insertion"),
        images=int(heat.shape[0]),
        steps=steps,
    )
