"""A finalized round's blobs are requested ahead (issue 18): the log and terms at once, then the
start and global models and the first updates while the round's records are checked, so a
100-site round's audit no longer waits on each blob in turn. The checks, their order and their
verdicts are those of one fetch after another; a fetch that fails or times out fails its own
check, naming the CID, in its place."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import fedtrail.auditor.verify as verify_mod
from fedtrail.errors import StoreUnreachable
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.federation import Federation
from fedtrail.storage.store import ContentStore
from tests.auditor.test_verify_components import _failed, fed

__all__ = ["fed"]  # the module-scoped honest federation of the components tests

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


class _Store(ContentStore):
    """``inner``'s blobs, each ``get`` recorded (CID, in call order); ``fail``: CIDs whose
    ``get`` waits ``delay`` seconds, then raises as a store that timed out."""

    def __init__(self, inner: ContentStore, fail: frozenset[str] = frozenset(), delay: float = 0):
        self.inner, self.fail, self.delay = inner, fail, delay
        self.asked: list[str] = []
        self.changed = threading.Condition()

    def put(self, data: bytes) -> str:
        raise NotImplementedError

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        with self.changed:
            self.asked.append(cid)
            self.changed.notify_all()
        if cid in self.fail:
            time.sleep(self.delay)
            raise StoreUnreachable(f"the IPFS API timed out reading {cid}")
        return self.inner.get(cid, sha256, max_bytes=max_bytes)

    def pin(self, cid: str) -> None:
        raise NotImplementedError

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)


def test_the_models_and_updates_are_requested_while_the_records_are_checked(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When ``log.agrees`` is checked (the chain's records against the log), the start and
    global models and every update of round 2 have been requested (before: one after another,
    after the records' checks, the global model last); the audit still passes with the checks
    of a fetch at a time, in the same order."""
    info = fed.ledger.get_round(2)
    subs = fed.ledger.get_submissions(2)
    wanted = {info.start_cid, info.global_cid, *(s.cid for s in subs)}
    store = _Store(fed.store)
    seen: list[set[str]] = []
    check_log = verify_mod._check_log

    def when_checked(*args: Any, **kwargs: Any) -> None:
        with store.changed:  # the requests are on other threads: wait for them, up to 20 s
            store.changed.wait_for(lambda: wanted <= set(store.asked), timeout=20)
            seen.append(set(store.asked))
        check_log(*args, **kwargs)

    monkeypatch.setattr(verify_mod, "_check_log", when_checked)
    audit = verify_mod.verify_round(fed.ledger, store, 2)
    assert audit.passed, _failed(audit)
    assert seen and wanted <= seen[0], wanted - seen[0]
    monkeypatch.setattr(verify_mod, "_check_log", check_log)
    one_at_a_time = verify_mod.verify_round(fed.ledger, fed.store, 2)
    assert [(c.name, c.passed, c.detail) for c in audit.checks] == [
        (c.name, c.passed, c.detail) for c in one_at_a_time.checks
    ]


def test_the_blobs_are_requested_before_the_log_is_read(fed: Federation) -> None:
    """The terms alone decide the spec the blobs are decoded with (the log's is only checked
    against theirs), so round 2's start and global models and its updates are requested as
    soon as the terms are read, before the log is (before: after the log's schema check, about
    0.09 s of a 100-site round): a store whose log read waits for those requests gets them
    all; the checks are those of one fetch at a time, in the same order."""
    info = fed.ledger.get_round(2)
    wanted = {info.start_cid, info.global_cid, *(s.cid for s in fed.ledger.get_submissions(2))}
    got: list[bool] = []

    class LogWaits(_Store):
        def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
            if cid == info.log_cid:
                with self.changed:  # up to 5 s for the others' requests, on other threads
                    got.append(self.changed.wait_for(lambda: wanted <= set(self.asked), 5))
            return super().get(cid, sha256, max_bytes=max_bytes)

    audit = verify_mod.verify_round(fed.ledger, LogWaits(fed.store), 2)
    assert audit.passed, _failed(audit)
    assert got == [True]
    one_at_a_time = verify_mod.verify_round(fed.ledger, fed.store, 2)
    assert [(c.name, c.passed, c.detail) for c in audit.checks] == [
        (c.name, c.passed, c.detail) for c in one_at_a_time.checks
    ]


def test_an_update_whose_fetch_times_out_fails_its_own_check_naming_the_cid(
    fed: Federation,
) -> None:
    """Round 2's first update's fetch times out (after the others came back): its
    ``update.<site>`` check fails naming its CID and the store's error, in the submissions'
    place, every other update's check passes in order, and the audit returns (nothing left
    waiting on the failed request)."""
    subs = fed.ledger.get_submissions(2)
    slow = subs[0]
    store = _Store(fed.store, frozenset({slow.cid}), delay=0.5)
    audit = verify_mod.verify_round(fed.ledger, store, 2)
    updates = [c for c in audit.checks if c.name.startswith("update.")]
    assert [c.name for c in updates] == [f"update.{s.site[:10]}" for s in subs]
    assert [c.passed for c in updates] == [False] + [True] * (len(subs) - 1)
    assert slow.cid in updates[0].detail and "timed out" in updates[0].detail, updates[0].detail
    assert "(unavailable)" in updates[0].detail, updates[0].detail
    assert store.asked.count(slow.cid) == 1


def test_verify_all_reads_round_1s_global_model_once_for_round_2s_start(fed: Federation) -> None:
    """Round 2's start model is round 1's global (the contract's ``StartModelMismatch``):
    ``verify_all`` reads it from round 1's fetch for ``global.hash`` (before: fetched again), and
    round 2's free-rider references take round 1's models as round 1's checks decoded them
    (``test_verify_reads.py``; before: fetched again), so it asks the store for that blob once,
    where the two rounds verified alone ask at least twice; both rounds pass, round 2's
    ``start_model.hash`` as when verified alone."""
    first, second = fed.ledger.get_round(1), fed.ledger.get_round(2)
    assert second.start_cid == first.global_cid
    alone = _Store(fed.store)
    each = [verify_mod.verify_round(fed.ledger, alone, r) for r in (1, 2)]
    store = _Store(fed.store)
    audits = verify_mod.verify_all(fed.ledger, store)
    assert [a.passed for a in audits] == [True, True], [_failed(a) for a in audits]
    assert alone.asked.count(first.global_cid) >= 2, alone.asked
    assert store.asked.count(first.global_cid) == 1, store.asked
    assert [(c.name, c.passed, c.detail) for a in audits for c in a.checks] == [
        (c.name, c.passed, c.detail) for a in each for c in a.checks
    ]


def test_a_round_whose_check_raises_does_not_wait_for_its_models_in_flight(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check of round 2 raises (a bug; Ctrl-C alike) while its global model, requested ahead,
    hangs in the store: ``verify_round`` raises it at once (before: the round's pool was shut
    down waiting for that request, as long as the store held it)."""
    info = fed.ledger.get_round(2)
    store = _Store(fed.store, frozenset({info.global_cid}), delay=8.0)
    raised: list[float] = []

    def raises(*args: Any, **kwargs: Any) -> None:
        with store.changed:
            assert store.changed.wait_for(lambda: info.global_cid in store.asked, timeout=20)
        raised.append(time.monotonic())
        raise RuntimeError("a check's bug")

    monkeypatch.setattr(verify_mod, "_check_log", raises)
    with pytest.raises(RuntimeError, match="a check's bug"):
        verify_mod.verify_round(fed.ledger, store, 2)
    waited = time.monotonic() - raised[0]
    assert waited < 2.0, f"verify_round waited {waited:.1f}s for the global model's request"


def _heatmap_cids(fed: Federation, round_id: int) -> set[str]:
    info = fed.ledger.get_round(round_id)
    blob = fed.store.get(info.log_cid, info.log_sha256)
    block = RoundLog.from_bytes(blob).explanations
    assert block is not None, "the federation's rounds publish heatmaps"
    return {item["cid"] for item in block["images"]}


def test_the_heatmaps_are_requested_before_the_duplicates_are_checked(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 2's heatmaps are requested once its log names them, while its updates are fetched
    and checked (before: by ``log.heatmaps``, after every other check, one more round trip at
    the audit's end): when the duplicates are checked every heatmap has been asked for; the
    checks are those of one fetch at a time, in the same order."""
    heatmaps = _heatmap_cids(fed, 2)
    store = _Store(fed.store)
    seen: list[bool] = []
    find = verify_mod.find_duplicates

    def when_checked(*args: Any, **kwargs: Any) -> Any:
        with store.changed:  # the requests are on other threads: wait for them, up to 5 s
            seen.append(store.changed.wait_for(lambda: heatmaps <= set(store.asked), timeout=5))
        return find(*args, **kwargs)

    monkeypatch.setattr(verify_mod, "find_duplicates", when_checked)
    audit = verify_mod.verify_round(fed.ledger, store, 2)
    assert audit.passed, _failed(audit)
    assert seen == [True]
    assert all(store.asked.count(cid) == 1 for cid in heatmaps)
    monkeypatch.setattr(verify_mod, "find_duplicates", find)
    one_at_a_time = verify_mod.verify_round(fed.ledger, fed.store, 2)
    assert [(c.name, c.passed, c.detail) for c in audit.checks] == [
        (c.name, c.passed, c.detail) for c in one_at_a_time.checks
    ]


def test_a_round_whose_check_raises_does_not_wait_for_its_heatmaps_in_flight(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check of round 2 after its log is read raises while the heatmaps, requested ahead on
    threads of their own, hang in the store: ``verify_round`` raises it at once, as it does for
    its models in flight."""
    heatmaps = _heatmap_cids(fed, 2)
    store = _Store(fed.store, frozenset(heatmaps), delay=8.0)
    raised: list[float] = []

    def raises(*args: Any, **kwargs: Any) -> None:
        with store.changed:
            assert store.changed.wait_for(lambda: heatmaps & set(store.asked), timeout=20)
        raised.append(time.monotonic())
        raise RuntimeError("a check's bug")

    monkeypatch.setattr(verify_mod, "_check_log", raises)
    with pytest.raises(RuntimeError, match="a check's bug"):
        verify_mod.verify_round(fed.ledger, store, 2)
    waited = time.monotonic() - raised[0]
    assert waited < 2.0, f"verify_round waited {waited:.1f}s for the heatmaps' requests"


def test_a_finalized_round_reads_its_peer_record_once(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sites.registry`` takes the round's peer record as the audit read it for the peer
    checks (before: a second ``getPeerRound`` request of its own); its verdict and detail are
    those of a check reading it itself."""
    ledger = fed.ledger
    asked: list[int] = []
    get_peer_round = type(ledger).get_peer_round

    def counted(self: Any, round_id: int) -> Any:
        asked.append(round_id)
        return get_peer_round(self, round_id)

    monkeypatch.setattr(type(ledger), "get_peer_round", counted)
    audit = verify_mod.verify_round(ledger, fed.store, 2)
    assert audit.passed, _failed(audit)
    assert asked == [2]
    info = ledger.get_round(2)
    alone = verify_mod._check_registry(
        ledger,
        info,
        ledger.get_submissions(2, include_unrevealed=True),
        ledger.get_sites(),
        ledger.registry_history(2),
    )
    assert [(c.name, c.passed, c.detail) for c in audit.checks if c.name == "sites.registry"] == [
        alone
    ]
