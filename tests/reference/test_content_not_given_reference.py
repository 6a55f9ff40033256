"""README *Content not given* (session 52) against the product and
``scripts/independent/reader.py``: the waits it states are ``IpfsStore``'s defaults and the
reader's, the metadata keys it names are the codec's, and the reasons under which an update not
usable by the wire format passes ``update.<site>`` are ``audit verify``'s. The behaviour on a
real federation: ``tests/scripts/test_independent_reader_unusable.py``."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

from fedtrail.auditor import verify
from fedtrail.protocol.codes import Reason
from fedtrail.storage import codec
from fedtrail.storage.store import IpfsStore

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_not_given", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()


def _bullet() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("- **Content not given**")
    end = text.index("\n- **", start + 1)
    return " ".join(text[start:end].split())


def test_the_waits_are_the_stores_and_the_readers() -> None:
    text = _bullet()
    defaults = inspect.signature(IpfsStore.__init__).parameters
    probe = re.search(r"`probe_timeout`, (\d+) s", text)
    whole = re.search(r"`timeout`, (\d+) s", text)
    mine = re.search(r"reader\.py`: (\d+) s for each, and the daemon's `timeout` (\d+) s", text)
    assert probe and whole and mine, text
    assert float(probe.group(1)) == defaults["probe_timeout"].default
    assert float(whole.group(1)) == defaults["timeout"].default
    assert float(mine.group(1)) == float(mine.group(2)) == R.WAIT_SECONDS


def test_the_metadata_keys_are_the_codecs() -> None:
    text = _bullet()
    named = re.search(r"its metadata exactly (.*?), plus optionally `\"dp\"`", text)
    assert named, text
    keys = set(re.findall(r"`(\w+)`", named.group(1))) - {"update"}
    assert keys == set(codec._META_KEYS) == R.META_KEYS


@pytest.mark.parametrize("peer", [False, True])
def test_the_zeroed_reasons_are_verifys(peer: bool) -> None:
    text = _bullet()
    plain = set(re.findall(r"`([A-Z_]+)`", text.split("reason ", 1)[1].split(" (either", 1)[0]))
    extra = set(re.findall(r"also `([A-Z_]+)`", text)) | set(
        re.findall(r"or `(WITHHELD)` \(validators", text)
    )
    assert plain == {r.name for r in verify.UNUSABLE_REASONS}
    # verify_round's set for a peer round, by its source (it is built inline there)
    source = inspect.getsource(verify.verify_round)
    assert "{Reason.PEER_REJECTED, Reason.WITHHELD} if peers else set()" in source
    assert extra == {"PEER_REJECTED", "WITHHELD"}
    allowed = plain | (extra if peer else set())
    for reason in Reason:
        for weight in (0, 1, 10**18):
            want = weight == 0 and reason.name in allowed
            assert R.zeroed_unusable(int(reason), weight, peer) == want, (reason, weight)
    # near misses: an unknown code, a weight of 1 on a zeroed reason
    assert not R.zeroed_unusable(len(Reason) + 3, 0, peer)
    assert not R.zeroed_unusable(int(Reason.MALFORMED), 1, peer)
