"""``audit verify`` asks again for a blob the store calls missing before it counts it as not
given (``verify.FETCH_TRIES``). An IPFS daemon never answers "not found": ``IpfsStore.get``
calls a blob missing when its first bytes take over ``probe_timeout``, a wait that includes the
daemon's time on the audit's own other requests (8 updates and 8 heatmaps at once). Under load
that failed ``update.<site>`` and ``log.heatmaps`` of honest rounds
(``tests/reference/test_robust_rules_chain_reference.py``'s ``norm_clip-resnet10``, h-328)."""

from __future__ import annotations

from pathlib import Path

import fedtrail.auditor.verify as verify_mod
from fedtrail.errors import ContentNotFound, StoreUnreachable
from fedtrail.storage.store import LocalStore, compute_cid, sha256_hex

DATA = b"a blob the store holds"


class _Late(LocalStore):
    """A store that calls its blob missing ``late`` times (a busy daemon's probe timing out),
    then gives it; or raises ``error`` every time."""

    def __init__(self, root: Path, late: int, error: Exception | None = None) -> None:
        super().__init__(root)
        self.late = late
        self.error = error
        self.asked = 0

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        self.asked += 1
        if self.error is not None:
            raise self.error
        if self.asked <= self.late:
            raise ContentNotFound(f"{cid} not available from the IPFS API within 2s")
        return super().get(cid, sha256, max_bytes=max_bytes)


def _store(tmp_path: Path, late: int, error: Exception | None = None) -> _Late:
    store = _Late(tmp_path, late, error)
    assert store.put(DATA) == compute_cid(DATA)
    return store


def test_a_blob_given_on_a_later_try_is_read(tmp_path: Path) -> None:
    late = verify_mod.FETCH_TRIES - 1
    store = _store(tmp_path, late)
    fetched = verify_mod._fetch(store, compute_cid(DATA), sha256_hex(DATA))
    assert fetched.blob == DATA and fetched.failure is None, fetched
    assert store.asked == late + 1


def test_a_blob_missing_at_every_try_is_not_given_and_says_how_often_it_was_asked(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, late=verify_mod.FETCH_TRIES)
    fetched = verify_mod._fetch(store, compute_cid(DATA), sha256_hex(DATA))
    assert fetched.blob is None and fetched.failure is verify_mod.FetchFailure.MISSING
    assert fetched.detail.startswith(f"cannot fetch {compute_cid(DATA)} (missing): ")
    assert f"asked {verify_mod.FETCH_TRIES} times" in fetched.detail, fetched.detail
    assert store.asked == verify_mod.FETCH_TRIES


def test_other_store_errors_are_not_asked_again(tmp_path: Path) -> None:
    """An unreachable store was already retried by the store itself (its own bounded retries,
    and a message naming the endpoint); it stays UNAVAILABLE, not missing."""
    down = StoreUnreachable("IPFS API at /ip4/127.0.0.1/tcp/1/http does not answer")
    store = _store(tmp_path, late=0, error=down)
    fetched = verify_mod._fetch(store, compute_cid(DATA), sha256_hex(DATA))
    assert fetched.failure is verify_mod.FetchFailure.UNAVAILABLE
    assert "does not answer" in fetched.detail
    assert store.asked == 1
