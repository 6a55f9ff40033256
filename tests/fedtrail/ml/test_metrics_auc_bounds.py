"""``roc_auc_bounds``: the AUCs that re-ranking near-tied pairs can give, which is what an
auditor on another thread count must accept (one flipped pair moved an untrained model's AUC
by 1 / (P*N), beyond any float tolerance)."""

from __future__ import annotations

import math

import numpy as np

from fedtrail.ml.metrics import roc_auc, roc_auc_bounds


def test_a_flipped_near_tie_stays_inside_the_bounds_and_a_far_claim_does_not() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.5, 0.5 + 1e-9, 0.9, 0.1])  # pair (0, 1) within last-bit noise
    noisy = np.array([0.5 + 2e-9, 0.5, 0.9, 0.1])  # the same pair, flipped
    here, there = roc_auc(scores, labels), roc_auc(noisy, labels)
    assert (here, there) == (0.75, 1.0)  # one of four pairs moved
    low, high = roc_auc_bounds(scores, labels, 1e-6)
    assert (low, high) == (0.75, 1.0)
    assert low <= there <= high
    assert roc_auc_bounds(scores, labels, 0.0) == (0.75, 0.75)  # no slack: the ranking itself
    assert roc_auc_bounds(np.array([0.3, 0.1]), np.array([1, 0]), 0.5) == (0.0, 1.0)


def test_bounds_bracket_the_auc_with_ties_and_nan_without_a_class() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=200), 1)  # many exact ties
    labels = rng.integers(0, 2, size=200)
    low, high = roc_auc_bounds(scores, labels, 0.0)
    assert low < roc_auc(scores, labels) < high
    assert all(math.isnan(x) for x in roc_auc_bounds(scores, np.ones(200), 0.1))
