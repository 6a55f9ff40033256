"""How a round log records a chain CID (attack a126): verbatim when it has a CID's shape, else a
fixed-size ``sha256:`` stand-in bound to the chain's text; the product and the independent
reader apply one rule."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from fedtrail.auditor.claims import Mark, mark_site
from fedtrail.errors import InvalidCid
from fedtrail.ledger.client import _text
from fedtrail.ledger.records import Submission
from fedtrail.protocol.cids import CID_SHAPE, cid_shaped, logged_cid, logged_cid_agrees
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import SiteEntry, UpdateRef
from fedtrail.storage.cid import check_cid, compute_cid

READER = Path(__file__).resolve().parents[3] / "scripts" / "independent" / "reader.py"
V0 = compute_cid(b"an update")
V1 = "bafkreibnoelefnzgwbcacyt4vh52ymxvzbjq7mmqhtcnwarfq4lzegsiqe"  # a raw-codec CIDv1 of b"x"
SITE = "0x" + "ab" * 20


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_cids", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stand_in(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


TEXTS = [
    V0,
    V1,
    "\x00" * 1_000_000,  # a126's reveal: 6 MB of JSON as it came
    "b" + "a" * 58,  # a CID's shape (59 characters), but no CID: still repeated
    "b" + "a" * 59,  # one character over the shape
    "Qm" + "1" * 45,
    V0.lower(),  # no base58 spelling of a root with these characters
    V1.upper(),  # base32 in capitals: not the shape (B... is another multibase)
    " " + V0,
    V0 + "\n",
    _stand_in(V0),  # a stand-in's text revealed as a CID
    _text(b"\xff\\\x00"),  # the chain's reading of bytes that are not UTF-8, with a backslash
    "é" * 30,
    "x",
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_a_cid_is_logged_as_it_is_only_in_a_cids_shape(text: str) -> None:
    got = logged_cid(text)
    if cid_shaped(text):
        assert len(text) in (46, 59) and got == text
    else:
        assert got == _stand_in(text) and len(got) == 71
        assert not cid_shaped(got)  # a stand-in is never a CID's shape, so never a CID
    assert logged_cid_agrees(got, text) and logged_cid_agrees(text, text)  # an older log: as is


def test_every_cid_check_cid_takes_has_the_shape_and_the_shape_alone_is_not_a_cid() -> None:
    assert check_cid(V0) == V0 and check_cid(V1) == V1
    for text in TEXTS:
        if not cid_shaped(text):
            with pytest.raises(InvalidCid, match="not a CID"):
                check_cid(text)
    with pytest.raises(InvalidCid, match="not a CID"):
        check_cid("b" + "a" * 58)  # the shape, no CID: repeated in the log, MALFORMED as before


def test_a_log_record_names_one_chain_text() -> None:
    """No record agrees with two chain texts but a text and its own stand-in (both functions of
    it); another text's stand-in, a case change or a cut stand-in disagrees."""
    nul, other = "\x00" * 10, "\x00" * 11
    assert not logged_cid_agrees(logged_cid(other), nul)
    assert not logged_cid_agrees(logged_cid(nul).upper(), nul)
    assert not logged_cid_agrees(logged_cid(nul)[:-1], nul)
    assert not logged_cid_agrees(None, nul) and not logged_cid_agrees(V0, nul)
    # two byte strings the chain reads differently have different stand-ins
    assert logged_cid(_text(b"\xff")) != logged_cid(_text(b"\\xff"))
    # a text that is itself a stand-in is logged as its own stand-in, not as the one it spells
    spelled = _stand_in(nul)
    assert logged_cid(spelled) != spelled
    assert logged_cid_agrees(spelled, spelled) and not logged_cid_agrees(spelled, other)


def test_the_independent_reader_applies_the_same_rule() -> None:
    reader = _reader()
    assert reader.CID_SHAPE.pattern == CID_SHAPE.pattern
    for text in TEXTS:
        assert reader.logged_cid(text) == logged_cid(text)
        assert reader.chain_text(text.encode("utf-8")) == _text(text.encode("utf-8"))
    raw = b"\xff\\\x00\xed\xa0\x80"  # not UTF-8, a backslash, an encoded surrogate
    assert reader.chain_text(raw) == _text(raw)
    assert reader.logged_cid(reader.chain_text(raw)) == logged_cid(_text(raw))
    for logged in (logged_cid("\x00"), "\x00", logged_cid("\x01"), None, 7):
        assert reader.logged_cid_agrees(logged, "\x00") == logged_cid_agrees(logged, "\x00")


def _entry(cid: str) -> SiteEntry:
    return SiteEntry.of(
        site=SITE,
        name="x",
        update=UpdateRef(cid, "aa" * 32, 10),
        status=Reason.MALFORMED,
        score=0,
        reason=int(Reason.MALFORMED),
        weight=0,
        components={},
        explanation=None,
    )


def test_audit_marks_a_stand_in_as_the_chains_and_shows_the_stand_in_on_a_mismatch() -> None:
    chain = "\x00" * 100_000
    sub = Submission(1, SITE, chain, "aa" * 32, 10, 0, int(Reason.MALFORMED), 0, "bb", 1, True)
    for logged in (logged_cid(chain), chain):
        assert mark_site(_entry(logged), sub, None).marks["cid"] is Mark.CHAIN
    marks = mark_site(_entry(logged_cid("\x00")), sub, None)
    assert marks.marks["cid"] is Mark.MISMATCH
    assert marks.chain_values["cid"] == logged_cid(chain)  # 71 characters, not 100,000
