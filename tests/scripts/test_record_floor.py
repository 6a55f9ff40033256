"""The record floor experiment (scripts/bench/record_floor.py): now ``accuracy.py`` at
``--record-floor F``, the product's round term (tests/fedtrail/valuation/test_record_floor.py
tests the rule itself)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))

import record_floor


def test_the_floor_becomes_accuracys_record_floor() -> None:
    got = record_floor.accuracy_args(["--floor", "0.75", "--seeds", "5"])
    assert got == ["--seeds", "5", "--record-floor", "0.75"]
    assert record_floor.accuracy_args(["--alpha", "3"])[-2:] == ["--record-floor", "0.5"]
    assert record_floor.accuracy_args(["--floor", "0"])[-1] == "0.0"


@pytest.mark.parametrize("bad", ["-0.1", "nan", "inf"])
def test_a_bad_floor_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--floor"):
        record_floor.accuracy_args(["--floor", bad])
