"""Numbers no float can hold, in documents someone else chose, are refused as the document's own
error instead of crashing the reader: integers beyond the float range raised ``OverflowError``
(attack a29: a site's update whose DP noise multiplier is a 400-digit integer stopped the
aggregator's valuation; the same in round terms or a round log stopped every node and ``audit
verify``), and ``NaN`` / ``Infinity`` / ``1e999`` in round terms raised ``ValueError`` from their
canonical re-encoding (a31); none is written by any fedtrail writer."""

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


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_safejson_refuses_numbers_that_are_not_finite(literal: str) -> None:
    with pytest.raises(safejson.NotFinite):
        safejson.loads(f'{{"x": {literal}}}')
    assert safejson.loads('{"x": 1.7976931348623157e308}') == {"x": 1.7976931348623157e308}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_terms_with_a_non_finite_valuation_entry_are_invalid_terms(literal: str) -> None:
    """The valuation block is a free-form mapping, read by ``ValuationSettings`` only later: a
    non-finite entry there used to escape ``from_bytes`` as the ``ValueError`` of its
    canonical re-encoding (``allow_nan=False``), which ``audit verify`` does not catch."""
    doc = json.loads((DATA / "round-terms-real.json").read_bytes())
    doc["valuation"]["combiner"]["max_norm_z"] = 987654321
    blob = _canonical(doc).replace(b"987654321", literal.encode())
    with pytest.raises(InvalidTerms, match="not"):
        RoundTerms.from_bytes(blob)


def test_a_log_with_a_nan_component_is_an_invalid_log() -> None:
    """Logs are written with NaN as null; a NaN a reader would take as a number is refused."""
    doc = json.loads((DATA / "round-log-real.json").read_bytes())
    doc["sites"][0]["components"]["cosine"] = 987654321
    blob = _canonical(doc).replace(b"987654321", b"NaN")
    with pytest.raises(InvalidLog, match="NaN is not a JSON number"):
        RoundLog.from_bytes(blob)
