"""The README's confusable-name rule (*Names that look alike*: `sites.names`), implemented from
its text alone (the table parsed from the README, the dashes from its sentence), against
fedtrail.protocol.names: an outsider who follows the README must fold every name alike. A near
miss (the rule without the table, or without NFKC) must disagree, so the comparison can fail."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from fedtrail.protocol.names import CASED, HOMOGLYPHS, confusable, skeleton, visual_skeleton

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")


def readme_table(marker: str, letters: str) -> dict[str, str]:
    head = f"<!-- {marker} -->\n```\n"
    start = TEXT.index(head) + len(head)
    block = TEXT[start : TEXT.index("```", start)]
    table: dict[str, str] = {}
    for item in re.findall(rf"U\+([0-9A-F]{{4}}) ([{letters}])", block):
        table[chr(int(item[0], 16))] = item[1]
    return table


def readme_code_points(after: str, until: str) -> set[str]:
    """The code points (single or ranges) named in the README between ``after`` and ``until``."""
    sentence = TEXT[TEXT.index(after) :]
    sentence = sentence[: sentence.index(until)]
    out: set[str] = set()
    for lo, hi in re.findall(r"U\+([0-9A-F]{4,5})(?:-U\+([0-9A-F]{4,5}))?", sentence):
        out.update(chr(c) for c in range(int(lo, 16), int(hi or lo, 16) + 1))
    return out


TABLE, CASED_TABLE = readme_table("homoglyphs", "a-z"), readme_table("cased", "A-Za-z")
DASHES = readme_code_points("each dash U+2010", "replaced by `-`")
BLANK = readme_code_points("one drawn as nothing:", ")")
DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn"}
MODIFIED = re.compile(r"([A-Z]+) (SMALL|CAPITAL) LETTER (?:DOTLESS |SCRIPT )?([A-Z]+)(?: WITH .+)?")
SMALL_CAPITAL = re.compile(r"([A-Z]+) LETTER SMALL CAPITAL ([A-Z]+)")


def ref_base(ch: str) -> str:
    label = unicodedata.name(ch, "")
    try:
        if m := MODIFIED.fullmatch(label):
            return unicodedata.lookup(f"{m[1]} {m[2]} LETTER {m[3]}")
        if m := SMALL_CAPITAL.fullmatch(label):
            return unicodedata.lookup(f"{m[1]} CAPITAL LETTER {m[2]}").lower()
    except KeyError:
        pass
    return ch


def ref_l(
    name: str,
    upper: bool,
    table: dict[str, str] = TABLE,
    dashes: set[str] = DASHES,
    marks: bool = True,
) -> str:
    text = unicodedata.normalize("NFKC", name)
    text = "".join("-" if ch in dashes else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in DROPPED and ch not in BLANK)
    if marks:
        text = "".join(
            ch
            for ch in unicodedata.normalize("NFD", text)
            if unicodedata.category(ch) not in {"Mn", "Me"}
        )
    out = []
    for ch in text:
        ch = ref_base(ch)
        if ch in CASED_TABLE:
            out.append(CASED_TABLE[ch])
        elif ch in table:
            out.append(table[ch].upper() if upper and ch.isupper() else table[ch])
        else:
            out.append(ch)
    return "".join(out)


def ref_t(text: str) -> str:
    text = unicodedata.normalize("NFKC", re.sub(r"\s+", "", text))
    return text.translate(str.maketrans({"m": "rn", "w": "vv", "d": "cl"}))


def ref_skeleton(name: str, **kw: object) -> str:
    g = ref_l(name, False, **kw).casefold()  # type: ignore[arg-type]
    return ref_t(g.translate(str.maketrans("1|0", "llo")))


def ref_visual(name: str) -> str:
    v = ref_l(name, True)
    return ref_t(v.translate(str.maketrans("I1|0", "lllO")))


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
    "hospital-a\u0301",
    "hospital-\u00e1",
    "hospital-a\u0483",
    "hospital\u3164-a",
    "hospital\ufe0f-a",
    "hos pital-a",
    "hospital-\u0142",
    "hospital-\u1d00",
    "\u0142ab",
    "rnedical",
    "medical",
    "vvest",
    "west",
    "clinic",
    "dinic",
    "RN",
    "M",
    *(f"x{ch}y" for ch in CASED_TABLE),
    "",
    " ",
]


def test_the_readme_table_is_the_code_table() -> None:
    assert len(TABLE) == 63
    assert dict(HOMOGLYPHS) == TABLE
    assert len(CASED_TABLE) == 78
    assert dict(CASED) == CASED_TABLE
    assert {"\u115f", "\u2800", "\u034f", "\ufe00", "\ufe0f", "\U000e0100", "\U000e01ef"} <= BLANK


def test_the_readme_rule_folds_every_name_as_the_code() -> None:
    assert {"\u2010", "\u2015", "\u2043", "\u2212", "\ufe58", "\ufe63", "\uff0d"} <= DASHES
    for name in NAMES:
        assert ref_skeleton(name) == skeleton(name), ascii(name)
        assert ref_visual(name) == visual_skeleton(name), ascii(name)


def test_the_readme_rule_judges_every_pair_as_the_code() -> None:
    pairs = [(a, b) for a in NAMES for b in NAMES if a != b]
    ref = {n: (ref_skeleton(n), ref_visual(n)) for n in NAMES}
    judged = {
        (a, b): bool(ref[a][0]) and (ref[a][0] == ref[b][0] or ref[a][1] == ref[b][1])
        for a, b in pairs
    }
    assert any(judged.values())
    assert not all(judged.values())
    for a, b in pairs:
        assert judged[a, b] == confusable(a, b), (ascii(a), ascii(b))
    assert ref_confusable("hospital-a", "hos pital-\u00e1") and confusable(
        "hospital-a", "hos pital-\u00e1"
    )


def test_misreadings_disagree() -> None:
    """Without the table, or with only the dashes the README named before (U+2010-2015, U+2212,
    "..."), the README's rule would miss look-alikes."""
    assert ref_skeleton("hospital-\u0430", table={}) != skeleton("hospital-\u0430")
    assert ref_skeleton("hospital-a\u0483", marks=False) != skeleton("hospital-a\u0483")
    old = {chr(c) for c in range(0x2010, 0x2016)} | {"\u2212"}
    missed = [d for d in sorted(DASHES) if ref_skeleton(f"a{d}b", dashes=old) != skeleton(f"a{d}b")]
    assert missed  # U+2043 and U+FE58 fold to "-" only by the full list
