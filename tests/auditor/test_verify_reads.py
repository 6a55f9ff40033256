"""What one audit has read is not read again (issue 18): ``verify_all`` hands a round's decoded
updates and models to the next round's free-rider history (its references), and keeps each log
and terms it read for the later checks and rounds; a round verified alone reads its history's
updates on the round's fetch threads, not one after another. The checks, their order and their
verdicts are those of a read each time."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import fedtrail.auditor.verify as verify_mod
import fedtrail.valuation.chained as chained
from fedtrail.errors import ContentNotFound, HashMismatch
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.terms import MAX_TERMS_BYTES
from fedtrail.simulation.federation import Federation
from fedtrail.storage import codec
from fedtrail.storage.codec import default_max_bytes
from fedtrail.storage.store import ContentStore, LocalStore
from tests.auditor.peer_federation import new_peer_federation, peer_round
from tests.auditor.test_verify import federation, on_anvil
from tests.auditor.test_verify_cancelled import _submit
from tests.auditor.test_verify_components import _failed, fed
from tests.auditor.test_verify_prefetch import _Store
from tests.auditor.test_verify_public_screen import public

__all__ = ["fed", "public"]  # the components tests' honest federation; the public screen's terms

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _checks(audits: list[verify_mod.RoundAudit]) -> list[tuple[str, bool, str, bool]]:
    return [(c.name, c.passed, c.detail, c.applicable) for a in audits for c in a.checks]


def test_verify_all_reads_each_blob_of_round_1_once(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over both rounds, ``verify_all`` asks the store once for each of round 1's updates,
    its models, its log and its terms (before: round 2's free-rider history fetched round 1's
    updates and models again, its standing checks round 1's log twice more, and its
    ``terms.task_fixed`` round 1's terms again), and decodes no round-1 update for the
    history; the checks are those of each round verified alone."""
    first = fed.ledger.get_round(1)
    round_1 = [
        *(s.cid for s in fed.ledger.get_submissions(1)),
        first.start_cid,
        first.global_cid,
        first.log_cid,
        first.terms_cid,
    ]
    alone = [verify_mod.verify_round(fed.ledger, _Store(fed.store), r) for r in (1, 2)]
    decodes: list[int] = []
    real = codec.decode_update

    def counted(*args: object, **kwargs: object) -> object:
        decodes.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    store = _Store(fed.store)
    monkeypatch.setattr(chained, "decode_update", counted)
    audits = verify_mod.verify_all(fed.ledger, store)
    monkeypatch.undo()
    assert [a.passed for a in audits] == [True, True], [_failed(a) for a in audits]
    asked = Counter(store.asked)
    assert {cid: asked[cid] for cid in round_1} == dict.fromkeys(round_1, 1), asked
    assert decodes == []
    assert _checks(audits) == _checks(alone)


def test_verify_all_decodes_each_model_once(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over both rounds, ``verify_all`` decodes one model: round 1's start, once for all of
    its checks (before: by the valuation checks, ``global.recomputed`` and again to keep it
    for round 2). Each round's global model is the state ``global.recomputed`` replayed, whose
    encoding is its bytes (before: decoded again to keep it), and round 2's start model is
    round 1's global; the checks are those of each round verified alone."""
    alone = [verify_mod.verify_round(fed.ledger, fed.store, r) for r in (1, 2)]
    decoded: list[bytes] = []
    real = codec.decode_model

    def counted(blob: bytes, **kwargs: object) -> object:
        decoded.append(blob)
        return real(blob, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verify_mod, "decode_model", counted)
    monkeypatch.setattr(chained, "decode_model", counted)
    audits = verify_mod.verify_all(fed.ledger, fed.store)
    monkeypatch.undo()
    assert [a.passed for a in audits] == [True, True], [_failed(a) for a in audits]
    first = fed.ledger.get_round(1)
    assert fed.ledger.get_round(2).start_sha256 == first.global_sha256
    assert [hashlib.sha256(b).hexdigest() for b in decoded] == [first.start_sha256]
    assert _checks(audits) == _checks(alone)


class _Slow(_Store):
    """A store whose reads of ``slow`` CIDs each take ``delay`` seconds, noting the most of them
    in flight at once."""

    def __init__(self, inner: ContentStore, slow: set[str], delay: float) -> None:
        super().__init__(inner)
        self.slow, self.delay = slow, delay
        self.lock = threading.Lock()
        self.in_flight = self.most = 0

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if cid not in self.slow:
            return super().get(cid, sha256, max_bytes=max_bytes)
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.delay)
            return super().get(cid, sha256, max_bytes=max_bytes)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_a_round_verified_alone_reads_its_historys_updates_at_once(fed: Federation) -> None:
    """Round 2 verified alone reads round 1's updates (its free-rider references) several at
    a time on the round's fetch threads (before: one after another, from the history's reader),
    each once, with the checks of a read each time."""
    round_1 = {s.cid for s in fed.ledger.get_submissions(1)}
    assert len(round_1) >= 2
    store = _Slow(fed.store, round_1, 0.3)
    audit = verify_mod.verify_round(fed.ledger, store, 2)
    assert audit.passed, _failed(audit)
    assert store.most >= 2, store.most
    asked = Counter(store.asked)
    assert {cid: asked[cid] for cid in round_1} == dict.fromkeys(round_1, 1), asked
    plain = verify_mod.verify_round(fed.ledger, fed.store, 2)
    assert _checks([audit]) == _checks([plain])


def test_a_history_update_that_cannot_be_read_fails_as_before(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A free-rider reference that cannot be read fails ``reasons.free_rider`` with the history
    reader's own error, as when the history reads its blobs one after another (on the round's
    fetch threads the error is the one the store raised there)."""
    victim = fed.ledger.get_submissions(1)[0].cid

    class Gone(_Store):
        def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
            if cid == victim:  # read only as round 2's reference
                raise ContentNotFound(f"{cid} was withdrawn")
            return super().get(cid, sha256, max_bytes=max_bytes)

    ahead = verify_mod.verify_round(fed.ledger, Gone(fed.store), 2)
    monkeypatch.setattr(
        verify_mod._Fetches,
        "blobs",
        lambda self, refs, limit: chained.sequential(self.store)(refs, limit),
    )
    alone = verify_mod.verify_round(fed.ledger, Gone(fed.store), 2)
    failed = _failed(ahead)
    assert "reasons.free_rider" in failed and victim in failed["reasons.free_rider"], failed
    assert _checks([ahead]) == _checks([alone])


def test_verify_all_takes_a_peer_rounds_screen_references_from_the_round_before(
    anvil_url: str, tmp_path: Path, public: None
) -> None:
    """A peer round's public screen (``peers.screen``) is valued against the round before's
    updates: ``verify_all`` takes them as that round's checks decoded them, so it asks the
    store once for each (before: again for the screen's history); the checks are those of each
    round verified alone."""
    pf = new_peer_federation(tmp_path, anvil_url, LocalStore(tmp_path / "blobs"))
    ledger = pf.fed.ledger
    r = peer_round(pf, seed=5)
    round_1 = [s.cid for s in ledger.get_submissions(1)]
    alone = [verify_mod.verify_round(ledger, _Store(pf.fed.store), k) for k in (1, r)]
    assert "peers.screen" in {c.name for c in alone[1].checks}
    store = _Store(pf.fed.store)
    audits = verify_mod.verify_all(ledger, store)
    asked = Counter(store.asked)
    assert {cid: asked[cid] for cid in round_1} == dict.fromkeys(round_1, 1), asked
    assert _checks(audits) == _checks(alone)


def test_a_blob_read_under_a_documents_limit_is_kept_only_when_the_chain_names_it_a_document(
    fed: Federation,
) -> None:
    """The audit keeps the logs and terms the chain names (:class:`AuditReads`' ``documents``),
    not every blob read under a document's byte limit: a spec's blob limit can be exactly
    ``MAX_TERMS_BYTES`` (``ModelSpec(width=1, hidden=1, num_classes=61119)``'s is), and every
    update and model of such rounds was kept for the rest of the audit (rounds x sites blobs
    held). Such a blob is asked of the store each time; the round's log and terms are kept."""
    assert default_max_bytes(ModelSpec(width=1, hidden=1, num_classes=61119)) == MAX_TERMS_BYTES
    first = fed.ledger.get_round(1)
    reads = verify_mod.AuditReads()
    store = _Store(fed.store)
    assert verify_mod.verify_round(fed.ledger, store, 1, reads=reads).passed
    assert set(reads.documents) == {
        (first.log_cid, first.log_sha256),
        (first.terms_cid, first.terms_sha256),
    }
    update = fed.ledger.get_submissions(1)[0]
    documents = verify_mod._Documents(store, reads.documents, reads.named)
    before = store.asked.count(update.cid)
    for _ in range(2):
        documents.get(update.cid, update.sha256, max_bytes=MAX_TERMS_BYTES)
    assert store.asked.count(update.cid) == before + 2
    assert (update.cid, update.sha256) not in reads.documents
    documents.get(first.terms_cid, first.terms_sha256, max_bytes=MAX_TERMS_BYTES)
    assert store.asked.count(first.terms_cid) == 1  # kept from the round's own read


@pytest.fixture(scope="module")
def gapped(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """Round 1 finalized, round 2 revealed and cancelled, rounds 3 and 4 finalized: round 3's
    history skips the cancelled round, round 4's reaches past round 3 when its terms'
    ``stale_rounds`` asks for more than one round."""
    fed = federation(tmp_path_factory.mktemp("gapped"), rounds=1, **on_anvil(anvil_url))
    fed.ledger.cancel_round(fed.aggregator, _submit(fed))
    for _ in range(2):
        assert fed.run_round() is not None
    return fed


def test_verify_all_equals_each_round_verified_alone_across_a_cancelled_round(
    gapped: Federation,
) -> None:
    """A cancelled round between finalized ones (h-278's review of the reads ``verify_all``
    reuses): every check of every round, its verdict and detail, is that of the round
    verified alone, and each of round 1's and round 3's updates is asked of the store once."""
    ledger = gapped.ledger
    assert [ledger.get_round(r).phase for r in (1, 2, 3, 4)] == [
        Phase.FINALIZED,
        Phase.CANCELLED,
        Phase.FINALIZED,
        Phase.FINALIZED,
    ]
    alone = [verify_mod.verify_round(ledger, gapped.store, r) for r in (1, 2, 3, 4)]
    store = _Store(gapped.store)
    audits = verify_mod.verify_all(ledger, store)
    assert [a.passed for a in audits] == [a.passed for a in alone] == [True] * 4, [
        _failed(a) for a in audits
    ]
    assert _checks(audits) == _checks(alone)
    asked = Counter(store.asked)
    updates = [s.cid for r in (1, 3) for s in ledger.get_submissions(r)]
    assert {cid: asked[cid] for cid in updates} == dict.fromkeys(updates, 1), asked


@pytest.mark.parametrize("how", ["gone", "tampered"])
def test_verify_all_fails_an_unreadable_reference_as_each_round_alone_does(
    fed: Federation, how: str
) -> None:
    """One of round 1's updates cannot be read (withdrawn, or other bytes than its sha256):
    round 1's own check of it fails, and round 2's ``reasons.free_rider`` cannot read its
    history; ``verify_all`` (which reads round 2's references from round 1's checks) gives
    every check, verdict and detail of each round verified alone."""
    victim = fed.ledger.get_submissions(1)[0].cid

    class Broken(_Store):
        def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
            if cid != victim:
                return super().get(cid, sha256, max_bytes=max_bytes)
            if how == "gone":
                raise ContentNotFound(f"{cid} was withdrawn")
            self.asked.append(cid)
            raise HashMismatch(f"{cid}: the bytes do not match {sha256}")

    alone = [verify_mod.verify_round(fed.ledger, Broken(fed.store), r) for r in (1, 2)]
    audits = verify_mod.verify_all(fed.ledger, Broken(fed.store))
    failed = _failed(audits[1])
    assert "reasons.free_rider" in failed and victim in failed["reasons.free_rider"], failed
    assert not audits[0].passed
    assert _checks(audits) == _checks(alone)
