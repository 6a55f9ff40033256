"""The independent reader reads a round number the way the product's parsers do: a JSON
integer, so ``"round": true`` or ``1.0`` in a round log is not round 1 (``roundlog._int``
refuses both; the reader compared with ``==``, where ``True == 1 == 1.0``: h-208's note on
a105, the same spelling in a log instead of an update header)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedtrail.errors import FedtrailError
from fedtrail.protocol.roundlog import _int

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_round_spelling", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _round_problems(reader: ModuleType, value: Any) -> list[str]:
    log = {"round": value, "sites": []}
    problems = reader.log_agrees(
        log, 1, ("0x" + "ab" * 20, 31337), (None, None), None, {}, {}, None
    )
    return [p for p in problems if p.startswith("log is for round")]


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_a_log_round_spelled_otherwise_than_the_integer_is_another_round(value: Any) -> None:
    with pytest.raises(FedtrailError):
        _int(value, "round")  # the product's log parser refuses it
    assert _round_problems(_reader(), value), value


def test_the_integer_round_agrees_and_another_does_not() -> None:
    assert _int(1, "round") == 1
    assert _round_problems(_reader(), 1) == []
    assert _round_problems(_reader(), 2)
