"""Explanations of a global model on a probe set, as PNG overlays for clinicians and auditors.

Shared by the aggregator (per-round explanations referenced from the explanation log) and the
`fedtrail explain` command. The probe set is a fixed, class-balanced slice of a validation split,
so every round is explained on the same images and its hash can be published.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.explain.attribution import Explainer, overlay_png
from fedtrail.ml.models import ModelSpec

CLASS_NAMES = {0: "normal", 1: "pneumonia"}


def probe_set(validation: ImageDataset, per_class: int = 4) -> ImageDataset:
    """The first ``per_class`` images of each class, in index order (deterministic)."""
    picks: list[int] = []
    for label in sorted(set(int(x) for x in validation.labels)):
        idx = np.flatnonzero(validation.labels == label)[:per_class]
        picks.extend(int(i) for i in idx)
    return validation.subset(np.asarray(sorted(picks), dtype=np.int64))


@dataclass(frozen=True)
class Overlay:
    png: bytes
    caption: str
    label: int
    prediction: int
    confidence: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()


def explain_model(
    state: dict[str, torch.Tensor],
    spec: ModelSpec,
    images: ImageDataset,
    *,
    method: str = "integrated_gradients",
    seed: int = 0,
    title: str = "",
) -> list[Overlay]:
    """Heatmap overlays of ``state``'s decisions on ``images``, with prediction and confidence."""
    model = spec.build()
    model.load_state_dict(state)
    inputs = torch.tensor(np.array(images.images, dtype=np.float32))
    explanation = Explainer(model, method, seed=seed).explain(inputs)
    out = []
    for i in range(len(images)):
        pred = int(explanation.predictions[i])
        conf = float(explanation.confidences[i])
        label = int(images.labels[i])
        caption = (
            f"{title}predicted {CLASS_NAMES.get(pred, pred)} ({conf:.0%}), "
            f"truth {CLASS_NAMES.get(label, label)}"
        )
        png = overlay_png(images.images[i], explanation.heatmaps[i], caption)
        out.append(Overlay(png=png, caption=caption, label=label, prediction=pred, confidence=conf))
    return out
