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


HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\rregistered True\u202eABC\u200b"


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_tables_print_no_control_or_bidi_characters(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A coordinator-chosen site name reached the auditor's terminal raw through chain status
    and audit site: an escape sequence cleared the screen, retitled the terminal, and a
    carriage return let the name overwrite its own row."""
    emit([{"site": "0xabc", "name": HOSTILE, "registered": False}], fmt)
    emit({"name": HOSTILE, f"key{HOSTILE}": 1}, "table")
    out = capsys.readouterr().out.replace("\r\n", "\n")  # the csv module's line ends
    assert not any(ch in out for ch in "\x1b\x07\r\u202e\u200b"), repr(out)
    assert "evil\ufffd[2J\ufffd]0;pwned\ufffd registered True\ufffdABC\ufffd" in out


def test_csv_text_that_a_spreadsheet_would_run_as_a_formula_is_quoted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A coordinator-chosen site name like ``=HYPERLINK(...)`` ran as a formula when an auditor
    opened ``audit ... --format csv`` in a spreadsheet; text cells starting with = + - @ get a
    leading apostrophe, numbers (negative ones too) stay numbers."""
    rows = [
        {"name": '=HYPERLINK("http://x","click")', "score": -0.5, "delta": -3},
        {"name": "+1+cmd|' /C calc'!A0", "score": 0.25, "delta": 2},
        {"name": "@SUM(A1)", "score": 1.0, "delta": 0},
        {"name": "-2", "score": 0.0, "delta": 1},
        {"name": "hospital-A", "score": 0.5, "delta": 1},
    ]
    emit(rows, "csv")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "name,score,delta"
    assert lines[1] == '"\'=HYPERLINK(""http://x"",""click"")",-0.5000,-3'
    assert lines[2].startswith("'+1+cmd") and lines[3].startswith("'@SUM")
    assert lines[4] == "'-2,0.0000,1" and lines[5] == "hospital-A,0.5000,1"
