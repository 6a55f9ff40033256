"""scripts/bench/personalisation.py: a bar that counts sites where a method's personalised model
is at least as good as the better of global and local-only."""

from __future__ import annotations

from scripts.bench import personalisation as bench


def _site(g: float, loc: float, p: float) -> dict[str, object]:
    row = {"auc": 0.0, "f1_calibrated": 0.0, "balanced_accuracy_calibrated": 0.0}
    return {
        "site": 0,
        "train": 10,
        "train_mix": [0.5, 0.5],
        "test_images": 10,
        "global": {**row, "auc": g, "f1_calibrated": g},
        "local": {**row, "auc": loc, "f1_calibrated": loc},
        "fedrep": {**row, "auc": p, "f1_calibrated": p},
        "fedrep+chk": {**row, "auc": max(g, p), "f1_calibrated": max(g, p)},
    }


def test_the_bar_counts_sites_where_personal_is_at_least_the_best() -> None:
    runs = [
        {
            "alpha": 0.5,
            "seed": 0,
            "sites": [
                _site(0.8, 0.7, 0.85),
                _site(0.8, 0.9, 0.9),
                _site(0.8, 0.7, 0.75),
                _site(0.6, 0.7, 0.7),
                _site(0.9, 0.5, 0.95),
            ],
        }
    ]
    bar = bench.summarise(runs, 5, ["fedrep"])["0.5"]["bar"]["fedrep/auc"]
    assert bar["sites_at_least_best"] == 4 and bar["passed"]
    assert abs(bar["mean_gain_vs_global"] - (0.05 + 0.1 - 0.05 + 0.1 + 0.05) / 5) < 1e-12
    runs[0]["sites"][1] = _site(0.8, 0.9, 0.89)  # type: ignore[index]
    assert not bench.summarise(runs, 5, ["fedrep"])["0.5"]["bar"]["fedrep/auc"]["passed"]
