"""``json.loads`` for documents someone else chose: nesting is bounded before parsing.

CPython's C JSON parser recurses once per nesting level and stops only at Python's recursion
limit. web3's dependency ``py_ecc`` raises that limit to 100,000 when it is imported, which
every process that talks to the ledger does; a document nested some 30,000 levels deep (a
60 KiB string of ``[``) then overflows the C stack and the process dies with a segmentation
fault instead of a ``RecursionError``. Lowering the limit around a parse would be process-wide
(threads, py_ecc's own recursion), so the depth is measured first, in one linear pass that
never recurses, and a document nested deeper than its format allows is refused outright.

Integers no float can hold (about 309 digits and more) are refused too (:class:`TooLarge`):
every reader checks its numbers with ``math.isfinite`` or ``float()``, which raise
``OverflowError``, not ``ValueError``, on such an integer, so a 400-digit DP parameter in an
update's metadata, a terms threshold or a log value crashed the aggregator, every node and
``audit verify`` instead of being refused (attack review after stop 41, a29). No fedtrail
document holds an integer above 2**256. For the same reason ``NaN``, ``Infinity`` and number
literals too large for a float (``1e999``, which Python reads as infinity) are refused
(:class:`NotFinite`): every fedtrail writer refuses them (``allow_nan=False``), and a terms
document holding one in its free-form ``valuation`` raised ``ValueError`` from its canonical
re-encoding instead of ``InvalidTerms`` (a31).

A string holding a lone UTF-16 surrogate (an unpaired ``\\ud800`` escape: JSON's grammar allows
it, I-JSON, RFC 7493, does not) is refused too (:class:`LoneSurrogate`): Python reads it as a
``str`` that no UTF-8 stream can write, so any reader that printed such a log text without
escaping it crashed (the attack harness did), and parsers of other languages (Rust's
``serde_json``) refuse the whole document where Python's reads it: one pinned log, two
readings (a63). No fedtrail writer produces one (every writer encodes ``str`` from UTF-8).

Every failure is a ``ValueError`` (a ``JSONDecodeError``, a ``UnicodeDecodeError``, Python's
limit on integer digits, :class:`TooDeep`, :class:`TooLarge`, :class:`NotFinite` or
:class:`LoneSurrogate`), so a caller maps one exception type to its own ``FedtrailError``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

import numpy as np

__all__ = [
    "MAX_DEPTH",
    "LoneSurrogate",
    "NotFinite",
    "TooDeep",
    "TooLarge",
    "loads",
    "nesting_depth",
]

MAX_DEPTH: Final = 32
"""Deepest nesting accepted. fedtrail's deepest documents nest 4 levels (a round log), a
safetensors header 3, its metadata 2, round terms 2 (``tests/fedtrail/test_safejson.py``
measures them); nesting 32 deep costs the C parser nothing."""

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# +1 for an opening bracket, -1 for a closing one, 0 for every other byte.
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class TooDeep(ValueError):
    """A JSON document nested deeper than its format allows."""


class TooLarge(ValueError):
    """A JSON integer too large for a float (``float()`` would raise ``OverflowError``)."""


_FLOAT_SAFE_DIGITS: Final = 300
"""Integers of at most this many characters always convert to a float (the largest finite
float is about 1.8e308); longer ones are converted once to find out."""


def _parse_int(text: str) -> int:
    value = int(text)
    if len(text) > _FLOAT_SAFE_DIGITS:
        try:
            float(value)
        except OverflowError:
            raise TooLarge(f"an integer of {len(text)} digits, too large for a float") from None
    return value


class LoneSurrogate(ValueError):
    """A string holds a UTF-16 surrogate with no partner (from a ``\\uD800``-``\\uDFFF``
    escape): no UTF-8 text can hold it."""


_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _refuse_surrogates(value: Any, where: str = "") -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise LoneSurrogate(f"a string at {where or '/'} holds a lone UTF-16 surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates(key, where)
            _refuse_surrogates(item, f"{where}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_surrogates(item, f"{where}/{i}")


class NotFinite(ValueError):
    """``NaN``, ``Infinity`` or a number literal beyond the float range (``1e999``)."""


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"the number {text[:40]} is not a finite float")
    return value


def _parse_constant(name: str) -> float:
    raise NotFinite(f"{name} is not a JSON number")


def nesting_depth(data: bytes) -> int:
    """The deepest ``[``/``{`` nesting of the JSON text ``data`` (brackets inside strings do not
    count), in one vectorized pass.

    For any prefix that a JSON parser accepts, the depth counted here is the parser's own: the
    quotes, backslashes and brackets that delimit JSON are ASCII bytes, which never occur inside
    a multi-byte UTF-8 sequence, and a quote opens or closes a string unless an odd run of
    backslashes precedes it. Past the first syntax error the count may differ, but the parser
    stops there.
    """
    b = np.frombuffer(data, dtype=np.uint8)
    step = _STEP[b]
    at = np.flatnonzero(step)
    if at.size == 0:
        return 0
    quote = b == _QUOTE
    # A quote right after an odd run of backslashes is escaped: find the runs and their ends.
    slashes = np.flatnonzero(b == _BACKSLASH)
    if slashes.size:
        breaks = np.flatnonzero(np.diff(slashes) != 1)
        starts = np.concatenate((slashes[:1], slashes[breaks + 1]))
        ends = np.concatenate((slashes[breaks], slashes[-1:]))
        after = ends[(ends - starts) % 2 == 0] + 1  # odd length: ends - starts is even
        quote[after[after < b.size]] = False
    real = np.flatnonzero(quote)
    # A bracket after an odd number of real quotes lies inside a string.
    outside = np.searchsorted(real, at) % 2 == 0
    return int(np.cumsum(step[at][outside], dtype=np.int64).max(initial=0))


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """``json.loads(data, **kwargs)`` after checking that ``data`` nests at most ``max_depth``
    levels, with integers a float can hold and finite floats only (unless ``kwargs`` names its
    own ``parse_int``, ``parse_float`` or ``parse_constant``);
    ``ValueError`` for anything that is not such a document."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    # no deeper than it has openers: a document with few needs no scan (an update blob's
    # header, 28 openers: 78 us to scan, 3 us to count, 28 us to parse, measured here)
    openers = raw.count(b"[") + raw.count(b"{")
    depth = openers if openers <= max_depth else nesting_depth(raw)
    if depth > max_depth:
        raise TooDeep(f"nested {depth} levels deep, over the limit of {max_depth}")
    text = data if isinstance(data, str) else data.decode("utf-8")
    kwargs.setdefault("parse_int", _parse_int)
    kwargs.setdefault("parse_float", _parse_float)
    kwargs.setdefault("parse_constant", _parse_constant)
    try:
        doc = json.loads(text, **kwargs)
    except RecursionError as exc:  # not reachable below MAX_DEPTH; a ValueError all the same
        raise TooDeep(f"nested too deep for the JSON parser: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw):  # only an escape makes one: strict UTF-8 cannot (a63)
        _refuse_surrogates(doc)
    return doc
