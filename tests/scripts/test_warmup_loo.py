"""scripts/bench/warmup_loo.py (an experiment for issue 12 (j)): the warm-up's leave-one-out
harms and greedy sequence as recorded, and its rules: ``worse:M`` removes while the set left is
below the global model, ``loo:T`` while the next harm is above T; what they remove scores 0 and,
with ``--carry S``, starts round 2 with the record -S."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.bench import warmup_loo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    warmup_loo._records.clear()
    yield
    warmup_loo._records.clear()
    warmup_loo._rule = None


def _record() -> dict[str, Any]:
    # v(P) 0.3% of |u0| below it; removing p1 helps 0.2%, then p2 0.15%, then h 0.05%
    return {
        "u0": -0.7,
        "u_all": -0.7 - 0.003 * 0.7,
        "greedy": [
            {"site": "p1", "harm": 0.002},
            {"site": "p2", "harm": 0.0015},
            {"site": "h", "harm": 0.0005},
        ],
    }


def test_worse_stops_once_the_set_left_is_not_below_the_global_model() -> None:
    warmup_loo._rule = ("worse", 0.0)
    # after p1: 0.1% below, still worse; after p2: 0.05% above: stop before h
    assert warmup_loo._removed(_record()) == ["p1", "p2"]
    warmup_loo._rule = ("worse", 0.002)  # 0.2% below tolerated: p1 alone brings it there
    assert warmup_loo._removed(_record()) == ["p1"]
    warmup_loo._rule = ("worse", 0.01)
    assert warmup_loo._removed(_record()) == []


def test_loo_removes_the_prefix_above_the_threshold() -> None:
    warmup_loo._rule = ("loo", 0.001)
    assert warmup_loo._removed(_record()) == ["p1", "p2"]
    warmup_loo._rule = ("loo", 0.0001)
    assert warmup_loo._removed(_record()) == ["p1", "p2", "h"]
    warmup_loo._rule = None
    assert warmup_loo._removed(_record()) == []


def test_a_real_warm_up_is_recorded_and_the_removed_score_zero(tmp_path: Path) -> None:
    acc = tmp_path / "acc.json"
    out = tmp_path / "loo.json"
    bench = ["--scenarios", "b", "--alpha", "1", "--seeds", "0-0", "--rounds", "1"]
    bench += ["--threads", "1", "--methods", "valuation", "--out", str(acc)]
    # a threshold of 0: every update the greedy sequence picks is removed, its record carried
    argv = ["--rule", "loo:0", "--carry", "0.5", "--out", str(out), "--", *bench]
    assert warmup_loo.main(argv) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["scenarios"] == ["b"] and doc["seeds"] == [0] and doc["alpha"] == 1.0
    (rec,) = doc["records"]
    sites = {s["site"]: s for s in rec["sites"]}
    assert len(sites) >= 2
    # the greedy's first pick is the site of largest leave-one-out harm at the full set
    first = rec["greedy"][0] if rec["greedy"] else None
    if first is not None:
        assert first["harm"] == pytest.approx(max(s["harm"] for s in sites.values()))
        assert first["harm"] == pytest.approx(sites[first["site"]]["harm"])
    assert all(g["harm"] > 0 for g in rec["greedy"])
    assert rec["removed"] == [g["site"] for g in rec["greedy"]]
    run = json.loads(acc.read_text(encoding="utf-8"))["scenarios"]["b"]["runs"][0]
    names = run["site_names"]
    weights = dict(zip(names, run["rounds"][0]["weights"], strict=True))
    records = run["rounds"][0]["accumulated"]
    for site in sites:
        if site in rec["removed"]:
            assert weights[site] == 0
            assert records[site] <= -0.5
        else:
            assert weights[site] > 0
            assert records.get(site, 0.0) > -0.5
