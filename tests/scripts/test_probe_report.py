"""scripts/bench/probe_report.py on a hand-made accuracy run with game_probe records: each
single-update test counts the site-rounds it fires on, per scenario and fault kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "probe_report.py"


def _probe(
    run: int, rnd: int, site: str, slope: float | None, u1: float, uh: float, um: float
) -> dict[str, object]:
    return {
        "run": run,
        "round": rnd,
        "site": site,
        "samples": 10,
        "value": 0.0,
        "cosine": 0.5,
        "norm_ratio": 1.0,
        "score": 1_000_000,
        "u0": -0.7,
        "slope": slope,
        "u1": u1,
        "uh": uh,
        "um": um,
    }


def _doc(tmp_path: Path, records: list[dict[str, object]], samples: int = 10) -> Path:
    run = {
        "method": "valuation",
        "seed": 0,
        "site_names": ["A", "F"],
        "site_samples": [10, samples],
        "site_faults": ["none", "sign_flip"],
        "rounds": [],
    }
    fedavg = dict(run, method="fedavg")
    doc = {"settings": {"alpha": 1.0}, "scenarios": {"c": {"runs": [fedavg, run]}}}
    doc["game_probe"] = records
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(doc))
    return path


def test_counts_each_test_per_fault_kind(tmp_path: Path) -> None:
    records = [
        # honest A: helps alone in round 1 (no test fires); in round 2 its slope is negative,
        # its reverse helps more and half of it does better, but alone it still helps
        _probe(0, 1, "A", 0.01, -0.6, -0.65, -0.75),
        _probe(0, 2, "A", -0.01, -0.69, -0.68, -0.6),
        # the sign-flipper: uphill alone in both rounds; in round 2 no slope (metric auc)
        _probe(0, 1, "F", -0.02, -0.8, -0.75, -0.6),
        _probe(0, 2, "F", None, -0.8, -0.75, -0.6),
    ]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_doc(tmp_path, records))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "(c) none       reverse 1/2, slope<0 1/2, overshoot 1/2, alone<0 0/2" in out
    assert "(c) sign_flip  reverse 2/2, slope<0 1/2, overshoot 2/2, alone<0 2/2" in out
    later = subprocess.run(
        [sys.executable, str(SCRIPT), str(_doc(tmp_path, records)), "--from-round", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "(c) none       reverse 1/1, slope<0 1/1, overshoot 1/1, alone<0 0/1" in later


def test_a_record_of_another_run_is_refused(tmp_path: Path) -> None:
    # the first valuation run's F claims 10 samples; a record saying 12 is not from it
    records = [_probe(0, 1, "F", 0.0, -0.7, -0.7, -0.7)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(_doc(tmp_path, records, samples=12))],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "probe run 0 does not match valuation run 0" in proc.stderr
