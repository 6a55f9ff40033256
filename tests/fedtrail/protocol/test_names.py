"""Confusable site names (fedtrail.protocol.names): the skeleton rule, mixed scripts, the
registration refusals and the display that tells names apart."""

from __future__ import annotations

import unicodedata

from fedtrail.protocol.names import (
    CASED,
    HOMOGLYPHS,
    _base_letter,
    confusable,
    confusable_groups,
    escaped,
    mixed_script,
    name_problems,
    registry_warning,
    scripts,
    shown,
    skeleton,
    visual_skeleton,
)

LATIN, CYRILLIC = "hospital-a", "hospital-\u0430"  # Latin a, Cyrillic a (U+0430)


def test_a_cyrillic_a_reads_like_the_latin_one() -> None:
    assert LATIN != CYRILLIC
    assert skeleton(LATIN) == skeleton(CYRILLIC) == "hospital-a"
    assert scripts(CYRILLIC) == {"LATIN", "CYRILLIC"} and mixed_script(CYRILLIC)
    assert not mixed_script(LATIN)


def test_case_digits_invisibles_and_normalization_fold_together() -> None:
    folded = {
        skeleton(n)
        for n in (
            "Site-1",
            "site-l",
            "SITE-|",
            "site\u200b-1",  # zero-width space
        )
    }
    assert folded == {"site-l"}
    assert skeleton(" site\u00a0 north ") == skeleton("site north")  # NFKC space, one run
    assert skeleton("H\u00f4pital") == skeleton("Ho\u0302pital")  # NFC and NFD
    assert skeleton("\u041d\u041e\u0421\u0420") == skeleton("HOCP")  # Cyrillic capitals
    assert skeleton("Site North") != skeleton("Site South")


def test_dashes_armenian_latin_lookalikes_and_capital_i_fold_too() -> None:
    """a61's misses on the first rule: each now reads like ``hospital-a``."""
    for variant in (
        "hospital\u2010a",  # hyphen
        "hospital\u2011a",  # non-breaking hyphen
        "h\u0585spital-a",  # Armenian oh
        "hospit\u0251l-a",  # Latin alpha
        "hosp\u0131tal-a",  # dotless i
        "hospitaI-a",  # capital I for l: only the case-kept fold sees it
    ):
        assert confusable(variant, "hospital-a"), variant
    assert skeleton("hospitaI-a") != skeleton("hospital-a")
    assert visual_skeleton("hospitaI-a") == visual_skeleton("hospital-a")
    assert not confusable("ian", "lan") and confusable("Ian", "lan")
    assert not confusable("hospital-b", "hospital-a") and not confusable("", "")


def test_groups_name_every_address_of_a_shared_skeleton() -> None:
    names = {"0xB": CYRILLIC, "0xA": LATIN, "0xC": "clinic", "0xD": "Clinic", "0xE": "hospitaI-a"}
    assert confusable_groups(names) == [["0xA", "0xB", "0xE"], ["0xC", "0xD"]]
    assert confusable_groups({"0xA": LATIN, "0xC": "clinic"}) == []


def test_shown_escapes_what_would_hide_a_difference() -> None:
    assert shown(LATIN) == LATIN
    assert shown(CYRILLIC) == "hospital-\\u0430"  # mixed: non-ASCII escaped
    assert shown("H\u00f4pital Nord") == "H\u00f4pital Nord"  # one script: as written
    assert shown("\u0411\u043e\u043b\u044c\u043d\u0438\u0446\u0430") == (
        "\u0411\u043e\u043b\u044c\u043d\u0438\u0446\u0430"  # all Cyrillic: as written
    )
    assert shown("a\u200bb") == "a\\u200bb"
    assert shown("a\tb") == "a\\u0009b" and shown("a b") == "a b"
    # chain texts (backslash doubled, bad bytes as \xNN) stay apart from what shown adds
    chain_texts = ["h\\xff", "h\\\\xff", "a\\\\u200bb", "a\u200bb", "\\\\\\xff"]
    assert len({shown(t) for t in chain_texts}) == len(chain_texts)


def test_escaped_tells_normalization_twins_apart() -> None:
    assert escaped("H\u00f4pital") == "H\\u00f4pital"
    assert escaped("Ho\u0302pital") == "Ho\\u0302pital"
    assert escaped("a\U0001d41a\t~") == "a\\U0001d41a\\u0009~"


def test_registration_refuses_lookalikes_and_odd_characters() -> None:
    assert name_problems("hospital-b", [LATIN]) == []
    (alike,) = name_problems("Hospital-A", [LATIN, "clinic"])
    assert "reads like" in alike and "'hospital-a'" in alike
    problems = name_problems(CYRILLIC, [LATIN])
    assert any("mixes scripts (CYRILLIC, LATIN)" in p for p in problems)
    assert any("reads like" in p for p in problems)
    assert any("backslash" in p for p in name_problems("a\\xff", []))
    assert any("control" in p for p in name_problems("a\u202eb", []))
    assert name_problems("", [""]) == []  # no name: shown as its address, no look-alike
    assert confusable_groups({"0xA": "", "0xB": "\u200b"}) == []


def test_registry_warning_names_each_group_or_nothing() -> None:
    assert registry_warning({"0xA": LATIN, "0xB": "clinic"}) is None
    warning = registry_warning({"0xA": LATIN, "0xB": CYRILLIC})
    assert warning == "registered names read alike: 'hospital-a' (0xA) ~ 'hospital-\\u0430' (0xB)"


def test_letters_outside_the_first_table_read_alike() -> None:
    """Session 49: Cherokee, Coptic and Lisu letters (``CASED``), Latin letters with a hook,
    stroke or bar or drawn as small capitals (read by their Unicode names), and fullwidth
    forms (NFKC) each read like the Latin letter."""
    for variant in (
        "hospital-\u13aa",  # Cherokee GO, drawn as A
        "\u13bbOSPITAL-A",  # Cherokee MI, drawn as H
        "h\u2c9fspital-a",  # Coptic small o
        "\ua4e7OSPITAL-A",  # Lisu XA, drawn as H
        "hospita\u0142-a",  # l with stroke
        "\u0127ospital-a",  # h with stroke
        "h\u00f8spital-a",  # o with stroke
        "hospita\u029f-a",  # small capital L
        "hospita\u026b-a",  # l with middle tilde
        "\uff48\uff4f\uff53\uff50\uff49\uff54\uff41\uff4c-\uff41",  # fullwidth
    ):
        assert confusable(variant, "hospital-a"), variant
    assert skeleton("\u0257") == skeleton("d")  # d with hook
    assert skeleton("\u0260") == skeleton("g")  # g with hook
    assert not confusable("\u13a0\u13a1", "hospital-a")  # Cherokee that reads otherwise


def test_cased_entries_are_the_letters_their_names_say() -> None:
    """Each ``CASED`` source is a letter of the script its comment names and maps to one
    ASCII letter; none is already folded by NFKC or the name rule (else the entry is dead)."""
    for source, target in CASED.items():
        name = unicodedata.name(source)
        assert name.split()[0] in {"CHEROKEE", "COPTIC", "LISU", "LATIN"}, name
        assert len(target) == 1 and target.isascii() and target.isalpha(), (name, target)
        assert unicodedata.normalize("NFKC", source) == source, name
        assert source not in HOMOGLYPHS and _base_letter(source) == source, name


def test_combining_marks_whitespace_and_letter_pairs_read_alike() -> None:
    base = "hospital-a"
    for variant in (
        "hospital-a\u0301",  # combining acute after a
        "hospital-\u00e1",  # precomposed a acute
        "hospital-a\u0308\u0301",  # two marks
        "hospital -a",  # inserted space
        "hospital\u00a0-a",  # no-break space
        "hospital  -  a",  # spaces around the dash
    ):
        assert confusable(variant, base), ascii(variant)
    assert confusable("hospital-rn", "hospital-m")
    assert confusable("hospital-vv", "hospital-w")
    assert confusable("hospital-cl", "hospital-d")
    assert confusable("c1inic", "dinic")  # 1 as l, then cl as d
    assert confusable("H\u00f4pital", "Hopital")  # errs towards alike: an accent is missed
    # still apart: another letter, a letter pair humans do not misread, another script's word
    assert not confusable("hospital-b", base)
    assert not confusable("hospital-nn", "hospital-m")
    assert not confusable("\u0431\u043e\u043b\u044c\u043d\u0438\u0446\u0430", base)
    assert not confusable("clinic-a", "clinic-b")


def test_register_refuses_odd_whitespace_and_decomposed_text() -> None:
    assert any("whitespace" in p for p in name_problems("hospital  a", []))
    assert any("whitespace" in p for p in name_problems(" hospital", []))
    assert any("whitespace" in p for p in name_problems("hospital\u00a0a", []))
    (nfc,) = name_problems("Ho\u0302pital", [])
    assert "NFC" in nfc and "H\\u00f4pital" in nfc
    assert name_problems("H\u00f4pital Nord", ["clinic"]) == []
    assert name_problems("hospital-a\u0301", ["hospital-a"]) != []  # composes, then alike


def test_any_nonspacing_mark_and_blank_characters_read_as_nothing() -> None:
    """A mark from outside the Latin diacritics (a Cyrillic titlo, an enclosing circle), a
    variation selector, the combining grapheme joiner and the blank letters (Hangul filler,
    blank Braille pattern) each leave the name reading as before; the ones drawn as nothing
    are escaped when shown and refused at registration."""
    base = "hospital-a"
    for variant in ("hospital-a\u0483", "hospital-a\u20dd"):
        assert confusable(variant, base), ascii(variant)
    for blank in ("\ufe00", "\u034f", "\u3164", "\u2800", "\U000e0100"):
        variant = f"hospital-a{blank}"
        assert confusable(variant, base), ascii(variant)
        assert shown(variant) == base + escaped(blank), ascii(variant)
        assert any("blank" in p for p in name_problems(variant, [])), ascii(variant)
    assert skeleton("\u3164") == ""  # a name of blanks only: no name, no look-alike
    # erring towards alike: Devanagari KA and KE (a nonspacing vowel sign) read as one
    assert confusable("\u0915\u0947", "\u0915")
