"""`scripts/bench/bn_poison.py` refuses settings under which it would measure nothing: a zero
shift, or a model without running statistics to poison (exit 2, the usage convention)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "bn_poison.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shift", "0"], "--shift must be non-zero"),
        (["--arch", "smallcnn"], "has no running statistics"),
        (["--seeds", "0"], "names no seed"),
    ],
)
def test_the_bench_refuses_settings_that_measure_nothing(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
