"""``audit verify`` fetches a round's model blobs on a bounded pool (``_InOrder``): begun when it
is made, handed out in the round's order whatever order they complete in, at most
``FETCH_THREADS`` requests in flight, each blob's failure reported as that blob's (naming its
CID), and closing cancels what has not begun."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from fedtrail.auditor import verify
from fedtrail.auditor.verify import FETCH_THREADS, FetchFailure, _InOrder
from fedtrail.storage.store import LocalStore


class SlowStore(LocalStore):
    """A local store whose ``get`` of an early blob takes longer than a later one's (so they
    complete out of order), counting the calls in flight and every ``max_bytes`` asked."""

    def __init__(self, root: Path, delays: dict[str, float]) -> None:
        super().__init__(root)
        self.delays = delays
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[str] = []
        self.limits: list[int | None] = []

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.started.append(cid)
            self.limits.append(max_bytes)
        try:
            time.sleep(self.delays.get(cid, 0.0))
            return super().get(cid, sha256, max_bytes=max_bytes)
        finally:
            with self.lock:
                self.in_flight -= 1


def _refs(store: LocalStore, n: int) -> tuple[list[tuple[str, str]], list[bytes]]:
    blobs = [f"blob {i}".encode() * (i + 1) for i in range(n)]
    return [(store.put(b), hashlib.sha256(b).hexdigest()) for b in blobs], blobs


def test_blobs_come_back_in_order_though_they_complete_out_of_order(tmp_path: Path) -> None:
    store = SlowStore(tmp_path / "s", {})
    refs, blobs = _refs(store, 3 * FETCH_THREADS)
    # the first blobs are the slowest: every later one completes before them
    store.delays = {cid: 0.05 * (FETCH_THREADS - i) for i, (cid, _) in enumerate(refs[:8])}
    with _InOrder(store, refs, 1000) as fetches:
        got = [fetches.next() for _ in refs]
        with pytest.raises(IndexError):
            fetches.next()
    assert [f.blob for f in got] == blobs and all(f.failure is None for f in got)
    assert store.limits == [1000] * len(refs)  # every blob under the one limit given
    assert 1 < store.most_in_flight <= FETCH_THREADS


def test_fetches_begin_when_made_not_when_first_read(tmp_path: Path) -> None:
    store = SlowStore(tmp_path / "s", {})
    refs, _ = _refs(store, 4 * FETCH_THREADS)
    with _InOrder(store, refs, None) as fetches:
        deadline = time.monotonic() + 5
        while len(store.started) < 2 * FETCH_THREADS and time.monotonic() < deadline:
            time.sleep(0.01)
        # twice the pool's width fetched ahead of a reader that has read nothing, no more
        assert sorted(store.started) == sorted(cid for cid, _ in refs[: 2 * FETCH_THREADS])
        fetches.next()
    # closing cancelled the fetches never begun: the rest of the round was not fetched
    assert len(store.started) < len(refs)


def test_each_failure_is_its_own_blobs_naming_its_cid(tmp_path: Path) -> None:
    store = SlowStore(tmp_path / "s", {})
    refs, blobs = _refs(store, 6)
    missing_cid = LocalStore(tmp_path / "other").put(b"never in this store")
    missing = (missing_cid, hashlib.sha256(b"never in this store").hexdigest())
    tampered = (refs[3][0], hashlib.sha256(b"what the chain says").hexdigest())
    asked = [refs[0], missing, refs[1], tampered, ("not-a-cid", refs[2][1]), refs[4]]
    store.delays = {refs[0][0]: 0.1}  # the first completes last
    with _InOrder(store, asked, None) as fetches:
        got = [fetches.next() for _ in asked]
    assert [f.failure for f in got] == [
        None,
        FetchFailure.MISSING,
        None,
        FetchFailure.TAMPERED,
        FetchFailure.INVALID_CID,
        None,
    ]
    assert [got[0].blob, got[2].blob, got[5].blob] == [blobs[0], blobs[1], blobs[4]]
    assert missing_cid in got[1].detail and "(missing)" in got[1].detail
    assert refs[3][0] in got[3].detail and "do not match the on-chain sha256" in got[3].detail
    assert "not-a-cid" in got[4].detail


def test_an_unexpected_error_is_raised_to_the_reader_of_that_blob(tmp_path: Path) -> None:
    """Only store errors become a failed fetch; a bug in a fetch is raised where that blob is
    read, not swallowed, and the blobs before it are still handed out."""
    store = SlowStore(tmp_path / "s", {})
    refs, blobs = _refs(store, 3)
    real = verify._fetch

    def broken(store_: LocalStore, cid: str, sha: str, max_bytes: int | None = None) -> object:
        if cid == refs[1][0]:
            raise RuntimeError("bug")
        return real(store_, cid, sha, max_bytes)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify, "_fetch", broken)
        with _InOrder(store, refs, None) as fetches:
            assert fetches.next().blob == blobs[0]
            with pytest.raises(RuntimeError, match="bug"):
                fetches.next()
            assert fetches.next().blob == blobs[2]
