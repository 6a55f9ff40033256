"""Site names as people read them: which names look alike, and how to show one unambiguously.

A site's identity is its address; its name is what a coordinator typed at ``registerSite`` and
what every table, log and report shows beside the address. Two names that render alike
(``hospital-a`` with a Latin ``a`` and ``hospital-а`` with Cyrillic U+0430) let a reader credit
one site with the other's weight without any check noticing (attack a59). The rule here is
fedtrail's own, small and fixed, so an independent reader can apply it without a confusables
database:

- :func:`skeleton`: NFKC, format characters (zero-width, bidi) dropped, each letter of
  :data:`HOMOGLYPHS` (Cyrillic and Greek letters drawn like a Latin one) replaced by that Latin
  letter, casefolded, ``1``/``|`` read as ``l`` and ``0`` as ``o``, whitespace runs as one
  space, stripped. Two names with one skeleton are *confusable*.
- :func:`scripts`: the scripts of a name's letters (the first word of each letter's Unicode
  name: ``LATIN``, ``CYRILLIC``, ...; Han, Hiragana and Katakana count as one, ``CJK``).
  A name with letters of two or more scripts is *mixed-script*.

:func:`shown` renders a name as an auditor sees it: characters that would print as nothing or
as something else (controls, format, unassigned, whitespace other than the space) as
``\\uNNNN``, and in a mixed-script name every non-ASCII letter too, so ``hospital-\\u0430``
stands apart from ``hospital-a``. A name read from the chain has every backslash of its bytes
doubled and each byte that is not UTF-8 as ``\\xNN`` (``fedtrail.ledger``'s reading), so on such
names the rendering is injective: two different byte strings never show alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

HOMOGLYPHS: dict[str, str] = {
    # Cyrillic, lower case
    "\u0430": "a",  # а
    "\u0441": "c",  # с
    "\u0501": "d",  # ԁ
    "\u0435": "e",  # е
    "\u0456": "i",  # і
    "\u0458": "j",  # ј
    "\u04cf": "l",  # ӏ
    "\u043e": "o",  # о
    "\u0440": "p",  # р
    "\u051b": "q",  # ԛ
    "\u0455": "s",  # ѕ
    "\u051d": "w",  # ԝ
    "\u0445": "x",  # х
    "\u0443": "y",  # у
    "\u04bb": "h",  # һ
    # Cyrillic, upper case
    "\u0410": "a",  # А
    "\u0412": "b",  # В
    "\u0421": "c",  # С
    "\u0415": "e",  # Е
    "\u041d": "h",  # Н
    "\u0406": "i",  # І
    "\u0408": "j",  # Ј
    "\u041a": "k",  # К
    "\u041c": "m",  # М
    "\u041e": "o",  # О
    "\u0420": "p",  # Р
    "\u0405": "s",  # Ѕ
    "\u0422": "t",  # Т
    "\u0425": "x",  # Х
    "\u04ae": "y",  # Ү
    # Greek, lower case
    "\u03bf": "o",  # ο
    "\u03b9": "i",  # ι
    "\u03ba": "k",  # κ
    "\u03bd": "v",  # ν
    "\u03c1": "p",  # ρ
    "\u03c5": "u",  # υ
    "\u03b1": "a",  # α
    # Greek, upper case
    "\u0391": "a",  # Α
    "\u0392": "b",  # Β
    "\u0395": "e",  # Ε
    "\u0396": "z",  # Ζ
    "\u0397": "h",  # Η
    "\u0399": "i",  # Ι
    "\u039a": "k",  # Κ
    "\u039c": "m",  # Μ
    "\u039d": "n",  # Ν
    "\u039f": "o",  # Ο
    "\u03a1": "p",  # Ρ
    "\u03a4": "t",  # Τ
    "\u03a5": "y",  # Υ
    "\u03a7": "x",  # Χ
}
"""Letters drawn like a Latin letter in common fonts, each mapped to that (lower-case) Latin
letter by :func:`skeleton`. A documented subset of Unicode's confusables table: the Cyrillic
and Greek letters a coordinator can type in place of Latin ones."""

_AFTER_CASEFOLD = str.maketrans({"1": "l", "|": "l", "0": "o"})
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_EAST_ASIAN = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL"})


def skeleton(name: str) -> str:
    """``name`` as :mod:`fedtrail.protocol.names` folds it (the module's rule): two names with
    one skeleton read alike."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(
        HOMOGLYPHS.get(ch, ch) for ch in text if unicodedata.category(ch) not in _INVISIBLE
    )
    text = text.casefold().translate(_AFTER_CASEFOLD)
    return unicodedata.normalize("NFKC", re.sub(r"\s+", " ", text).strip())


def _script(ch: str) -> str | None:
    if not unicodedata.category(ch).startswith("L"):
        return None  # digits, punctuation, spaces, marks: no script of their own
    word = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
    return "CJK" if word in _EAST_ASIAN else word


def scripts(name: str) -> frozenset[str]:
    """The scripts of ``name``'s letters (NFKC first, so a compatibility form counts as its
    letter)."""
    return frozenset(
        s for s in map(_script, unicodedata.normalize("NFKC", name)) if s is not None
    )


def mixed_script(name: str) -> bool:
    """Letters of two or more scripts (``hospital-а``: Latin and Cyrillic)."""
    return len(scripts(name)) > 1


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(name: str) -> str:
    """``name`` for display: each control, format, surrogate, private-use or unassigned
    character and each whitespace other than the space as ``\\uNNNN``; in a mixed-script name,
    every non-ASCII character as well. Injective on names read from the chain (their
    backslashes come doubled)."""
    mixed = mixed_script(name)
    return "".join(
        _escape(ch)
        if (
            unicodedata.category(ch) in _INVISIBLE
            or (ch.isspace() and ch != " ")
            or (mixed and not ch.isascii())
        )
        else ch
        for ch in name
    )


def confusable_groups(names: Mapping[str, str]) -> list[list[str]]:
    """Addresses whose names (``names``: address -> name) are confusable with another's, one
    sorted list per shared skeleton, groups in order of their first address."""
    by_skeleton: dict[str, list[str]] = {}
    for address in sorted(names, key=str.lower):
        by_skeleton.setdefault(skeleton(names[address]), []).append(address)
    return [group for group in by_skeleton.values() if len(group) > 1]


def name_problems(name: str, others: Iterable[str]) -> list[str]:
    """Why a coordinator's tooling refuses to register ``name`` beside the names ``others``
    (every other site's): empty, a character that prints as nothing or as something else,
    a backslash (chain readers escape with it), letters of two scripts, or a skeleton another
    name has. Empty when none applies."""
    problems: list[str] = []
    if not name.strip():
        problems.append("the name is empty")
    if any(unicodedata.category(ch) in _INVISIBLE for ch in name):
        problems.append("it holds control, format or unassigned characters")
    if "\\" in name:
        problems.append("it holds a backslash (chain readers show escapes with it)")
    if mixed_script(name):
        problems.append(f"it mixes scripts ({', '.join(sorted(scripts(name)))}): {shown(name)}")
    mine = skeleton(name)
    alike = sorted({o for o in others if skeleton(o) == mine})
    if alike:
        problems.append(
            "it reads like the registered name(s) " + ", ".join(repr(shown(o)) for o in alike)
        )
    return problems
