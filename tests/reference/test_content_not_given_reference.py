"""README *Content not given* (session 52) against the product and
``scripts/independent/reader.py``: the waits it states are ``IpfsStore``'s defaults and the
reader's, the metadata keys it names are the codec's, and the reasons under which an update not
usable by the wire format passes ``update.<site>`` are ``audit verify``'s. The behaviour on a
real federation: ``tests/scripts/test_independent_reader_unusable.py``."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import inspect
import random
import re
from pathlib import Path
from types import ModuleType

import base58
import pytest

from fedtrail.auditor import verify
from fedtrail.protocol.codes import Reason
from fedtrail.storage import codec
from fedtrail.storage import store as store_module
from fedtrail.storage.cid import check_cid, compute_cid
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
    # verify's set for a peer round, by its source (it is built inline in the finalized round's
    # check, `_verify_finalized`, which `verify_round` calls)
    source = inspect.getsource(verify._verify_finalized)
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


def test_the_canonical_cid_is_the_stores_and_the_readers() -> None:
    """The canonical CID the bullet states (chunk size, links a node, the spellings) is the
    one the store's ``put`` asks a daemon for and ``compute_cid`` gives, and the reader's own
    ``canonical_cids``, written from the bullet, gives the same CID for one chunk, a chunk's
    edge, several chunks and more leaves than one node holds (a second level)."""
    text = _bullet()
    chunk = re.search(r"leaves hold (\d+)-byte \(256 KiB\) chunks", text)
    links = re.search(r"at most (\d+) links a node in the balanced layout", text)
    assert chunk and links, text
    assert int(chunk.group(1)) == R.CHUNK_BYTES
    assert f"size-{R.CHUNK_BYTES}" == store_module._ADD_OPTS["chunker"]
    assert int(links.group(1)) == R.MAX_LINKS
    rng = random.Random(55)
    sizes = [0, 1, 4321, R.CHUNK_BYTES, R.CHUNK_BYTES + 1, 3 * R.CHUNK_BYTES + 17]
    sizes.append(R.MAX_LINKS * R.CHUNK_BYTES + 5)  # 175 leaves: a root over two nodes
    for size in sizes:
        data = rng.randbytes(size)
        v0, v1 = R.canonical_cids(data)
        assert v0 == compute_cid(data), size
        assert v1.startswith("bafybei") and check_cid(v1) == v0, size


def _v1(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def test_bytes_under_another_cid_are_not_given_by_the_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader's ``cat`` refuses bytes the daemon answers under a CID that is not their
    canonical one (``invalid cid``: read as malformed, as the store's ``NonCanonicalCid``) and
    takes them under either spelling of the canonical one."""
    data = b"an update's bytes"
    raw_v1 = _v1(bytes.fromhex("01551220") + hashlib.sha256(data).digest())
    dag_pb_v1 = _v1(bytes.fromhex("0170") + base58.b58decode(compute_cid(data)))

    class Answer:  # what a daemon answers for every CID of these bytes
        status_code = 200
        content = data
        text = ""

    monkeypatch.setattr(R.requests, "post", lambda *args, **kwargs: Answer())
    ipfs = R.Ipfs("http://127.0.0.1:1")
    assert ipfs.cat(compute_cid(data)) == data
    assert ipfs.cat(dag_pb_v1) == data
    with pytest.raises(R.NotGiven) as err:
        ipfs.cat(check_cid(raw_v1))
    assert err.value.kind == "invalid cid"
