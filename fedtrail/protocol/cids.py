"""The shape of a CID, and how a round log records a CID the chain holds (attack a126).

The contract takes any non-empty ``string`` as a reveal's CID: no bound on its length or its
bytes. ``CID_SHAPE`` is the one shape every reader checks before anything else: a CIDv0
(``Qm`` and 44 base58btc characters, 46 in all) or a base32 CIDv1 (``b`` and 58 lowercase RFC
4648 base32 characters, 59 in all), the two spellings IPFS gives a sha2-256 root.
:func:`fedtrail.storage.cid.check_cid` parses only a text of this shape (anything else is an
*invalid cid* there, as in the independent reader, which checks the same expression).

A round log records a chain CID verbatim only when it has that shape; any other text, which no
reader ever fetches, is recorded as :func:`logged_cid`'s fixed-size stand-in ``sha256:`` and
the 64 lowercase hex digits of the sha256 of the text's UTF-8 (the text as every fedtrail reader
reads the chain: UTF-8, each backslash doubled, each byte that is not UTF-8 as ``\\xNN``, an
injective reading, so the digest binds the chain's exact bytes). A ``:`` is in neither CID
alphabet, so no stand-in has a CID's shape and no CID is a stand-in. Before this rule a
megabyte of NUL bytes as a reveal's CID (4 gas a byte) was six megabytes of log (``\\u0000``):
six such sites pushed an honest aggregator's log over ``MAX_LOG_BYTES``.

:func:`logged_cid_agrees` is what every check of a log entry against the chain applies: the
entry equals the stand-in rule's record, or (a log written before the rule) the chain's text
exactly. Either is a function of the chain's text alone and names it uniquely, so an honest old
log still verifies and a log can claim no other CID than the chain's.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = [
    "CID_SHAPE",
    "SHOWN_CHARS",
    "STAND_IN_PREFIX",
    "bounded",
    "cid_shaped",
    "logged_cid",
    "logged_cid_agrees",
]

CID_SHAPE: Final = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58}")
"""A CIDv0 or a base32 CIDv1 of a 32-byte sha2-256 root, by its characters alone."""

STAND_IN_PREFIX: Final = "sha256:"
"""What begins a log's record of a chain CID that has no CID's shape (no CID holds a ``:``)."""


SHOWN_CHARS: Final = 200
"""At most this many characters of a participant's text (a chain CID, a logged value) in a
report or a mismatch message: the contract bounds no ``string`` (a126: a 200,000-byte CID), so
whoever chose one must not fill an auditor's output with it. A real CID is 46 or 59."""


def bounded(text: str) -> str:
    """``text`` as a report shows it: whole up to :data:`SHOWN_CHARS` characters, else its
    first :data:`SHOWN_CHARS` followed by ``... (N characters)``, its full length."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def cid_shaped(text: object) -> bool:
    """Whether ``text`` is a string of :data:`CID_SHAPE` (46 or 59 ASCII characters)."""
    return isinstance(text, str) and CID_SHAPE.fullmatch(text) is not None


def logged_cid(chain_text: str) -> str:
    """How a round log records the chain's CID text: as it is when it has a CID's shape,
    otherwise ``sha256:`` and the hex sha256 of its UTF-8 (71 characters, whatever its length)."""
    if cid_shaped(chain_text):
        return chain_text
    digest = hashlib.sha256(chain_text.encode("utf-8", "surrogatepass")).hexdigest()
    return STAND_IN_PREFIX + digest


def logged_cid_agrees(logged: object, chain_text: str) -> bool:
    """Whether a log's record of a CID names the chain's text: :func:`logged_cid`'s record, or
    the text itself (what every log written before the rule holds)."""
    return isinstance(logged, str) and logged in (logged_cid(chain_text), chain_text)
