"""Issue 12 (b)'s per-round diagnostic (scripts/bench/f1cal_rounds.py): it pairs the two methods
round by round on the same seed, and a faulty site's weight share is read from the on-chain
weights of the sites that entered the round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.bench import f1cal_rounds


def _round(rid: int, weights: list[int], f1c: float, auc: float) -> dict[str, Any]:
    return {
        "round": rid,
        "submitted": ["site-00", "site-01", "site-02"],
        "scores": [1_000_000, 1_000_000, 500_000],
        "weights": weights,
        "skipped": False,
        "test_auc": auc,
        "test_f1_calibrated": f1c,
        "test_threshold": 0.5,
    }


def _run(method: str, seed: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "method": method,
        "seed": seed,
        "test": {"f1_calibrated": rounds[-1]["test_f1_calibrated"], "threshold": 0.5, "auc": 0.9},
        "rounds": rounds,
        "site_names": ["site-00", "site-01", "site-02"],
        "site_samples": [10, 10, 20],
        "site_faults": ["none", "none", "label_noise"],
    }


def test_rounds_are_paired_per_seed_and_shares_read_from_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    e = 10**18
    runs = [
        _run("fedavg", 0, [_round(1, [e // 4, e // 4, e // 2], 0.80, 0.90)]),
        _run("valuation", 0, [_round(1, [3 * e // 8, 3 * e // 8, e // 4], 0.85, 0.91)]),
        _run("fedavg", 1, [_round(1, [e // 4, e // 4, e // 2], 0.70, 0.80)]),
        _run("valuation", 1, [_round(1, [e // 2, e // 2, 0], 0.69, 0.82)]),
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"scenarios": {"b": {"runs": runs}}}), encoding="utf-8")
    assert f1cal_rounds.main([str(path), "--summary-only"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    # round 1: dF1cal mean (+0.05 - 0.01) / 2, worst -0.01, dAUC (+0.01 + 0.02) / 2,
    # faulty share valuation (0.25 + 0) / 2, FedAvg 0.5
    assert last == ["1", "+0.0200", "-0.010", "+0.0150", "0.125", "0.500"]


def test_a_seed_without_both_methods_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    only = [_run("fedavg", 0, [_round(1, [1, 1, 1], 0.8, 0.9)])]
    path.write_text(json.dumps({"scenarios": {"b": {"runs": only}}}), encoding="utf-8")
    assert f1cal_rounds.main([str(path)]) == 1
