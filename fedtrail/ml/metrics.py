"""Classification metrics for K >= 2 classes: cross-entropy loss, accuracy, ROC AUC, F1, balanced
accuracy, per-class recall, expected calibration error; the fitted intercept and the calibrated
decision it gives.

Everything is computed in float64 numpy, without scikit-learn. The AUC is the Mann-Whitney
statistic with average ranks for tied scores, which is exactly scikit-learn's
``roc_auc_score`` (the area under the ROC curve with linear interpolation across ties).

**Two classes or more.** :func:`classification_metrics` takes ``(N, K)`` logits. For K = 2 the
figures are those of a binary classifier of class 1 (AUC ranked by the logit margin ``z1 -
z0``, F1 of class 1). For K > 2, ``auc`` is the macro one-vs-rest AUC (:func:`macro_roc_auc`:
the mean over the classes with both positives and negatives in the labels, each ranked by its
softmax probability; scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")`` when
every class is present) and ``f1`` the macro F1 over all K classes; accuracy, balanced accuracy,
per-class recall and the calibration error (of the predicted class's probability) mean the same
for every K.

:func:`fit_intercept` fits a per-class bias added to a model's logits so that the class-balanced
log loss on a labelled split is minimal (a fixed number of damped Newton steps from zero, in
float64: deterministic). Adding it removes any mismatch between the model's label prior and the
split's (prior correction, Saerens et al. 2002; logit adjustment, Menon et al. ICLR 2021), so
the remaining loss measures how well the model *ranks and separates* the classes, and the biased
logits give a calibrated decision.

**Calibrated decision.** :func:`decide` is the one decision rule: ``argmax(logits + bias)``,
the first class on ties. :func:`classification_metrics` and :func:`evaluate` take that bias
(fitted on the validation split, applied to any other split) and report F1, balanced accuracy
and per-class recall of that decision; for two classes it is "class 1 when ``p1 > threshold``"
with ``threshold = sigmoid(-(b1 - b0))`` (:func:`decision_threshold`). The intercept is used
rather than the threshold that maximises F1 on the validation split because it is the minimiser
of a smooth convex loss (unique, stable on a few hundred images, no ties to break), it is the
balanced-error decision (prior-corrected posterior), it is what the valuation already fits, and
it is multi-class as it stands (a bias vector); a maximum-F1 threshold is a step function of
the split that jumps between neighbouring scores, favours the split's own class ratio, and has
no multi-class form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.roundlog import RoundLog, RoundMetrics

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
    "class_recall",
    "classification_metrics",
    "decide",
    "decision_threshold",
    "evaluate",
    "evaluate_calibrated",
    "expected_calibration_error",
    "fit_intercept",
    "macro_roc_auc",
    "predict_logits",
    "roc_auc",
    "roc_auc_bounds",
]

_EPS = 1e-12


@dataclass(frozen=True)
class Metrics:
    """Quality of a K-class classifier (K >= 2) on ``n`` samples.

    ``loss``: mean cross-entropy (nats); ``accuracy``: fraction predicted right; ``auc``: for
    K = 2 the ROC AUC of class 1, for K > 2 the macro one-vs-rest AUC (:func:`macro_roc_auc`);
    NaN when the labels hold only one class, where it is undefined; ``f1``: for K = 2 the F1 of
    class 1 (0.0 when there are neither positive labels nor positive predictions), for K > 2 the
    macro F1 over all K classes. These use the plain decision (the most probable class: class 1
    when ``z1 > z0`` or ``p > 0.5``).

    Added later, with defaults so older constructors keep working: ``balanced_accuracy``: mean
    over the classes present of the recall, plain decision; ``ece``: expected calibration error
    of the predicted class's probability (:func:`expected_calibration_error`, 10 bins);
    ``threshold``: for K = 2, the probability of class 1 above which the calibrated decision
    predicts it (:func:`decision_threshold` of the bias given; NaN without one, and for K > 2);
    ``f1_calibrated`` and ``balanced_accuracy_calibrated``: F1 (as ``f1``: class 1's for K = 2,
    macro for K > 2) and balanced accuracy of that decision (NaN without a bias); ``recall`` and
    ``recall_calibrated``: the recall of every class 0..K-1 under the plain and the calibrated
    decision (NaN for a class absent from the labels; empty when not computed, and the
    calibrated one without a bias). ``num_classes`` is K (0 when not recorded).
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
    recall: tuple[float, ...] = ()
    recall_calibrated: tuple[float, ...] = ()
    num_classes: int = 0


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


def roc_auc_bounds(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, slack: float
) -> tuple[float, float]:
    """The least and the greatest ROC AUC (:func:`roc_auc`) of 0/1 ``labels`` when every
    positive-negative pair whose scores lie within ``slack`` of each other may rank either way.

    Why: a ranking is not continuous in the scores, so last-bit noise (another thread count)
    that flips one near-tied pair moves the AUC by ``1 / (P*N)`` (5.5e-5 on 270 images), far
    beyond a float tolerance; an untrained model's near-constant logits hold such pairs. An
    auditor accepts a claimed AUC inside these bounds. (NaN, NaN) when only one class is
    present."""
    s = _as_numpy(scores).astype(np.float64).ravel()
    y = _as_numpy(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any() or not slack >= 0:
        raise ValueError("scores contain NaN or slack is not >= 0")
    pos, neg = s[y == 1], np.sort(s[y != 1])
    if pos.size == 0 or neg.size == 0:
        return math.nan, math.nan
    pairs = pos.size * neg.size
    sure = int(np.searchsorted(neg, pos - slack, side="left").sum())  # negatives below by > slack
    maybe = int(np.searchsorted(neg, pos + slack, side="right").sum())  # below or within slack
    return sure / pairs, maybe / pairs


def macro_roc_auc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Macro one-vs-rest ROC AUC of ``(N, K)`` per-class ``scores`` (probabilities, or any
    increasing function of them such as log-probabilities) against class ids ``0..K-1``: the
    mean of :func:`roc_auc` of ``scores[:, c]`` against ``labels == c`` over the classes ``c``
    with both positives and negatives among the labels; NaN when fewer than two classes are
    present. With every class present it is scikit-learn's ``roc_auc_score(labels, scores,
    multi_class="ovr", average="macro")``; absent classes are left out rather than failing."""
    s = _as_numpy(scores).astype(np.float64)
    y = _labels_1d(labels)
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError(f"expected ({y.size}, K) scores, got shape {s.shape}")
    aucs = [roc_auc(s[:, c], y == c) for c in range(s.shape[1])]
    defined = [a for a in aucs if not math.isnan(a)]
    return math.fsum(defined) / len(defined) if defined else math.nan


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


def class_recall(
    predictions: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """Recall of every class ``0..num_classes-1`` for predicted class ids: the fraction of its
    samples predicted as it, NaN for a class absent from ``labels``. The mean over the present
    classes is :func:`balanced_accuracy`."""
    pred = _as_numpy(predictions).ravel().astype(np.int64)
    y = _labels_1d(labels).astype(np.int64)
    if pred.shape != y.shape:
        raise ValueError(f"{pred.size} predictions but {y.size} labels")
    out = np.full(num_classes, math.nan)
    for c in range(num_classes):
        members = y == c
        if members.any():
            out[c] = float((pred[members] == c).mean())
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
    confidence, bin ``b`` holding ``edges[b] < confidence <= edges[b + 1]`` with ``edges[b] =
    b / bins`` (float64 division; the first bin also holds 0): Guo et al.'s ``((m-1)/M, m/M]``,
    so a confidence equal to an edge is in the bin it closes (torchmetrics' bins are
    ``[lo, hi)`` instead; the two differ only for confidences exactly on an edge).
    ``probabilities`` is ``(N, K)`` class probabilities (predicted class: argmax, first on ties)
    or ``(N,)`` probabilities of class 1 (predicted: 1 when ``p > 0.5``, confidence
    ``max(p, 1 - p)``)."""
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
    # b / bins, not linspace: linspace's b * (1 / bins) is an ulp off some edges (7 * 0.1)
    edges = np.arange(bins + 1, dtype=np.float64) / bins
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


def decide(logits: np.ndarray | torch.Tensor, bias: Sequence[float] | None = None) -> np.ndarray:
    """The decision rule: class ids ``argmax(logits + bias)`` of ``(N, K)`` logits, the first
    class on ties (``bias`` None: the plain decision, the most probable class). For two classes
    it is computed as ``z1 - z0 > b0 - b1`` (class 1 when its probability exceeds
    :func:`decision_threshold`), the form the binary figures have always used."""
    z = _as_numpy(logits).astype(np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"expected (N, K) logits with K >= 2, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("model outputs contain NaN or infinity")
    k = z.shape[1]
    b = np.zeros(k) if bias is None else np.asarray([float(v) for v in bias], dtype=np.float64)
    if b.shape != (k,):
        raise ValueError(f"{b.size} biases for {k} classes")
    if not np.isfinite(b).all():
        raise ValueError("biases must be finite")
    if k == 2:
        ids: np.ndarray = ((z[:, 1] - z[:, 0]) > (b[0] - b[1])).astype(np.int64)
        return ids
    ids = (z + b).argmax(axis=1).astype(np.int64)
    return ids


def classification_metrics(
    logits_or_probs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    bias: Sequence[float] | None = None,
) -> Metrics:
    """Metrics of a K-class classifier's outputs against class ids ``0..K-1`` (see
    :class:`Metrics` for what each figure means for K = 2 and K > 2).

    ``logits_or_probs`` is either ``(N, K)`` logits, K >= 2 (the model's raw outputs; softmax
    is applied for the loss and the calibration error; for K = 2 the logit margin ``z1 - z0``
    ranks for the AUC, for K > 2 each class's log-probability, the same order as its
    probability, so saturated probabilities never create spurious ties) or ``(N,)``
    probabilities of class 1 in ``[0, 1]`` of a two-class model (loss = binary cross-entropy
    clipped at 1e-12; class 1 predicted when ``p > 0.5``). With ``bias`` (K numbers, e.g.
    :func:`fit_intercept`'s on the validation split) the calibrated figures are those of
    :func:`decide`; for probabilities, ``p >`` :func:`decision_threshold`.
    """
    out = _as_numpy(logits_or_probs).astype(np.float64)
    y_raw = _labels_1d(labels)
    if y_raw.size == 0:
        raise ValueError("no samples to compute metrics on")
    n = int(y_raw.size)
    if out.shape[:1] != (n,):
        raise ValueError(f"{out.shape[0] if out.ndim else 0} outputs but {n} labels")
    if out.ndim == 1:
        k = 2
    elif out.ndim == 2 and out.shape[1] >= 2:
        k = int(out.shape[1])
    else:
        raise ValueError(
            f"expected (N, K) logits with K >= 2 or (N,) probabilities, got shape {out.shape}"
        )
    if not np.isin(y_raw, np.arange(k)).all():
        raise ValueError(f"labels must be class ids in {_class_set(k)} for {k} classes")
    y = y_raw.astype(np.int64)
    if not np.isfinite(out).all():
        raise ValueError("model outputs contain NaN or infinity")
    if bias is not None and len(bias) != k:
        raise ValueError(f"{len(bias)} biases for {k} classes")
    threshold = decision_threshold(bias) if bias is not None and k == 2 else math.nan
    pred_cal: np.ndarray | None = None
    if out.ndim == 2:
        # log-softmax, numerically stable
        shifted = out - out.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_probs[np.arange(n), y].mean())
        auc = roc_auc(out[:, 1] - out[:, 0], y) if k == 2 else macro_roc_auc(log_probs, y)
        pred = decide(out)
        probs = np.exp(log_probs)
        if bias is not None:
            pred_cal = decide(out, bias)
    else:
        if out.min() < 0 or out.max() > 1:
            raise ValueError("1-D inputs are probabilities of class 1 and must lie in [0, 1]")
        p = np.clip(out, _EPS, 1 - _EPS)
        loss = float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())
        auc = roc_auc(out, y)
        pred = (out > 0.5).astype(np.int64)
        probs = out
        if bias is not None:
            pred_cal = (out > threshold).astype(np.int64)

    def f1_of(predicted: np.ndarray) -> float:
        per_class = class_f1(predicted, y, k)
        return float(per_class[1]) if k == 2 else math.fsum(per_class.tolist()) / k

    f1_cal = bacc_cal = math.nan
    recall_cal: tuple[float, ...] = ()
    if pred_cal is not None:
        f1_cal = f1_of(pred_cal)
        bacc_cal = balanced_accuracy(pred_cal, y)
        recall_cal = tuple(class_recall(pred_cal, y, k).tolist())
    return Metrics(
        loss=loss,
        accuracy=float((pred == y).mean()),
        auc=auc,
        f1=f1_of(pred),
        n=n,
        balanced_accuracy=balanced_accuracy(pred, y),
        ece=expected_calibration_error(probs, y),
        threshold=threshold,
        f1_calibrated=f1_cal,
        balanced_accuracy_calibrated=bacc_cal,
        recall=tuple(class_recall(pred, y, k).tolist()),
        recall_calibrated=recall_cal,
        num_classes=k,
    )


def _class_set(k: int) -> str:
    return "{" + ", ".join(str(c) for c in range(k)) + "}" if k <= 3 else f"0..{k - 1}"


def binary_metrics(
    logits_or_probs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    bias: Sequence[float] | None = None,
) -> Metrics:
    """:func:`classification_metrics` of a two-class model: ``(N, 2)`` logits or ``(N,)``
    probabilities of class 1, against 0/1 labels (anything else is a ValueError)."""
    out = _as_numpy(logits_or_probs)
    if not np.isin(_labels_1d(labels), (0, 1)).all():
        raise ValueError("binary metrics need labels in {0, 1}")
    if out.ndim == 2 and out.shape[1] != 2:
        raise ValueError(f"expected (N, 2) logits or (N,) probabilities, got shape {out.shape}")
    return classification_metrics(logits_or_probs, labels, bias=bias)


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


def _model_logits(model: nn.Module, dataset: ImageDataset, batch_size: int) -> np.ndarray:
    """The model's outputs on ``dataset``, checked against its labels: one clear error naming
    both sides when the model has fewer outputs than the labels need."""
    logits = predict_logits(model, dataset, batch_size=batch_size)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ConfigError(
            "metrics need a model with at least 2 output logits (one per class), got outputs "
            f"{tuple(logits.shape)}"
        )
    k = int(logits.shape[1])
    labels = np.asarray(dataset.labels)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ConfigError(
            f"the dataset's labels go from {int(labels.min())} to {int(labels.max())} but the "
            f"model has {k} output classes (labels must be in {_class_set(k)})"
        )
    return logits


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 256,
    bias: Sequence[float] | None = None,
) -> Metrics:
    """Metrics of ``model`` (K >= 2 output logits) on ``dataset`` (see :func:`predict_logits`),
    with the calibrated decision of ``bias`` when given (see :func:`classification_metrics`)."""
    logits = _model_logits(model, dataset, batch_size)
    try:
        return classification_metrics(logits, dataset.labels, bias=bias)
    except ValueError as exc:
        raise ConfigError(f"cannot evaluate: {exc}") from exc


def evaluate_calibrated(
    model: nn.Module, dataset: ImageDataset, *, batch_size: int = 256
) -> CalibratedMetrics:
    """Metrics of ``model`` on ``dataset`` with the calibrated decision of the intercept fitted
    on that same dataset (:func:`fit_intercept`, one inference pass): what the aggregator
    records for a global model on its validation split each round, and what an auditor holding
    that split recomputes. Without a bias (calibrated figures NaN) when ``dataset`` holds one
    class only, where no intercept can be fitted. The calibrated figures are in-sample (the
    bias is fitted on the split it is scored on): slightly optimistic for another split."""
    logits = _model_logits(model, dataset, batch_size)
    try:
        try:
            bias: tuple[float, ...] | None = fit_intercept(logits, dataset.labels).bias
        except ValueError:  # one class only: no intercept to fit
            bias = None
        m = classification_metrics(logits, dataset.labels, bias=bias)
    except ValueError as exc:
        raise ConfigError(f"cannot evaluate: {exc}") from exc
    return CalibratedMetrics(**{f.name: getattr(m, f.name) for f in fields(m)}, bias=bias)


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
        raise ValueError(
            f"labels must be class ids in 0..{z.shape[1] - 1}: the logits have {z.shape[1]} "
            f"classes, the labels go up to {int(np.max(y))}"
        )
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


def _same_bits(
    a: tuple[np.ndarray, float, np.ndarray], b: tuple[np.ndarray, float, np.ndarray]
) -> bool:
    """Whether two (bias, loss, probabilities) states of :func:`fit_intercept` hold the same
    bits (a NaN equals itself; 0.0 and -0.0 differ)."""
    return all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b, strict=True)
    )


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
    digits; deterministic for its inputs. Needs at least two classes present.

    A step that leaves the bias, the loss and the probabilities as they were bit for bit is a
    fixed point: every later step would compute the same, so the loop stops there with the
    result the remaining iterations would give (measured on 34 coalition models of the
    valuation bench: two in three reach it after 2-5 of the 16 steps)."""
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
        before = (bias, loss, p)
        for _ in range(_MAX_HALVINGS):
            trial = bias.copy()
            trial[free] -= t * step
            trial_loss, trial_p = _weighted_loss(z + trial, y, w)
            if trial_loss <= loss:
                bias, loss, p = trial, trial_loss, trial_p
                break
            t /= 2.0
        if _same_bits(before, (bias, loss, p)):
            break
    return InterceptFit(bias=tuple(float(b) for b in bias), loss=loss)


THRESHOLD_TOLERANCE: Final = 1e-12
"""How far a log's ``threshold`` may be from the one its ``bias`` gives (an honest writer
computes it from the same floats: 0 here; the tolerance allows another libm's last bit)."""


def calibration_problems(log: RoundLog) -> list[str]:
    """The log's metrics against themselves (attack a83; verify's ``log.agrees``, and what
    ``fedtrail explain`` and a site node check before deciding with the log's bias, a111):
    each record's ``threshold`` is the one its ``bias`` gives (:func:`decision_threshold`; both
    absent or both present for two classes, absent for more), its per-class figures have one
    entry per class of the log's model spec, and its ``n`` is the log's validation size. The
    decision a site node and ``fedtrail explain`` apply is the bias; ``audit log`` and the
    report show the threshold: a log whose two disagree reads one way to the auditor and
    another to the clinician, and only ``--validation`` recomputed either before."""
    problems: list[str] = []
    classes = log.settings.model_spec.get("num_classes", ModelSpec().num_classes)
    for label, m in (("before", log.metrics.before), ("after", log.metrics.after)):
        if m.n is not None and m.n != log.validation.images:
            problems.append(
                f"metrics.{label}.n {m.n}, the log's validation set {log.validation.images} images"
            )
        per_class = [(key, getattr(m, key)) for key in ("bias", *RoundMetrics.PER_CLASS)]
        wrong = [f"{key} {len(v)}" for key, v in per_class if v is not None and len(v) != classes]
        if isinstance(classes, int) and wrong:
            problems.append(
                f"metrics.{label} has {', '.join(wrong)} entries for a {classes}-class model"
            )
            continue
        if classes != 2:
            if m.threshold is not None:
                problems.append(
                    f"metrics.{label}.threshold {m.threshold!r} for a {classes}-class model"
                )
            continue
        try:
            want = None if m.bias is None else decision_threshold(m.bias)
        except ValueError as exc:
            problems.append(f"metrics.{label}.bias gives no threshold: {exc}")
            continue
        if (want is None) != (m.threshold is None) or (
            want is not None
            and m.threshold is not None
            and not abs(m.threshold - want) <= THRESHOLD_TOLERANCE
        ):
            problems.append(
                f"metrics.{label}.threshold {m.threshold!r} is not its bias's "
                f"{m.bias and list(m.bias)} threshold {want!r}"
            )
    return problems
