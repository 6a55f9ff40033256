"""Round terms come from the aggregator through the store: whatever the bytes, parsing them
raises InvalidTerms, never another exception (a node daemon would stop on one)."""

from __future__ import annotations

import pytest

from fedtrail.protocol.terms import MAX_TERMS_BYTES, InvalidTerms, RoundTerms

ZERO = "0" * 64
HONEST = RoundTerms(
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
).to_bytes()


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b'{"format": ' + b"9" * 5000 + b"}", "Exceeds the limit"),  # was ValueError
        (b'{"a":' * 5000, "nested 5000 levels deep"),  # was RecursionError
        (b"[1]", "not fedtrail.round-terms/1"),
        # valid terms, padded: on the parent they parsed (a 256 MiB blob took every node ~7 GB)
        (HONEST + b" " * (MAX_TERMS_BYTES + 1 - len(HONEST)), "over the limit of 1048576"),
    ],
)
def test_hostile_bytes_raise_invalid_terms(blob: bytes, why: str) -> None:
    with pytest.raises(InvalidTerms, match=why):
        RoundTerms.from_bytes(blob)


def test_honest_terms_are_far_below_the_limit() -> None:
    assert RoundTerms.from_bytes(HONEST).to_bytes() == HONEST
    assert len(HONEST) * 100 < MAX_TERMS_BYTES
