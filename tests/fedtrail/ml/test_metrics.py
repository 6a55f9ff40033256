"""Metrics: hand-computed AUC (with ties), loss, accuracy, F1, balanced accuracy, calibration
error, the calibrated decision; evaluate()."""

from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, load_bundled
from fedtrail.ml.metrics import (
    Metrics,
    balanced_accuracy,
    balanced_log_loss,
    binary_metrics,
    class_f1,
    decision_threshold,
    evaluate,
    expected_calibration_error,
    fit_intercept,
    predict_logits,
    roc_auc,
)
from fedtrail.ml.models import ModelSpec, initial_model


def _numbers(m: Metrics) -> tuple[float, ...]:
    """The record's scalar fields (pytest.approx compares flat sequences only)."""
    return tuple(v for v in astuple(m) if not isinstance(v, tuple))


def test_auc_hand_computed_without_ties() -> None:
    # positives 0.35 and 0.8, negatives 0.1 and 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    # (this is also scikit-learn's documented roc_auc_score example)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_auc_hand_computed_with_ties() -> None:
    # positives {0.5, 0.9}, negatives {0.5, 0.5, 0.1}:
    # 0.5 ties two negatives (2 x 1/2) and beats 0.1 (1) -> 2; 0.9 beats all three -> 3; 5/6
    scores = np.array([0.5, 0.5, 0.5, 0.9, 0.1])
    labels = np.array([1, 0, 0, 1, 0])
    # same from the ROC curve, points (FPR, TPR) (0,0) (0,.5) (2/3,1) (1,1):
    # trapezoids 0 + (2/3)(.5+1)/2 + 1/3 = 5/6
    assert roc_auc(scores, labels) == pytest.approx(5 / 6, abs=1e-15)
    assert roc_auc(np.full(6, 0.3), np.array([0, 1, 0, 1, 1, 0])) == 0.5
    # two tie groups that each mix classes: {0.2: 1 pos, 1 neg}, {0.7: 2 pos, 1 neg}
    # pos 0.2: tie 1 neg (1/2) -> .5; each pos 0.7: beats 0.2-neg (1) + tie (1/2) -> 1.5 x 2 = 3
    # total 3.5 / (3 * 2)
    s2 = np.array([0.2, 0.2, 0.7, 0.7, 0.7])
    y2 = np.array([1, 0, 1, 1, 0])
    assert roc_auc(s2, y2) == pytest.approx(3.5 / 6, abs=1e-15)


def test_auc_edges() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([1.0, 2.0, 3.0, 4.0]), y) == 1.0
    assert roc_auc(np.array([4.0, 3.0, 2.0, 1.0]), y) == 0.0
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([0, 0])))
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        roc_auc(np.array([0.1, 0.2]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6).map(lambda v: v / 4), st.integers(0, 1)),
        min_size=2,
        max_size=40,
    )
)
def test_auc_equals_pairwise_definition(pairs: list[tuple[float, int]]) -> None:
    """P(score_pos > score_neg) + P(tie) / 2 over all pairs — the area under the (linearly
    interpolated) ROC curve, which is what sklearn's roc_auc_score computes."""
    s = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        assert math.isnan(roc_auc(s, y))
        return
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert roc_auc(s, y) == pytest.approx(expected, abs=1e-12)


def test_binary_metrics_from_logits_hand_computed() -> None:
    logits = np.array([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 3.0]])
    labels = np.array([1, 1, 0, 0])
    m = binary_metrics(logits, labels)
    # margins z1-z0: 0, 2, -1, 3 -> predictions (z1 > z0): 0, 1, 0, 1
    # TP = 1 (row 1), FP = 1 (row 3), FN = 1 (row 0): F1 = 2/(2+1+1); accuracy 2/4
    assert m.f1 == 0.5
    assert m.accuracy == 0.5
    # AUC on margins: positives {0, 2}, negatives {-1, 3}: 0>-1, 2>-1 -> 2/4
    assert m.auc == 0.5
    # cross-entropy per row: ln 2, ln(1+e^-2), ln(1+e^-1), ln(1+e^3)
    expected = np.mean(
        [math.log(2), math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log1p(math.exp(3))]
    )
    assert m.loss == pytest.approx(expected, rel=1e-12)
    assert m.n == 4
    as_torch = binary_metrics(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
    assert _numbers(as_torch) == pytest.approx(_numbers(m), rel=1e-7, nan_ok=True)
    assert as_torch.recall == m.recall == (0.5, 0.5)


def test_binary_metrics_from_probabilities() -> None:
    probs = np.array([0.9, 0.2, 0.6, 0.5])
    labels = np.array([1, 0, 0, 1])
    m = binary_metrics(probs, labels)
    # predictions p > 0.5: 1, 0, 1, 0 -> TP 1, FP 1, FN 1, accuracy 2/4
    assert (m.accuracy, m.f1) == (0.5, 0.5)
    # positives {0.9, 0.5}, negatives {0.2, 0.6}: 0.9 beats both, 0.5 beats 0.2 -> 3/4
    assert m.auc == 0.75
    bce = -np.mean([math.log(0.9), math.log(0.8), math.log(0.4), math.log(0.5)])
    assert m.loss == pytest.approx(bce, rel=1e-12)
    # perfectly confident and right: loss clipped, not NaN
    sure = binary_metrics(np.array([0.0, 1.0]), np.array([0, 1]))
    assert sure.loss < 1e-9 and sure.accuracy == 1.0 and sure.auc == 1.0 and sure.f1 == 1.0


def test_saturated_logits_keep_their_ranking() -> None:
    # softmax of these rounds to 1.0 in float32, the margins still order them
    logits = torch.tensor([[0.0, 40.0], [0.0, 50.0], [0.0, 45.0]])
    assert binary_metrics(logits, torch.tensor([0, 1, 1])).auc == 1.0


def test_f1_without_positives_is_zero_and_single_class_auc_is_nan() -> None:
    m = binary_metrics(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([0, 0]))
    assert m.f1 == 0.0 and m.accuracy == 1.0 and math.isnan(m.auc)


def test_binary_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        binary_metrics(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="3 outputs but 2 labels"):
        binary_metrics(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_metrics(np.array([0.5, 1.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(np.array([[0.0, np.nan], [0.0, 0.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="no samples"):
        binary_metrics(np.zeros((0, 2)), np.zeros(0, np.int64))


def test_evaluate_matches_manual_forward_and_restores_mode() -> None:
    val = load_bundled().val
    model = initial_model(ModelSpec(), seed=0)
    model.train()
    m = evaluate(model, val, batch_size=64)
    assert model.training
    assert isinstance(m, Metrics) and m.n == 270
    with torch.no_grad():
        logits = model.eval()(torch.tensor(val.images))
    direct = binary_metrics(logits, val.labels)
    assert m.auc == direct.auc and m.accuracy == direct.accuracy and m.f1 == direct.f1
    assert m.loss == pytest.approx(direct.loss, rel=1e-6)
    assert evaluate(model, val, batch_size=64) == m  # deterministic
    assert _numbers(evaluate(model, val, batch_size=270)) == pytest.approx(
        _numbers(m), rel=1e-6, nan_ok=True
    )
    assert not any(p.grad is not None for p in model.parameters())


def test_evaluate_errors() -> None:
    ds = ImageDataset(np.zeros((3, 1, 28, 28), np.float32), np.array([0, 1, 0]))
    model = initial_model(ModelSpec(), seed=0)
    with pytest.raises(ConfigError, match="empty"):
        evaluate(model, ds.subset([]))
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(model, ds, batch_size=0)
    # a 3-class model on labels 0/1 is a 3-class evaluation (classes absent from the labels)
    assert evaluate(initial_model(ModelSpec(num_classes=3), seed=0), ds).num_classes == 3
    three = ImageDataset(ds.images, np.array([0, 1, 2]))
    with pytest.raises(ConfigError, match=r"\{0, 1\}"):
        evaluate(model, three)
    with pytest.raises(ConfigError, match="2 output logits"):
        evaluate(nn.Sequential(nn.Flatten(), nn.Linear(784, 1)), ds)


def test_fit_intercept_absorbs_a_constant_logit_shift() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    z = np.c_[np.zeros(300), 3 * (y - 0.5) + rng.normal(size=300)]
    base = fit_intercept(z, y)
    shifted = fit_intercept(z + np.array([0.0, 6.0]), y)
    assert shifted.loss == pytest.approx(base.loss, abs=1e-12)
    assert shifted.bias[1] == pytest.approx(base.bias[1] - 6.0, abs=1e-9)
    assert base.bias[0] == 0.0
    # the fit is the minimum: nudging the bias either way raises the balanced loss
    for eps in (-1e-3, 1e-3):
        assert balanced_log_loss(z, y, bias=(0.0, base.bias[1] + eps)) > base.loss
    assert fit_intercept(z, y) == base  # deterministic


def test_fit_intercept_multiclass_and_balanced_weights() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    z = rng.normal(size=(400, 3))
    z[np.arange(400), y] += 2.0
    fit = fit_intercept(z + np.array([0.0, 0.0, 4.0]), y)
    assert fit.bias[2] == pytest.approx(-4.0, abs=0.5)
    # class-balanced: duplicating every sample of one class changes nothing
    twice = np.r_[y, y[y == 1]]
    z_twice = np.r_[z, z[y == 1]]
    assert balanced_log_loss(z_twice, twice) == pytest.approx(balanced_log_loss(z, y), abs=1e-12)
    with pytest.raises(ValueError, match="two classes"):
        fit_intercept(z, np.zeros(400, dtype=np.int64))


def test_balanced_accuracy_and_class_f1_hand_computed() -> None:
    # binary: recall of class 1 = 3/3, of class 0 = 1/2 -> 0.75 (plain accuracy would be 4/5)
    assert balanced_accuracy(np.array([1, 1, 1, 1, 0]), np.array([1, 1, 1, 0, 0])) == 0.75
    # always predicting the majority class scores 1/classes whatever the ratio
    assert balanced_accuracy(np.ones(10, np.int64), np.r_[np.ones(9), 0]) == 0.5
    # three classes: labels 0 0 1 1 2 2, predictions 0 1 1 1 2 0
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: TP 1, FP 1 (the last row), FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5;
    # class 2: TP 1, FP 0, FN 1 -> 2/3
    assert class_f1(pred, y, 3) == pytest.approx([0.5, 0.8, 2 / 3], abs=1e-15)
    # recalls 1/2, 2/2, 1/2
    assert balanced_accuracy(pred, y) == pytest.approx(2 / 3, abs=1e-15)
    # a class with neither labels nor predictions has F1 0
    assert class_f1(np.array([0, 1]), np.array([0, 1]), 3).tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        balanced_accuracy(np.array([0, 1]), np.array([0, 1, 1]))


def test_expected_calibration_error_hand_computed() -> None:
    # probabilities of class 1; confidence max(p, 1-p); predicted class 1 when p > 0.5
    p = np.array([0.95, 0.95, 0.75, 0.75, 0.35])
    y = np.array([1, 1, 1, 0, 0])
    # bin (0.9, 1]: 2 rows, accuracy 1, confidence .95 -> gap .05
    # bin (0.7, 0.8]: 2 rows, accuracy 1/2, confidence .75 -> gap .25
    # bin (0.6, 0.7]: the last row, predicted 0 with confidence .65, right -> gap .35
    # ECE = 2/5 * .05 + 2/5 * .25 + 1/5 * .35 = .19
    assert expected_calibration_error(p, y) == pytest.approx(0.19, abs=1e-12)
    # (N, K) class probabilities: confidence of the argmax
    probs = np.array([[0.55, 0.35, 0.10], [0.20, 0.15, 0.65]])
    # row 0: predicts 0, label 1 (wrong), confidence .55; row 1: predicts 2, right, .65
    # ECE = 1/2 * .55 + 1/2 * .35 = .45
    assert expected_calibration_error(probs, np.array([1, 2])) == pytest.approx(0.45, abs=1e-12)
    # bins are right-closed: a confidence of exactly 0.5 belongs to the first of two bins
    # (0.5, wrong) alone in (0, .5]: 1/2 * .5; (0.9, right) alone in (.5, 1]: 1/2 * .1 -> .3
    # (had it shared the second bin: accuracy .5 vs confidence .7 -> .2)
    assert expected_calibration_error(
        np.array([0.5, 0.9]), np.array([1, 1]), bins=2
    ) == pytest.approx(0.3, abs=1e-12)
    # confident and right everywhere: perfectly calibrated
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([1]))
    with pytest.raises(ConfigError, match="bins"):
        expected_calibration_error(p, y, bins=0)


def test_decision_threshold_of_a_bias() -> None:
    assert decision_threshold((0.0, 0.0)) == 0.5
    # bias of class 1 = ln 3: p1 > 1 / (1 + 3) already predicts class 1
    assert decision_threshold((0.0, math.log(3.0))) == pytest.approx(0.25, abs=1e-15)
    assert decision_threshold((math.log(3.0), 0.0)) == pytest.approx(0.75, abs=1e-15)
    # no overflow for huge gaps
    assert decision_threshold((0.0, 1000.0)) == pytest.approx(0.0, abs=1e-300)
    assert decision_threshold((0.0, -1000.0)) == 1.0
    with pytest.raises(ValueError, match="two biases"):
        decision_threshold((0.0, 1.0, 2.0))


def test_binary_metrics_calibrated_decision_hand_computed() -> None:
    margins = np.array([-1.5, -0.5, 0.5, 1.5, -1.25])
    logits = np.c_[np.zeros(5), margins]
    y = np.array([0, 1, 1, 1, 0])
    plain = binary_metrics(logits, y)
    # plain decision (margin > 0): 0 0 1 1 0 -> TP 2, FN 1, FP 0: F1 4/5; recalls 2/3 and 1
    assert plain.f1 == pytest.approx(0.8, abs=1e-15)
    assert plain.balanced_accuracy == pytest.approx(5 / 6, abs=1e-15)
    assert math.isnan(plain.threshold) and math.isnan(plain.f1_calibrated)
    assert math.isnan(plain.balanced_accuracy_calibrated)
    # bias +1 on class 1: margin > -1 -> 0 1 1 1 0: every row right
    cal = binary_metrics(logits, y, bias=(0.0, 1.0))
    assert cal.f1_calibrated == 1.0 and cal.balanced_accuracy_calibrated == 1.0
    assert cal.threshold == pytest.approx(1 / (1 + math.e), abs=1e-15)
    # the plain fields keep their meaning with a bias
    assert (cal.f1, cal.accuracy, cal.auc, cal.loss) == (
        plain.f1,
        plain.accuracy,
        plain.auc,
        plain.loss,
    )
    # probabilities: class 1 above the threshold sigmoid(-1) = 0.269
    probs = np.array([0.1, 0.3, 0.6, 0.2])
    m = binary_metrics(probs, np.array([0, 1, 1, 0]), bias=(0.0, 1.0))
    assert m.f1_calibrated == 1.0
    # plain: only 0.6 is class 1 -> TP 1, FN 1: F1 2/3
    assert m.f1 == pytest.approx(2 / 3, abs=1e-15)


def test_binary_metrics_ece_from_logits() -> None:
    # every row p1 = 0.8 (logit margin ln 4), labels 3 of 5 positive: confidence .8, accuracy .6
    logits = np.tile([0.0, math.log(4.0)], (5, 1))
    m = binary_metrics(logits, np.array([1, 1, 1, 0, 0]))
    assert m.ece == pytest.approx(0.2, abs=1e-12)
    # p = 0.5 exactly, half right: calibrated
    assert binary_metrics(np.zeros((2, 2)), np.array([0, 1])).ece == 0.0


def test_fitted_intercept_rescues_the_decision_of_a_shifted_model() -> None:
    """An early-round model ranks well but puts every margin far below 0: F1 at the plain
    threshold is 0, at the intercept fitted on a validation split it is high on another split."""
    rng = np.random.default_rng(2)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        margin = 3.0 * (y - 0.5) + rng.normal(size=n) - 8.0
        return np.c_[np.zeros(n), margin], y

    z_val, y_val = split(300)
    z_test, y_test = split(300)
    fit = fit_intercept(z_val, y_val)
    m = binary_metrics(z_test, y_test, bias=fit.bias)
    assert m.f1 == 0.0 and m.balanced_accuracy == 0.5
    assert m.f1_calibrated > 0.8 and m.balanced_accuracy_calibrated > 0.8
    assert m.auc > 0.9
    assert 0.0 < m.threshold < 0.01  # the plain model's p1 never reaches 0.5


def test_evaluate_with_a_bias_is_binary_metrics_of_the_logits() -> None:
    val = load_bundled().val
    model = initial_model(ModelSpec(), seed=0)
    logits = predict_logits(model, val)
    bias = fit_intercept(logits, val.labels).bias
    m = evaluate(model, val, bias=bias)
    assert m == binary_metrics(logits, val.labels, bias=bias)
    assert math.isfinite(m.f1_calibrated) and math.isfinite(m.ece)
    assert math.isnan(evaluate(model, val).f1_calibrated)
