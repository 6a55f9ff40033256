"""scripts/bench/warm_up_floor_replay.py: a floor-on run's recorded values replayed with round 1
as the default warm-up, whose shares the record never counts (a hand-made run whose figures are
known)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "warm_up_floor_replay.py"
NAMES = ["site-00", "site-01", "site-02"]
E = 10**18


def _round(n: int, values: list[float], weights: list[int], scores: list[int]) -> dict[str, object]:
    return {
        "round": n,
        "skipped": False,
        "submitted": NAMES,
        "scores": scores,
        "weights": weights,
        "values": dict(zip(NAMES, values, strict=True)),
        "shares": {s: 0.0 for s in NAMES},
        "cosines": {"site-00": 0.9, "site-01": 0.8, "site-02": 0.7},
        "norm_ratios": {"site-00": 1.0, "site-01": 1.0, "site-02": 1.0},
    }


def test_round_one_shares_are_not_counted_with_the_floor_off(tmp_path: Path) -> None:
    # Round 1 (floor on, as recorded): the faulty site-02's value -2 against +1, +1 was paid at
    # the floor (10/10/20 samples at scores 1, 1, 0.5: weights 1/3 each); round 2 is
    # valued 0 for all. Counted, round 1's -0.5 share would put site-02 0.75 below the median
    # site's record and score it 0 in round 2; as the default warm-up it is never counted, so
    # both rounds pay by samples (faulty share 0.5) and no honest site-round scores 0.
    run = {
        "method": "valuation",
        "seed": 3,
        "site_names": NAMES,
        "site_samples": [10, 10, 20],
        "site_faults": ["none", "none", "label_noise"],
        "rounds": [
            _round(1, [1.0, 1.0, -2.0], [E // 3, E // 3, E // 3], [10**6, 10**6, 500_000]),
            _round(2, [0.0, 0.0, 0.0], [E // 2, E // 2, 0], [10**6, 10**6, 0]),
        ],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"scenarios": {"b": {"runs": [run]}}}))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True
    ).stdout
    seed_line = next(line for line in out.splitlines() if "seed 3" in line)
    # recorded: (1/3 + 0) / 2 from the weights; replayed: 0.5 in each round
    assert "recorded share 0.1667, honest zeroed 0" in seed_line
    assert "floor off (replay) share 0.5000, honest zeroed 0/4" in seed_line
