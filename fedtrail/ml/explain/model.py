"""Explanations of a global model on a probe set, as PNG overlays for clinicians and auditors.

Shared by the aggregator (per-round explanations referenced from the explanation log) and the
`fedtrail explain` command. The probe set is a fixed, class-balanced slice of a validation split,
so every round is explained on the same images and its hash can be published.
:func:`explain_methods` also measures each method's faithfulness on those images (deletion and
insertion areas), for the round log and the clinician page.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedtrail.errors import ConfigError, FedtrailError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.explain.attribution import Explainer, overlay_png
from fedtrail.ml.explain.faithfulness import STEPS, Faithfulness, measure_faithfulness
from fedtrail.ml.metrics import decide, predict_logits
from fedtrail.ml.models import ModelSpec, load_federated


class UnexplainableModel(FedtrailError):
    """A model whose outputs on the images are NaN or infinite (weights that overflow): it has
    no decision to explain. A global model or a blob named by CID is someone else's choice, so
    this is refused by name rather than captioned "predicted normal (nan%)" or left to the
    decision rule's ``ValueError``."""


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
    bias: Sequence[float] | None = None,
    class_names: Sequence[str] = (),
) -> list[Overlay]:
    """Heatmap overlays of ``state``'s decisions on ``images``, with prediction and confidence.

    Without ``bias`` the decision is the model's most probable class (for two classes:
    probability above 0.5). With ``bias`` (one number per class, the intercept the round log
    records) it is the calibrated decision ``argmax(logits + bias)``, the heatmap explains
    that class, and the confidence is its probability after the bias (``softmax(logits +
    bias)``), so a caption never shows a predicted class below 50% in a two-class model."""
    results = explain_methods(
        state,
        spec,
        images,
        methods=(method,),
        seed=seed,
        title=title,
        bias=bias,
        class_names=class_names,
        faithfulness_steps=None,
    )
    return list(results[0].overlays)


@dataclass(frozen=True)
class MethodExplanation:
    """One method's overlays of a set of images and, when measured, how faithful its heatmaps
    are to the model there (deletion/insertion areas, see :mod:`.faithfulness`)."""

    method: str
    overlays: tuple[Overlay, ...]
    faithfulness: Faithfulness | None


def explain_methods(
    state: dict[str, torch.Tensor],
    spec: ModelSpec,
    images: ImageDataset,
    *,
    methods: Sequence[str] = ("integrated_gradients",),
    seed: int = 0,
    title: str = "",
    bias: Sequence[float] | None = None,
    class_names: Sequence[str] = (),
    faithfulness_steps: int | None = STEPS,
) -> list[MethodExplanation]:
    """:func:`explain_model` for each of ``methods`` (one decision for all: the same
    predictions, classes explained and captions), plus each method's faithfulness on these
    images for the explained class at the same decision (``faithfulness_steps`` None: not
    measured). With more than one method the caption is shorter and names the method
    (``"<title><method>: <class> (<confidence>)"``; the truth is in each :class:`Overlay`)."""
    if not methods:
        raise ConfigError("name at least one explanation method")
    model = spec.build()
    load_federated(model, state)
    inputs = torch.tensor(np.array(images.images, dtype=np.float32))
    logits = predict_logits(model, images)
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits).all(axis=1)).sum())
        raise UnexplainableModel(
            f"the model's outputs are NaN or infinite on {bad} of {len(images)} images (its "
            "weights overflow): it has no decision to explain"
        )
    predictions: np.ndarray | None = None
    confidences: np.ndarray | None = None
    if bias is not None:
        if len(bias) != spec.num_classes or not all(math.isfinite(float(b)) for b in bias):
            raise ConfigError(f"bias must be {spec.num_classes} finite numbers, got {bias!r}")
        z = logits + np.asarray(bias, dtype=np.float64)
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        predictions = decide(z)  # the one decision rule (bias already added)
        confidences = probs[np.arange(len(images)), predictions]
    out = []
    for method in methods:
        explanation = Explainer(model, method, seed=seed).explain(inputs, target=predictions)
        overlays = []
        for i in range(len(images)):
            pred = int(explanation.predictions[i] if predictions is None else predictions[i])
            conf = float(explanation.confidences[i] if confidences is None else confidences[i])
            label = int(images.labels[i])
            if len(methods) > 1:  # short enough to fit above the image with the method
                caption = f"{title}{method}: {_name(class_names, pred)} ({conf:.0%})"
            else:
                caption = (
                    f"{title}predicted {_name(class_names, pred)} ({conf:.0%}), "
                    f"truth {_name(class_names, label)}"
                )
            png = overlay_png(images.images[i], explanation.heatmaps[i], caption)
            overlays.append(
                Overlay(png=png, caption=caption, label=label, prediction=pred, confidence=conf)
            )
        measured = None
        if faithfulness_steps is not None:
            measured = measure_faithfulness(
                model,
                inputs,
                explanation.heatmaps,
                explanation.targets,
                steps=faithfulness_steps,
                bias=bias,
                seed=seed,
            )
        out.append(MethodExplanation(method, tuple(overlays), measured))
    return out


def _name(class_names: Sequence[str], class_id: int) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"
