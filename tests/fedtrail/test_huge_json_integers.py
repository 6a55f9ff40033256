"""Integers no float can hold, in documents someone else chose, are refused as the document's own
error instead of crashing the reader with ``OverflowError`` (attack a29: a site's update whose DP
noise multiplier is a 400-digit integer stopped the aggregator's valuation; the same in round
terms or a round log stopped every node and ``audit verify``)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fedtrail import safejson
from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.roundlog import InvalidLog, RoundLog
from fedtrail.protocol.terms import InvalidTerms, RoundTerms
from fedtrail.storage.codec import decode_update, encode_update, zero_state

DATA = Path(__file__).resolve().parent / "protocol" / "data"
HUGE = "1" + "0" * 400  # 1e400: math.isfinite and float() raise OverflowError on it


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_safejson_refuses_an_integer_no_float_holds_and_keeps_the_others() -> None:
    with pytest.raises(safejson.TooLarge):
        safejson.loads(f'{{"x": {HUGE}}}')
    with pytest.raises(safejson.TooLarge):
        safejson.loads(f"[-{HUGE}]")
    uint256 = 2**256 - 1
    big_float_int = int(1.7e308)  # 309 digits, still a float
    doc = safejson.loads(f"[{uint256}, {big_float_int}, -{big_float_int}, 7]")
    assert doc == [uint256, big_float_int, -big_float_int, 7]
    assert safejson.loads("[3]", parse_int=lambda s: -1) == [-1]  # a caller's own hook wins


def test_terms_with_a_huge_threshold_are_invalid_terms() -> None:
    doc = json.loads((DATA / "round-terms-real.json").read_bytes())
    RoundTerms.from_bytes(_canonical(doc))  # the real terms parse
    doc["duplicates"]["cosine"] = 987654321  # a placeholder, replaced by the raw integer
    blob = _canonical(doc).replace(b"987654321", HUGE.encode())
    with pytest.raises(InvalidTerms, match="too large for a float"):
        RoundTerms.from_bytes(blob)


def test_a_log_with_a_huge_value_is_an_invalid_log() -> None:
    raw = (DATA / "round-log-real.json").read_bytes()
    RoundLog.from_bytes(raw)  # the real log parses
    doc = json.loads(raw)
    doc["round"] = 987654321
    blob = _canonical(doc).replace(b"987654321", HUGE.encode())
    with pytest.raises(InvalidLog, match="too large for a float"):
        RoundLog.from_bytes(blob)


def test_an_update_with_a_huge_dp_parameter_is_invalid() -> None:
    spec = ModelSpec()
    dp = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2, delta=1e-5)
    blob = encode_update(zero_state(spec), spec=spec, round=3, dp=dp).blob
    decode_update(blob, spec=spec, expected_round=3)  # the honest blob decodes
    (n,) = struct.unpack("<Q", blob[:8])
    header = blob[8 : 8 + n]
    key = b'\\"noise_multiplier\\":'
    hostile = header.replace(key + b"1.0", key + HUGE.encode())
    assert hostile != header
    hostile += b" " * (-len(hostile) % 8)
    forged = struct.pack("<Q", len(hostile)) + hostile + blob[8 + n :]
    with pytest.raises(InvalidUpdate, match="too large for a float"):
        decode_update(forged, spec=spec, expected_round=3)
