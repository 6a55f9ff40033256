"""How ``log.agrees`` shows a logged value that differs from the chain's (attack a59): texts that
read alike (Unicode-normalization equivalents) are shown escaped, so the difference is visible;
everything else as its ``repr``."""

from __future__ import annotations

from fedtrail.auditor.verify import _unalike

NFC, NFD = "H\u00f4pital Nord", "Ho\u0302pital Nord"


def test_normalization_equivalent_names_are_shown_escaped() -> None:
    assert _unalike(NFD, NFC) == ("'Ho\\u0302pital Nord'", "'H\\xf4pital Nord'")


def test_a_compatibility_equivalent_is_shown_escaped() -> None:
    # the ligature fi (U+FB01) folds to "fi" under NFKC
    assert _unalike("\ufb01rst", "first") == ("'\\ufb01rst'", "'first'")


def test_other_values_keep_their_repr() -> None:
    assert _unalike("H\u00f4pital Sud", NFC) == ("'H\u00f4pital Sud'", "'H\u00f4pital Nord'")
    assert _unalike(150, 151) == ("150", "151")
