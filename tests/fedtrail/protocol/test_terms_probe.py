"""The explanation check's probe commitment in the terms' valuation block: it round-trips
through the terms' canonical bytes and the log's settings, is refused without the check, and
round 1 fixes it like every payment setting (``payment_differences``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedtrail.protocol.roundlog import ExplanationProbe, InvalidLog, ValuationSettings
from fedtrail.protocol.terms import RoundTerms, payment_differences

ZERO = "0" * 64
PROBE = ExplanationProbe(cid="QmProbe", sha256="ab" * 32, images=32)
CHECKED = ValuationSettings(
    method="loo", metric="loss", seed=1, explanation_check=True, explanation_probe=PROBE
)
FIRST = RoundTerms(
    round=1,
    aggregation_rule={"name": "weighted"},
    valuation=CHECKED.to_json(),
    model_spec={"arch": "smallcnn"},
    spec_hash=ZERO,
    seed=0,
    validation_sha256=ZERO,
    validation_images=270,
    commit_seconds=60,
    reveal_seconds=60,
)


def test_the_probe_commitment_round_trips_through_terms_and_settings() -> None:
    back = RoundTerms.from_bytes(FIRST.to_bytes())
    assert back == FIRST
    assert back.valuation["explanation_probe"] == {
        "cid": "QmProbe",
        "sha256": "ab" * 32,
        "images": 32,
    }
    assert ValuationSettings.from_json(back.valuation) == CHECKED


def test_a_probe_without_the_check_or_malformed_is_refused() -> None:
    with pytest.raises(InvalidLog, match="only with the explanation check on"):
        ValuationSettings(method="loo", metric="loss", explanation_probe=PROBE)
    doc = CHECKED.to_json()
    for bad, message in [
        ({**doc["explanation_probe"], "extra": 1}, "unknown field"),
        ({"cid": "Qm", "sha256": "ab" * 32}, "'images' is missing"),
        ({**doc["explanation_probe"], "sha256": "AB" * 32}, "64 lowercase hex"),
        ({**doc["explanation_probe"], "images": 0}, "must hold images"),
        ({**doc["explanation_probe"], "images": True}, "not an integer"),
        ("QmProbe", "not an object"),
    ]:
        with pytest.raises(InvalidLog, match=message):
            ValuationSettings.from_json({**doc, "explanation_probe": bad})


def test_round_1_fixes_the_probe_set() -> None:
    later = replace(FIRST, round=2, valuation={**FIRST.valuation, "seed": 2})
    assert payment_differences(FIRST, later) == []
    other = replace(PROBE, cid="QmOther", sha256="cd" * 32)
    moved = replace(later, valuation=replace(CHECKED, seed=2, explanation_probe=other).to_json())
    assert any("explanation_probe" in d for d in payment_differences(FIRST, moved))
    dropped = replace(later, valuation=replace(CHECKED, seed=2, explanation_probe=None).to_json())
    assert any("explanation_probe" in d for d in payment_differences(FIRST, dropped))
