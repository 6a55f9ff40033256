"""Tests of fedtrail.storage.cid: Kubo's CIDs, and strict offline validation of untrusted ones."""

from __future__ import annotations

import base64
import hashlib

import base58
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrail.errors import InvalidCid
from fedtrail.storage.cid import MAX_CID_LEN, check_cid, compute_cid, sha256_hex

HELLO_WORLD_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"  # `ipfs add` of "hello world\n"
HELLO_MH = base58.b58decode(HELLO_WORLD_CID)  # 0x12 0x20 + 32-byte sha2-256 digest

BAD_CIDS = [
    "",
    "hello",
    "Qm",
    HELLO_WORLD_CID[:-1],  # one character short
    HELLO_WORLD_CID[:-1] + "0",  # '0' is not base58
    HELLO_WORLD_CID + "u",
    "Qm" + "z" * 44,  # base58, right length, but not a sha2-256 multihash
    "../../etc/passwd",
    "bafyINVALIDUPPER",
    "bafy" + "a" * 200,
    "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58 CIDv1: not accepted
]


def v1(raw: bytes) -> str:
    """A base32 CIDv1 string of raw CID bytes, as IPFS spells it."""
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def test_sha256_hex_is_64_lowercase_hex() -> None:
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_compute_cid_matches_known_kubo_cid() -> None:
    assert compute_cid(b"hello world\n") == HELLO_WORLD_CID


def test_check_cid_maps_dag_pb_cidv1_to_the_same_cidv0() -> None:
    assert check_cid(v1(b"\x01\x70" + HELLO_MH)) == HELLO_WORLD_CID
    assert check_cid(HELLO_WORLD_CID) == HELLO_WORLD_CID


def test_check_cid_accepts_raw_leaf_cidv1_unchanged() -> None:
    raw_leaf = v1(b"\x01\x55" + HELLO_MH)
    assert check_cid(raw_leaf) == raw_leaf


@pytest.mark.parametrize("bad", BAD_CIDS)
def test_check_cid_rejects_bad_cid(bad: str) -> None:
    with pytest.raises(InvalidCid):
        check_cid(bad)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x01\x71" + HELLO_MH, "dag-cbor codec"),
        (b"\x00\x70" + HELLO_MH, "version 0 in a v1 spelling"),
        (b"\x02\x70" + HELLO_MH, "version 2"),
        (b"\x01\x70" + b"\x13\x20" + HELLO_MH[2:], "sha2-512 code with a 32-byte digest"),
        (b"\x01\x70" + HELLO_MH[:-1], "digest one byte short"),
        (b"\x01\x70" + HELLO_MH + b"\0", "a trailing byte"),
        (b"\x01\xf0\x00" + HELLO_MH, "codec as a non-minimal varint"),
        (b"\x01\xd5\x00" + HELLO_MH, "raw codec as a non-minimal varint"),
        (b"\x81\x00\x70" + HELLO_MH, "version as a non-minimal varint"),
    ],
)
def test_check_cid_rejects_other_cidv1_bytes(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidCid):
        check_cid(v1(raw))


def test_check_cid_accepts_only_the_canonical_spelling_of_a_cidv1() -> None:
    """The last base32 character carries 2 unused bits; only zeros there spell the CID."""
    good = v1(b"\x01\x55" + HELLO_MH)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    last = alphabet.index(good[-1])
    assert last % 4 == 0
    for pad in (1, 2, 3):
        with pytest.raises(InvalidCid):
            check_cid(good[:-1] + alphabet[last + pad])


@pytest.mark.parametrize("bad", [None, 7, b"QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"])
def test_check_cid_rejects_non_strings(bad: object) -> None:
    with pytest.raises(InvalidCid):
        check_cid(bad)


def test_check_cid_length_limit_and_short_message() -> None:
    at_limit = "b" + "a" * (MAX_CID_LEN - 1)
    with pytest.raises(InvalidCid):
        check_cid(at_limit)  # parsed, and refused on content
    with pytest.raises(InvalidCid) as err:
        check_cid("Q" * 10_000)
    assert len(str(err.value)) < 200


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_check_cid_raises_only_invalid_cid_on_random_text(text: str) -> None:
    try:
        canonical = check_cid(text)
    except InvalidCid:
        return
    assert check_cid(canonical) == canonical


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_every_computed_cid_checks_and_its_cidv1_maps_back(data: bytes) -> None:
    cid = compute_cid(data)
    assert check_cid(cid) == cid
    assert check_cid(v1(b"\x01\x70" + base58.b58decode(cid))) == cid
    raw_leaf = v1(b"\x01\x55\x12\x20" + hashlib.sha256(data).digest())
    assert check_cid(raw_leaf) == raw_leaf
