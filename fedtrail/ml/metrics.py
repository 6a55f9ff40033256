"""Classification metrics: cross-entropy loss, accuracy, ROC AUC, F1, balanced accuracy, expected
calibration error; the fitted intercept and the calibrated decision it gives.

Everything is computed in float64 numpy, without scikit-learn. The AUC is the Mann-Whitney
statistic with average ranks for tied scores, which is exactly scikit-learn's
``roc_auc_score`` (the area under the ROC curve with linear interpolation across ties).

:func:`fit_intercept` fits a per-class bias added to a model's logits so that the class-balanced
log loss on a labelled split is minimal (a fixed number of damped Newton steps from zero, in
float64: deterministic). Adding it removes any mismatch between the model's label prior and the
split's (prior correction, Saerens et al. 2002; logit adjustment, Menon et al. ICLR 2021), so
the remaining loss measures how well the model *ranks and separates* the classes, and the biased
logits give a calibrated decision threshold for F1.

**Calibrated decision.** :func:`binary_metrics` and :func:`evaluate` take that bias (fitted on the
validation split, applied to any other split) and report F1 and balanced accuracy of the decision
``argmax(logits + bias)``; for two classes that is "class 1 when ``p1 > threshold``" with
``threshold = sigmoid(-(b1 - b0))`` (:func:`decision_threshold`). The intercept is used rather
than the threshold that maximises F1 on the validation split because it is the minimiser of a
smooth convex loss (unique, stable on a few hundred images, no ties to break), it is the
balanced-error decision (prior-corrected posterior), it is what the valuation already fits, and
it is multi-class as it stands (a bias vector); a maximum-F1 threshold is a step function of
the split that jumps between neighbouring scores, favours the split's own class ratio, and has
no multi-class form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset

__all__ = [
    "ECE_BINS",
    "INTERCEPT_ITERATIONS",
    "CalibratedMetrics",
    "InterceptFit",
    "Metrics",
    "balanced_accuracy",
    "balanced_log_loss",
    "binary_metrics",
    "class_f1",
    "decision_threshold",
    "evaluate",
    "evaluate_calibrated",
    "expected_calibration_error",
    "fit_intercept",
    "predict_logits",
    "roc_auc",
]

_EPS = 1e-12


@dataclass(frozen=True)
class Metrics:
    """Quality of a binary classifier on ``n`` samples.

    ``loss``: mean cross-entropy (nats); ``accuracy``: fraction predicted right; ``auc``: ROC AUC
    of the positive class (NaN when the labels hold only one class, where it is undefined);
    ``f1``: F1 of the positive class (1), 0.0 when there are neither positive labels nor positive
    predictions. These three use the plain decision (class 1 when ``z1 > z0`` or ``p > 0.5``).

    Added later, with defaults so older constructors keep working: ``balanced_accuracy``: mean
    over the classes present of the recall, plain decision; ``ece``: expected calibration error
    of the predicted class's probability (:func:`expected_calibration_error`, 10 bins);
    ``threshold``: probability of class 1 above which the calibrated decision predicts it
    (:func:`decision_threshold` of the bias given; NaN without one); ``f1_calibrated`` and
    ``balanced_accuracy_calibrated``: F1 and balanced accuracy of that decision (NaN without a
    bias).
    """

    loss: float
    accuracy: float
    auc: float
    f1: float
    n: int
    balanced_accuracy: float = math.nan
    ece: float = math.nan
    threshold: float = math.nan
    f1_calibrated: float = math.nan
    balanced_accuracy_calibrated: float = math.nan


@dataclass(frozen=True)
class CalibratedMetrics(Metrics):
    """:class:`Metrics` with the bias of their calibrated decision (:func:`evaluate_calibrated`):
    one number per class, None when none could be fitted (``threshold`` is then NaN)."""

    bias: tuple[float, ...] | None = None


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


ECE_BINS: Final = 10
"""Equal-width confidence bins of :func:`expected_calibration_error`."""


def _labels_1d(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    y = _as_numpy(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"labels must be (N,), got {y.shape}")
    return y


def class_f1(
    predictions: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """F1 of every class ``0..num_classes-1`` (one-vs-rest) for predicted class ids: ``2TP /
    (2TP + FP + FN)``, 0.0 for a class with neither labels nor predictions. The positive-class F1
    of a binary classifier is entry 1; the macro F1 is the mean."""
    pred = _as_numpy(predictions).ravel().astype(np.int64)
    y = _labels_1d(labels).astype(np.int64)
    if pred.shape != y.shape:
        raise ValueError(f"{pred.size} predictions but {y.size} labels")
    out = np.zeros(num_classes)
    for c in range(num_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        denom = 2 * tp + fp + fn
        out[c] = 2 * tp / denom if denom else 0.0
    return out


def balanced_accuracy(
    predictions: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> float:
    """Mean over the classes present in ``labels`` of the fraction of that class predicted right
    (the recall), so a model that always predicts the majority class scores ``1 / classes``
    whatever the class ratio (scikit-learn's ``balanced_accuracy_score``)."""
    pred = _as_numpy(predictions).ravel().astype(np.int64)
    y = _labels_1d(labels).astype(np.int64)
    if pred.shape != y.shape:
        raise ValueError(f"{pred.size} predictions but {y.size} labels")
    if y.size == 0:
        raise ValueError("no samples to compute balanced accuracy on")
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return math.fsum(recalls) / len(recalls)


def expected_calibration_error(
    probabilities: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    bins: int = ECE_BINS,
) -> float:
    """Expected calibration error of the predicted class's probability (Guo et al. ICML 2017):
    ``sum_b (n_b / N) |accuracy_b - mean confidence_b|`` over ``bins`` equal-width bins of the
    confidence, bin ``b`` holding ``edges[b] < confidence <= edges[b + 1]`` with ``edges =
    linspace(0, 1, bins + 1)`` (the first bin also holds 0). ``probabilities`` is ``(N, K)``
    class probabilities (predicted class: argmax, first on ties) or ``(N,)`` probabilities of
    class 1 (predicted: 1 when ``p > 0.5``, confidence ``max(p, 1 - p)``)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be a positive integer, got {bins!r}")
    p = _as_numpy(probabilities).astype(np.float64)
    y = _labels_1d(labels).astype(np.int64)
    if p.shape[:1] != y.shape or y.size == 0:
        raise ValueError(f"{p.shape[0] if p.ndim else 0} probabilities but {y.size} labels")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must lie in [0, 1]")
    if p.ndim == 1:
        pred = (p > 0.5).astype(np.int64)
        conf = np.where(pred == 1, p, 1.0 - p)
    elif p.ndim == 2:
        pred = p.argmax(axis=1)
        conf = p[np.arange(y.size), pred]
    else:
        raise ValueError(f"expected (N, K) or (N,) probabilities, got shape {p.shape}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")
    correct = (pred == y).astype(np.float64)
    total = 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if count:
            gap = abs(float(correct[members].mean()) - float(conf[members].mean()))
            total += count / y.size * gap
    return total


def decision_threshold(bias: Sequence[float]) -> float:
    """The probability of class 1 (of the model's own softmax) above which the decision
    ``argmax(logits + bias)`` of a two-class model predicts class 1: ``1 / (1 + exp(b1 - b0))``
    (0.5 for a zero bias)."""
    if len(bias) != 2:
        raise ValueError(f"a decision threshold needs two biases, got {len(bias)}")
    gap = float(bias[1]) - float(bias[0])
    if not math.isfinite(gap):
        raise ValueError("biases must be finite")
    # 1 / (1 + e^gap) without overflow for large gaps
    return math.exp(-gap) / (1.0 + math.exp(-gap)) if gap >= 0 else 1.0 / (1.0 + math.exp(gap))


def binary_metrics(
    logits_or_probs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    bias: Sequence[float] | None = None,
) -> Metrics:
    """Metrics of a binary classifier's outputs against 0/1 labels.

    ``logits_or_probs`` is either ``(N, 2)`` logits (the model's raw outputs; softmax is applied
    for the loss and the calibration error, the logit margin ``z1 - z0`` ranks for the AUC, so
    saturated probabilities never create spurious ties) or ``(N,)`` probabilities of class 1 in
    ``[0, 1]`` (loss = binary cross-entropy clipped at 1e-12). Class 1 is predicted when ``z1 >
    z0`` or ``p > 0.5``. With ``bias`` (two numbers, e.g. :func:`fit_intercept`'s on the
    validation split), the calibrated decision is ``z1 + b1 > z0 + b0``, for probabilities ``p >``
    :func:`decision_threshold`.
    """
    out = _as_numpy(logits_or_probs).astype(np.float64)
    y_raw = _labels_1d(labels)
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
    threshold = math.nan if bias is None else decision_threshold(bias)
    pred_cal: np.ndarray | None = None
    if out.ndim == 2 and out.shape[1] == 2:
        # log-softmax, numerically stable
        shifted = out - out.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(n), y].mean())
        scores = out[:, 1] - out[:, 0]
        pred = scores > 0
        probs = np.exp(log_probs)
        if bias is not None:
            pred_cal = scores > float(bias[0]) - float(bias[1])
    elif out.ndim == 1:
        if out.min() < 0 or out.max() > 1:
            raise ValueError("1-D inputs are probabilities of class 1 and must lie in [0, 1]")
        p = np.clip(out, _EPS, 1 - _EPS)
        loss = float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
        scores = out
        pred = out > 0.5
        probs = out
        if bias is not None:
            pred_cal = out > threshold
    else:
        raise ValueError(f"expected (N, 2) logits or (N,) probabilities, got shape {out.shape}")
    truth = y == 1
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    denom = 2 * tp + fp + fn
    f1_cal = bacc_cal = math.nan
    if pred_cal is not None:
        f1_cal = float(class_f1(pred_cal, y, 2)[1])
        bacc_cal = balanced_accuracy(pred_cal, y)
    return Metrics(
        loss=loss,
        accuracy=float((pred == truth).mean()),
        auc=roc_auc(scores, y),
        f1=2 * tp / denom if denom else 0.0,
        n=n,
        balanced_accuracy=balanced_accuracy(pred, y),
        ece=expected_calibration_error(probs, y),
        threshold=threshold,
        f1_calibrated=f1_cal,
        balanced_accuracy_calibrated=bacc_cal,
    )


def predict_logits(model: nn.Module, dataset: ImageDataset, *, batch_size: int = 256) -> np.ndarray:
    """The model's raw outputs ``(N, classes)`` on ``dataset`` as float64, in eval mode without
    gradients.

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
    out: np.ndarray = torch.cat(chunks).numpy()
    return out


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 256,
    bias: Sequence[float] | None = None,
) -> Metrics:
    """Metrics of ``model`` (2 output logits) on ``dataset`` (see :func:`predict_logits`), with
    the calibrated decision of ``bias`` when given (see :func:`binary_metrics`)."""
    logits = predict_logits(model, dataset, batch_size=batch_size)
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ConfigError(
            f"binary metrics need a model with 2 output logits, got outputs {tuple(logits.shape)}"
        )
    try:
        return binary_metrics(logits, dataset.labels, bias=bias)
    except ValueError as exc:
        raise ConfigError(f"cannot evaluate: {exc}") from exc


def evaluate_calibrated(
    model: nn.Module, dataset: ImageDataset, *, batch_size: int = 256
) -> CalibratedMetrics:
    """Metrics of ``model`` on ``dataset`` with the calibrated decision of the intercept fitted
    on that same dataset (:func:`fit_intercept`, one inference pass): what the aggregator
    records for a global model on its validation split each round, and what an auditor holding
    that split recomputes. Without a bias (``threshold`` NaN) when ``dataset`` holds one class
    only, where no intercept can be fitted. The calibrated figures are in-sample (the threshold
    is fitted on the split it is scored on): slightly optimistic for another split."""
    logits = predict_logits(model, dataset, batch_size=batch_size)
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ConfigError(
            f"binary metrics need a model with 2 output logits, got outputs {tuple(logits.shape)}"
        )
    try:
        try:
            bias: tuple[float, ...] | None = fit_intercept(logits, dataset.labels).bias
        except ValueError:  # one class only: no intercept to fit
            bias = None
        m = binary_metrics(logits, dataset.labels, bias=bias)
    except ValueError as exc:
        raise ConfigError(f"cannot evaluate: {exc}") from exc
    return CalibratedMetrics(**asdict(m), bias=bias)


INTERCEPT_ITERATIONS: Final = 16
"""Damped Newton steps of :func:`fit_intercept` (measured: converged to 1e-12 within 8 on
SmallCNN logits, also for badly overshooting early-round models)."""

_MAX_HALVINGS = 40


@dataclass(frozen=True)
class InterceptFit:
    """A per-class bias for a model's logits and the class-balanced log loss it achieves."""

    bias: tuple[float, ...]
    """Added to the logits; 0 for the first class present (softmax is shift-invariant) and for
    classes absent from the labels."""
    loss: float
    """Class-balanced mean cross-entropy (nats) of ``logits + bias``."""


def _logits_and_labels(
    logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    z = _as_numpy(logits).astype(np.float64)
    y = _as_numpy(labels).ravel()
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"expected (N, classes) logits with at least 2 classes, got {z.shape}")
    if z.shape[0] != y.size or y.size == 0:
        raise ValueError(f"{z.shape[0]} logit rows but {y.size} labels")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or infinity")
    if not np.isin(y, np.arange(z.shape[1])).all():
        raise ValueError(f"labels must be class ids in 0..{z.shape[1] - 1}")
    return z, y.astype(np.int64)


def _balanced_weights(y: np.ndarray, k: int) -> np.ndarray:
    """Per-sample weights: every present class weighs the same in total, the weights sum to 1."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    present = int((counts > 0).sum())
    weights: np.ndarray = 1.0 / (present * counts[y])
    return weights


def _weighted_loss(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -math.fsum((w * log_probs[np.arange(y.size), y]).tolist())
    return loss, np.exp(log_probs)


def balanced_log_loss(
    logits: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    bias: tuple[float, ...] | None = None,
) -> float:
    """Class-balanced mean cross-entropy of ``(N, classes)`` logits (plus ``bias``): the mean of
    the per-class mean losses over the classes present, so a class's weight does not depend on
    its frequency."""
    z, y = _logits_and_labels(logits, labels)
    if bias is not None:
        if len(bias) != z.shape[1]:
            raise ValueError(f"{len(bias)} biases for {z.shape[1]} classes")
        z = z + np.asarray(bias, dtype=np.float64)
    return _weighted_loss(z, y, _balanced_weights(y, z.shape[1]))[0]


def fit_intercept(
    logits: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    iterations: int = INTERCEPT_ITERATIONS,
) -> InterceptFit:
    """The per-class bias minimising the class-balanced log loss of ``logits + bias`` on
    ``labels`` (see the module docstring): ``iterations`` Newton steps from zero, each halved
    until the loss does not increase (at most 40 halvings; a step that never helps is skipped),
    in float64. The loss is convex in the bias, so this is the global minimum up to the last
    digits; deterministic for its inputs. Needs at least two classes present."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ConfigError(f"iterations must be a non-negative integer, got {iterations!r}")
    z, y = _logits_and_labels(logits, labels)
    k = z.shape[1]
    present = np.flatnonzero(np.bincount(y, minlength=k) > 0)
    if present.size < 2:
        raise ValueError("fitting an intercept needs at least two classes in the labels")
    free = present[1:]
    w = _balanced_weights(y, k)
    onehot = np.eye(k)[y][:, free]
    bias = np.zeros(k)
    loss, p = _weighted_loss(z, y, w)
    for _ in range(iterations):
        pf = p[:, free]
        grad = (w[:, None] * (pf - onehot)).sum(axis=0)
        hess = np.diag((w[:, None] * pf).sum(axis=0)) - (w[:, None] * pf).T @ pf
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(free.size), grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        for _ in range(_MAX_HALVINGS):
            trial = bias.copy()
            trial[free] -= t * step
            trial_loss, trial_p = _weighted_loss(z + trial, y, w)
            if trial_loss <= loss:
                bias, loss, p = trial, trial_loss, trial_p
                break
            t /= 2.0
    return InterceptFit(bias=tuple(float(b) for b in bias), loss=loss)
