"""Round terms come from the aggregator through the store: whatever the bytes, parsing them
raises InvalidTerms, never another exception (a node daemon would stop on one)."""

from __future__ import annotations

import pytest

from fedtrail.protocol.terms import InvalidTerms, RoundTerms


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b'{"format": ' + b"9" * 5000 + b"}", "Exceeds the limit"),  # was ValueError
        (b'{"a":' * 5000, "nested 5000 levels deep"),  # was RecursionError
        (b"[1]", "not fedtrail.round-terms/1"),
    ],
)
def test_hostile_bytes_raise_invalid_terms(blob: bytes, why: str) -> None:
    with pytest.raises(InvalidTerms, match=why):
        RoundTerms.from_bytes(blob)
