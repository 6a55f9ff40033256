"""*Reasons an aggregator round gives* (attack a84) as ``scripts/independent/reader.py``
implements it from the README (``reasons_given``): each reason an aggregator posts for an
update the rules cannot have given it is named, and the same codes where a rule does give them
pass. Before a84 the reader compared the chain's reasons only with the ones its screens
predict, and passed an honest update zeroed LATE, CONTRADICTED without evidence, TAMPERED or
MALFORMED though it read fine, or LOW_GAIN under standing (``scripts/attacks/real.sh
scripts/attacks/a84_reason_reader_gap.py MODE``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_reasons", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()
BASE: dict[str, Any] = dict(
    plain_readable={"0xa", "0xb"},
    need_dp=False,
    standing=True,
    counted={"0xa", "0xb"},
    evidenced=set(),
)


def _given(reason: str, **change: Any) -> dict[str, str]:
    args = {**BASE, **change}
    out: dict[str, str] = R.reasons_given({"0xa": reason, "0xb": "OK"}, **args)
    return out


@pytest.mark.parametrize(
    ("reason", "change", "words"),
    [
        ("LATE", {}, "LATE, which no aggregator round gives"),
        ("WITHHELD", {}, "WITHHELD, which no aggregator round gives"),
        ("CONTRADICTED", {}, "CONTRADICTED without an evidence entry"),
        ("CONTRADICTED", {"evidenced": {"0xb"}}, "CONTRADICTED without an evidence entry"),
        ("TAMPERED", {}, "TAMPERED, but its blob matches"),
        ("MALFORMED", {}, "MALFORMED, but its blob decodes"),
        ("LOW_GAIN", {}, "LOW_GAIN on an update counted"),
    ],
)
def test_a_reason_no_rule_gives_is_named(reason: str, change: dict[str, Any], words: str) -> None:
    got = _given(reason, **change)
    assert set(got) == {"0xa"}
    assert got["0xa"].startswith(words)


@pytest.mark.parametrize(
    ("reason", "change"),
    [
        ("OK", {}),
        ("CONTRADICTED", {"evidenced": {"0xa"}}),  # its signed reply: evidence.signed
        ("TAMPERED", {"plain_readable": {"0xb"}}),  # the blob did not match or fetch
        ("MALFORMED", {"plain_readable": {"0xb"}}),  # did not decode, or declares DP
        ("MALFORMED", {"need_dp": True}),  # a plain update under terms requiring DP
        ("LOW_GAIN", {"standing": False}),  # valued per round
        ("LOW_GAIN", {"counted": {"0xb"}}),  # before the screen (a warm-up's harm check)
        ("OUTLIER_NORM", {}),
        ("DUPLICATE", {}),
    ],
)
def test_a_reason_a_rule_gives_passes(reason: str, change: dict[str, Any]) -> None:
    assert _given(reason, **change) == {}
