"""fit_intercept stops at a fixed point of its Newton loop with the bits the full loop gives
(every coalition evaluation of the valuation fits one; the audit recomputes them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtrail.ml import metrics
from fedtrail.ml.metrics import INTERCEPT_ITERATIONS, fit_intercept


def _full_loop(logits: np.ndarray, labels: np.ndarray) -> tuple[tuple[float, ...], float]:
    """fit_intercept as first written: all INTERCEPT_ITERATIONS steps, no early stop."""
    z, y = logits.astype(np.float64), labels.astype(np.int64)
    k = z.shape[1]
    free = np.flatnonzero(np.bincount(y, minlength=k) > 0)[1:]
    w = metrics._balanced_weights(y, k)
    onehot = np.eye(k)[y][:, free]
    bias = np.zeros(k)
    loss, p = metrics._weighted_loss(z, y, w)
    for _ in range(INTERCEPT_ITERATIONS):
        pf = p[:, free]
        grad = (w[:, None] * (pf - onehot)).sum(axis=0)
        hess = np.diag((w[:, None] * pf).sum(axis=0)) - (w[:, None] * pf).T @ pf
        step = np.linalg.solve(hess + 1e-12 * np.eye(free.size), grad)
        t = 1.0
        for _ in range(40):
            trial = bias.copy()
            trial[free] -= t * step
            trial_loss, trial_p = metrics._weighted_loss(z + trial, y, w)
            if trial_loss <= loss:
                bias, loss, p = trial, trial_loss, trial_p
                break
            t /= 2.0
    return tuple(float(b) for b in bias), loss


def _case(seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    labels = rng.integers(0, k, n)
    labels[:k] = np.arange(k)  # every class present
    scale = [0.1, 1.0, 8.0][seed % 3]  # near-uniform to overconfident models
    logits = rng.normal(0.0, scale, (n, k)) + rng.normal(0.0, 2.0, k)
    return logits, labels


def _bits(fit: tuple[tuple[float, ...], float]) -> bytes:
    return np.array([*fit[0], fit[1]], dtype=np.float64).tobytes()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_bias_and_loss_are_those_of_the_full_loop(k: int) -> None:
    for seed in range(40):
        logits, labels = _case(seed, k)
        fit = fit_intercept(logits, labels)
        assert _bits((fit.bias, fit.loss)) == _bits(_full_loop(logits, labels)), seed


def test_stops_at_a_fixed_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some fits reach a step that changes nothing well before the last iteration; they stop
    there (fewer loss evaluations than one per iteration) with the full loop's result."""
    calls = []
    real = metrics._weighted_loss

    def counted(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        calls.append(1)
        return real(z, y, w)

    stopped = 0
    for seed in range(30):
        logits, labels = _case(seed, 2)
        want = _full_loop(logits, labels)
        monkeypatch.setattr(metrics, "_weighted_loss", counted)
        calls.clear()
        fit = fit_intercept(logits, labels)
        monkeypatch.setattr(metrics, "_weighted_loss", real)
        assert _bits((fit.bias, fit.loss)) == _bits(want)
        assert math.isfinite(fit.loss)
        stopped += len(calls) <= INTERCEPT_ITERATIONS
    assert stopped >= 5
