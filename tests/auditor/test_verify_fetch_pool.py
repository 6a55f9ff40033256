"""The pool a round's audit fetches its blobs ahead on (``_Fetches``, issue 18) against a store
that hangs: an audit that ends in an exception (a check's bug, Ctrl-C) raises it at once rather
than waiting for the requests in flight, and the auditor's process exits without waiting for
them (a hostile or broken store may trickle bytes for as long as each read stays under its
timeout, so "bounded by the store's timeout" is no bound at exit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fedtrail.auditor.verify as verify_mod
from fedtrail.errors import StoreUnreachable
from fedtrail.storage.store import ContentStore

HANG = 8.0  # seconds a hanging request lasts here (a real one: up to the store's timeout, or more)
SHA = "0" * 64


class _Hanging(ContentStore):
    """Every ``get`` but of ``quick``'s CIDs waits until ``released`` (at most ``HANG`` s),
    then fails as a timeout."""

    def __init__(self, quick: frozenset[str] = frozenset()) -> None:
        self.quick = quick  # CIDs that fail at once
        self.released = threading.Event()
        self.asked = threading.Semaphore(0)

    def put(self, data: bytes) -> str:
        raise NotImplementedError

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if cid not in self.quick:
            self.asked.release()
            self.released.wait(HANG)
        raise StoreUnreachable(f"timed out reading {cid}")

    def pin(self, cid: str) -> None:
        raise NotImplementedError

    def has(self, cid: str) -> bool:
        return False


@pytest.mark.parametrize("exc", [RuntimeError("a check's bug"), KeyboardInterrupt()])
def test_an_audit_that_raises_does_not_wait_for_the_requests_in_flight(
    exc: BaseException,
) -> None:
    """The start model, global model and updates are requested before the round's checks run;
    when a check raises (or the auditor presses Ctrl-C) while they hang, the exception leaves
    ``_Fetches`` at once (before: ``shutdown(wait=True)`` held it until every request in flight
    had ended) and the requests not started are cancelled."""
    store = _Hanging()
    started = time.monotonic()
    try:
        with pytest.raises(type(exc)), verify_mod._Fetches(store) as fetches:
            futures = [fetches.one(f"cid{i}", SHA, None) for i in range(12)]
            assert store.asked.acquire(timeout=HANG)  # a request is in flight
            raise exc
        elapsed = time.monotonic() - started
    finally:
        store.released.set()
    assert elapsed < HANG / 4, f"the exception waited {elapsed:.1f}s for the store"
    assert sum(f.cancelled() for f in futures) >= len(futures) - verify_mod.FETCH_THREADS


def test_the_auditor_exits_without_waiting_for_a_hanging_request() -> None:
    """A process whose audit was stopped by Ctrl-C while a request hangs exits at once (before:
    the exception waited for the pool's shutdown, and the pool's worker threads are joined at
    interpreter exit besides, so ``audit verify`` sat until the hostile store let go)."""
    script = textwrap.dedent(
        f"""
        import threading
        import time
        import fedtrail.auditor.verify as verify_mod
        from fedtrail.storage.store import ContentStore

        asked = threading.Event()

        class Hanging(ContentStore):
            def put(self, data): raise NotImplementedError
            def pin(self, cid): raise NotImplementedError
            def has(self, cid): return False
            def get(self, cid, sha256, *, max_bytes=None):
                asked.set()
                threading.Event().wait({HANG * 4})
                raise OSError("late")

        try:
            with verify_mod._Fetches(Hanging()) as fetches:
                fetches.one("cid", "{SHA}", None)
                asked.wait()
                print("pressed", time.monotonic(), flush=True)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG * 12
    )
    ended = time.monotonic()  # CLOCK_MONOTONIC: one clock for both processes
    assert done.returncode == 0 and "interrupted" in done.stdout, done.stderr
    elapsed = ended - float(done.stdout.split()[1])  # since Ctrl-C
    assert elapsed < HANG / 2, f"the process waited {elapsed:.1f}s at exit for the hanging request"


def test_a_heatmap_read_stopped_early_does_not_wait_for_the_requests_in_flight() -> None:
    """``_fetch_in_order`` (the heatmaps' reads, closed once enough have failed) leaves the
    requests in flight behind when closed early, as ``_Fetches`` does (before: its own pool
    was shut down waiting for each)."""
    store = _Hanging(quick=frozenset({"cid0"}))
    ahead = verify_mod._fetch_in_order(store, [(f"cid{i}", SHA) for i in range(20)])
    try:
        first = next(ahead)
        assert first.blob is None and "cid0" in first.detail, first
        assert store.asked.acquire(timeout=HANG) and store.asked.acquire(timeout=HANG)
        started = time.monotonic()
        ahead.close()
        elapsed = time.monotonic() - started
    finally:
        store.released.set()
    assert elapsed < HANG / 4, f"closing waited {elapsed:.1f}s for the store"


def test_heatmaps_requested_ahead_and_closed_early_do_not_wait_for_the_requests_in_flight() -> None:
    """``_Fetches.separate`` (a round's heatmaps, requested once its log is read) makes its
    first requests when made, before any read, and, closed with reads left, leaves the requests
    in flight behind, as ``_fetch_in_order`` closed early does; the round's fetches closing it
    again is a no-op."""
    store = _Hanging(quick=frozenset({"cid0"}))
    with verify_mod._Fetches(store) as fetches:
        ahead = fetches.separate([(f"cid{i}", SHA) for i in range(20)], None)
        try:  # requested before the first read
            assert store.asked.acquire(timeout=HANG) and store.asked.acquire(timeout=HANG)
            first = next(ahead)
            assert first.blob is None and "cid0" in first.detail, first
            started = time.monotonic()
            ahead.close()
            elapsed = time.monotonic() - started
            assert list(ahead) == []
        finally:
            store.released.set()
    assert elapsed < HANG / 4, f"closing waited {elapsed:.1f}s for the store"
