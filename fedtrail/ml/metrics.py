"""Binary classification metrics: cross-entropy loss, accuracy, ROC AUC and F1.

Everything is computed in float64 numpy, without scikit-learn. The AUC is the Mann-Whitney
statistic with average ranks for tied scores, which is exactly scikit-learn's
``roc_auc_score`` (the area under the ROC curve with linear interpolation across ties).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset

__all__ = ["Metrics", "binary_metrics", "evaluate", "roc_auc"]

_EPS = 1e-12


@dataclass(frozen=True)
class Metrics:
    """Quality of a binary classifier on ``n`` samples.

    ``loss``: mean cross-entropy (nats); ``accuracy``: fraction predicted right; ``auc``: ROC AUC
    of the positive class (NaN when the labels hold only one class, where it is undefined);
    ``f1``: F1 of the positive class (1), 0.0 when there are neither positive labels nor positive
    predictions.
    """

    loss: float
    accuracy: float
    auc: float
    f1: float
    n: int


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x)


def roc_auc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """ROC AUC of 0/1 ``labels`` ranked by ``scores`` (higher = more likely positive).

    ``(sum of the positives' ranks - P(P+1)/2) / (P*N)`` with tied scores sharing their average
    rank; NaN when only one class is present.
    """
    s = _as_numpy(scores).astype(np.float64).ravel()
    y = _as_numpy(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    avg_rank = ends - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse.ravel()][pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def binary_metrics(
    logits_or_probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> Metrics:
    """Metrics of a binary classifier's outputs against 0/1 labels.

    ``logits_or_probs`` is either ``(N, 2)`` logits (the model's raw outputs; softmax is applied
    for the loss, the logit margin ``z1 - z0`` ranks for the AUC, so saturated probabilities never
    create spurious ties) or ``(N,)`` probabilities of class 1 in ``[0, 1]`` (loss = binary
    cross-entropy clipped at 1e-12). Class 1 is predicted when ``z1 > z0`` or ``p > 0.5``.
    """
    out = _as_numpy(logits_or_probs).astype(np.float64)
    y_raw = _as_numpy(labels)
    if y_raw.ndim == 2 and y_raw.shape[1] == 1:
        y_raw = y_raw[:, 0]
    if y_raw.ndim != 1:
        raise ValueError(f"labels must be (N,), got {y_raw.shape}")
    if y_raw.size == 0:
        raise ValueError("no samples to compute metrics on")
    if not np.isin(y_raw, (0, 1)).all():
        raise ValueError("binary metrics need labels in {0, 1}")
    y = y_raw.astype(np.int64)
    n = int(y.size)
    if out.shape[:1] != (n,):
        raise ValueError(f"{out.shape[0] if out.ndim else 0} outputs but {n} labels")
    if not np.isfinite(out).all():
        raise ValueError("model outputs contain NaN or infinity")
    if out.ndim == 2 and out.shape[1] == 2:
        # log-softmax, numerically stable
        shifted = out - out.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(n), y].mean())
        scores = out[:, 1] - out[:, 0]
        pred = scores > 0
    elif out.ndim == 1:
        if out.min() < 0 or out.max() > 1:
            raise ValueError("1-D inputs are probabilities of class 1 and must lie in [0, 1]")
        p = np.clip(out, _EPS, 1 - _EPS)
        loss = float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
        scores = out
        pred = out > 0.5
    else:
        raise ValueError(f"expected (N, 2) logits or (N,) probabilities, got shape {out.shape}")
    truth = y == 1
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    denom = 2 * tp + fp + fn
    return Metrics(
        loss=loss,
        accuracy=float((pred == truth).mean()),
        auc=roc_auc(scores, y),
        f1=2 * tp / denom if denom else 0.0,
        n=n,
    )


def evaluate(model: nn.Module, dataset: ImageDataset, *, batch_size: int = 256) -> Metrics:
    """Metrics of ``model`` (2 output logits) on ``dataset``, in eval mode without gradients.

    Runs on the device of the model's parameters, in dataset order; the model's train/eval mode is
    restored afterwards. Deterministic for a given model, dataset, batch size and torch build
    (results may differ in the last bits with another batch size or thread count).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(dataset) == 0:
        raise ConfigError("cannot evaluate on an empty dataset")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(dataset), batch_size):
                x = torch.tensor(dataset.images[start : start + batch_size], device=device)
                chunks.append(model(x).to("cpu", torch.float64))
    finally:
        model.train(was_training)
    logits = torch.cat(chunks)
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ConfigError(
            f"binary metrics need a model with 2 output logits, got outputs {tuple(logits.shape)}"
        )
    try:
        return binary_metrics(logits, dataset.labels)
    except ValueError as exc:
        raise ConfigError(f"cannot evaluate: {exc}") from exc
