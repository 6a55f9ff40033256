"""Issue 12 (b)'s diagnostic (scripts/bench/f1cal_gap.py): its product row is the product's
decision (the validation-fitted intercept), its oracle threshold maximises test F1, and the
dump's files load back per method and seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtrail.ml.metrics import classification_metrics, fit_intercept
from scripts.bench import f1cal_gap


def _model(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat([0, 1], n // 2)
    z = np.zeros((n, 2))
    z[:, 1] = rng.normal(2.0 * y + shift, 1.0)
    return z, y


def _run(rng: np.random.Generator, shift: float) -> dict[str, np.ndarray]:
    val, yval = _model(rng, 270, shift)
    test, ytest = _model(rng, 468, shift)
    return {"val": val, "yval": yval, "test": test, "ytest": ytest}


def test_product_row_is_the_products_calibrated_f1() -> None:
    rng = np.random.default_rng(3)
    run = _run(rng, 0.7)  # a shifted model: the plain 0.5 decision is far off
    bias = fit_intercept(run["val"], run["yval"]).bias
    want = classification_metrics(run["test"], run["ytest"], bias=bias).f1_calibrated
    got = f1cal_gap._figures(run)
    assert got["product (val intercept)"] == pytest.approx(want, abs=0.0)
    assert got["plain 0.5"] == classification_metrics(run["test"], run["ytest"]).f1
    assert got["plain 0.5"] < got["product (val intercept)"]


def test_test_max_f1_is_the_best_threshold_on_the_test_split() -> None:
    rng = np.random.default_rng(4)
    run = _run(rng, -0.4)
    got = f1cal_gap._figures(run)
    margin = run["test"][:, 1] - run["test"][:, 0]
    grid = [f1cal_gap._f1_at(margin, run["ytest"], float(t)) for t in np.linspace(-3, 5, 801)]
    best = got["test max-F1 (oracle)"]
    assert best >= max(grid)
    assert all(best >= v for k, v in got.items() if k != "test AUC")


def test_load_joins_files_and_keeps_methods_apart(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    runs = {("fedavg", 0): _run(rng, 0.0), ("valuation", 0): _run(rng, 0.3)}
    np.savez(first, **{f"{m}/{s}/{k}": v for (m, s), d in runs.items() for k, v in d.items()})
    later = _run(rng, 0.1)
    np.savez(second, **{f"valuation/7/{k}": v for k, v in later.items()})
    got = f1cal_gap._load(f"{first}:valuation,{second}:valuation")
    assert sorted(got) == [0, 7]
    assert np.array_equal(got[0]["test"], runs[("valuation", 0)]["test"])
    assert np.array_equal(got[7]["val"], later["val"])
    assert sorted(f1cal_gap._load(f"{first}:fedavg")) == [0]
