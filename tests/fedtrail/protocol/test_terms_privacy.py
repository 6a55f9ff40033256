"""Round terms carry the federation's privacy (delta, required) only when set, refuse bad ones."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from fedtrail.protocol.terms import InvalidTerms, PrivacyTerms, RoundTerms

ZERO = "0" * 64


def _terms(**changes: object) -> RoundTerms:
    base = RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "shapley"},
        model_spec={"arch": "smallcnn"},
        spec_hash=ZERO,
        seed=0,
        validation_sha256=ZERO,
        validation_images=10,
        commit_seconds=60,
        reveal_seconds=60,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_terms_without_privacy_keep_their_bytes() -> None:
    plain = _terms()
    assert "privacy" not in json.loads(plain.to_bytes())
    back = RoundTerms.from_bytes(plain.to_bytes())
    assert back.privacy is None and back.to_bytes() == plain.to_bytes()


def test_terms_round_trip_the_privacy() -> None:
    terms = _terms(privacy=PrivacyTerms(delta=1e-5, required=True))
    blob = terms.to_bytes()
    assert json.loads(blob)["privacy"] == {"delta": 1e-5, "required": True}
    back = RoundTerms.from_bytes(blob)
    assert back == terms and back.to_bytes() == blob
    assert PrivacyTerms(delta=1e-5).required is False


@pytest.mark.parametrize(
    "bad",
    [
        {"delta": 0, "required": False},
        {"delta": 1, "required": False},
        {"delta": -1e-5, "required": False},
        {"delta": "1e-5", "required": False},
        {"delta": True, "required": False},
        {"delta": 1e-5, "required": 1},
        {"delta": 1e-5},
        {"delta": 1e-5, "required": False, "epsilon": 8},
        [1e-5, True],
    ],
)
def test_terms_refuse_bad_privacy(bad: Any) -> None:
    doc = json.loads(_terms().to_bytes())
    doc["privacy"] = bad
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(InvalidTerms, match="privacy"):
        RoundTerms.from_bytes(blob)
