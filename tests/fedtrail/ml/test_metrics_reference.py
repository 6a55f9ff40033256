"""fedtrail's metrics against independent references: scikit-learn for AUC, F1, balanced
accuracy, recall and log loss; ECE written here from Guo et al. (ICML 2017); the intercept
against scipy.optimize on the objective as its docstring states it.

Inputs are random with ties (scores rounded to one decimal), missing classes and K = 2..5."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    log_loss,
    recall_score,
    roc_auc_score,
)

from fedtrail.ml.metrics import (
    classification_metrics,
    expected_calibration_error,
    fit_intercept,
    macro_roc_auc,
    roc_auc,
)

SEEDS = range(40)


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Tied logits (one decimal), K = 2..5 classes, 2..60 samples; some classes may be absent."""
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 61)), int(rng.integers(2, 6))
    return np.round(rng.normal(size=(n, k)) * 2, 1), rng.integers(0, k, n), k


@pytest.mark.parametrize("seed", SEEDS)
def test_auc_matches_sklearn(seed: int) -> None:
    z, y, k = _case(seed)
    if k == 2:
        got = roc_auc(z[:, 1] - z[:, 0], y)
        if len(set(y.tolist())) < 2:  # documented: undefined, NaN (sklearn raises)
            assert math.isnan(got)
        else:
            assert got == pytest.approx(roc_auc_score(y, z[:, 1] - z[:, 0]), abs=1e-12)
        return
    probs = np.exp(log_softmax(z, axis=1))
    present = sorted(set(y.tolist()))
    if len(present) < 2:  # documented: undefined, NaN
        assert math.isnan(macro_roc_auc(probs, y))
        return
    if len(present) == k:
        want = roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(k)))
    else:  # documented: classes absent from the labels are left out of the macro mean
        want = float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))
    assert macro_roc_auc(probs, y) == pytest.approx(want, abs=1e-12)
    # classification_metrics ranks by log-probabilities: the same order, the same AUC
    assert classification_metrics(z, y).auc == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_decision_metrics_match_sklearn(seed: int) -> None:
    z, y, k = _case(seed)
    rng = np.random.default_rng(1000 + seed)
    bias = rng.normal(size=k)
    m = classification_metrics(z, y, bias=tuple(bias.tolist()))
    labels = list(range(k))
    # plain decision: argmax, the first class on ties (numpy's argmax)
    for pred, f1, bacc, recall in (
        (z.argmax(axis=1), m.f1, m.balanced_accuracy, m.recall),
        (
            (z + bias).argmax(axis=1),
            m.f1_calibrated,
            m.balanced_accuracy_calibrated,
            m.recall_calibrated,
        ),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
            average = "binary" if k == 2 else "macro"
            want_f1 = f1_score(y, pred, average=average, labels=labels, zero_division=0.0)
            want_bacc = balanced_accuracy_score(y, pred)
            want_recall = recall_score(y, pred, labels=labels, average=None, zero_division=np.nan)
        assert f1 == pytest.approx(want_f1, abs=1e-12)
        assert bacc == pytest.approx(want_bacc, abs=1e-12)
        np.testing.assert_allclose(recall, want_recall, rtol=0, atol=1e-15)
    assert m.accuracy == pytest.approx(float(np.mean(z.argmax(axis=1) == y)), abs=1e-15)
    want_loss = log_loss(y, np.exp(log_softmax(z, axis=1)), labels=labels)
    assert m.loss == pytest.approx(want_loss, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_probability_inputs_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 61))
    p = np.round(rng.random(n), 1)  # ties, and exactly 0.5 (predicted 0: p > 0.5 is class 1)
    y = rng.integers(0, 2, n)
    m = classification_metrics(p, y)
    pred = (p > 0.5).astype(np.int64)
    if len(set(y.tolist())) == 2:
        assert m.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.f1 == pytest.approx(f1_score(y, pred, zero_division=0.0), abs=1e-12)
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    clipped = np.clip(p, 1e-12, 1 - 1e-12)  # documented clipping
    assert m.loss == pytest.approx(log_loss(y, clipped, labels=[0, 1]), rel=1e-12)


def _ece_reference(conf: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Guo et al. 2017, eq. (3): bins I_m = ((m-1)/M, m/M], m = 1..M (a confidence of 0 in the
    first), ECE = sum_m |B_m|/n |acc(B_m) - conf(B_m)|. Written with plain Python loops and the
    edges m/M as divisions, one sample at a time."""
    n, total = len(conf), 0.0
    for m in range(1, bins + 1):
        lo, hi = (m - 1) / bins, m / bins
        members = [i for i in range(n) if lo < conf[i] <= hi or (m == 1 and conf[i] == 0.0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - mean_conf)
    return total


@pytest.mark.parametrize("seed", SEEDS)
def test_ece_matches_guo_et_al(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k, bins = int(rng.integers(1, 80)), int(rng.integers(2, 5)), int(rng.integers(1, 16))
    probs = rng.dirichlet(np.ones(k), n)
    y = rng.integers(0, k, n)
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(n), pred]
    want = _ece_reference(conf.tolist(), (pred == y).tolist(), bins)
    assert expected_calibration_error(probs, y, bins=bins) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("bins", [3, 7, 9, 10, 12, 14, 15])
def test_ece_confidences_on_bin_edges(bins: int) -> None:
    """A confidence equal to an edge m/M (as a float: the division) belongs to the bin it closes,
    ((m-1)/M, m/M]. Regression: the edges came from linspace (m * (1/M)), which is off by an ulp
    for some m, so such a confidence fell into the next bin (ECE off by up to 0.04 here)."""
    rng = np.random.default_rng(bins)
    edges = np.array([m / bins for m in range(bins + 1) if m / bins >= 0.5])
    on_edge = edges[rng.integers(0, edges.size, 100)]
    # the float just above each edge is in the next bin (for bins = 10: just above 0.6, 0.7)
    above = np.nextafter(on_edge[:30], 2.0).clip(max=1.0)
    conf = np.concatenate([on_edge, above])
    probs = np.stack([1.0 - conf, conf], axis=1)
    pred = probs.argmax(axis=1)  # class 1 unless conf == 0.5
    # right on the edges, just above wrong: the two sides of an edge have gaps of opposite sign,
    # so a sample put into the wrong bin changes the ECE
    y = np.concatenate([pred[: on_edge.size], 1 - pred[on_edge.size :]])
    want = _ece_reference(conf.tolist(), (pred == y).tolist(), bins)
    assert expected_calibration_error(probs, y, bins=bins) == pytest.approx(want, abs=1e-12)
    assert expected_calibration_error(conf, y, bins=bins) == pytest.approx(
        _ece_reference(
            np.maximum(conf, 1 - conf).tolist(), ((conf > 0.5).astype(int) == y).tolist(), bins
        ),
        abs=1e-12,
    )


@pytest.mark.parametrize("seed", range(20))
def test_intercept_matches_scipy(seed: int) -> None:
    """The docstring's objective: the class-balanced mean cross-entropy of ``logits + bias``
    (mean over the classes present of each class's mean loss), the first present class's bias
    and absent classes' fixed at 0. Minimised here by BFGS."""
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 300)), int(rng.integers(2, 5))
    y = rng.integers(0, k, n)
    if seed % 3 == 0 and k > 2:  # class 0 absent: class 1 is then the pivot
        y[y == 0] = 1
    z = rng.normal(size=(n, k)) * 3 + rng.normal(size=k) * 2
    present = sorted(set(y.tolist()))
    free = present[1:]

    def objective(b_free: np.ndarray) -> float:
        b = np.zeros(k)
        b[free] = b_free
        lp = log_softmax(z + b, axis=1)[np.arange(n), y]
        return float(np.mean([lp[y == c].mean() for c in present]) * -1)

    ref = minimize(objective, np.zeros(len(free)), method="BFGS", options={"gtol": 1e-12})
    fit = fit_intercept(z, y)
    want = np.zeros(k)
    want[free] = ref.x
    # BFGS stops at gtol; Newton is converged to the last digits: compare at 1e-5 and require
    # fedtrail's loss to be no worse than scipy's
    np.testing.assert_allclose(fit.bias, want, rtol=0, atol=1e-5)
    assert fit.loss <= ref.fun + 1e-12
    assert fit.loss == pytest.approx(objective(np.asarray(fit.bias)[free]), abs=1e-13)
    assert all(fit.bias[c] == 0.0 for c in range(k) if c not in free)
