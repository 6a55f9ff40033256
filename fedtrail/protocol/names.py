"""Site names as people read them: which names look alike, and how to show one unambiguously.

A site's identity is its address; its name is what a coordinator typed at ``registerSite`` and
what every table, log and report shows beside the address. Two names that render alike
(``hospital-a`` with a Latin ``a`` and ``hospital-\\u0430`` with a Cyrillic one) let a reader credit
one site with the other's weight without any check noticing (attack a59). The rule here is
fedtrail's own, small and fixed, so an independent reader can apply it without a confusables
database:

- :func:`skeleton`: NFKC, format characters (zero-width, bidi) dropped, dashes (U+2010-2015,
  U+2212, ...) as ``-``, Hangul fillers and the blank Braille pattern dropped, canonically
  decomposed (NFD) with every nonspacing or enclosing mark dropped (``a`` + U+0301 and
  ``\u00e1`` read as ``a``; so do a variation selector and another script's accent), a letter
  whose Unicode name is another letter of its script "WITH" something, "DOTLESS", "SCRIPT" or a
  "SMALL CAPITAL" read as that letter (``\u0142``, L WITH STROKE, as ``l``: derived from
  :mod:`unicodedata`, no list), then each letter of :data:`CASED` (Cherokee, Coptic, Lisu:
  Unicode's confusables data) and :data:`HOMOGLYPHS` (Cyrillic, Greek, Armenian and a few Latin
  letters) replaced by the Latin letter it is drawn like, casefolded, ``1``/``|`` read as ``l``
  and ``0`` as ``o``, whitespace dropped (an inserted space reads alike), and ``m``, ``w``,
  ``d`` read as ``rn``, ``vv``, ``cl``; :func:`visual_skeleton` the same without casefolding
  and with a capital ``I`` read as ``l``. Two names with one skeleton or one visual skeleton
  are *confusable* (:func:`confusable`). The rule errs towards "alike": ``Hopital`` and
  ``H\u00f4pital``, two Cyrillic names apart only by a breve, or two Hindi names apart only by
  a nonspacing vowel sign are confusable too.
- :func:`scripts`: the scripts of a name's letters (the first word of each letter's Unicode
  name: ``LATIN``, ``CYRILLIC``, ...; Han, Hiragana and Katakana count as one, ``CJK``).
  A name with letters of two or more scripts is *mixed-script*.

:func:`shown` renders a name as an auditor sees it: characters that would print as nothing or
as something else (controls, format, unassigned, blank letters, whitespace other than the
space) as ``\\uNNNN``, and in a mixed-script name every non-ASCII letter too, so
``hospital-\\u0430`` stands apart from ``hospital-a``. A name read from the chain has every
backslash of its bytes doubled and each byte that is not UTF-8 as ``\\xNN`` (``fedtrail.ledger``'s
reading), so on such names the rendering is injective: two different byte strings never show
alike.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping

HOMOGLYPHS: dict[str, str] = {
    # Cyrillic, lower case
    "\u0430": "a",  # cyrillic small letter a
    "\u0441": "c",  # cyrillic small letter es
    "\u0501": "d",  # cyrillic small letter komi de
    "\u0435": "e",  # cyrillic small letter ie
    "\u0456": "i",  # cyrillic small letter byelorussian-ukrainian i
    "\u0458": "j",  # cyrillic small letter je
    "\u04cf": "l",  # cyrillic small letter palochka
    "\u043e": "o",  # cyrillic small letter o
    "\u0440": "p",  # cyrillic small letter er
    "\u051b": "q",  # cyrillic small letter qa
    "\u0455": "s",  # cyrillic small letter dze
    "\u051d": "w",  # cyrillic small letter we
    "\u0445": "x",  # cyrillic small letter ha
    "\u0443": "y",  # cyrillic small letter u
    "\u04bb": "h",  # cyrillic small letter shha
    # Cyrillic, upper case
    "\u0410": "a",  # cyrillic capital letter a
    "\u0412": "b",  # cyrillic capital letter ve
    "\u0421": "c",  # cyrillic capital letter es
    "\u0415": "e",  # cyrillic capital letter ie
    "\u041d": "h",  # cyrillic capital letter en
    "\u0406": "i",  # cyrillic capital letter byelorussian-ukrainian i
    "\u0408": "j",  # cyrillic capital letter je
    "\u041a": "k",  # cyrillic capital letter ka
    "\u041c": "m",  # cyrillic capital letter em
    "\u041e": "o",  # cyrillic capital letter o
    "\u0420": "p",  # cyrillic capital letter er
    "\u0405": "s",  # cyrillic capital letter dze
    "\u0422": "t",  # cyrillic capital letter te
    "\u0425": "x",  # cyrillic capital letter ha
    "\u04ae": "y",  # cyrillic capital letter straight u
    # Greek, lower case
    "\u03bf": "o",  # greek small letter omicron
    "\u03b9": "i",  # greek small letter iota
    "\u03ba": "k",  # greek small letter kappa
    "\u03bd": "v",  # greek small letter nu
    "\u03c1": "p",  # greek small letter rho
    "\u03c5": "u",  # greek small letter upsilon
    "\u03b1": "a",  # greek small letter alpha
    # Greek, upper case
    "\u0391": "a",  # greek capital letter alpha
    "\u0392": "b",  # greek capital letter beta
    "\u0395": "e",  # greek capital letter epsilon
    "\u0396": "z",  # greek capital letter zeta
    "\u0397": "h",  # greek capital letter eta
    "\u0399": "i",  # greek capital letter iota
    "\u039a": "k",  # greek capital letter kappa
    "\u039c": "m",  # greek capital letter mu
    "\u039d": "n",  # greek capital letter nu
    "\u039f": "o",  # greek capital letter omicron
    "\u03a1": "p",  # greek capital letter rho
    "\u03a4": "t",  # greek capital letter tau
    "\u03a5": "y",  # greek capital letter upsilon
    "\u03a7": "x",  # greek capital letter chi
    # Armenian (a61)
    "\u0585": "o",  # armenian small letter oh
    "\u057d": "u",  # armenian small letter seh
    "\u0578": "n",  # armenian small letter vo
    "\u0570": "h",  # armenian small letter ho
    "\u0581": "g",  # armenian small letter co
    "\u0566": "q",  # armenian small letter za
    "\u054d": "u",  # armenian capital letter seh
    "\u0555": "o",  # armenian capital letter oh
    # Latin letters drawn like other Latin letters (a61)
    "\u0251": "a",  # latin small letter alpha
    "\u0131": "i",  # latin small letter dotless i
    "\u0237": "j",  # latin small letter dotless j
    "\u0261": "g",  # latin small letter script g
}
"""Letters drawn like a Latin letter in common fonts, each mapped to that (lower-case) Latin
letter by :func:`skeleton`. A documented subset of Unicode's confusables table: the Cyrillic,
Greek and Armenian letters a coordinator can type in place of Latin ones, and four Latin
letters drawn like others (a61)."""

CASED: dict[str, str] = {
    # Cherokee: a syllabary whose letters are drawn like Latin capitals (and a few small ones)
    "\u13a0": "D",  # cherokee letter a
    "\u13a1": "R",  # cherokee letter e
    "\u13a2": "T",  # cherokee letter i
    "\u13a5": "i",  # cherokee letter v
    "\u13a9": "Y",  # cherokee letter gi
    "\u13aa": "A",  # cherokee letter go
    "\u13ab": "J",  # cherokee letter gu
    "\u13ac": "E",  # cherokee letter gv
    "\u13b3": "W",  # cherokee letter la
    "\u13b7": "M",  # cherokee letter lu
    "\u13bb": "H",  # cherokee letter mi
    "\u13bd": "Y",  # cherokee letter mu
    "\u13c0": "G",  # cherokee letter nah
    "\u13c2": "h",  # cherokee letter ni
    "\u13c3": "Z",  # cherokee letter no
    "\u13cf": "b",  # cherokee letter si
    "\u13d2": "R",  # cherokee letter sv
    "\u13d4": "W",  # cherokee letter ta
    "\u13d5": "S",  # cherokee letter de
    "\u13d9": "V",  # cherokee letter do
    "\u13da": "S",  # cherokee letter du
    "\u13de": "L",  # cherokee letter tle
    "\u13df": "C",  # cherokee letter tli
    "\u13e2": "P",  # cherokee letter tlv
    "\u13e6": "K",  # cherokee letter tso
    "\u13e7": "d",  # cherokee letter tsu
    "\u13f3": "G",  # cherokee letter yu
    "\u13f4": "B",  # cherokee letter yv
    "\uab75": "i",  # cherokee small letter v
    "\uab81": "r",  # cherokee small letter hu
    "\uab83": "w",  # cherokee small letter la
    "\uab93": "z",  # cherokee small letter no
    "\uaba9": "v",  # cherokee small letter do
    "\uabaa": "s",  # cherokee small letter du
    "\uabaf": "c",  # cherokee small letter tli
    # Coptic
    "\u2c85": "r",  # coptic small letter gamma
    "\u2c8e": "H",  # coptic capital letter hate
    "\u2c92": "l",  # coptic capital letter iauda
    "\u2c94": "K",  # coptic capital letter kapa
    "\u2c98": "M",  # coptic capital letter mi
    "\u2c9a": "N",  # coptic capital letter ni
    "\u2c9e": "O",  # coptic capital letter o
    "\u2c9f": "o",  # coptic small letter o
    "\u2ca2": "P",  # coptic capital letter ro
    "\u2ca3": "p",  # coptic small letter ro
    "\u2ca4": "C",  # coptic capital letter sima
    "\u2ca5": "c",  # coptic small letter sima
    "\u2ca6": "T",  # coptic capital letter tau
    "\u2ca8": "Y",  # coptic capital letter ua
    "\u2cac": "X",  # coptic capital letter khi
    # Lisu: an alphabet of Latin capitals, some turned
    "\ua4d0": "B",  # lisu letter ba
    "\ua4d1": "P",  # lisu letter pa
    "\ua4d2": "d",  # lisu letter pha
    "\ua4d3": "D",  # lisu letter da
    "\ua4d4": "T",  # lisu letter ta
    "\ua4d6": "G",  # lisu letter ga
    "\ua4d7": "K",  # lisu letter ka
    "\ua4d9": "J",  # lisu letter ja
    "\ua4da": "C",  # lisu letter ca
    "\ua4dc": "Z",  # lisu letter dza
    "\ua4dd": "F",  # lisu letter tsa
    "\ua4df": "M",  # lisu letter ma
    "\ua4e0": "N",  # lisu letter na
    "\ua4e1": "L",  # lisu letter la
    "\ua4e2": "S",  # lisu letter sa
    "\ua4e3": "R",  # lisu letter zha
    "\ua4e6": "V",  # lisu letter ha
    "\ua4e7": "H",  # lisu letter xa
    "\ua4ea": "W",  # lisu letter wa
    "\ua4eb": "X",  # lisu letter sha
    "\ua4ec": "Y",  # lisu letter ya
    "\ua4ee": "A",  # lisu letter a
    "\ua4f0": "E",  # lisu letter e
    "\ua4f2": "l",  # lisu letter i
    "\ua4f3": "O",  # lisu letter o
    "\ua4f4": "U",  # lisu letter u
    # Latin letters drawn like other Latin letters that the name rule (_MODIFIED) leaves
    "\u0269": "i",  # latin small letter iota
    "\u1d11": "o",  # latin small letter sideways o
}
"""Letters drawn like a Latin letter, each with that letter in the case it is drawn in (read by
:func:`visual_skeleton` as given, casefolded by :func:`skeleton`): the Cherokee, Coptic and
Lisu entries of Unicode's confusables data (TR39 ``confusables.txt``) whose target is one Latin
letter, and two Latin letters from it; checked against their Unicode names in
``tests/fedtrail/protocol/test_names.py``."""

_MODIFIED = re.compile(
    r"(?P<script>[A-Z]+) (?:(?P<case>SMALL|CAPITAL) LETTER (?:DOTLESS |SCRIPT )?"
    r"(?P<base>[A-Z]+)(?: WITH .+)?|LETTER SMALL CAPITAL (?P<cap>[A-Z]+))"
)
"""A letter named as another of its script with a modification: ``LATIN SMALL LETTER D WITH
HOOK``, ``... L WITH STROKE``, ``... DOTLESS J``, ``... SCRIPT G``, ``LATIN LETTER SMALL
CAPITAL L``: read as the letter the name leaves (``d``, ``l``, ``j``, ``g``, ``l``)."""

_MARKS = frozenset({"Mn", "Me"})
"""Nonspacing and enclosing marks (accents, points, variation selectors, the combining grapheme
joiner), dropped after the canonical decomposition: ``a`` + U+0301 and ``\u00e1`` read as
``a``, and so does ``a`` + U+0483 (a Cyrillic titlo) or + U+FE00 (a variation selector).
Spacing marks (``Mc``, which take room of their own) are kept."""

_BLANK = frozenset(
    {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u180b", "\u180c", "\u180d"}
    | {"\u180f", *map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0xE0100, 0xE01F0))}
)
"""Characters drawn as nothing that are not format characters: the Hangul fillers, the blank
Braille pattern, the combining grapheme joiner and the variation selectors. Read as the
invisibles are (dropped, escaped when shown, refused at registration)."""

_DIGRAPHS = str.maketrans({"m": "rn", "w": "vv", "d": "cl"})
"""Lower-case letters drawn like two others side by side (TR39's ``m`` -> ``rn``; ``w`` and
``d`` likewise): each read as the pair, so ``rn`` and ``m`` fold alike."""

_AFTER_CASEFOLD = str.maketrans({"1": "l", "|": "l", "0": "o"})
_VISUAL = str.maketrans({"I": "l", "1": "l", "|": "l", "0": "O"})
_DASHES = re.compile(r"[\u2010-\u2015\u2212\u2043\ufe58\ufe63\uff0d]")
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_EAST_ASIAN = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL"})


def _hidden(ch: str) -> bool:
    """Prints as nothing or as something else: a control, format, surrogate, private-use or
    unassigned character, or one of :data:`_BLANK`."""
    return unicodedata.category(ch) in _INVISIBLE or ch in _BLANK


@functools.lru_cache(maxsize=4096)
def _base_letter(ch: str) -> str:
    """The letter :data:`_MODIFIED` reads ``ch`` as (its case kept; a small capital as the
    small letter), or ``ch`` itself."""
    match = _MODIFIED.fullmatch(unicodedata.name(ch, ""))
    if match is None:
        return ch
    if match["cap"] is not None:
        target = f"{match['script']} CAPITAL LETTER {match['cap']}"
    else:
        target = f"{match['script']} {match['case']} LETTER {match['base']}"
    try:
        base = unicodedata.lookup(target)
    except KeyError:
        return ch
    return base.lower() if match["cap"] is not None else base


def _letter(ch: str, upper: bool) -> str:
    ch = _base_letter(ch)
    if ch in CASED:
        return CASED[ch]
    if ch in HOMOGLYPHS:
        return HOMOGLYPHS[ch].upper() if upper and ch.isupper() else HOMOGLYPHS[ch]
    return ch


def _letters(name: str, upper: bool) -> str:
    """NFKC, invisibles dropped, dashes as ``-``, canonically decomposed with its diacritics
    (:data:`_MARKS`) dropped, each letter read as its :data:`_MODIFIED` base, then
    :data:`CASED` and :data:`HOMOGLYPHS` applied (the latter's upper-case sources to the
    upper-case letter when ``upper``)."""
    text = _DASHES.sub("-", unicodedata.normalize("NFKC", name))
    text = "".join(ch for ch in text if not _hidden(ch))
    text = "".join(
        ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) not in _MARKS
    )
    return "".join(_letter(ch, upper) for ch in text)


def _spaced(text: str) -> str:
    return unicodedata.normalize("NFKC", re.sub(r"\s+", "", text)).translate(_DIGRAPHS)


def skeleton(name: str) -> str:
    """``name`` as :mod:`fedtrail.protocol.names` folds it, case ignored (the module's rule):
    two names with one skeleton read alike."""
    return _spaced(_letters(name, upper=False).casefold().translate(_AFTER_CASEFOLD))


def visual_skeleton(name: str) -> str:
    """``name``'s case-kept fold: as :func:`skeleton` but without casefolding, and with a
    capital ``I`` read as ``l`` (drawn alike in sans-serif fonts; casefolding makes it an
    ``i``). Two names with one visual skeleton read alike too."""
    return _spaced(_letters(name, upper=True).translate(_VISUAL))


def confusable(a: str, b: str) -> bool:
    """Whether two names read alike: one :func:`skeleton` or one :func:`visual_skeleton`
    (neither empty)."""
    return bool(skeleton(a)) and (
        skeleton(a) == skeleton(b) or visual_skeleton(a) == visual_skeleton(b)
    )


def _script(ch: str) -> str | None:
    if not unicodedata.category(ch).startswith("L"):
        return None  # digits, punctuation, spaces, marks: no script of their own
    word = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
    return "CJK" if word in _EAST_ASIAN else word


def scripts(name: str) -> frozenset[str]:
    """The scripts of ``name``'s letters (NFKC first, so a compatibility form counts as its
    letter)."""
    return frozenset(s for s in map(_script, unicodedata.normalize("NFKC", name)) if s is not None)


def mixed_script(name: str) -> bool:
    """Letters of two or more scripts (``hospital-\\u0430``: Latin and Cyrillic)."""
    return len(scripts(name)) > 1


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(name: str) -> str:
    """``name`` for display: each control, format, surrogate, private-use, unassigned or blank
    (:data:`_BLANK`) character and each whitespace other than the space as ``\\uNNNN``; in a
    mixed-script name, every non-ASCII character as well. Injective on names read from the
    chain (their backslashes come doubled)."""
    mixed = mixed_script(name)
    return "".join(
        _escape(ch)
        if (_hidden(ch) or (ch.isspace() and ch != " ") or (mixed and not ch.isascii()))
        else ch
        for ch in name
    )


def with_former(name: str, former: Iterable[str] = ()) -> str:
    """``name`` as :func:`shown` renders it, followed by the names its site was registered
    under before (``former``, oldest first), each rendered alike: ``hospital-z (formerly
    hospital-a)``. Every table that names a site by its current registration shows this, or a
    coordinator who re-registers a paid site under another name and gives the old name to a
    new address has the old rounds read as the new name's (attack a64)."""
    earlier = [shown(n) for n in former]
    return shown(name) + (f" (formerly {', '.join(earlier)})" if earlier else "")


def escaped(name: str) -> str:
    """``name`` with every character outside printable ASCII as ``\\uNNNN``: how names that
    read alike are told apart side by side (``H\\u00f4pital`` and ``Ho\\u0302pital``, which
    :func:`shown` leaves as written, being one script each)."""
    return "".join(ch if " " <= ch <= "~" else _escape(ch) for ch in name)


def confusable_groups(names: Mapping[str, str]) -> list[list[str]]:
    """Addresses whose names (``names``: address -> name) are confusable with another's, one
    sorted list per shared skeleton, groups in order of their first address. Names that fold
    to nothing (no name: shown as the address) are no group."""
    order = sorted(names, key=str.lower)
    parent = {a: a for a in order}  # union-find over the addresses, linked by shared keys

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first: dict[tuple[str, str], str] = {}  # (kind, key) -> the first address holding it
    for address in order:
        name = names[address]
        if not skeleton(name):
            continue
        for key in (("fold", skeleton(name)), ("visual", visual_skeleton(name))):
            if key in first:
                parent[root(address)] = root(first[key])
            else:
                first[key] = address
    groups: dict[str, list[str]] = {}
    for address in order:
        groups.setdefault(root(address), []).append(address)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: order.index(g[0]))


def name_problems(name: str, others: Iterable[str]) -> list[str]:
    """Why a coordinator's tooling refuses to register ``name`` beside the names ``others``
    (every other site's): a character that prints as nothing or as something else, a
    backslash (chain readers escape with it), whitespace other than single spaces between
    words, a text not in NFC (``o`` + U+0302 where ``\u00f4`` is one character), letters of two
    scripts, or a skeleton another name has. Empty when none applies; an empty name (shown
    as its address) is allowed."""
    problems: list[str] = []
    if any(_hidden(ch) for ch in name):
        problems.append("it holds control, format, unassigned or blank characters")
    if "\\" in name:
        problems.append("it holds a backslash (chain readers show escapes with it)")
    if name != " ".join(name.split()):
        problems.append("it holds whitespace other than single spaces between words")
    if unicodedata.normalize("NFC", name) != name:
        problems.append(
            "it is not in Unicode NFC form (a letter and its combining mark apart): send "
            f"'{escaped(unicodedata.normalize('NFC', name))}'"
        )
    if mixed_script(name):
        problems.append(f"it mixes scripts ({', '.join(sorted(scripts(name)))}): {shown(name)}")
    alike = sorted({o for o in others if confusable(name, o)})
    if alike:
        problems.append(
            "it reads like the registered name(s) " + ", ".join(repr(shown(o)) for o in alike)
        )
    return problems


def registry_warning(names: Mapping[str, str]) -> str | None:
    """The registry as it stands (``names``: address -> current name) when it holds names that
    read alike, as one line naming each group; None otherwise. ``audit verify``'s
    ``sites.names`` judges each round by the names it was finalized under, so a look-alike
    registered after the last finalized round fails no check, yet every table and the report
    show it beside the site it imitates (attack a62): ``audit verify`` and the report warn
    with this line."""
    groups = confusable_groups(names)
    if not groups:
        return None
    listed = "; ".join(
        " ~ ".join(f"'{escaped(names[a])}' ({a})" for a in group) for group in groups
    )
    return f"registered names read alike: {listed}"
