"""The README's confusable-name rule (*Names that look alike*: `sites.names`), implemented from
its text alone (the table parsed from the README, the dashes from its sentence), against
fedtrail.protocol.names: an outsider who follows the README must fold every name alike. A near
miss (the rule without the table, or without NFKC) must disagree, so the comparison can fail."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from fedtrail.protocol.names import HOMOGLYPHS, confusable, skeleton, visual_skeleton

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")
MARKER = "<!-- homoglyphs -->\n```\n"


def readme_table() -> dict[str, str]:
    start = TEXT.index(MARKER) + len(MARKER)
    block = TEXT[start : TEXT.index("```", start)]
    table: dict[str, str] = {}
    for item in re.findall(r"U\+([0-9A-F]{4}) ([a-z])", block):
        table[chr(int(item[0], 16))] = item[1]
    return table


def readme_dashes() -> set[str]:
    """The code points of the sentence "each dash U+2010-U+2015, U+2043, ... replaced by `-`"."""
    sentence = TEXT[TEXT.index("with each\ndash ") :]
    sentence = sentence[: sentence.index("replaced by `-`")]
    out: set[str] = set()
    for lo, hi in re.findall(r"U\+([0-9A-F]{4})(?:-U\+([0-9A-F]{4}))?", sentence):
        out.update(chr(c) for c in range(int(lo, 16), int(hi or lo, 16) + 1))
    return out


TABLE, DASHES = readme_table(), readme_dashes()
DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn"}


def ref_f(name: str, upper: bool, table: dict[str, str] = TABLE, dashes: set[str] = DASHES) -> str:
    text = unicodedata.normalize("NFKC", name)
    text = "".join("-" if ch in dashes else ch for ch in text)
    out = []
    for ch in text:
        if unicodedata.category(ch) in DROPPED:
            continue
        if ch in table:
            out.append(table[ch].upper() if upper and ch.isupper() else table[ch])
        else:
            out.append(ch)
    return "".join(out)


def ref_s(text: str) -> str:
    return unicodedata.normalize("NFKC", re.sub(r"\s+", " ", text).strip())


def ref_skeleton(name: str, **kw: object) -> str:
    g = ref_f(name, False, **kw).casefold()  # type: ignore[arg-type]
    return ref_s(g.translate(str.maketrans("1|0", "llo")))


def ref_visual(name: str) -> str:
    v = ref_f(name, True)
    return ref_s(v.translate(str.maketrans("I1|0", "lllO")))


def ref_confusable(a: str, b: str) -> bool:
    return bool(ref_skeleton(a)) and (
        ref_skeleton(a) == ref_skeleton(b) or ref_visual(a) == ref_visual(b)
    )


NAMES = [
    "hospital-a",
    "Hospital-A",
    "hospital-\u0430",
    "HOSPITAL-\u0410",
    "Site-1",
    "site-l",
    "SITE-I",
    "site-|",
    "clinic 0",
    "clinic  o ",
    "H\u00f4pital Nord",
    "Ho\u0302pital Nord",
    "ward\u200b7",
    "ward7",
    "\uff48\uff4f\uff53\uff50",  # fullwidth
    "hosp",
    "\u212bngstr\u00f6m",
    *(f"x{ch}y" for ch in TABLE),
    *(f"x{ch.upper()}y" for ch in TABLE),
    *(f"a{d}b" for d in sorted(DASHES)),
    "a-b",
    "\u0585\u057d\u0578",
    "",
    " ",
]


def test_the_readme_table_is_the_code_table() -> None:
    assert len(TABLE) == 63
    assert dict(HOMOGLYPHS) == TABLE


def test_the_readme_rule_folds_every_name_as_the_code() -> None:
    assert {"\u2010", "\u2015", "\u2043", "\u2212", "\ufe58", "\ufe63", "\uff0d"} <= DASHES
    for name in NAMES:
        assert ref_skeleton(name) == skeleton(name), ascii(name)
        assert ref_visual(name) == visual_skeleton(name), ascii(name)


def test_the_readme_rule_judges_every_pair_as_the_code() -> None:
    pairs = [(a, b) for a in NAMES for b in NAMES if a != b]
    assert any(confusable(a, b) for a, b in pairs)
    assert all(ref_confusable(a, b) == confusable(a, b) for a, b in pairs)


def test_misreadings_disagree() -> None:
    """Without the table, or with only the dashes the README named before (U+2010-2015, U+2212,
    "..."), the README's rule would miss look-alikes."""
    assert ref_skeleton("hospital-\u0430", table={}) != skeleton("hospital-\u0430")
    old = {chr(c) for c in range(0x2010, 0x2016)} | {"\u2212"}
    missed = [d for d in sorted(DASHES) if ref_skeleton(f"a{d}b", dashes=old) != skeleton(f"a{d}b")]
    assert missed  # U+2043 and U+FE58 fold to "-" only by the full list
