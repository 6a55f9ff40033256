"""emit's JSON is strict JSON: a NaN or infinite number (an AUC on a one-class validation split)
is printed as null, not as Python's NaN / Infinity, which no strict parser reads."""

from __future__ import annotations

import json
import math

import pytest

from fedtrail.cli.output import emit


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_null_in_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    record = {
        "val_auc": math.nan,
        "rounds": [{"val_f1": math.inf, "recall": (0.5, -math.inf)}],
        "nested": {"score": 0.25, "n": 3, "name": "NaN"},
    }
    emit(record, "json")
    assert _strict(capsys.readouterr().out) == {
        "val_auc": None,
        "rounds": [{"val_f1": None, "recall": [0.5, None]}],
        "nested": {"score": 0.25, "n": 3, "name": "NaN"},
    }
