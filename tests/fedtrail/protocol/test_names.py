"""Confusable site names (fedtrail.protocol.names): the skeleton rule, mixed scripts, the
registration refusals and the display that tells names apart."""

from __future__ import annotations

from fedtrail.protocol.names import (
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
