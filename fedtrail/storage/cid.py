"""Content identifiers: compute the CID IPFS gives some bytes, and validate untrusted CID strings.

CIDs come from chain events that other parties wrote, so ``check_cid`` is strict and offline: it
accepts only the forms IPFS nodes produce for fedtrail's blobs, a CIDv0 (``Qm...``) or a base32
CIDv1 (``b...``) of codec dag-pb or raw over a sha2-256 multihash, each in its canonical
spelling, and raises ``InvalidCid`` for everything else, with the string cut short in the
message. Computing uses ``aleph-cid`` (Kubo's default layout); parsing uses ``py-cid`` with its
``base58``, ``py-multibase``, ``py-multicodec`` and ``py-multihash`` (installed with
``ipfshttpclient``'s ``multiaddr``), rather than hand-written base58 and varint code.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import aleph_cid
import cid as py_cid
import multihash

from fedtrail.errors import InvalidCid
from fedtrail.protocol.cids import cid_shaped

__all__ = ["MAX_CID_LEN", "check_cid", "compute_cid", "sha256_hex"]

MAX_CID_LEN: Final = 128
"""Longest string ``check_cid`` parses; real ones are 46 (v0) and 59 (v1) characters."""

_CODECS: Final = frozenset({"dag-pb", "raw"})
_SHA2_256: Final = 0x12


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` as 64 lowercase hex characters, the form the chain records."""
    return hashlib.sha256(data).hexdigest()


def compute_cid(data: bytes) -> str:
    """The CID a Kubo or js-ipfs node gives ``data`` by default (``ipfs add --only-hash``)."""
    return str(aleph_cid.compute_cid(data))


def check_cid(cid: object) -> str:
    """Validate a CID string without any network call and return its canonical form.

    A dag-pb CIDv1 is returned as the equivalent CIDv0, so both name the same blob in a
    ``LocalStore``; a raw CIDv1 is returned unchanged. Anything else raises ``InvalidCid``.
    """
    if not isinstance(cid, str) or not cid or len(cid) > MAX_CID_LEN:
        raise InvalidCid(f"not a CID: {_short(cid)}")
    canonical = _parse(cid)
    if canonical is None:
        raise InvalidCid(
            f"not a CID (expected CIDv0 'Qm...' or base32 CIDv1 'b...'): {_short(cid)}"
        )
    return canonical


def _parse(text: str) -> str | None:
    """The canonical form of ``text``, or None when it is not an accepted CID."""
    # the shape of the two accepted spellings (fedtrail.protocol.cids.CID_SHAPE, the one every
    # reader checks and a round log's rule for its CIDs), checked before any decoding
    if not cid_shaped(text):
        return None
    version, encoding = (0, "base58btc") if text.startswith("Qm") else (1, "base32")
    try:
        parsed: Any = py_cid.from_string(text)
        digest = multihash.decode(parsed.multihash)
        spelled = parsed.encode() if version == 0 else parsed.encode(encoding)
    except Exception:  # hostile input: the libraries raise ValueError, KeyError, TypeError, ...
        return None
    if (
        parsed.version != version
        or parsed.codec not in _CODECS
        or digest.code != _SHA2_256
        or len(digest.digest) != 32
        or spelled != text.encode("ascii")  # no second spelling (padding bits, long varints)
    ):
        return None
    if version == 1 and parsed.codec == "dag-pb":
        return str(parsed.to_v0())
    return text


def _short(x: object) -> str:
    """repr of an untrusted value, cut so a hostile event cannot flood logs."""
    text = repr(x)
    return text if len(text) <= 140 else text[:137] + "..."
