"""scripts/bench/flower_overhead.py: plain Flower FedAvg and fedtrail on Flower from one model
(since the a23 fix the fedtrail half starts from its deployment-bound model, and the plain half
started from the bare seed's: the bench's own "same model" target was missed on every run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_both_halves_start_from_the_same_model(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    done = subprocess.run(
        [sys.executable, "scripts/bench/flower_overhead.py", "--rounds", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert "target: both halves start from the same model -> met" in done.stdout, done.stdout
    result = json.loads(out.read_text())
    assert result["same_start_model"] is True
    assert result["fedtrail_rounds_finalized"] == 1 and result["audit_verify"] == "PASS"
