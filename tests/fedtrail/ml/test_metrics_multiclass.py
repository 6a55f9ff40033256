"""Multi-class metrics: macro one-vs-rest AUC, macro F1, per-class recall, the decision rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.metrics import (
    binary_metrics,
    class_recall,
    classification_metrics,
    decide,
    decision_threshold,
    evaluate,
    evaluate_calibrated,
    expected_calibration_error,
    macro_roc_auc,
    roc_auc,
)
from fedtrail.ml.models import ModelSpec, initial_model

# six images, three classes; plain decision (argmax): 0, 1, 1, 2, 2, 2
LOGITS = np.array(
    [
        [2.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 2.0, 1.0],
        [0.0, 0.0, 3.0],
        [1.0, 0.0, 2.0],
        [0.0, 1.0, 3.0],
    ]
)
LABELS = np.array([0, 0, 1, 2, 2, 1])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC by its definition: the share of (positive, negative) pairs ordered right, ties 1/2."""
    pos, neg = scores[positive], scores[~positive]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (pos.size * neg.size)


def test_three_classes_hand_computed() -> None:
    m = classification_metrics(LOGITS, LABELS)
    assert m.num_classes == 3 and m.n == 6
    # right: rows 0, 2, 3, 4
    assert m.accuracy == pytest.approx(4 / 6, abs=1e-15)
    # recall: class 0 {row 0 right, row 1 wrong}, class 1 {2 right, 5 wrong}, class 2 {3, 4}
    assert m.recall == (0.5, 0.5, 1.0)
    assert m.balanced_accuracy == pytest.approx(2 / 3, abs=1e-15)
    # F1 = 2TP / (2TP + FP + FN): class 0 2/3 (TP 1, FN 1), class 1 2/4 (TP 1, FP row 1,
    # FN row 5), class 2 4/5 (TP 2, FP row 5)
    assert m.f1 == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3, abs=1e-15)
    # one-vs-rest by softmax probability: in every class one positive beats all four
    # negatives and the other beats three of them (class 0: p0 of row 1 = 1/(2+e) < p0 of
    # row 4 = e/(1+e+e^2)), so each AUC is 7/8 and so is the macro mean
    assert m.auc == pytest.approx(7 / 8, abs=1e-15)
    expected_loss = -np.mean(np.log(_softmax(LOGITS)[np.arange(6), LABELS]))
    assert m.loss == pytest.approx(float(expected_loss), rel=1e-12)
    # the product's softmax and this one are different float paths: numpy's exp differs in the
    # last bit between CPUs (SIMD), so equal to rounding, not bit for bit
    assert m.ece == pytest.approx(expected_calibration_error(_softmax(LOGITS), LABELS), rel=1e-12)
    # no bias: no calibrated figures, and no threshold (a two-class notion)
    assert math.isnan(m.threshold) and math.isnan(m.f1_calibrated)
    assert math.isnan(m.balanced_accuracy_calibrated) and m.recall_calibrated == ()


def test_three_classes_calibrated_decision_hand_computed() -> None:
    bias = (1.5, 2.5, 0.0)
    # logits + bias: [3.5 2.5 0] [1.5 3.5 0] [1.5 4.5 1] [1.5 2.5 3] [2.5 2.5 2] [1.5 3.5 3]
    # -> 0, 1, 1, 2, 0 (a tie between 0 and 1: the first class), 1
    assert decide(LOGITS, bias).tolist() == [0, 1, 1, 2, 0, 1]
    m = classification_metrics(LOGITS, LABELS, bias=bias)
    assert m.recall_calibrated == (0.5, 1.0, 0.5)
    assert m.balanced_accuracy_calibrated == pytest.approx(2 / 3, abs=1e-15)
    # F1: class 0 TP 1 FP 1 FN 1 -> 1/2; class 1 TP 2 FP 1 -> 4/5; class 2 TP 1 FN 1 -> 2/3
    assert m.f1_calibrated == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3, abs=1e-15)
    assert math.isnan(m.threshold)  # no single threshold for three classes
    # the plain figures do not depend on the bias
    plain = classification_metrics(LOGITS, LABELS)
    assert (m.auc, m.f1, m.accuracy, m.recall) == (
        plain.auc,
        plain.f1,
        plain.accuracy,
        plain.recall,
    )


@pytest.mark.parametrize("seed", range(5))
def test_macro_auc_is_the_mean_of_one_vs_rest_aucs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 7))
    z = rng.normal(size=(80, k)) * 2
    y = rng.integers(0, k, 80)
    z[:5] = z[5:10]  # some tied rows
    probs = _softmax(z)
    per_class = [_pairwise_auc(probs[:, c], y == c) for c in range(k) if 0 < (y == c).sum() < 80]
    m = classification_metrics(z, y)
    assert m.auc == pytest.approx(float(np.mean(per_class)), abs=1e-12)
    assert macro_roc_auc(probs, y) == pytest.approx(m.auc, abs=1e-12)
    assert macro_roc_auc(probs, y) == pytest.approx(
        float(np.mean([roc_auc(probs[:, c], y == c) for c in range(k) if (y == c).any()])),
        abs=1e-15,
    )


@pytest.mark.parametrize("seed", range(5))
def test_permuting_the_class_ids_leaves_the_macro_figures_unchanged(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    k = 5
    z = rng.normal(size=(60, k)) * 3
    y = rng.integers(0, k, 60)
    bias = tuple(float(b) for b in rng.normal(size=k))
    perm = rng.permutation(k)  # new class j is old class perm[j]
    inverse = np.argsort(perm)
    a = classification_metrics(z, y, bias=bias)
    b = classification_metrics(z[:, perm], inverse[y], bias=tuple(bias[p] for p in perm))
    for name in (
        "auc",
        "f1",
        "accuracy",
        "loss",
        "balanced_accuracy",
        "ece",
        "f1_calibrated",
        "balanced_accuracy_calibrated",
    ):
        assert getattr(b, name) == pytest.approx(getattr(a, name), abs=1e-12), name
    assert b.recall == tuple(a.recall[p] for p in perm)
    assert b.recall_calibrated == tuple(a.recall_calibrated[p] for p in perm)


def test_two_classes_are_the_binary_figures() -> None:
    rng = np.random.default_rng(7)
    z = rng.normal(size=(50, 2))
    y = rng.integers(0, 2, 50)
    bias = (0.3, -0.4)
    m = classification_metrics(z, y, bias=bias)
    assert m == binary_metrics(z, y, bias=bias)
    assert m.num_classes == 2
    assert m.auc == roc_auc(z[:, 1] - z[:, 0], y)  # ranked by the margin, not macro
    assert m.threshold == decision_threshold(bias)
    pred = (z[:, 1] - z[:, 0] > 0).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    assert m.f1 == 2 * tp / (2 * tp + int((pred != y).sum()))  # class 1's F1
    assert m.recall == tuple(float((pred[y == c] == c).mean()) for c in (0, 1))
    assert m.accuracy == float((pred == y).mean())
    assert m.balanced_accuracy == (m.recall[0] + m.recall[1]) / 2
    probs = _softmax(z)
    assert m.loss == pytest.approx(float(-np.mean(np.log(probs[np.arange(50), y]))), rel=1e-12)
    assert m.ece == expected_calibration_error(probs, y)
    p1 = probs[:, 1]
    cal = (p1 > m.threshold).astype(int)
    assert decide(z, bias).tolist() == cal.tolist()
    assert m.recall_calibrated == tuple(float((cal[y == c] == c).mean()) for c in (0, 1))
    tp_cal = int(((cal == 1) & (y == 1)).sum())
    assert m.f1_calibrated == 2 * tp_cal / (2 * tp_cal + int((cal != y).sum()))
    assert m.balanced_accuracy_calibrated == sum(m.recall_calibrated) / 2
    # probabilities of class 1 give two-class figures with a per-class recall too
    assert classification_metrics(p1, y).recall == m.recall


def test_absent_classes() -> None:
    z = LOGITS
    y = np.array([0, 0, 2, 2, 2, 0])  # class 1 absent
    m = classification_metrics(z, y)
    assert math.isnan(m.recall[1]) and m.recall[0] == 1 / 3 and m.recall[2] == 2 / 3
    assert m.balanced_accuracy == pytest.approx(0.5, abs=1e-15)
    probs = _softmax(z)
    # macro AUC over the two classes present; class 1 (never a positive) is left out
    want = (_pairwise_auc(probs[:, 0], y == 0) + _pairwise_auc(probs[:, 2], y == 2)) / 2
    assert m.auc == pytest.approx(want, abs=1e-15)
    # macro F1 averages over all three classes: class 1 is predicted (rows 1, 2) and never
    # right, so its F1 is 0 and it counts
    f1s = [2 * 1 / (2 * 1 + 0 + 2), 0.0, 2 * 2 / (2 * 2 + 1 + 1)]
    assert m.f1 == pytest.approx(sum(f1s) / 3, abs=1e-15)
    one = classification_metrics(z, np.full(6, 2))
    assert math.isnan(one.auc) and one.recall[2] == 3 / 6  # rows 3, 4, 5
    assert class_recall([0, 1], [1, 1], 3)[1] == 0.5


def test_decide() -> None:
    z = np.array([[0.0, 0.0, 0.0], [1.0, 3.0, 2.0], [-1.0, -2.0, 5.0]])
    assert decide(z).tolist() == [0, 1, 2]  # ties: the first class
    assert decide(z, (0.0, 0.0, -10.0)).tolist() == [0, 1, 0]
    assert decide(torch.tensor(z), [5.0, 0.0, 0.0]).tolist() == [0, 0, 2]
    two = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert decide(two).tolist() == [0, 1, 0]
    assert decide(two, (0.0, 1.5)).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="2 biases for 3 classes"):
        decide(z, (0.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        decide(z, (0.0, math.inf, 0.0))
    with pytest.raises(ValueError, match="K >= 2"):
        decide(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="NaN"):
        decide(np.array([[0.0, math.nan, 1.0]]))


def test_classification_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"0\.\.4 for 5 classes"):
        classification_metrics(np.zeros((2, 5)), np.array([0, 5]))
    with pytest.raises(ValueError, match="for 3 classes"):
        classification_metrics(np.zeros((2, 3)), np.array([0, -1]))
    with pytest.raises(ValueError, match="2 biases for 3 classes"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 1]), bias=(0.0, 0.0))
    with pytest.raises(ValueError, match="K >= 2"):
        classification_metrics(np.zeros((2, 1)), np.array([0, 0]))
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((2, 5)), np.array([0, 1]))


def _rgb(n: int, k: int, seed: int = 0) -> ImageDataset:
    """Synthetic 28x28 RGB images whose class shows as a brighter colour channel and band."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.uniform(0.0, 0.5, size=(n, 3, 28, 28)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, c % 3] += 0.25
        x[i, :, 4 * c : 4 * c + 4, :] += 0.25
    return ImageDataset(x, y.astype(np.int64))


def test_evaluate_a_five_class_model() -> None:
    ds = _rgb(40, 5)
    model = initial_model(ModelSpec(in_channels=3, num_classes=5), seed=0)
    m = evaluate(model, ds)
    assert m.num_classes == 5 and len(m.recall) == 5 and m.n == 40
    assert 0.0 <= m.auc <= 1.0 and 0.0 <= m.f1 <= 1.0
    cal = evaluate_calibrated(model, ds)
    assert cal.bias is not None and len(cal.bias) == 5
    assert len(cal.recall_calibrated) == 5 and math.isnan(cal.threshold)
    assert cal.f1_calibrated == pytest.approx(
        evaluate(model, ds, bias=cal.bias).f1_calibrated, abs=1e-12
    )
    # the labels need more classes than the model has: one error naming both
    two = initial_model(ModelSpec(in_channels=3, num_classes=2), seed=0)
    with pytest.raises(ConfigError, match=r"labels go from 0 to 4 but the model has 2 output"):
        evaluate(two, ds)
    with pytest.raises(ConfigError, match=r"labels go from 0 to 4 but the model has 2 output"):
        evaluate_calibrated(two, ds)
