"""The accounting rule an update names (issue 16, composed accounting): recorded in its DP
parameters (pinned by the blob's sha256), validated like every other field, absent for the old
summed rule so blobs written before it keep their bytes and their meaning."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedtrail.protocol.privacy import COMPOSED, SUMMED, DpParams, InvalidPrivacy

BASE: dict[str, Any] = {
    "noise_multiplier": 1.0,
    "max_grad_norm": 1.0,
    "sample_rate": 0.02,
    "steps": 50,
    "delta": 1e-5,
    "accountant": "rdp",
}


def test_a_document_without_the_field_is_summed_and_written_back_without_it() -> None:
    params = DpParams.from_json(dict(BASE))
    assert params.accounting == SUMMED
    assert params.to_json() == BASE  # the old document, byte for byte once serialized


def test_the_composed_rule_travels_in_the_document() -> None:
    doc = {**BASE, "accounting": "composed"}
    params = DpParams.from_json(json.loads(json.dumps(doc)))
    assert params.accounting == COMPOSED
    assert params.to_json() == doc


@pytest.mark.parametrize(
    "value", ["summed", "Composed", "rdp", "", None, 1, True, ["composed"], {"rule": "composed"}]
)
def test_any_other_accounting_value_is_refused(value: Any) -> None:
    """Untrusted input: only "composed" may be written ("summed" is the field's absence, the
    canonical form), and a wrong type is a clear error, not a crash."""
    with pytest.raises(InvalidPrivacy, match="accounting"):
        DpParams.from_json({**BASE, "accounting": value})


def test_the_constructor_refuses_an_unknown_rule() -> None:
    with pytest.raises(InvalidPrivacy, match="accounting"):
        DpParams(**BASE, accounting="tight")
