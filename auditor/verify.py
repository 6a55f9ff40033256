"""Replay and verify rounds from public data only: the chain, the content hashes and this code.

The auditor trusts neither the aggregator nor the sites. For each finalized round it fetches every
blob by the CID the chain's events name and checks it against the sha256 in contract storage,
recomputes the weights from the on-chain sample counts and scores with the shared rule,
re-aggregates the stored updates and compares the result's sha256 with the finalized one, and
checks that the explanation log agrees with the chain.

The round is replayed under its *terms*: the document whose sha256 ``openRound`` committed
before any update existed (aggregation rule, valuation settings, validation-set hash, model
spec, duplicate thresholds). A log whose settings differ from the terms fails ``terms.rule``,
``terms.valuation``, ``terms.validation`` or ``terms.model``; updates that are not in canonical
encoding count as malformed, and duplicates are re-derived in commit order (``duplicates``).

A peer round (issue 14: the chain holds a peer record, or the terms or the log say valuation
mode ``"peers"``) is scored by its sites, not the aggregator: its scores, reasons, weights and
validator reputations are recomputed from the revealed score vectors on chain
(``peers.votes``, ``peers.median``, ``peers.quorum``, ``peers.reputation``:
:mod:`fedtrail.auditor.peers`), with no validation split; the valuation replay
(``scores.recomputed``) is reported not applicable there, never as passed. Weights, global
model, blobs and log are checked as in any round. A cancelled peer round is checked too: its
votes must not have been valuable (``peers.cancelled``), since anyone could have valued it, and
if it was valued before it was cancelled, an update with weight must be unreadable (and its
medians and validator ratings, which stand, are recomputed as in a finalized round). A
cancelled aggregator round, given the validation split, must have had nothing to value: its
valuation replayed under its terms scores every revealed update 0 (``cancelled.valuation``).

No check passes, or is left out, because an input is missing: a document the round needs (its
terms, its log, its start model, a valid model spec) that the store does not hold, holds
damaged, or that does not parse fails the check that reads it, and every check that needs it
is recorded as failed, ``not checked: ...`` naming that check (:func:`_unchecked`), so
withholding a document cannot shrink the audit. The one absence the protocol allows: an update
the chain already scores 0 as unusable (``update.0x...`` says so).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import torch

from fedtrail.auditor.claims import mark_site, registry_at_finalize
from fedtrail.auditor.components import (
    Recomputed,
    check_components,
    check_free_riders,
    check_oversized,
    check_public_reasons,
    check_screen,
    text_gap,
)
from fedtrail.auditor.explanation_check import EXPLANATION_SHIFT_CHECK, check_explanation_shift
from fedtrail.auditor.peers import (
    CANCELLED,
    QUORUM,
    SCREEN,
    WITHHELD,
    PeerRecord,
    check_cancelled,
    check_median,
    check_public_screen,
    check_quorum,
    check_reputation,
    check_votes,
    check_withheld,
    read_peer_record,
)
from fedtrail.auditor.report.collect import MAX_HEATMAP_BYTES, PNG_MAGIC
from fedtrail.auditor.standing import check_standing, compare_standing
from fedtrail.errors import (
    ConfigError,
    ContentNotFound,
    ContentTooLarge,
    FedtrailError,
    HashMismatch,
    InvalidCid,
    InvalidUpdate,
    LedgerError,
    NotAFile,
    StoreError,
)
from fedtrail.ledger import (
    Ledger,
    RegistryHistory,
    RoundInfo,
    SiteInfo,
    Submission,
    declines_among,
)
from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.dp_noise import noise_breach
from fedtrail.ml.explain import probe_set
from fedtrail.ml.metrics import (
    calibration_problems,
    decide,
    predict_logits,
)
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.cids import SHOWN_CHARS, bounded
from fedtrail.protocol.codes import Decline, Phase, Reason
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.evidence import ChainUpdate, Evidence, applicable, evidence_problems
from fedtrail.protocol.names import confusable, confusable_groups, escaped
from fedtrail.protocol.names import shown as shown_name
from fedtrail.protocol.peers import (
    InvalidVotes,
    PeerOutcome,
    address_key,
    cancelled_outcome,
    screen_drop,
    screen_empties_round,
    screen_inputs,
)
from fedtrail.protocol.privacy import SUMMED, DpParams, InvalidPrivacy, from_micro
from fedtrail.protocol.roundlog import (
    MAX_LOG_BYTES,
    WEIGHTED_REFERENCES,
    InvalidLog,
    RoundLog,
    RoundMetrics,
    SiteEntry,
    ValuationSettings,
    explanation_head,
    summary_of,
)
from fedtrail.protocol.terms import (
    INITIAL_MODEL_DEPLOYMENT,
    MAX_TERMS_BYTES,
    InvalidTerms,
    RoundTerms,
    opening_differences,
    payment_differences,
    valuation_mode_difference,
    window_differences,
)
from fedtrail.protocol.weights import ZeroTotalWeight, onchain_weights
from fedtrail.storage.canonical import check_canonical_update
from fedtrail.storage.codec import (
    decode_model,
    decode_update_stored,
    encode_model,
    read_limit,
)
from fedtrail.storage.privacy_history import PrivacyHistory
from fedtrail.storage.privacy_spend import sampling_problem
from fedtrail.storage.store import NOT_GIVEN, ContentStore
from fedtrail.valuation.candidates import SpendChecker, checks_spend, noise_rule
from fedtrail.valuation.freeride import duplicate_residual_z
from fedtrail.valuation.limits import ThresholdLimits

if TYPE_CHECKING:
    from fedtrail.valuation import Candidate
    from fedtrail.valuation.chained import Carried, Decoded, Fetch
    from fedtrail.valuation.combine import RoundValuation, SiteValuation

# Scores are recomputed from floating-point model evaluations, whose last bits depend on the CPU
# and thread count; weights and global models are compared exactly, scores within this (1e-3).
SCORE_TOLERANCE = 1_000

# The global models' metrics on the validation set are recomputed from the same float32 inference
# (same batch size) and float64 arithmetic as the aggregator's: bit-reproducible on one machine
# and thread count. On another thread count or CPU the logits differ in their last bits: measured
# on one machine, a testnet aggregator on 1 torch thread and an auditor on 2 differ by 3.7e-9 in
# the fitted intercept and ~1e-9 in loss and ECE (1e-9 failed that honest run); an embedded
# federation by 7e-10. 1e-6 is far above that noise and far below any claim worth making (AUC is
# printed to 3 digits). A score that crosses a tie or the threshold on other hardware moves AUC
# or F1 by one sample's share: such an auditor passes a larger ``--metrics-tolerance``.
METRICS_TOLERANCE = 1e-6

# Normalised and accumulated values re-derived from the validation game: floats from the same
# evaluations as the scores, so the same last-bits caveat. Measured: a round valued on 2 torch
# threads and re-derived on 1 differs by up to 9.6e-6 (tests/auditor/test_standing.py; 1e-6 made
# an auditor whose machine has another core count fail honest logs). Normalised values are shares
# of a round (sum of |value| <= 1); 1e-4 of one is far below any value that moves a score.
STANDING_TOLERANCE = 1e-4

# Reason codes (aggregator.valuation.base.Reason) for updates that could not be read at valuation.
UNUSABLE_REASONS = frozenset({Reason.TAMPERED, Reason.MALFORMED})


@dataclass(frozen=True)
class Check:
    """One verification step of one round. A check that does not apply to the round (the
    valuation replay of a peer round, whose scores no validation split gives) is recorded as
    not applicable: neither passed nor failed (``status`` N/A)."""

    round: int
    name: str
    passed: bool
    detail: str
    applicable: bool = True

    @property
    def status(self) -> str:
        if not self.applicable:
            return "N/A"
        return "PASS" if self.passed else "FAIL"

    @property
    def failed(self) -> bool:
        return self.applicable and not self.passed


@dataclass
class RoundAudit:
    round: int
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No applicable check failed (checks that do not apply neither pass nor fail)."""
        return not any(c.failed for c in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(self.round, name, passed, detail))
        return passed

    def not_applicable(self, name: str, detail: str) -> None:
        """Records that ``name`` does not apply to this round, and why (never as passed)."""
        self.checks.append(Check(self.round, name, False, detail, applicable=False))


class _Timer:
    def __init__(self, audit: RoundAudit, key: str) -> None:
        self.audit, self.key = audit, key

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.audit.seconds[self.key] = self.audit.seconds.get(self.key, 0.0) + (
            time.perf_counter() - self.t
        )


class FetchFailure(Enum):
    """Why a blob the chain names could not be used."""

    TAMPERED = "tampered"
    """Bytes came back but do not hash to the on-chain sha256."""
    MISSING = "missing"
    """The store has no content under the CID."""
    TOO_LARGE = "too large"
    """The content exceeds the download limit."""
    INVALID_CID = "invalid cid"
    """The chain names something that is not a CID, or not the canonical CID of the bytes
    under it (``NonCanonicalCid``, README *Content not given*)."""
    NOT_A_FILE = "not a file"
    """The CID names a directory or another node no blob can be read from."""
    UNAVAILABLE = "unavailable"
    """The store failed otherwise (unreachable, I/O error)."""


@dataclass(frozen=True)
class Fetched:
    """A blob checked against its on-chain sha256, or why there is none."""

    blob: bytes | None
    failure: FetchFailure | None = None
    detail: str = ""


_FAILURES: tuple[tuple[type[StoreError], FetchFailure], ...] = (
    (ContentNotFound, FetchFailure.MISSING),
    (ContentTooLarge, FetchFailure.TOO_LARGE),
    (InvalidCid, FetchFailure.INVALID_CID),
    (NotAFile, FetchFailure.NOT_A_FILE),
)


FETCH_THREADS = 8
"""Updates requested at once while verifying a round (a round's fetch is mostly per-request
latency: one API round trip per blob on IPFS); at most twice as many are held in memory."""


def _fetch_in_order(
    store: ContentStore, refs: Sequence[tuple[str, str]], *, max_bytes: int | None = None
) -> Generator[Fetched, None, None]:
    """:func:`_fetch` of every ``(cid, sha256)``, yielded in ``refs``' order, with up to
    :data:`FETCH_THREADS` requests in flight (on :class:`_Fetches`: closed early, it waits for
    none of them)."""
    with _Fetches(store) as fetches:
        yield from fetches.in_order(refs, max_bytes)


FETCH_TRIES = 3
"""Reads of a blob the store says it does not have (``ContentNotFound``) before the audit
counts it as not given. An IPFS daemon never answers "not found": ``IpfsStore.get`` calls a
blob missing when its first bytes take over ``probe_timeout`` (2 s), and that wait includes the
time the daemon spends on this audit's other requests (:data:`FETCH_THREADS` updates and as
many heatmaps at once). On a loaded machine (load 13, two cores) 8 + 8 concurrent reads of
seven 20 MB blobs and 30 heatmaps called 6 and 12 of 37 blobs that were in the daemon missing in
two of three tries, the same reads 1 + 1 at a time none (max 1.2 s): honest rounds failed
``update.<site>`` and ``log.heatmaps`` (h-328). A blob still not read after this many tries is
not given, as before, its detail saying how often it was asked for."""


def _fetch(store: ContentStore, cid: str, sha256: str, max_bytes: int | None = None) -> Fetched:
    """One blob, at most ``max_bytes`` long (default the store's limit), or why not."""
    for attempt in range(1, FETCH_TRIES + 1):
        try:
            return Fetched(store.get(cid, sha256, max_bytes=max_bytes))
        except ContentNotFound as exc:
            if attempt < FETCH_TRIES:
                continue
            detail = (
                f"cannot fetch {cid} ({FetchFailure.MISSING.value}): {exc} (asked {FETCH_TRIES} "
                "times: not in the store, or the store too busy to answer in time)"
            )
            return Fetched(None, FetchFailure.MISSING, detail)
        except HashMismatch as exc:
            detail = f"bytes do not match the on-chain sha256: {exc}"
            return Fetched(None, FetchFailure.TAMPERED, detail)
        except StoreError as exc:
            failure = next(
                (f for t, f in _FAILURES if isinstance(exc, t)), FetchFailure.UNAVAILABLE
            )
            return Fetched(None, failure, f"cannot fetch {cid} ({failure.value}): {exc}")
    raise AssertionError("unreachable")  # the last try returns


_T = TypeVar("_T")

_Job = tuple["Future[Any]", Callable[[], Any]]
"""A request of :class:`_Fetches`: its future and the read whose result (or error) it gets."""


class _Fetches:
    """The blobs of one round's audit requested ahead, :data:`FETCH_THREADS` in flight, each
    result read where its checks need it (a check sees the same :class:`Fetched` as from
    :func:`_fetch` called there). Bounded memory: the single blobs asked for, and at most
    ``2 * FETCH_THREADS`` updates ahead of the one being checked.

    Leaving the ``with`` block cancels what has not started. Left normally, every request has
    been read, so none is in flight; left on an exception (a check's bug, Ctrl-C, a generator
    closed early) it waits for none: a hostile store may hang or trickle bytes for as long as
    each read stays under its timeout, and the exception must not wait on it. The requests run
    on daemon threads for the same reason at exit (a ``ThreadPoolExecutor``'s workers are
    joined there: ``audit verify`` stopped by Ctrl-C sat until the store let go)."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._separate: list[_Separate] = []

    def __enter__(self) -> _Fetches:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for separate in self._separate:  # closed as their reader would (none waits if unread)
            separate.close()
        self._closed = True  # a request asked after this would wait forever: refused
        while True:  # the requests not started: cancelled (a worker skips a cancelled one)
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if exc_type is None:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, read = job
            del job  # the result is the reader's alone: none held here after it is set
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(read())
                except BaseException as exc:  # the reader's .result() raises it, as read() would
                    future.set_exception(exc)
            del future, read

    def _submit(self, read: Callable[[], _T]) -> Future[_T]:
        if self._closed:
            raise RuntimeError("blob requested after its audit's fetches were closed")
        future: Future[_T] = Future()
        self._jobs.put((future, read))
        if len(self._threads) < FETCH_THREADS:
            thread = threading.Thread(target=self._work, name="fedtrail-fetch", daemon=True)
            thread.start()
            self._threads.append(thread)
        return future

    def one(self, cid: str, sha256: str, max_bytes: int | None) -> Future[Fetched]:
        """:func:`_fetch` of one blob, requested now."""
        return self._submit(functools.partial(_fetch, self.store, cid, sha256, max_bytes))

    def _get(self, cid: str, sha256: str, max_bytes: int | None) -> Future[bytes]:
        """``store.get`` of one blob, requested now (its ``.result()`` raises what it raises)."""
        return self._submit(functools.partial(self.store.get, cid, sha256, max_bytes=max_bytes))

    def in_order(self, refs: Sequence[tuple[str, str]], max_bytes: int | None) -> Iterator[Fetched]:
        """:func:`_fetch` of every ``(cid, sha256)``, read in ``refs``' order; the first
        ``2 * FETCH_THREADS`` requested now, each later one when one is read."""
        futures = self._ahead(refs, lambda cid, sha: self.one(cid, sha, max_bytes))
        return (future.result() for future in futures)

    def separate(self, refs: Sequence[tuple[str, str]], max_bytes: int | None) -> _Separate:
        """:func:`_fetch_in_order` of ``refs`` on threads of their own, its first
        ``2 * FETCH_THREADS`` requested now (not at the first read), closed with this round's
        fetches when its reader has not closed it (:class:`_Separate`)."""
        ahead = _Separate(self.store, refs, max_bytes)
        self._separate.append(ahead)
        return ahead

    def blobs(
        self, refs: Sequence[tuple[str, str]], max_bytes: int | None
    ) -> Iterator[Callable[[], bytes]]:
        """A :data:`~fedtrail.valuation.chained.Fetch` on these threads (the free-rider
        history's reads): ``store.get`` of every ``(cid, sha256)`` requested as
        :meth:`in_order` requests them, each yielded as its future's ``result``."""
        futures = self._ahead(refs, lambda cid, sha: self._get(cid, sha, max_bytes))
        return (future.result for future in futures)

    def _ahead(
        self, refs: Sequence[tuple[str, str]], submit: Callable[[str, str], Future[_T]]
    ) -> Iterator[Future[_T]]:
        """``submit`` of every ``(cid, sha256)``, yielded in ``refs``' order: the first
        ``2 * FETCH_THREADS`` submitted now, each later one when one is yielded."""
        ahead = 2 * FETCH_THREADS
        pending = deque(submit(cid, sha) for cid, sha in refs[:ahead])
        return self._read(pending, refs[ahead:], submit)

    @staticmethod
    def _read(
        pending: deque[Future[_T]],
        rest: Sequence[tuple[str, str]],
        submit: Callable[[str, str], Future[_T]],
    ) -> Iterator[Future[_T]]:
        queued = 0
        while pending:
            done = pending.popleft()
            if queued < len(rest):
                pending.append(submit(*rest[queued]))
                queued += 1
            yield done


class _Separate(Iterator[Fetched]):
    """:func:`_fetch` of every ``(cid, sha256)`` of ``refs``, read in their order, on a
    :class:`_Fetches` of its own whose first ``2 * FETCH_THREADS`` requests are made when it is
    made (a round's heatmaps, requested once its log names them, while its updates are fetched
    and checked: before, after every other check, one more round trip at the audit's end).
    :meth:`close` before every blob is read leaves the requests in flight behind, as
    :func:`_fetch_in_order` closed early does (a check that stops reading, a round that
    raised); once every blob is read it has none in flight. Its own threads, so that a hostile
    log's requests (a heatmap the store hangs on) never hold up the round's updates."""

    def __init__(self, store: ContentStore, refs: Sequence[tuple[str, str]], max_bytes: int | None):
        self._fetches = _Fetches(store)
        self._unread = len(refs)
        self._reads = self._fetches.in_order(refs, max_bytes)
        self._closed = False

    def __next__(self) -> Fetched:
        if self._closed:
            raise StopIteration
        got = next(self._reads)
        self._unread -= 1
        return got

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # every blob read: none in flight, the threads end (joined); else left behind unwaited
        self._fetches.__exit__(None if not self._unread else GeneratorExit, None, None)


_DOCUMENT_LIMITS: Final = frozenset({MAX_LOG_BYTES, MAX_TERMS_BYTES})
"""The byte limits under which :class:`_Documents` keeps what it read: a round log's and a
round's terms (small, and read again by the later checks and rounds of one audit)."""


class _Documents(ContentStore):
    """``inner``, with the logs and terms it returned kept for the rest of one audit
    (``kept``, by CID and sha256): a round's standing checks read the previous round's log
    twice (``reasons.free_rider``'s history and ``standing.chain``) besides the heatmap check,
    and every later round's ``terms.task_fixed`` reads round 1's terms. A kept blob matched its
    sha256 when it was read, and is handed out again only under a limit it fits; failures are
    not kept (asked again, as before). Only the blobs ``named`` (the chain's logs and terms,
    :meth:`AuditReads.name_documents`) are kept: a limit alone does not tell a document from a
    model or an update (a spec's blob limit can be exactly ``MAX_TERMS_BYTES``, and every update
    of such rounds was kept for the whole audit)."""

    def __init__(
        self,
        inner: ContentStore,
        kept: dict[tuple[str, str], bytes],
        named: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self.inner, self.kept, self.named = inner, kept, named

    def put(self, data: bytes) -> str:
        return self.inner.put(data)

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if max_bytes not in _DOCUMENT_LIMITS or (cid, sha256) not in self.named:
            return self.inner.get(cid, sha256, max_bytes=max_bytes)
        blob = self.kept.get((cid, sha256))
        if blob is not None and max_bytes is not None and len(blob) <= max_bytes:
            return blob
        blob = self.inner.get(cid, sha256, max_bytes=max_bytes)
        self.kept[(cid, sha256)] = blob
        return blob

    def pin(self, cid: str) -> None:
        self.inner.pin(cid)

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)


@dataclass
class AuditReads:
    """What one audit (:func:`verify_all`) has read that its later rounds read again: the
    logs and terms (:class:`_Documents`), and the latest finalized rounds' updates and models
    as their own checks decoded them (``decoded``, :class:`~fedtrail.valuation.chained.
    Decoded`, decoded with ``spec``; ``rounds``: the rounds whose updates are in it), which
    the next round's free-rider history takes as its references instead of fetching and
    decoding each again, one after another (:func:`~fedtrail.valuation.chained.
    round_references`). The sha256 binds the bytes and a decode is a function of the bytes,
    the spec and the round, so a reused value is the one a fresh read gives; an entry is used
    only under the same spec."""

    documents: dict[tuple[str, str], bytes] = field(default_factory=dict)
    named: set[tuple[str, str]] = field(default_factory=set)
    """The (CID, sha256) of the logs and terms :class:`_Documents` may keep."""
    decoded: Decoded | None = None
    spec: ModelSpec | None = None
    rounds: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Round -> the sha256 of its start and global models, for each round in ``decoded``."""

    def for_spec(self, spec: ModelSpec) -> Decoded:
        """``decoded``, emptied first when it was decoded under another spec."""
        from fedtrail.valuation.chained import Decoded

        if self.decoded is None or self.spec != spec:
            self.decoded, self.spec = Decoded(), spec
            self.rounds.clear()
        return self.decoded

    def name_documents(self, ledger: Ledger, info: RoundInfo) -> None:
        """Names the documents finalized round ``info`` reads again (:class:`_Documents`): its
        own log and terms, round 1's terms (``terms.task_fixed``) and the previous finalized
        round's log (the standing's source); a round's record is the chain's, read once."""
        from fedtrail.valuation.chained import previous_round

        first = info if info.id == 1 else ledger.get_round(1)
        self.named |= {
            (info.log_cid, info.log_sha256),
            (info.terms_cid, info.terms_sha256),
            (first.terms_cid, first.terms_sha256),
        }
        prev = previous_round(ledger, info.id)
        if prev is not None:
            before = ledger.get_round(prev)
            self.named.add((before.log_cid, before.log_sha256))

    def keep(self, round_id: int, models: tuple[str, str], keep_rounds: int) -> None:
        """Records ``round_id`` as decoded and forgets the rounds before the latest
        ``keep_rounds`` of those kept (the references a later round asks for are those of its
        latest ``stale_rounds`` finalized rounds; others are fetched as before)."""
        self.rounds[round_id] = models
        kept = sorted(self.rounds)[-max(keep_rounds, 1) :]
        for r in [r for r in self.rounds if r not in kept]:
            del self.rounds[r]
        if self.decoded is None:
            return
        self.decoded.updates = {k: v for k, v in self.decoded.updates.items() if k[0] in kept}
        wanted = {sha for r in kept for sha in self.rounds[r]}
        self.decoded.models = {k: v for k, v in self.decoded.models.items() if k in wanted}


@dataclass(frozen=True)
class _History:
    """How a finalized round's free-rider history (``reasons.free_rider``, ``peers.screen``)
    reads its references (:func:`~fedtrail.valuation.chained.round_references`): those this
    audit already decoded taken from ``decoded`` (:meth:`AuditReads.for_spec`: the rounds it
    checked, and what the history read, added there), the others read on the round's fetch
    threads (``fetch``: :meth:`_Fetches.blobs`, ``FETCH_THREADS`` in flight, instead of one
    after another) and decoded in the order one read after another takes, so one that cannot
    be read or decoded fails the check with the error a read of its own gives."""

    decoded: Decoded
    fetch: Fetch


TERMS_AGAINST_LOG = ("terms.rule", "terms.valuation", "terms.validation", "terms.model")
"""The checks that compare the log's settings with the committed terms: each needs both."""

NO_SPEC = "no valid model spec to decode the round's blobs with (log.model_spec, terms.model)"


def _unchecked(audit: RoundAudit, names: Sequence[str], why: str) -> None:
    """Records each check of ``names`` as failed because an input it needs is unavailable or
    unusable (``why``, naming the check that says so): a withheld or broken document never
    leaves a check out silently, so the checks an honest round passes are all listed, as
    failed, in the round that lacks the input."""
    for name in names:
        audit.add(name, False, f"not checked: {why}")


def _valuation_check_names(terms: RoundTerms | None) -> tuple[str, ...]:
    """The data-free valuation checks of an aggregator round (:func:`_valuation_checks`),
    with the standing ones where the terms value with standing (or cannot be read to say)."""
    standing = explained = True
    if terms is not None:
        # an invalid block fails terms.valuation; whether standing applies is then unknown
        with contextlib.suppress(InvalidLog):
            settings = ValuationSettings.from_json(terms.valuation)
            standing = bool(settings.standing)
            explained = bool(settings.explanation_check)
    return (
        "log.components",
        "reasons.screen",
        "reasons.public",
        "reasons.oversized",
        *((EXPLANATION_SHIFT_CHECK,) if explained else ()),
        *(
            ("reasons.free_rider", "standing.chain", "standing.accumulated", "standing.scores")
            if standing
            else ()
        ),
    )


def _rule_doc(terms: RoundTerms | None, log: RoundLog | None) -> Mapping[str, Any]:
    """The aggregation rule the replay uses: the terms', else the log's settings'."""
    if terms is not None:
        return terms.aggregation_rule
    if log is not None:
        return log.settings.aggregation_rule
    raise FedtrailError("neither the terms nor the log is readable to name the rule")


def verify_round(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    *,
    validation: ImageDataset | None = None,
    score_tolerance: int = SCORE_TOLERANCE,
    metrics_tolerance: float = METRICS_TOLERANCE,
    accept: ThresholdLimits | None = None,
    privacy_history: PrivacyHistory | None = None,
    registry_history: RegistryHistory | None = None,
    logs: dict[tuple[str, str], RoundLog | None] | None = None,
    models: dict[tuple[str, str], bytes] | None = None,
    reads: AuditReads | None = None,
) -> RoundAudit:
    """Every check of one round. A round that is open or cancelled unvalued is reported, not
    failed; an aggregator round valued but not finalized fails ``phase`` (its on-chain scores
    have no log to be checked against, a33); a valued peer round is checked from its votes.
    ``accept``: the strictest valuation thresholds the federation's sites agreed to
    (``terms.limits``; default :class:`~fedtrail.valuation.limits.ThresholdLimits`' defaults).
    ``privacy_history``: the sites' earlier private updates, shared between the rounds of one
    audit so each blob's DP parameters are read once (default: a fresh one).
    ``registry_history``: the registry's history
    (:meth:`~fedtrail.ledger.Ledger.registry_history`: names, removals, caps, budgets, and
    where rounds opened, were valued and finalized), read once for all the rounds of one audit
    (default: this round's, read here; only its registrations for a round not finalized).
    ``logs``: the finalized rounds' logs fetched so far in one audit, by (CID, sha256) (None:
    parsed from bytes that matched but not a valid log), so the heatmap checks of a later round
    read an earlier round's log without fetching it again; this round's is added once fetched
    (default: none shared). ``models``: the latest finalized round's global model as one audit
    fetched it, by (CID, sha256), which the next finalized round's start model is (the
    contract's ``StartModelMismatch``): read from there instead of fetched again when it fits
    this round's blob limit; this round's global replaces it (one model held; default: none
    shared). ``reads``: the logs, terms and decoded updates and models of the rounds this audit
    checked before (:class:`AuditReads`), which this round's checks read from there and to
    which it adds its own (default: this round's alone: its checks still read each log and
    terms once, and its free-rider references on the round's fetch threads)."""
    audit = RoundAudit(round_id)
    info = ledger.get_round(round_id)
    if info.phase != Phase.FINALIZED:
        if info.phase == Phase.VALUED and ledger.get_peer_round(round_id) is not None:
            # a peer round's scores are the medians of vectors all public on chain: checked now,
            # as in a finalized round, rather than passed unseen (attack a33, peer mode)
            _check_valued_peer(audit, ledger, store, info)
            return audit
        if info.phase == Phase.VALUED:
            # the aggregator's scores are on chain and weigh the sites, but nothing justifies
            # them until the log is published, and the contract lets a round stay valued for
            # good (the next round cannot open, so it is the last): passing it let an
            # aggregator pay a lie that no check ever saw (attack a33)
            weighted = sum(1 for s in ledger.get_submissions(round_id) if s.weight > 0)
            audit.add(
                "phase",
                False,
                f"round is valued but not finalized: its scores give {weighted} update(s) "
                "weight on chain, yet no round log or global model is published to check them "
                "against; not verified (run verify again once it is finalized)",
            )
            return audit
        audit.add(
            "phase", info.phase != Phase.NONE, f"round is {info.phase.label}; nothing to replay"
        )
        if info.phase != Phase.NONE:
            declined_terms, _ = _read_terms(store, info, round_id)
            audit.add(*_check_declined(ledger, info, declined_terms, accept or ThresholdLimits()))
            names = (
                registry_history.registrations
                if registry_history is not None
                else ledger.registrations(round_id)
            ).names_at(round_id)
            audit.add(*check_names(names))  # the names so far
        if info.phase == Phase.CANCELLED:
            # a peer round's votes decide whether it could be valued, not the aggregator
            cancelled = read_peer_record(ledger, round_id)
            if cancelled is not None:
                revealed = ledger.get_submissions(round_id)
                if any(s.weight > 0 for s in revealed):  # valued, then cancelled
                    for check in _check_cancelled_unreadable(ledger, store, info, cancelled):
                        audit.add(*check)
                    # its valuation and ratings stand (the ratings feed later rounds' gate):
                    # recomputed from the votes as in a finalized round, with no log to compare
                    median, outcome = check_median(cancelled, revealed, ())
                    audit.add(*median)
                    audit.add(*check_reputation(cancelled, outcome))
                else:
                    audit.add(*check_cancelled(cancelled, revealed))
                    # cancelRound rated the vectors committed and withheld, and no one else
                    audit.add(*check_reputation(cancelled, cancelled_outcome(cancelled.withheld())))
                # a drop as screened zeroed its site's pay and reputation before the cancel,
                # which keeps both: the cancel does not vouch for it
                _check_unsettled_screen(audit, ledger, store, info, cancelled)
            elif validation is not None:
                # an aggregator round: only its valuation, replayed on the split, says whether
                # the aggregator could have valued it
                with _Timer(audit, "rescore"):
                    audit.add(*_check_cancelled_valuation(ledger, store, info, validation))
        return audit
    shared = reads is not None
    reads = reads if reads is not None else AuditReads()
    reads.name_documents(ledger, info)
    store = _Documents(store, reads.documents, reads.named)
    with _Fetches(store) as fetches:
        return _verify_finalized(
            audit,
            ledger,
            store,
            info,
            fetches,
            reads,
            shared,
            validation=validation,
            score_tolerance=score_tolerance,
            metrics_tolerance=metrics_tolerance,
            accept=accept,
            privacy_history=privacy_history,
            registry_history=registry_history,
            logs=logs,
            models=models,
        )


def _verify_finalized(
    audit: RoundAudit,
    ledger: Ledger,
    store: ContentStore,
    info: RoundInfo,
    fetches: _Fetches,
    reads: AuditReads,
    shared: bool,
    *,
    validation: ImageDataset | None,
    score_tolerance: int,
    metrics_tolerance: float,
    accept: ThresholdLimits | None,
    privacy_history: PrivacyHistory | None,
    registry_history: RegistryHistory | None,
    logs: dict[tuple[str, str], RoundLog | None] | None,
    models: dict[tuple[str, str], bytes] | None,
) -> RoundAudit:
    """:func:`verify_round` of a finalized round: its blobs requested ahead on ``fetches``'
    threads (the log and terms at once, then the start and global models and the first updates
    while the round's records are checked: a 100-site round's audit waited on each in turn),
    each read where its checks need it, so the checks and their order are those of one fetch
    after another. ``reads``: as :func:`verify_round`'s; ``shared``: the round's decoded
    updates and models are added to it for the next round (an audit of several rounds)."""
    round_id = audit.round
    log_ahead = fetches.one(info.log_cid, info.log_sha256, MAX_LOG_BYTES)
    terms_ahead = fetches.one(info.terms_cid, info.terms_sha256, MAX_TERMS_BYTES)
    # every commitment, read once: the revealed ones are the valuation's submissions (what
    # get_submissions returns without include_unrevealed), all of them terms.declined's
    every = ledger.get_submissions(round_id, include_unrevealed=True)
    subs = [s for s in every if s.revealed]

    # the terms committed at open (checked below; the log's aggregation rule is compared with
    # the one they make the replay use), read first: readable, they alone decide the spec the
    # blobs are decoded with (:func:`_round_spec`: the log's is only checked against theirs), so
    # the start and global models and the first updates are requested before the log is parsed
    # (its schema: ~0.09 s of a 100-site round's critical path) and the records are checked
    with _Timer(audit, "fetch"):
        terms, terms_check = _terms_from(terms_ahead.result(), info, round_id)
    no_terms = "" if terms is not None else "the round's terms are unreadable (terms.hash)"
    ahead = None
    if terms is not None:
        ahead = _request_blobs(fetches, info, subs, _round_spec(None, terms, "")[1], models)
    # the registry, read once for log.agrees and terms.declined (after the requests above: the
    # updates' fetch, the audit's longest wait, starts two chain reads sooner), and its history,
    # read once: names, a66's rename window and sites.registry's moves
    registry = ledger.get_sites()
    reg_history = registry_history or ledger.registry_history(round_id)
    names = reg_history.names_at(round_id)

    # the explanation log: hash, schema, and agreement with the chain
    with _Timer(audit, "fetch"):
        fetched = log_ahead.result()
    log: RoundLog | None = None
    no_log = ""  # why the log is unusable, for each check that needs it
    if fetched.blob is None:
        audit.add("log.hash", False, fetched.detail)
        no_log = "the round's log is unavailable (log.hash)"
        _unchecked(audit, ("log.schema",), no_log)
    else:
        audit.add("log.hash", True, f"{info.log_cid} matches its on-chain sha256")
        try:
            log = RoundLog.from_bytes(fetched.blob)
            audit.add("log.schema", True, "valid explanation-log/1")
        except FedtrailError as exc:
            audit.add("log.schema", False, str(exc))
            no_log = "the round's log is not a valid explanation log (log.schema)"
        if logs is not None:  # only bytes that matched: a failed fetch is tried again later
            logs[(info.log_cid, info.log_sha256)] = log
    # the heatmaps the log names, requested now (read by log.heatmaps, after every update's
    # checks: before, one more round trip at the audit's end), on threads of their own
    heatmaps = None
    if log is not None and log.explanations is not None:
        refs = _heatmap_refs(log.explanations.get("images"))
        heatmaps = fetches.separate(refs, MAX_HEATMAP_BYTES)
    # the spec the blobs are decoded with and the largest blob it allows, worked out now (its
    # checks are recorded below, in their place); without terms the log's, and the start and
    # global models and the first updates requested now, while the round's records are checked
    spec, limit, spec_checks = _round_spec(log, terms, no_log)
    if ahead is None:
        ahead = _request_blobs(fetches, info, subs, limit, models)
    start_ahead, global_ahead, updates = ahead
    if log is not None:
        _check_log(
            audit,
            log,
            info,
            subs,
            registry_at_finalize(ledger, round_id, registry, names),
            ledger,
            _replayed_rule(terms, log),
            reg_history.names_while_finalizing(round_id),
        )
    else:
        _unchecked(audit, ("log.agrees",), no_log)
    audit.add(*check_names(names))
    _check_evidence(audit, ledger, round_id, log, subs)

    # the terms committed at open, and the log's settings against them
    audit.add(*terms_check)
    if terms is not None and log is not None:
        _check_terms(audit, log, terms)
    else:
        _unchecked(audit, TERMS_AGAINST_LOG, " and ".join(w for w in (no_terms, no_log) if w))
    if log is not None:
        audit.add(*_check_terms_reference(log, info))
    else:
        _unchecked(audit, ("terms.reference",), no_log)
    if terms is not None:
        with _Timer(audit, "fetch"):
            _check_task_fixed(audit, ledger, store, terms)
        audit.add(*_check_windows(info, terms, accept or ThresholdLimits()))
        _check_limits(audit, terms, accept or ThresholdLimits())
    else:
        _unchecked(audit, ("terms.task_fixed", "terms.windows", "terms.limits"), no_terms)
    audit.add(*_check_declined(ledger, info, terms, accept or ThresholdLimits(), every, registry))
    # the round's peer record, read once (sites.registry's deadline and the peer checks)
    peer = read_peer_record(ledger, round_id)
    audit.add(*_check_registry(ledger, info, every, registry, reg_history, peer=(peer,)))
    peers = _is_peer_round(peer, terms, log)
    if peers:
        _check_peers(audit, peer, terms, log, subs)

    # the weights, recomputed from the on-chain counts and scores
    try:
        expected = onchain_weights([s.num_samples for s in subs], [s.score for s in subs])
    except ZeroTotalWeight:
        expected = []
    got = [s.weight for s in subs]
    audit.add(
        "weights",
        expected == got,
        "on-chain weights equal the shared rule over on-chain samples x scores"
        if expected == got
        else f"chain {got} != recomputed {expected}",
    )

    # the model spec the blobs are decoded with (:func:`_round_spec`), and its checks
    for check in spec_checks:
        audit.add(*check)

    # every blob against its on-chain hash
    with _Timer(audit, "fetch"):
        start = start_ahead.result()
    start_blob = start.blob
    audit.add("start_model.hash", start_blob is not None, start.detail or info.start_cid)
    no_start = "" if start_blob is not None else "the start model is unavailable (start_model.hash)"
    # decoded once for every check that reads it (taken from ``reads`` when this audit holds
    # those bytes decoded: the previous round's global model); an error is raised where each
    # check decoded it before
    start_model: Mapping[str, torch.Tensor] | Exception | None = None
    if start_blob is not None and spec is not None:
        start_model = _decoded_model(reads, spec, info.start_sha256, start_blob)
    if _first_round(ledger, round_id):
        if start_blob is not None and terms is not None and spec is not None:
            audit.add(*_check_initial(info, terms, spec, ledger.chain_id, ledger.address))
        else:
            _unchecked(audit, ("start_model.initial",), no_start or no_terms or NO_SPEC)
    # an update nobody could read is scored 0 as unusable by the aggregator, or rejected by
    # the peers' median (validators score what they cannot read 0)
    unusable_reasons = UNUSABLE_REASONS | (
        {Reason.PEER_REJECTED, Reason.WITHHELD} if peers else set()
    )
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    dp: dict[str, DpParams | None] = {}  # the DP parameters of every decoded update
    methods: dict[str, str] = {}  # the compression method of every decoded update
    unusable: dict[str, Reason] = {}
    # how each update reads, as the aggregator's log states it (None: this audit cannot tell)
    read_as: dict[str, Reason | None] = {}
    # the update.<site> checks of unreadable updates at weight 0 with a positive score, by
    # their place in the audit: the public screen may have left them out (settled below)
    unread_at_zero: dict[str, int] = {}

    def unread_check(sub: Submission) -> None:
        if sub.weight == 0 and sub.reason == Reason.OK and sub.score > 0:
            unread_at_zero[sub.site] = len(audit.checks)

    for sub in subs:
        with _Timer(audit, "fetch"):
            fetched = next(updates)
        blob = fetched.blob
        if blob is None:
            tampered = fetched.failure is FetchFailure.TAMPERED
            unusable[sub.site] = Reason.TAMPERED if tampered else Reason.MALFORMED
            read_as[sub.site] = _read_as(fetched.failure)
            # Acceptable only for an update the aggregator itself found unusable and excluded.
            excluded = sub.weight == 0 and sub.reason in unusable_reasons
            unread_check(sub)
            audit.add(
                f"update.{sub.site[:10]}",
                excluded,
                fetched.detail
                + (
                    " (scored 0 as unusable at valuation: consistent)"
                    if excluded
                    else f" (reason code {sub.reason}, weight {sub.weight})"
                ),
            )
            continue
        if spec is None:
            read_as[sub.site] = None
            audit.add(f"update.{sub.site[:10]}", True, f"{sub.cid} hash ok (not decoded: no spec)")
            continue
        read_as[sub.site] = Reason.OK
        try:
            with _Timer(audit, "decode"):
                delta, meta, stored = decode_update_stored(
                    blob, spec=spec, expected_round=round_id, direct_if_canonical=True
                )
                check_canonical_update(
                    blob, spec=spec, expected_round=round_id, meta=meta, parts=stored
                )
                deltas[sub.site] = delta
                dp[sub.site] = meta.dp
                methods[sub.site] = meta.compression.method
            asked = terms.privacy if terms is not None else None
            if meta.dp is None and asked is not None and asked.required:
                # Not an update these terms accept: the aggregator excludes it as MALFORMED too.
                unusable[sub.site] = read_as[sub.site] = Reason.MALFORMED
                deltas.pop(sub.site, None)
            audit.add(f"update.{sub.site[:10]}", True, f"{sub.cid} hash ok, decodes, canonical")
        except InvalidUpdate as exc:
            unusable[sub.site] = read_as[sub.site] = Reason.MALFORMED
            deltas.pop(sub.site, None)
            dp.pop(sub.site, None)
            excluded = sub.weight == 0 and sub.reason in unusable_reasons
            unread_check(sub)
            audit.add(f"update.{sub.site[:10]}", excluded, f"malformed: {exc.reason}")
    if peers and peer is not None and unread_at_zero:
        _settle_left_out(audit, peer, terms, subs, unusable, unread_at_zero)

    history = privacy_history if privacy_history is not None else PrivacyHistory(ledger, store)
    _check_privacy(audit, ledger, round_id, subs, dp, terms, history)
    if peers and any(s.reason == Reason.WITHHELD for s in subs):
        audit.add(*check_withheld(subs, unusable))

    # duplicates, re-derived in commit order under the terms' thresholds; in a peer round only
    # the updates the chain says were read while it was scored can be originals
    read_then = _read_in_round(peer, subs) if peers else None
    if terms is not None:
        copies = find_duplicates(
            [
                Entry(
                    s.site,
                    s.commit_order,
                    s.sha256,
                    deltas.get(s.site)
                    if read_then is None or address_key(s.site) in read_then
                    else None,
                    noise_declared=dp.get(s.site) is not None,
                )
                for s in subs
            ],
            terms.duplicates,
            whiteness=duplicate_residual_z,
        )
        for site in copies:
            unusable.setdefault(site, Reason.DUPLICATE)
            if read_as.get(site) is Reason.OK:
                read_as[site] = Reason.DUPLICATE
        marked = {s.site for s in subs if s.reason == Reason.DUPLICATE}
        wrong = sorted(
            {s.site[:10] for s in subs if s.site in copies and s.weight > 0}
            | {site[:10] for site in marked - set(copies)}
        )
        audit.add(
            "duplicates",
            not wrong,
            f"{len(copies)} later cop(ies) in commit order, none weighted; no other DUPLICATE"
            if not wrong
            else f"duplicate marks disagree with commit order for {', '.join(wrong)}",
        )
    else:
        _unchecked(audit, ("duplicates",), no_terms)

    # the aggregator's reading scores a readable DP update that lacks its declared noise
    # MALFORMED (fedtrail.ml.dp_noise), its delta kept; read before the spend rule marks any,
    # as each verdict stands alone (either one zeroes the update)
    quiet: dict[str, str] = {}
    noise_level = noise_rule(terms) if terms is not None else 0
    if noise_level:
        for sub in subs:
            if read_as.get(sub.site) is Reason.OK and sub.site in deltas:
                delta, method = deltas[sub.site], methods[sub.site]
                why = noise_breach(delta, dp.get(sub.site), sub.num_samples, method, noise_level)
                if why is not None:
                    quiet[sub.site] = why

    breaches: dict[str, str] | None = None
    if terms is not None and checks_spend(terms):
        # the aggregator's reading scores a readable update whose declared spend its blob
        # contradicts MALFORMED (fedtrail.storage.privacy_spend), its delta kept
        breaches = _spend_breaches(ledger, store, round_id, terms, subs, read_as, dp, history)
    for check in _privacy_scoring(
        subs,
        read_as,
        unusable,
        dp,
        quiet,
        breaches,
        noise=bool(noise_level),
        asked=terms is not None and terms.privacy is not None,
        peers=peers,
    ):
        audit.add(*check)

    if log is not None:
        audit.add(
            *_check_status(
                log,
                subs,
                read_as,
                duplicates_known=terms is not None,
                aggregator_round=not peers,
                read_then=read_then,
            )
        )
    else:
        _unchecked(audit, ("log.status",), no_log)

    # the free-rider history's references: those this audit decoded are taken from ``reads``,
    # the others read on the round's fetch threads (chained.round_references) and added to it
    references = None if spec is None else _History(reads.for_spec(spec), fetches.blobs)

    if peers and peer is not None:
        _check_public_screen(
            audit,
            ledger,
            store,
            info,
            peer,
            terms,
            subs,
            spec,
            start_model,
            deltas,
            unusable,  # the noise and spend verdicts do not take an input out (README)
            frozenset(site for site, p in dp.items() if p is not None),
            history=references,
        )

    # the data-free valuation components, recomputed; the standing, weighed with them
    if not peers and log is not None:
        _valuation_checks(
            audit,
            ledger,
            store,
            log,
            terms,
            subs,
            deltas,
            unusable,
            spec,
            start_model,
            declared_noise=frozenset(site for site, p in dp.items() if p is not None),
            history=references,
        )
    elif not peers:
        _unchecked(audit, _valuation_check_names(terms), no_log)

    # the global model, recomputed bit for bit (from the terms' rule and spec: the log is not
    # needed, only named in the round's other checks)
    replayed: Mapping[str, torch.Tensor] | None = None  # the global model's state, when equal
    if start_blob is None:
        _unchecked(audit, ("global.recomputed",), no_start)
    elif spec is None:
        audit.add(
            "global.recomputed",
            False,
            "cannot replay: the log names no valid model spec"
            if log is not None
            else f"cannot replay: {NO_SPEC}",
        )
    else:
        try:
            with _Timer(audit, "recompute"):
                start_state = _state(start_model)
                rule = AggregationRule.from_terms(_rule_doc(terms, log))
                included = [s for s in subs if s.weight > 0]
                if any(s.site not in deltas for s in included):
                    raise FedtrailError("an update with weight > 0 is unavailable")
                delta = aggregate(
                    rule,
                    [deltas[s.site] for s in included],
                    [s.weight for s in included],
                    statistics=spec.statistic_names(),
                )
                state = apply_delta(start_state, delta)
                blob = encode_model(state, spec=spec, round=round_id)
                digest = hashlib.sha256(blob).hexdigest()
                if digest == info.global_sha256:
                    # the global model's bytes, so its decode: float32 values stored raw
                    replayed = state
            audit.add(
                "global.recomputed",
                digest == info.global_sha256,
                f"replayed '{rule.name}' aggregate"
                + (f" (statistics: {rule.statistics})" if spec.statistic_names() else "")
                + f" sha256 {digest[:16]}… "
                + ("equals" if digest == info.global_sha256 else "DIFFERS FROM")
                + f" the finalized {info.global_sha256[:16]}…",
            )
        except (FedtrailError, TypeError, ValueError) as exc:
            audit.add("global.recomputed", False, f"cannot replay: {exc}")
    with _Timer(audit, "fetch"):
        glob = global_ahead.result()
    if models is not None:
        models.clear()
        if glob.blob is not None:
            models[(info.global_cid, info.global_sha256)] = glob.blob
    audit.add("global.hash", glob.blob is not None, glob.detail or f"{info.global_cid} matches")
    if log is not None and log.explanations is None:
        with _Timer(audit, "fetch"):
            dropped = _dropped_heatmaps(ledger, store, round_id, logs)
        if dropped is not None:
            audit.add("log.heatmaps", False, dropped)
    if log is not None and log.explanations is not None:
        with _Timer(audit, "fetch"):
            split = validation
            if split is not None and spec is not None:
                split = split.resized(spec.image_size)
            committed = terms.validation_sha256 if terms is not None else log.validation.sha256
            if split is not None and split.content_sha256() != committed:
                split = None  # not the committed split: metrics.recomputed says so
            audit.add(
                *_check_heatmaps(
                    store,
                    log.explanations,
                    _probe_problems(
                        ledger,
                        store,
                        round_id,
                        log.explanations,
                        split,
                        _GlobalModel(spec, glob.blob),
                        logs,
                    ),
                    heatmaps,
                )
            )

    if peers:
        audit.not_applicable(
            "scores.recomputed",
            "peer round: the scores are the medians of the validators' revealed vectors "
            "(peers.median), not a valuation on a split the aggregator holds",
        )
    if validation is not None and not (log is not None and start_blob is not None and spec):
        _unchecked(
            audit,
            ("metrics.recomputed",) if peers else ("scores.recomputed", "metrics.recomputed"),
            no_log or no_start or NO_SPEC,
        )
    if validation is not None and log is not None and start_blob is not None and spec:
        if validation.image_size != (spec.image_size, spec.image_size):
            # the aggregator resized its split to the model the same deterministic way
            validation = validation.resized(spec.image_size)
        with _Timer(audit, "rescore"):
            if not peers:
                _check_scores(
                    audit,
                    log,
                    spec,
                    _state(start_model),
                    subs,
                    deltas,
                    unusable,
                    validation,
                    score_tolerance,
                    terms,
                    (ledger, store),
                    declared_noise=frozenset(site for site, p in dp.items() if p is not None),
                    decoded=reads.decoded if reads.spec == spec else None,
                )
        with _Timer(audit, "metrics"):
            _check_metrics(
                audit,
                log,
                spec,
                start_blob,
                glob.blob,
                validation,
                terms.validation_sha256 if terms is not None else log.validation.sha256,
                metrics_tolerance,
            )
    if shared and spec is not None:
        _keep_round(reads, info, spec, subs, deltas, glob.blob, replayed, terms, log)
    return audit


def _request_blobs(
    fetches: _Fetches,
    info: RoundInfo,
    subs: Sequence[Submission],
    limit: int | None,
    models: dict[tuple[str, str], bytes] | None,
) -> tuple[Future[Fetched], Future[Fetched], Iterator[Fetched]]:
    """A finalized round's start and global models and its updates (``subs``' blobs, in their
    order), requested on ``fetches``' threads under the byte ``limit`` of the round's spec: the
    start model is the previous round's global as this audit fetched it (``models``) when that
    fits ``limit``."""
    carried = (models or {}).get((info.start_cid, info.start_sha256))
    if carried is not None and limit is not None and len(carried) <= limit:
        start_ahead: Future[Fetched] = Future()
        start_ahead.set_result(Fetched(carried))  # the previous round's global, as fetched
    else:
        start_ahead = fetches.one(info.start_cid, info.start_sha256, limit)
    global_ahead = fetches.one(info.global_cid, info.global_sha256, limit)
    updates = fetches.in_order([(sub.cid, sub.sha256) for sub in subs], limit)
    return start_ahead, global_ahead, updates


def _keep_round(
    reads: AuditReads,
    info: RoundInfo,
    spec: ModelSpec,
    subs: Sequence[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    global_blob: bytes | None,
    replayed: Mapping[str, torch.Tensor] | None,
    terms: RoundTerms | None,
    log: RoundLog | None,
) -> None:
    """Adds a finalized round's decoded updates and its start and global models to ``reads``,
    for the free-rider references of the rounds after it (and the next round's start model),
    keeping as many rounds as its valuation settings' ``stale_rounds`` asks (one when they
    cannot be read). The start model is there already as the round's checks decoded it
    (:func:`_decoded_model`); the global model is the state ``global.recomputed`` replayed when
    its encoding is the global model's bytes (``replayed``: the same float32 values, stored
    raw, in the spec's order), else ``global_blob`` decoded; not when it could not be fetched."""
    from fedtrail.valuation.chained import combiner_from

    decoded = reads.for_spec(spec)
    for sub in subs:
        if sub.site in deltas:
            decoded.updates[(info.id, sub.sha256)] = deltas[sub.site]
    if global_blob is not None and info.global_sha256 not in decoded.models:
        if replayed is not None:
            decoded.models[info.global_sha256] = replayed
        else:
            with contextlib.suppress(FedtrailError, TypeError, ValueError):
                decoded.models[info.global_sha256] = decode_model(global_blob, spec=spec)[0]
    stale = 1
    with contextlib.suppress(FedtrailError, TypeError, ValueError):
        settings = (
            ValuationSettings.from_json(terms.valuation)
            if terms is not None
            else (log.settings.valuation if log is not None else None)
        )
        if settings is not None:
            stale = combiner_from(settings).stale_rounds
    reads.keep(info.id, (info.start_sha256, info.global_sha256), stale)


def _decoded_model(
    reads: AuditReads | None, spec: ModelSpec, sha256: str, blob: bytes
) -> Mapping[str, torch.Tensor] | Exception:
    """``decode_model(blob)``'s state: ``reads``' when this audit holds it (the sha256 binds
    the bytes), else decoded and added there; the exception when it cannot be decoded, for
    :func:`_state` to raise where the state is read."""
    decoded = None if reads is None else reads.for_spec(spec)
    state = None if decoded is None else decoded.models.get(sha256)
    if state is None:
        try:
            state = decode_model(blob, spec=spec)[0]
        except Exception as exc:  # raised by each reader, as its own decode raised it
            return exc
        if decoded is not None:
            decoded.models[sha256] = state
    return state


def _state(model: Mapping[str, torch.Tensor] | Exception | None) -> Mapping[str, torch.Tensor]:
    """A model :func:`_decoded_model` gave: its state, or its decode's exception raised."""
    if isinstance(model, Exception):
        raise model
    if model is None:
        raise FedtrailError("no model to decode")  # never: callers check the blob and spec
    return model


EXPLANATION_KEYS: Final = frozenset(
    {"method", "probe_sha256", "probe_images", "images", "summary", "faithfulness"}
)
"""The keys of a log's ``explanations`` block (``roundlog.ModelExplanations``; ``faithfulness``
only when measured): ``log.heatmaps`` fails any other."""

HEATMAP_KEYS: Final = frozenset({"cid", "sha256", "caption"})
"""The keys of one heatmap of the block (``roundlog.HeatmapRef``)."""

HEATMAP_FAILURES_SHOWN = 8
"""``log.heatmaps`` stops fetching after this many unusable heatmaps (the check has failed; a
log naming thousands of missing blobs would otherwise cost a store timeout each)."""


def _check_heatmaps(
    store: ContentStore,
    block: Mapping[str, Any],
    bound: Sequence[str] = (),
    ahead: _Separate | None = None,
) -> tuple[str, bool, str]:
    """``log.heatmaps``: every explanation heatmap the log's ``explanations`` block names is in
    the store under its CID, matches its sha256 and is a PNG image, and ``bound`` (the
    :func:`_probe_problems` of the block: its probe set and method against the earlier rounds'
    and the split's) is empty. The heatmaps are the aggregator's statement (their probe set is
    its private split, so no one recomputes them), but the log publishes them as the round's
    explanation for clinicians: a log that names heatmaps nobody can fetch withholds that
    explanation, and must not pass. A log without the block claims none (the aggregator may run
    without explanations) and gets no check."""
    name = "log.heatmaps"
    images = block.get("images")
    if not isinstance(images, list):
        return name, False, "the log's explanations block lists no images array"
    problems: list[str] = list(bound)
    # a key no writer produces is read by no check: a claim smuggled into the trail (a55)
    unknown = sorted(set(block) - EXPLANATION_KEYS)
    if unknown:
        problems.append(f"the explanations block has keys no round writes: {_short(unknown)}")
    # one heatmap per probe image, as the writer lists them: fewer left out the images the
    # model gets wrong with every other check passing, more made the audit fetch one image
    # as often as a 32 MB log can list it (attack a110)
    probe_images = block.get("probe_images")
    if len(images) != probe_images:
        problems.append(
            f"the log lists {len(images)} heatmap(s) for a probe set of {_short(probe_images)} "
            "image(s): one per probe image"
        )
    seen: dict[tuple[str, str], str | None] = {}  # each distinct image fetched once
    # the distinct images in the order the loop first meets them (:func:`_heatmap_refs`),
    # fetched with up to FETCH_THREADS requests in flight (one round trip each: 8 in a row cost
    # a round's audit ~0.1 s through IPFS); read as the loop needs them, so a log of many
    # unusable images still stops after HEATMAP_FAILURES_SHOWN, with at most 2 * FETCH_THREADS
    # more requested. ``ahead``: those reads, requested earlier by the round's audit
    reads: _Separate | Generator[Fetched, None, None] = (
        ahead
        if ahead is not None
        else _fetch_in_order(store, _heatmap_refs(images), max_bytes=MAX_HEATMAP_BYTES)
    )
    with contextlib.closing(reads):
        problems = _heatmap_problems(images, problems, seen, reads)
    return (
        name,
        not problems,
        "; ".join(problems)
        or f"{len(images)} heatmap(s) the log names are in the store, match their sha256 and "
        "are PNG images",
    )


def _heatmap_refs(images: object) -> list[tuple[str, str]]:
    """The distinct ``(cid, sha256)`` of a log's heatmaps (its ``explanations`` block's
    ``images``), in the order :func:`_heatmap_problems` first meets them (none: not a list)."""
    if not isinstance(images, list):
        return []
    return list(
        dict.fromkeys(
            (item["cid"], item["sha256"])
            for item in images
            if isinstance(item, dict)
            and isinstance(item.get("cid"), str)
            and isinstance(item.get("sha256"), str)
        )
    )


def _heatmap_problems(
    images: Sequence[Any],
    problems: list[str],
    seen: dict[tuple[str, str], str | None],
    ahead: Iterator[Fetched],
) -> list[str]:
    """:func:`_check_heatmaps`' problems after each image (``ahead``: the distinct images'
    fetches, in the order this loop first meets them)."""
    for i, item in enumerate(images):
        if len(problems) >= HEATMAP_FAILURES_SHOWN:
            problems.append(f"{len(images) - i} more not fetched")
            break
        if isinstance(item, dict) and set(item) - HEATMAP_KEYS:
            extra = sorted(set(item) - HEATMAP_KEYS)
            problems.append(f"image {i + 1} has keys no round writes: {_short(extra)}")
        cid = item.get("cid") if isinstance(item, dict) else None
        sha = item.get("sha256") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not isinstance(sha, str):
            problems.append(f"image {i + 1}: no cid and sha256 given")
            continue
        if (cid, sha) not in seen:
            got = next(ahead)
            seen[cid, sha] = (
                f"{cid}'s bytes do not match the sha256 the log names"
                if got.failure is FetchFailure.TAMPERED
                else got.detail
                if got.blob is None
                else f"{cid} is not a PNG image"
                if not got.blob.startswith(PNG_MAGIC)
                else None
            )
        problem = seen[cid, sha]
        if problem is not None:
            problems.append(f"image {i + 1}: {problem}")
    return problems


def _probe_key(block: Mapping[str, Any]) -> tuple[object, object, object]:
    """What an ``explanations`` block says it explained: its method, probe set hash and size."""
    return block.get("method"), block.get("probe_sha256"), block.get("probe_images")


def _finalized_logs_before(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    logs: Mapping[tuple[str, str], RoundLog | None] | None = None,
) -> Iterator[tuple[int, RoundLog | None]]:
    """The finalized rounds before ``round_id``, latest first, each with its log (None: the
    log cannot be fetched or parsed, and that round fails its own ``log.hash`` or
    ``log.schema``). The heatmap checks read as few of them as they can; a log already in
    ``logs`` (this audit's, :func:`verify_round`) is not fetched again."""
    for earlier in range(round_id - 1, 0, -1):
        info = ledger.get_round(earlier)
        if info.phase != Phase.FINALIZED:
            continue
        if logs is not None and (info.log_cid, info.log_sha256) in logs:
            yield earlier, logs[(info.log_cid, info.log_sha256)]
            continue
        fetched = _fetch(store, info.log_cid, info.log_sha256, MAX_LOG_BYTES)
        log = None
        if fetched.blob is not None:
            with contextlib.suppress(FedtrailError):
                log = RoundLog.from_bytes(fetched.blob)
        yield earlier, log


def _earlier_explanations(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    logs: Mapping[tuple[str, str], RoundLog | None] | None = None,
) -> tuple[int, Mapping[str, Any]] | None:
    """The ``explanations`` block of the latest finalized round before ``round_id`` whose log
    is readable (None: no such round, or its log has no block: a round that left its heatmaps
    out after one that had them fails ``log.heatmaps`` itself, a41, and reading no further keeps
    this to one log a round). A round whose log is unreadable fails its own checks and is
    passed over here."""
    for earlier, log in _finalized_logs_before(ledger, store, round_id, logs):
        if log is not None:
            return None if log.explanations is None else (earlier, log.explanations)
    return None


def _dropped_heatmaps(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    logs: Mapping[tuple[str, str], RoundLog | None] | None = None,
) -> str | None:
    """Why a round whose log has no ``explanations`` block fails ``log.heatmaps`` (None: it
    claims none, as before): the latest finalized round before it published heatmaps. Left out
    for a chosen round, the block let the aggregator withhold the explanation of a model that
    looked bad with verify passing (attack a41). Only that one earlier round's log is read, so a
    deployment without heatmaps pays one fetch a round (none in :func:`verify_all`, which hands
    on the log that round's own checks fetched)."""
    for earlier, log in _finalized_logs_before(ledger, store, round_id, logs):
        if log is None or log.explanations is None:
            return None  # an unreadable log fails that round's own checks
        return (
            f"the log names no explanation heatmaps, but round {earlier}'s did: an aggregator "
            "that publishes them publishes them every round"
        )
    return None


def _probe_problems(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    block: Mapping[str, Any],
    validation: ImageDataset | None,
    model: _GlobalModel | None = None,
    logs: Mapping[tuple[str, str], RoundLog | None] | None = None,
) -> list[str]:
    """Why a round's heatmaps do not show the federation's fixed probe set (empty: they do);
    with the split and the round's global ``model``, also whether the summary counts the
    images the model classifies correctly there (:func:`_summary_problems`).

    The heatmaps are of the new global model on images of the aggregator's private split, so
    which images (and which attribution method) is its choice; free per round, it could show
    each round only the images the new model gets right, or the method whose maps look best, and
    the log would still pass (attack a38). So the block's method, probe hash and probe size must
    be the ones of the latest earlier finalized round when it has heatmaps (by induction, the
    first one's), and with the split (``validation``, at the model's size) the probe set must be
    :func:`~fedtrail.ml.explain.probe_set` of it (its first images of each class, for some
    number per class): the split's commitment is fixed by round 1's terms, before any global
    model exists to pick images for."""
    problems: list[str] = []
    earlier = _earlier_explanations(ledger, store, round_id, logs)
    if earlier is not None and _probe_key(earlier[1]) != _probe_key(block):
        (method, sha, n), (was_method, was_sha, was_n) = _probe_key(block), _probe_key(earlier[1])
        problems.append(
            f"the heatmaps explain with {_short(method)} on probe set {_short(sha)} "
            f"({_short(n)} images), round {earlier[0]}'s with {_short(was_method)} on "
            f"{_short(was_sha)} ({_short(was_n)} images): the probe set and method are fixed "
            "by the first round with heatmaps"
        )
    if validation is not None:
        sha, n = block.get("probe_sha256"), block.get("probe_images")
        probe = _split_probe(validation, sha, n)
        if probe is None:
            problems.append(
                f"the heatmaps' probe set {_short(sha)} ({_short(n)} images) is not the "
                "validation split's first images of each class (probe_set)"
            )
        elif model is not None:
            problems += _summary_problems(block, probe, model, validation)
    return problems


@dataclass(frozen=True)
class _GlobalModel:
    """The round's global model as verify holds it, for the heatmaps' summary: its spec and its
    blob (None: unavailable)."""

    spec: ModelSpec | None
    blob: bytes | None


def _summary_problems(
    block: Mapping[str, Any], probe: ImageDataset, model: _GlobalModel, split: ImageDataset
) -> list[str]:
    """The heatmaps' ``summary`` ("K of N probe images classified correctly") recomputed: the
    global model's calibrated decisions on the probe set (``argmax(logits + bias)`` with the
    bias fitted on the split, as the aggregator decides: its metrics' own bias is checked by
    ``metrics.recomputed``). Without the split the summary is the aggregator's claim; with it,
    a summary that counts more correct images than the model gets right would pass off a bound
    probe set with a flattering caption (attack a38)."""
    from fedtrail.ml.metrics import evaluate_calibrated

    if model.spec is None or model.blob is None:
        return []  # global.hash or log.schema fails: nothing to count
    try:
        net = model.spec.build()
        load_federated(net, decode_model(model.blob, spec=model.spec)[0])
        bias = evaluate_calibrated(net, split).bias
        z = predict_logits(net, probe)
        if bias is not None:
            z = z + np.asarray(bias, dtype=np.float64)
    except (FedtrailError, RuntimeError, ValueError) as exc:
        return [f"cannot recount the heatmaps' summary: {exc}"]
    correct = int((decide(z) == probe.labels).sum())
    want = f"{correct} of {len(probe)} probe images classified correctly"
    if block.get("summary") != want:
        said = str(block.get("summary"))[:80]
        return [f"the heatmaps' summary {said!r} is not {want!r}"]
    return []


def _short(value: object) -> str:
    """A value from a log, quoted (controls escaped) and cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 24 else text[:23] + "…"


def _split_probe(validation: ImageDataset, sha: object, n: object) -> ImageDataset | None:
    """``probe_set(validation, k)`` whose hash and size are ``sha`` and ``n``, for some number
    ``k`` of images per class (None: no such ``k``)."""
    if not isinstance(sha, str) or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None
    size = 0
    for per_class in range(1, n + 1):
        probe = probe_set(validation, per_class)
        if len(probe) > n or len(probe) == size:
            return None
        size = len(probe)
        if size == n and probe.content_sha256() == sha:
            return probe
    return None


def _first_round(ledger: Ledger, round_id: int) -> bool:
    """Whether no round before ``round_id`` was finalized (``start_model.initial`` applies:
    after one, the contract's ``StartModelMismatch`` binds the start model to its global)."""
    return all(ledger.get_round(earlier).phase != Phase.FINALIZED for earlier in range(1, round_id))


def _initial_sha256(spec: ModelSpec, seed: int) -> str:
    """The sha256 of the seeded initial model, encoded as round 0 (as the aggregator stores it)."""
    blob = encode_model(federated_state(initial_model(spec, seed)), spec=spec, round=0)
    return hashlib.sha256(blob).hexdigest()


def _check_initial(
    info: RoundInfo, terms: RoundTerms, spec: ModelSpec, chain_id: int, contract: str
) -> tuple[str, bool, str]:
    """``start_model.initial``: a round opened before any round was finalized
    (:func:`_first_round`) starts from the seeded initial model the terms name
    (``initial_model(spec, terms.initial_seed(chain_id, contract))``, encoded as round 0), as
    the aggregator and the Flower strategy build it. The contract pins the start model only
    from the first finalized round on, so without this an aggregator could open the federation
    from any model it likes (a planted backdoor, a model pre-trained to suit one site) and every
    check would pass. Terms that declare ``initial_model: "deployment"`` bind the seed to this
    chain and contract (attack a23: with a shared start model another federation's update,
    replayed, is a well-aligned update here); terms without it are held to the legacy rule."""
    bound = terms.initial_model == INITIAL_MODEL_DEPLOYMENT
    seed = terms.initial_seed(chain_id, contract)
    rule = (
        f"bound to chain {chain_id}, contract {contract} and the terms' salt (terms seed "
        f"{terms.seed}, model seed {seed})"
        if bound
        else f"legacy rule, seed {terms.seed}"
    )
    try:
        digest = _initial_sha256(spec, seed)
        unbound = _initial_sha256(spec, terms.seed) if bound else None
    except (FedtrailError, TypeError, ValueError, RuntimeError) as exc:
        return ("start_model.initial", False, f"cannot build the seeded initial model: {exc}")
    same = digest == info.start_sha256
    if same:
        return (
            "start_model.initial",
            True,
            f"the first finalized round starts from the seeded initial model ({rule}, "
            f"sha256 {digest[:16]}…)",
        )
    which = (
        f"; that is the unbound model of seed {terms.seed} (sha256 {unbound[:16]}…), which "
        "every deployment with this seed shares"
        if unbound is not None and unbound == info.start_sha256
        else ""
    )
    return (
        "start_model.initial",
        False,
        f"no round was finalized before, so the start model must be the seeded initial model "
        f"({rule}, sha256 {digest[:16]}… as built by torch {torch.__version__}; fedtrail pins "
        "its torch, whose seeded initialisation another version may not reproduce), but it is "
        f"{info.start_sha256[:16]}…{which}",
    )


def _read_as(failure: FetchFailure | None) -> Reason | None:
    """The status the aggregator's reading gives an update this audit could not fetch
    (:func:`fedtrail.valuation.candidates.fetch_update`): TAMPERED for bytes that do not match
    the on-chain sha256 and MALFORMED for a CID that is none, names no file or is not its bytes'
    canonical CID (each fixed by the chain and the content); None when the store failed here
    (missing, over this auditor's size limit, unreachable), which says nothing about what the
    aggregator's store returned."""
    if failure is FetchFailure.TAMPERED:
        return Reason.TAMPERED
    if failure in (FetchFailure.INVALID_CID, FetchFailure.NOT_A_FILE):
        return Reason.MALFORMED
    return None


def _read_in_round(peer: PeerRecord | None, subs: Sequence[Submission]) -> frozenset[int] | None:
    """The updates of a peer round the chain says were read while it was scored, as address
    keys: :func:`~fedtrail.protocol.peers.screen_inputs` (a positive peer median before any
    drop, not dropped as withheld). Only they can be *Duplicates* originals there, and only
    their ``log.status`` must be this audit's reading (:func:`_check_status`): an update
    nobody could read then and served after the finalize (session 56: a colluder's early
    near-copy of its ally's update, withheld while scored) would otherwise turn the ally's
    weighted update into a copy at audit time and fail an honest round. None (every update
    that reads, as before) when there is no peer record or its votes break the contract's rule
    (``peers.votes`` fails)."""
    if peer is None:
        return None
    try:
        outcome = peer.outcome([s.site for s in subs])
    except InvalidVotes:
        return None
    return frozenset(address_key(site) for site in screen_inputs(outcome))


_UNREAD_STATUSES = frozenset({"ok", "duplicate", "malformed"})
"""The statuses a peer round's log may give an update not read while it was scored, whatever
this audit reads (:func:`_check_status`): every one but ``tampered``."""


def _check_status(
    log: RoundLog,
    subs: list[Submission],
    read_as: Mapping[str, Reason | None],
    *,
    duplicates_known: bool,
    aggregator_round: bool = True,
    read_then: frozenset[int] | None = None,
) -> tuple[str, bool, str]:
    """``log.status``: each site's ``status`` in the log (how the aggregator read its update:
    ok, tampered, malformed or duplicate) is the one this audit's own reading gives, wherever
    that reading is decisive. Without terms (rounds before them) no duplicate rule is
    committed, so ``ok`` and ``duplicate`` are not told apart there. ``read_then``: in a peer
    round, the updates the chain says were read while it was scored (:func:`_read_in_round`);
    the others' statuses may also be ``ok``, ``duplicate`` or ``malformed`` whatever this
    audit reads (their weight is the validators' 0 whatever the aggregator's store gave: a blob
    it could not fetch reads ``malformed``, one served only after the finalize must not fail
    the round), but ``tampered`` only when this audit reads it so (a log must not accuse a
    site whose blob matches its sha256: session 56 review)."""
    problems, compared = [], 0
    # The chain's unusable verdicts are the aggregator's reading, which the log's status states:
    # a site zeroed TAMPERED, MALFORMED or DUPLICATE whose status says "ok" would otherwise
    # escape the comparison below with the audit's own reading (found by an attack review).
    unusable = {Reason.TAMPERED, Reason.MALFORMED} | (
        {Reason.DUPLICATE} if duplicates_known else set()
    )
    unusable_statuses = {r.name.lower() for r in unusable}
    for s in subs:
        entry = log.site(s.site)
        if entry is None:
            continue
        named = Reason(s.reason) if s.reason in unusable else None
        if named is not None and entry.status != named.name.lower():
            problems.append(
                f"{s.site[:10]} is {named.name} on chain, but its status is {entry.status!r}"
            )
        elif aggregator_round and named is None and entry.status in unusable_statuses:
            problems.append(
                f"{s.site[:10]} has status {entry.status!r}, but reason {s.reason} on chain"
            )
    for s in subs:
        entry, want = log.site(s.site), read_as.get(s.site)
        if entry is None or want is None:
            continue  # no entry: log.agrees fails; no reading: nothing to compare
        compared += 1
        allowed = {want.name.lower()}
        if not duplicates_known and want in (Reason.OK, Reason.DUPLICATE):
            allowed = {"ok", "duplicate"}
        if read_then is not None and address_key(s.site) not in read_then:
            # not read while the round was scored: the aggregator's store may not have given
            # it (malformed), or an original it read then may not read here (duplicate)
            allowed |= _UNREAD_STATUSES
        if entry.status not in allowed:
            problems.append(f"{s.site[:10]} status {entry.status!r}, read as {want.name.lower()}")
    skipped = len(subs) - compared
    return (
        "log.status",
        not problems,
        "; ".join(problems)
        or f"{compared} site status(es) are how this audit reads the updates"
        + (f" ({skipped} not compared: the update is unreadable here)" if skipped else ""),
    )


def _check_privacy(
    audit: RoundAudit,
    ledger: Ledger,
    round_id: int,
    subs: list[Submission],
    dp: Mapping[str, DpParams | None],
    terms: RoundTerms | None,
    history: PrivacyHistory | None = None,
) -> None:
    """``privacy.spend``: every decoded update's spend, recomputed under the accounting rule
    its blob names from the DP parameters in it (pinned by the on-chain sha256) with the RDP
    accountant, equals the spend the site declared on chain at reveal (``PrivacySpent``; none
    declared: 0), exactly: ``"summed"``, the update's own epsilon; ``"composed"``, the
    increment of the composition of the site's earlier private updates (read through
    ``history`` from the chain and the store; without one the composed rule cannot be
    recomputed and fails) and this one (:func:`~fedtrail.ml.privacy.declared_micro`); the
    parameters are
    accounted at the terms' delta (terms without one: a delta at most 1 / the on-chain sample
    count), with an expected batch of at least one image and whole epochs of steps.
    ``privacy.required``: under terms that require DP, no update without DP parameters has
    weight. Neither check is added to a round whose terms ask no privacy and whose updates
    hold no DP parameters (nor is the chain's event log read for it: a spend declared for an
    update trained without DP protects nothing, and the site only overstates its own spend)."""
    asked = terms.privacy if terms is not None else None
    if asked is None and not any(p is not None for p in dp.values()):
        return
    spends = ledger.privacy_spends(round_id)
    declared: dict[str, int] = {}
    problems: list[str] = []
    for spend in spends:
        if spend.site in declared:
            problems.append(f"{spend.site[:10]} declared twice")
        declared[spend.site] = declared.get(spend.site, 0) + spend.epsilon_micro
    checked = 0
    for sub in subs:
        if sub.site not in dp:
            if sub.site in declared:  # unreadable update: its spend cannot be checked
                problems.append(f"{sub.site[:10]} declared a spend for an unreadable update")
            continue
        params, said = dp[sub.site], declared.get(sub.site, 0)
        checked += 1
        if params is None:
            if said:
                problems.append(
                    f"{sub.site[:10]} declared epsilon {from_micro(said):g} but its update holds "
                    "no DP parameters"
                )
            continue
        problems += _dp_params_problems(sub, params, asked.delta if asked else None)
        try:
            if history is not None:
                history.remember(round_id, sub.site, params)
                got = history.expected_micro(sub.site, round_id, params)
            elif params.accounting == SUMMED:
                got = declared_micro(params, [], 0)
            else:
                raise InvalidPrivacy("no store to read its earlier updates from")
        except FedtrailError as exc:  # InvalidPrivacy, StoreError: an earlier blob unreadable
            problems.append(
                f"{sub.site[:10]}: cannot recompute its {params.accounting} spend: {exc}"
            )
            continue
        if got != said:
            rule = "" if params.accounting == SUMMED else f" under the {params.accounting} rule"
            problems.append(
                f"{sub.site[:10]} declared epsilon {from_micro(said):g} ({said} micro) but its "
                f"DP parameters give {from_micro(got):g} ({got} micro){rule}"
            )
    unknown = sorted(site[:10] for site in set(declared) - {s.site for s in subs})
    if unknown:
        problems.append(f"spends declared by sites without an update: {', '.join(unknown)}")
    audit.add(
        "privacy.spend",
        not problems,
        f"{checked} update(s): every declared epsilon equals the RDP accountant's from the "
        f"update's DP parameters under its accounting rule ({len(spends)} spend(s) on chain)"
        if not problems
        else "; ".join(problems),
    )
    if asked is not None and asked.required:
        plain = sorted(s.site[:10] for s in subs if s.weight > 0 and dp.get(s.site) is None)
        audit.add(
            "privacy.required",
            not plain,
            "the terms require DP-SGD: every weighted update carries DP parameters"
            if not plain
            else f"the terms require DP-SGD but weighted updates without DP parameters come "
            f"from {', '.join(plain)}",
        )


def _spend_breaches(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    terms: RoundTerms,
    subs: list[Submission],
    read_as: Mapping[str, Reason | None],
    dp: Mapping[str, DpParams | None],
    history: PrivacyHistory,
) -> dict[str, str]:
    """Each update this audit reads as usable (not unreadable, malformed or a duplicate) whose
    declared spend its blob contradicts, with why: the rule the aggregator scores by
    (:class:`~fedtrail.valuation.candidates.SpendChecker`), replayed on the same data."""
    checker = SpendChecker(ledger, store, round_id, terms, history)
    out: dict[str, str] = {}
    for sub in subs:
        if read_as.get(sub.site) is not Reason.OK or sub.site not in dp:
            continue
        why = checker.breach(sub, dp[sub.site])
        if why is not None:
            out[sub.site] = why
    return out


def _malformed_problems(
    subs: list[Submission],
    flagged: Mapping[str, str],
    clean: Callable[[Submission], bool],
    clean_detail: str,
) -> list[str]:
    """The rule of a check that zeroes updates as MALFORMED for what their own bytes contradict
    (``flagged[site]``: why): each flagged update is scored 0 as MALFORMED, and no update the
    check clears (``clean``) is; each breach as one sentence."""
    problems = []
    for sub in subs:
        why = flagged.get(sub.site)
        if why is not None and (sub.weight > 0 or sub.reason != Reason.MALFORMED):
            problems.append(
                f"{sub.site[:10]} is weighted {sub.weight} with reason {Reason(sub.reason).name}"
                f" but its {why}"
            )
        elif why is None and clean(sub) and sub.reason == Reason.MALFORMED:
            problems.append(f"{sub.site[:10]} is MALFORMED on chain, but {clean_detail}")
    return problems


def _privacy_scoring(
    subs: list[Submission],
    read_as: dict[str, Reason | None],
    unusable: dict[str, Reason],
    dp: Mapping[str, DpParams | None],
    quiet: Mapping[str, str],
    breaches: Mapping[str, str] | None,
    *,
    noise: bool,
    asked: bool,
    peers: bool,
) -> list[tuple[str, bool, str]]:
    """``privacy.scored`` and ``privacy.noise`` (README *Privacy scored*, *Privacy noise*) from
    the updates' verdicts: ``breaches`` (None: the terms' ``dp_spend_check`` is off) and
    ``quiet`` (empty when ``noise``, their ``dp_noise_check``, is off); ``asked``: the terms
    have a ``privacy`` block. Marks each flagged update MALFORMED in ``read_as`` and
    ``unusable``, the spend breaches before ``privacy.scored`` is judged, the quiet ones after."""
    out = []
    if breaches is not None:
        for site in breaches:
            unusable[site] = read_as[site] = Reason.MALFORMED
        private = asked or any(p is not None for p in dp.values())
        if not peers and (private or breaches):  # as privacy.spend: none in a plain round
            out.append(_check_spend_scored(subs, read_as, breaches, quiet))
    if noise:
        for site in quiet:
            unusable[site] = read_as[site] = Reason.MALFORMED
        if not peers and any(p is not None for p in dp.values()):
            out.append(_check_noise_scored(subs, read_as, dp, quiet))
    return out


def _check_spend_scored(
    subs: list[Submission],
    read_as: Mapping[str, Reason | None],
    breaches: Mapping[str, str],
    quiet: Mapping[str, str],
) -> tuple[str, bool, str]:
    """``privacy.scored``: under terms whose ``dp_spend_check`` is on, every update whose
    declared privacy spend its blob contradicts is scored 0 as MALFORMED, and no update whose
    declaration stands (and that this audit reads as usable) is: a site cannot be paid for a
    spend it did not declare, nor an honest DP site zeroed under that pretext. An update zeroed
    for lacking its noise (``quiet``, ``privacy.noise``) is that check's to judge."""
    problems = _malformed_problems(
        subs,
        breaches,
        lambda sub: sub.site not in quiet and read_as.get(sub.site) is Reason.OK,
        "its update reads and its declared privacy spend is the one its DP parameters give",
    )
    return (
        "privacy.scored",
        not problems,
        "; ".join(problems)
        or f"{len(breaches)} update(s) whose declared privacy spend the blob contradicts, each "
        "scored 0 as MALFORMED; no other readable update is",
    )


def _check_noise_scored(
    subs: list[Submission],
    read_as: Mapping[str, Reason | None],
    dp: Mapping[str, DpParams | None],
    quiet: Mapping[str, str],
) -> tuple[str, bool, str]:
    """``privacy.noise``: under terms whose ``dp_noise_check`` is on, every update whose DP
    parameters its own bytes contradict (no noise of one scale in every coordinate, or a
    compressed DP update: :func:`~fedtrail.ml.dp_noise.noise_breach`) is scored 0 as MALFORMED,
    and no readable DP update that carries its noise is: a site cannot be paid for a privacy it
    did not add, nor an honest DP site zeroed under that pretext."""
    problems = _malformed_problems(
        subs,
        quiet,
        lambda sub: dp.get(sub.site) is not None and read_as.get(sub.site) is Reason.OK,
        "its DP update reads and carries the noise its DP parameters add",
    )
    return (
        "privacy.noise",
        not problems,
        "; ".join(problems)
        or f"{len(quiet)} DP update(s) without the noise their parameters add, each scored 0 as "
        "MALFORMED; no DP update that carries it is",
    )


def _dp_params_problems(sub: Submission, params: DpParams, delta: float | None) -> list[str]:
    """What is implausible in an update's DP parameters against the chain and the terms."""
    who, n = sub.site[:10], sub.num_samples
    problems = []
    if delta is not None and params.delta != delta:
        problems.append(f"{who} accounted at delta {params.delta:g}, the terms' is {delta:g}")
    # whoever chose the delta (the terms: the aggregator), above 1/n it lets an image leak
    if n > 0 and params.delta > 1 / n:
        problems.append(f"{who} accounted at delta {params.delta:g} > 1 / its {n} samples")
    implausible = sampling_problem(params, n)
    if implausible is not None:
        problems.append(f"{who}'s {implausible}")
    return problems


AUC_TIE_SLACK = 1e-6
"""Two validation scores (logit differences) within this much, relative to the largest logit
(at least 1), may rank either way on another machine or thread count (last-bit noise)."""


def _auc_within_ties(
    model: torch.nn.Module,
    validation: ImageDataset,
    shown: float,
    value: float,
    tolerance: float,
) -> float:
    """The recomputed binary AUC to compare ``shown`` with: ``shown`` itself when it lies within
    ``tolerance`` of the AUCs that re-ranking near-tied pairs gives (:func:`~fedtrail.ml.
    metrics.roc_auc_bounds`, slack :data:`AUC_TIE_SLACK`), else ``value``. A thread count's
    last-bit noise flipped one near-tied pair of an untrained start model (5.5e-5 on 270
    images); a claim outside the bounds still fails."""
    from fedtrail.ml.metrics import predict_logits, roc_auc_bounds

    logits = predict_logits(model, validation)
    if logits.ndim != 2 or logits.shape[1] != 2:
        return value
    slack = AUC_TIE_SLACK * max(1.0, float(abs(logits).max()))
    low, high = roc_auc_bounds(logits[:, 1] - logits[:, 0], validation.labels, slack)
    return shown if low - tolerance <= shown <= high + tolerance else value


def _check_metrics(
    audit: RoundAudit,
    log: RoundLog,
    spec: ModelSpec,
    start_blob: bytes,
    global_blob: bytes | None,
    validation: ImageDataset,
    expected_sha256: str,
    tolerance: float,
) -> None:
    """``metrics.recomputed``: the log's metrics before and after the round equal those of the
    start and global models on the given validation set (which must be the committed one),
    within ``tolerance`` (absolute), the fitted bias and decision threshold included. A log
    that records no calibrated metrics (written before they existed) is compared on AUC, F1,
    accuracy and loss; one that records some must record all that are defined. Per-class
    recalls, when recorded, are compared class by class (None where the class is absent)."""
    from fedtrail.ml.metrics import evaluate_calibrated

    name = "metrics.recomputed"
    if validation.content_sha256() != expected_sha256:
        audit.add(
            name,
            False,
            "the given validation set is not the one the aggregator used (sha256 differs)",
        )
        return
    if global_blob is None:
        audit.add(name, False, "cannot recompute: the global model is unavailable")
        return
    problems: list[str] = []
    worst = 0.0
    calibrated = False
    for label, claimed, blob in (
        ("before", log.metrics.before, start_blob),
        ("after", log.metrics.after, global_blob),
    ):
        try:
            model = spec.build()
            load_federated(model, decode_model(blob, spec=spec)[0])
            got = evaluate_calibrated(model, validation)
        except (FedtrailError, RuntimeError, ValueError) as exc:
            audit.add(name, False, f"cannot recompute the {label} metrics: {exc}")
            return
        old_format = claimed.bias is None and all(
            claimed.get(k) is None for k in RoundMetrics.NUMBERS[4:]
        )
        calibrated = calibrated or not old_format
        keys = RoundMetrics.NUMBERS[:4] if old_format else RoundMetrics.NUMBERS
        for key in keys:
            value, shown = float(getattr(got, key)), claimed.get(key)
            if shown is None or math.isnan(value):
                if (shown is None) != math.isnan(value):
                    problems.append(f"{label}.{key} {shown} != recomputed {value:.6g}")
                continue
            if key == "auc" and not abs(shown - value) <= tolerance:
                value = _auc_within_ties(model, validation, shown, value, tolerance)
            worst = max(worst, abs(shown - value))
            if not abs(shown - value) <= tolerance:
                # the gap too: a drift below 1e-6 prints as the same 6 digits on both sides
                problems.append(
                    f"{label}.{key} {shown:.6g} != recomputed {value:.6g} "
                    f"(off by {abs(shown - value):.3g})"
                )
        if claimed.n is not None and claimed.n != got.n:
            problems.append(f"{label}.n {claimed.n} != {got.n} validation images")
        if not old_format:
            want, shown_bias = got.bias or (), claimed.bias or ()
            if len(want) != len(shown_bias) or any(
                not abs(a - b) <= tolerance for a, b in zip(want, shown_bias, strict=False)
            ):
                problems.append(f"{label}.bias {list(shown_bias)} != recomputed {list(want)}")
            else:
                worst = max([worst, *(abs(a - b) for a, b in zip(want, shown_bias, strict=True))])
        for key in RoundMetrics.PER_CLASS:
            shown_values: tuple[float | None, ...] | None = getattr(claimed, key)
            if shown_values is None:  # logs written before the recalls were recorded
                continue
            recomputed: tuple[float, ...] = getattr(got, key)
            pairs = list(zip(shown_values, recomputed, strict=False))
            gaps = [abs(a - b) for a, b in pairs if a is not None and not math.isnan(b)]
            if (
                len(shown_values) != len(recomputed)
                or any((a is None) != math.isnan(b) for a, b in pairs)
                or not all(g <= tolerance for g in gaps)
            ):
                problems.append(
                    f"{label}.{key} {list(shown_values)} != recomputed "
                    f"{[None if math.isnan(b) else round(b, 6) for b in recomputed]}"
                )
            else:
                worst = max([worst, *gaps])
    what = (
        "AUC, F1, accuracy, loss, balanced accuracy, ECE, bias, threshold, calibrated F1 and "
        "per-class recall"
        if calibrated
        else "AUC, F1, accuracy and loss (the log records no calibrated metrics)"
    )
    audit.add(
        name,
        not problems,
        "; ".join(problems) + f" (tolerance {tolerance:g})"
        if problems
        else f"{what} before and after recomputed on the validation set: largest difference "
        f"{worst:.3g} (tolerance {tolerance:g})",
    )


def _check_scores(
    audit: RoundAudit,
    log: RoundLog,
    spec: ModelSpec,
    start: Mapping[str, torch.Tensor],
    subs: list[Submission],
    deltas: dict[str, dict[str, torch.Tensor]],
    unusable: dict[str, Reason],
    validation: ImageDataset,
    tolerance: int,
    terms: RoundTerms | None = None,
    chain: tuple[Ledger, ContentStore] | None = None,
    *,
    declared_noise: frozenset[str] = frozenset(),
    decoded: Decoded | None = None,
) -> None:
    """Re-runs the aggregator's valuation with the settings of the round's terms (the log's
    for a round without terms); with ``standing``, under the history the chain and the
    previous log hold (``chain``), and compares the log's standing block too.
    ``declared_noise``: the sites whose updates carry DP parameters (their candidates say so,
    as the aggregator's do: the free-rider screen's white-noise test leaves them out).
    ``decoded``: the history's blobs this audit already decoded (:class:`AuditReads`)."""
    from fedtrail.valuation import METHODS, Candidate
    from fedtrail.valuation.chained import standing_of

    settings = log.settings.valuation
    expected_validation = log.validation.sha256
    if terms is not None:
        try:
            settings = ValuationSettings.from_json(terms.valuation)
        except InvalidLog as exc:
            audit.add("scores.recomputed", False, f"the terms' valuation is unusable: {exc}")
            return
        # the split the aggregator committed to at open, not the one its log names
        expected_validation = terms.validation_sha256
    if settings.method not in METHODS:
        # value_round also plays a validator's game (linear_shapley) as a method, for peer
        # rounds; an aggregator plays one of METHODS (its large game only above 10 updates)
        audit.add(
            "scores.recomputed",
            False,
            f"the valuation method {settings.method!r} is not one an aggregator plays {METHODS}",
        )
        return
    if validation.content_sha256() != expected_validation:
        audit.add(
            "scores.recomputed",
            False,
            "the given validation set is not the one the aggregator used (sha256 differs)",
        )
        return
    # the aggregator's documented override: a site with valid signed evidence against it
    # enters the valuation as CONTRADICTED (the evidence itself is checked by _check_evidence)
    # bound to the ledger audited, not to the one the log names (log.agrees compares them)
    chain_id, address = (
        (chain[0].chain_id, chain[0].address)
        if chain is not None
        else (log.ledger.chain_id, log.ledger.address)
    )
    zeroed = {e.site.lower() for e in _valid_evidence(chain_id, address, log.round, log, subs)}
    candidates = [
        Candidate(
            site=s.site,
            num_samples=s.num_samples,
            delta=deltas.get(s.site),
            status=Reason.CONTRADICTED
            if s.site.lower() in zeroed
            else unusable.get(s.site, Reason.OK),
            noise_declared=s.site in declared_noise,
        )
        for s in subs
    ]
    try:
        if settings.standing and chain is None:
            raise FedtrailError("valuation with standing needs the chain and the store")
        report, carried = _replay_valuation(
            settings,
            chain=chain,
            decoded=decoded,
            round_id=log.round,
            spec=spec,
            start=start,
            candidates=candidates,
            validation=validation,
            seed=log.valuation_seed,
        )
        recomputed = report.sites
    except (FedtrailError, KeyError, TypeError, ValueError) as exc:
        audit.add("scores.recomputed", False, f"cannot re-run the valuation: {exc}")
        return
    if carried is not None:
        audit.add(*compare_standing(log.standing, standing_of(carried, report), STANDING_TOLERANCE))
    by_site = {v.site: v for v in recomputed}
    entered = {c.site for c in candidates if c.status is Reason.OK}
    audit.add(*_compare_components(log, subs, by_site, entered, settings.explanation_wording))
    diffs = [abs(by_site[s.site].score - s.score) for s in subs]
    reasons_equal = all(int(by_site[s.site].reason) == s.reason for s in subs)
    worst = max(diffs, default=0)
    passed = reasons_equal and worst <= tolerance
    audit.add(
        "scores.recomputed",
        passed,
        f"re-ran {settings.method}"
        + (f" ({settings.large_game} above 10 updates)" if settings.large_game else "")
        + f" on the {settings.metric}: reasons "
        + ("equal" if reasons_equal else "DIFFER")
        + f", largest score difference {worst} (tolerance {tolerance}: floating-point "
        "evaluation may differ in the last bits across machines)",
    )


def _replay_valuation(
    settings: ValuationSettings,
    *,
    chain: tuple[Ledger, ContentStore] | None,
    round_id: int,
    spec: ModelSpec,
    start: Mapping[str, torch.Tensor],
    candidates: Sequence[Candidate],
    validation: ImageDataset,
    seed: int,
    decoded: Decoded | None = None,
) -> tuple[RoundValuation, Carried | None]:
    """The round's valuation re-run as the aggregator runs it: the committed settings and
    thresholds, the standing carried from the chain (``chain`` needed with standing), and the
    settings' seed or else ``seed`` (the terms' seed plus the round, in logs before it); with
    the standing it was valued under."""
    from fedtrail.valuation import value_round
    from fedtrail.valuation.chained import carried_history, combiner_from

    combiner = combiner_from(settings)
    carried = None
    if settings.standing and chain is not None:
        carried = carried_history(
            *chain, round_id, spec, stale_rounds=combiner.stale_rounds, decoded=decoded
        )
    report = value_round(
        global_state=dict(start),
        spec=spec,
        candidates=list(candidates),
        validation=validation,
        method=settings.method,
        metric=settings.metric,
        seed=seed if settings.seed is None else settings.seed,
        explanation_check=bool(settings.explanation_check),
        combiner=combiner,
        history=None if carried is None else carried.history,
        large_game=settings.large_game,
        project_shift=bool(settings.project_shift),
    )
    return report, carried


CANCELLED_VALUATION = "cancelled.valuation"


def _check_cancelled_valuation(
    ledger: Ledger, store: ContentStore, info: RoundInfo, validation: ImageDataset
) -> tuple[str, bool, str]:
    """``cancelled.valuation``: a cancelled aggregator round had no usable update. The contract
    lets the aggregator cancel any open round after its reveal deadline and a cancelled round
    has no log, so without this replay an aggregator could cancel every round in which a site
    it wants to keep out would be paid, and verify would pass. The round's valuation is re-run
    as the aggregator runs it (the revealed updates read and marked as by
    :func:`~fedtrail.valuation.candidates.revealed_candidates`, the committed terms, the
    standing carried from the chain) and no update may score above 0. Signed evidence (Flower
    runs) is not published for a cancelled round, so an update it would have zeroed is
    counted here as valuable; and an update the aggregator could not retrieve at valuation but
    this audit can (its site withheld it, then published it) reads as valuable here, as it
    fails ``log.status`` in a finalized round."""
    from fedtrail.valuation import METHODS
    from fedtrail.valuation.candidates import revealed_candidates

    name, round_id = CANCELLED_VALUATION, info.id
    subs = ledger.get_submissions(round_id)
    if not subs:
        return name, True, "no update was revealed: nothing to value"
    terms, (_, terms_ok, terms_detail) = _read_terms(store, info, round_id)
    if terms is None or not terms_ok:
        return name, False, f"{len(subs)} update(s) revealed, and the terms: {terms_detail}"
    try:
        settings = ValuationSettings.from_json(terms.valuation)
        spec = ModelSpec(**terms.model_spec)
    except (InvalidLog, TypeError, ValueError, ConfigError) as exc:
        return name, False, f"cannot replay: the terms are unusable: {exc}"
    if settings.method not in METHODS:
        return name, False, f"the valuation method {settings.method!r} is not an aggregator's"
    if validation.content_sha256() != terms.validation_sha256:
        return name, False, "the given validation set is not the one the terms committed"
    if validation.image_size != (spec.image_size, spec.image_size):
        validation = validation.resized(spec.image_size)
    limit, problem = _spec_limit(spec)
    if limit is None:
        return name, False, f"cannot replay: {problem}"
    start = _fetch(store, info.start_cid, info.start_sha256, limit)
    if start.blob is None:
        return name, False, f"cannot replay: the start model: {start.detail}"
    try:
        start_state, _ = decode_model(start.blob, spec=spec)
        pairs = revealed_candidates(ledger, store, round_id, terms=terms, spec=spec)
        report, _ = _replay_valuation(
            settings,
            chain=(ledger, store),
            round_id=round_id,
            spec=spec,
            start=start_state,
            candidates=[candidate for _, candidate in pairs],
            validation=validation,
            seed=terms.seed + round_id,
        )
    except (FedtrailError, KeyError, TypeError, ValueError) as exc:
        return name, False, f"cannot re-run the valuation: {exc}"
    paid = [v for v in report.sites if v.score > 0]
    if paid:
        return (
            name,
            False,
            "cancelled, yet the valuation replayed under its terms scores "
            + ", ".join(f"{v.site[:10]} {v.score}" for v in paid)
            + ": the aggregator could have valued the round",
        )
    return (
        name,
        True,
        f"the valuation replayed under its terms scores each of the {len(report.sites)} "
        "revealed update(s) 0: the round could not be valued",
    )


def _check_cancelled_unreadable(
    ledger: Ledger, store: ContentStore, info: RoundInfo, record: PeerRecord
) -> list[tuple[str, bool, str]]:
    """``peers.cancelled`` for a peer round cancelled *after* its valuation: the contract lets
    the aggregator do that because a site can withhold its blob once the validators scored it,
    and no global model without a weighted update passes this audit. So it passes only when
    every update with a positive score (a weight above 0, or 0 from rounding: a drop re-weights
    it) cannot be used now (not retrievable, not matching its sha256, or malformed: read as the
    aggregator reads it), or when every one reads and the round's public screen (terms'
    ``valuation.public_screen``) marks them all so that its drop
    (:func:`~fedtrail.protocol.peers.screen_drop`) would leave no weight
    (:func:`~fedtrail.protocol.peers.screen_empties_round`: the contract refuses it, and a
    model paying a marked update fails ``peers.screen``), or when the updates that do not read
    carry no weight (a positive median at weight 0 from rounding, which the contract cannot
    drop as withheld) and the screen, which leaves them out as if withheld, marks every one
    that reads (session 61, h-291). When every such update reads and the
    screen spares one, the aggregator could have finalized the round, and when some read, it
    could have dropped the others (``dropWithheld``) and finalized with those. An update its
    site withheld and published again later reads as usable here (the caveat of
    ``cancelled.valuation``). Updates dropped before the cancel (``dropWithheld``) must be
    unusable too (``peers.withheld``, as in a finalized round): the cancel does not vouch for
    them."""
    from fedtrail.valuation.candidates import revealed_candidates

    name, round_id = CANCELLED, info.id
    terms, (_, terms_ok, terms_detail) = _read_terms(store, info, round_id)
    if terms is None or not terms_ok:
        return [(name, False, f"valued, then cancelled, and the terms: {terms_detail}")]
    try:
        spec = ModelSpec(**terms.model_spec)
        pairs = revealed_candidates(ledger, store, round_id, terms=terms, spec=spec)
    except (FedtrailError, TypeError, ValueError) as exc:
        return [(name, False, f"valued, then cancelled; cannot read its updates: {exc}")]
    subs = [sub for sub, _ in pairs]
    dropped = (
        [check_withheld(subs, {sub.site: c.status for sub, c in pairs if c.delta is None})]
        if any(sub.reason == Reason.WITHHELD for sub in subs)
        else []
    )
    weighted = [(sub, c) for sub, c in pairs if sub.score > 0]
    unusable = [(sub, c) for sub, c in weighted if c.delta is None]
    why = ""
    if len(unusable) < len(weighted):
        # some read: the cancel passes only when the public screen marks every one left (an
        # unreadable one at weight 0 left out; an unreadable weighted one leaves the screen
        # uncomputable here: it had to be dropped as withheld before any cancel)
        emptied, why = _screen_empties(ledger, store, info, record, terms, spec, pairs)
        if emptied:
            return [(name, True, f"valued, then cancelled: {why}"), *dropped]
    if not unusable:
        return [
            (
                name,
                False,
                f"valued, then cancelled, yet each of its {len(weighted)} weighted update(s) "
                "reads and decodes: the aggregator could have finalized the round"
                + (f" ({why})" if why else ""),
            ),
            *dropped,
        ]
    usable = [sub.site[:10] for sub, c in weighted if c.delta is not None]
    if usable:
        # the unreadable ones could have been dropped (dropWithheld) and the round finalized
        # with these: a cancel throws away their sites' round and spares the withholder the
        # drop's reputation cost
        return [
            (
                name,
                False,
                f"valued, then cancelled, yet weighted update(s) {', '.join(usable)} read and "
                "decode: the aggregator could have dropped the unreadable one(s) "
                "(dropWithheld) and finalized the round" + (f" ({why})" if why else ""),
            ),
            *dropped,
        ]
    return [
        (
            name,
            True,
            "valued, then cancelled: weighted update(s) cannot be used: "
            + "; ".join(f"{sub.site[:10]} {c.status.name} ({c.detail})" for sub, c in unusable),
        ),
        *dropped,
    ]


def _screen_empties(
    ledger: Ledger,
    store: ContentStore,
    info: RoundInfo,
    record: PeerRecord,
    terms: RoundTerms,
    spec: ModelSpec,
    pairs: Sequence[tuple[Submission, Candidate]],
) -> tuple[bool, str]:
    """Whether peer round ``info``'s public screen, recomputed as the aggregator runs it
    (:func:`~fedtrail.valuation.chained.public_screen_of` over the revealed ``pairs``), marks
    every update with a positive score, so that its drop leaves no weight and the round can
    only be cancelled; with why (empty when the terms have no public screen). An update with a
    positive score that does not read here and carries no weight is left out, as if withheld
    (:func:`~fedtrail.valuation.chained.screen_left_out_of`: a drop that re-weighted it would
    have to drop it as withheld too); any other that does not read leaves the screen
    uncomputable."""
    from fedtrail.valuation.chained import combiner_from, public_screen_of, screen_left_out_of

    try:
        valuation = ValuationSettings.from_json(terms.valuation)
    except InvalidLog:
        return False, ""
    if not (valuation.public_screen and valuation.standing):
        return False, ""
    subs = [sub for sub, _ in pairs]
    try:
        outcome = record.outcome([s.site for s in subs])
        limit, problem = _spec_limit(spec)
        if limit is None:
            raise ConfigError(problem)
        start = _fetch(store, info.start_cid, info.start_sha256, limit)
        if start.blob is None:
            return False, f"the public screen cannot be recomputed: the start model: {start.detail}"
        marked = public_screen_of(
            ledger,
            store,
            info.id,
            spec,
            global_state=decode_model(start.blob, spec=spec)[0],
            candidates=[c for _, c in pairs],
            combiner=combiner_from(valuation),
            outcome=outcome,
        )
    except (FedtrailError, *NOT_GIVEN) as exc:
        return False, f"the public screen cannot be recomputed: {exc}"
    counts = [s.num_samples for s in subs]
    left = screen_left_out_of([c for _, c in pairs], outcome)
    drop = screen_drop(outcome, counts, marked, left_out=left)
    if not screen_empties_round(outcome, counts, drop, left_out=left):
        return False, f"the public screen marks {len(drop)} of the weighted update(s) only"
    return True, (
        "the public screen marks every weighted update ("
        + "; ".join(f"{site[:10]} {marked[site]}" for site in drop)
        + ")"
        + (
            ", the unreadable update(s) at weight 0 left out ("
            + ", ".join(site[:10] for site in left)
            + ")"
            if left
            else ""
        )
        + ": its drop leaves no weight (ZeroTotalWeight), so the round could not be finalized"
    )


def _check_valued_peer(
    audit: RoundAudit, ledger: Ledger, store: ContentStore, info: RoundInfo
) -> None:
    """A peer round valued, not yet finalized: its weights on chain (what the federation pays
    if it stays valued) follow from the revealed vectors and events alone, so ``peers.votes``,
    ``peers.median``, ``peers.quorum``, ``peers.reputation``, after a ``dropWithheld``
    ``peers.withheld``, and ``peers.screen`` (:func:`_check_unsettled_screen`) are checked as in
    a finalized round, with no log to compare; ``phase`` passes when they do (there is no global
    model yet to replay)."""
    from fedtrail.valuation.candidates import revealed_candidates

    round_id = info.id
    record = read_peer_record(ledger, round_id)
    if record is None:  # the chain said it is a peer round: unreachable unless it is lying
        audit.add("phase", False, "round is valued as a peer round, yet it has no peer record")
        return
    subs = ledger.get_submissions(round_id)
    terms, terms_check = _read_terms(store, info, round_id)
    audit.add(*terms_check)
    audit.add(*check_votes(record, None, with_log=False))
    median, outcome = check_median(record, subs, ())
    audit.add(*median)
    audit.add(*check_quorum(record, terms))
    audit.add(*check_reputation(record, outcome))
    if any(s.reason == Reason.WITHHELD for s in subs):
        # a drop says the update cannot be read: true now, or the aggregator dropped a
        # readable update (and its site's pay) before anyone could see the round's model
        if terms is None or not terms_check[1]:
            audit.add(WITHHELD, False, f"updates dropped, and the terms: {terms_check[2]}")
        else:
            try:
                spec = ModelSpec(**terms.model_spec)
                pairs = revealed_candidates(ledger, store, round_id, terms=terms, spec=spec)
            except (FedtrailError, TypeError, ValueError) as exc:
                audit.add(WITHHELD, False, f"updates dropped; cannot read the updates: {exc}")
            else:
                unusable = {sub.site: c.status for sub, c in pairs if c.delta is None}
                audit.add(*check_withheld([sub for sub, _ in pairs], unusable))
    # dropScreened has no deadline: a drop in a round never finalized still zeroes its site
    _check_unsettled_screen(audit, ledger, store, info, record)
    weighted = sum(1 for s in subs if s.weight > 0)
    audit.add(
        "phase",
        True,
        f"round is valued, not finalized: its {weighted} on-chain weight(s) are checked against "
        "the revealed vectors (peers.*); no global model yet to replay (run verify again once "
        "it is finalized)",
    )


def _check_unsettled_screen(
    audit: RoundAudit, ledger: Ledger, store: ContentStore, info: RoundInfo, record: PeerRecord
) -> None:
    """``peers.screen`` in a peer round not finalized (left valued, or cancelled): the part
    that is decidable before the finalize. The aggregator posts the screen at finalize, so an
    update the screen marks may still be weighted here (the spared part waits for the
    finalize, and a cancelled round has none); but every update already dropped as screened
    (``dropScreened``, which has no deadline) must be one the public screen marks, and only
    under terms with ``public_screen`` and ``standing``, as in a finalized round. The screen is
    recomputed as there (:func:`_check_public_screen`, from the revealed updates as a validator
    reads them now): a drop it cannot re-check fails, among them one whose own update does not
    read now (unretrievable, tampered or malformed: the screen marks only an update that
    reads) and every drop when the terms, the start model or the references do not read."""
    from fedtrail.valuation.candidates import revealed_candidates

    if not record.screened:
        audit.add(
            SCREEN,
            True,
            "no update dropped as screened (dropScreened); the updates the public screen marks "
            + (
                "are dropped at finalize, which a cancelled round never reaches"
                if info.phase == Phase.CANCELLED
                else "are dropped at finalize (run verify again once it is finalized)"
            ),
        )
        return
    named = ", ".join(s[:10] for s in record.screened)
    terms, (_, terms_ok, terms_detail) = _read_terms(store, info, info.id)
    if terms is None or not terms_ok:
        audit.add(SCREEN, False, f"dropScreened zeroed {named}, and the terms: {terms_detail}")
        return
    try:
        valuation = ValuationSettings.from_json(terms.valuation)
    except InvalidLog:
        valuation = None
    if valuation is None or not (valuation.public_screen and valuation.standing):
        audit.add(
            *check_public_screen(record, None, None, public=False, settled=False, num_samples=())
        )
        return
    subs = ledger.get_submissions(info.id)
    try:
        spec = ModelSpec(**terms.model_spec)
        limit, problem = _spec_limit(spec)
        if limit is None:
            raise ConfigError(problem)
        pairs = revealed_candidates(ledger, store, info.id, terms=terms, spec=spec)
    except (FedtrailError, TypeError, ValueError) as exc:
        audit.add(SCREEN, False, f"dropScreened zeroed {named}; cannot read the updates: {exc}")
        return
    unread = [(sub, c) for sub, c in pairs if c.delta is None and sub.site in record.screened]
    if unread:
        audit.add(
            SCREEN,
            False,
            "dropped as screened, yet the update does not read now, so no one can re-check "
            "that the public screen marks it: "
            + "; ".join(f"{sub.site[:10]} {c.status.name} ({c.detail})" for sub, c in unread),
        )
        return
    start = _fetch(store, info.start_cid, info.start_sha256, limit)
    if start.blob is None:
        audit.add(SCREEN, False, f"dropScreened zeroed {named}; the start model: {start.detail}")
        return
    _check_public_screen(
        audit,
        ledger,
        store,
        info,
        record,
        terms,
        subs,
        spec,
        _decoded_model(None, spec, info.start_sha256, start.blob),
        # as in a finalized round: every update that decodes is screened on its delta (the DP
        # noise and spend verdicts do not take an input out); copies and unread ones are out
        {sub.site: c.delta for sub, c in pairs if c.delta is not None},
        {sub.site: c.status for sub, c in pairs if c.delta is None or c.status is Reason.DUPLICATE},
        frozenset(sub.site for sub, c in pairs if c.noise_declared),
    )


def _compare_components(
    log: RoundLog,
    subs: list[Submission],
    recomputed: Mapping[str, SiteValuation],
    entered: Collection[str] = frozenset(),
    wording: int | None = None,
) -> tuple[str, bool, str]:
    """``components.recomputed``: the components only the validation game gives, against the
    re-run's: each site's ``method`` (the game played, or ``cosine`` in the data-free
    fallback) and ``status`` exactly, its ``value`` within :data:`STANDING_TOLERANCE` of the
    round's total absolute value (the values come from the same float evaluations as the
    normalised values, which are these values as shares of that total; None exactly where the
    re-run has none). The data-free components are ``log.components``'. The explanation text
    of each site in ``entered`` (its update entered the valuation as usable: every word of its
    text is the valuation's) is compared with the re-run's up to
    :func:`~fedtrail.auditor.components.text_gap`, each number within one unit of the re-run's
    last printed digit plus the standing's tolerance (the value tolerance where larger), a
    demotion printed as 100.0% read as a full score (:func:`_full_score`). ``wording``:
    the explanation wording the round's terms name (``valuation.explanation_wording``, session
    57): with one, a text that is not the re-run's fails, naming the site (attack a125
    ``detail``: a paid site's text stating another game value and a demotion passed, named in
    the detail only); None (a writer before session 57, whose wording is not named) a
    difference is named in the detail, not failed (session 56): an older writer's honest text
    would fail on wording alone."""
    total = math.fsum(abs(v.value) for v in recomputed.values() if v.value is not None)
    tolerance = STANDING_TOLERANCE * total
    # a number a text prints carries the figures' tolerance, and a rounding flip at its last
    # printed digit one unit more (text_gap): the accumulated values an auditor on another
    # thread count re-derives ~1e-5 apart (standing.recomputed's STANDING_TOLERANCE), more
    # than a unit of the 4 significant digits they print below 0.1; the game value itself is
    # held to its own, tighter, tolerance in the structured component above
    slack = max(tolerance, STANDING_TOLERANCE)
    problems: list[str] = []
    notes: list[str] = []
    worst, texts = 0.0, 0
    for s in subs:
        entry, v = log.site(s.site), recomputed.get(s.site)
        if entry is None or v is None:
            continue  # log.agrees fails on a missing entry
        comp, who = entry.components, s.site[:10]
        if s.site in entered:
            texts += 1
            differs = text_gap(_full_score(entry.explanation), _full_score(v.explanation), slack)
            if differs is not None:
                (notes if wording is None else problems).append(f"{who} explanation {differs}")
        if comp.get("method") != v.method:
            problems.append(f"{who} method {comp.get('method')!r}, re-run {v.method!r}")
        if comp.get("status") != v.status.name:
            problems.append(f"{who} status {comp.get('status')!r}, re-run {v.status.name!r}")
        logged = comp.get("value")
        if v.value is None or logged is None:
            if (v.value is None) != (logged is None):
                problems.append(f"{who} value {logged!r}, re-run {v.value!r}")
            continue
        if isinstance(logged, bool) or not isinstance(logged, int | float):
            problems.append(f"{who} value {logged!r} is not a number")
            continue
        gap = abs(logged - v.value)
        worst = max(worst, gap)
        if not gap <= tolerance:
            problems.append(f"{who} value {logged:.6g}, re-run {v.value:.6g}")
    if wording is not None:
        said = f"; explanation wording {wording}: "
        noted = said + (
            f"{texts} explanation text(s) the re-run's"
            if not problems
            else f"a text that is not the re-run's fails (numbers within {slack:.3g} and one "
            "unit of their last printed digit)"
        )
    elif notes:
        # the text's wording is not named (each release before session 57 worded its details
        # its own way), so a text that is not the re-run's is named, not failed: an older
        # writer's honest log would fail on wording alone
        noted = (
            f"; noted, not failed: {len(notes)} of {texts} explanation text(s) are not the "
            f"re-run's (the log names no explanation wording: a writer before session 57's, "
            f"or one that left it out): {'; '.join(notes)}"
        )
    else:
        noted = f"; {texts} explanation text(s) the re-run's (no explanation wording named)"
    return (
        "components.recomputed",
        not problems,
        "; ".join(problems) + f" (value tolerance {tolerance:.3g})" + noted
        if problems
        else f"each site's game value, method and status re-derived: largest value difference "
        f"{worst:.3g} (tolerance {STANDING_TOLERANCE:g} of the round's total |value|, "
        f"{tolerance:.3g})" + noted,
    )


_DEMOTED_TO_FULL = re.compile(r"(?<!not )\bbelow, demoted to 100\.0%(?: \(warm-up: floor [^)]*\))?")


def _full_score(text: str) -> str:
    """``text`` with a demotion that prints as 100.0% (a score within 0.05% of full) read as
    ``not below, full score``: an accumulated value within the cross-machine noise of its
    reference is demoted by a few units on one machine and not on another, which the score
    tolerance (1000 units) passes; its words must not fail the round either."""
    return _DEMOTED_TO_FULL.sub("not below, full score", text)


def _updates(subs: list[Submission]) -> dict[str, ChainUpdate]:
    return {
        s.site: ChainUpdate(cid=s.cid, sha256=s.sha256, num_samples=s.num_samples)
        for s in subs
        if s.revealed
    }


def _valid_evidence(
    chain_id: int, ledger: str, round_id: int, log: RoundLog | None, subs: list[Submission]
) -> list[Evidence]:
    """The log's evidence that holds against the chain: signed by the site it names, bound to
    this chain, ledger and round, contradicting the site's revealed update."""
    if log is None:
        return []
    return applicable(
        [e.reply for e in log.evidence],
        chain_id=chain_id,
        ledger=ledger,
        round_id=round_id,
        updates=_updates(subs),
    )


def _check_evidence(
    audit: RoundAudit,
    ledger: Ledger,
    round_id: int,
    log: RoundLog | None,
    subs: list[Submission],
) -> None:
    """Signed Flower replies (issue 15): every evidence entry in the log is the site's own
    signed reply contradicting its on-chain update, and that site is scored 0 CONTRADICTED
    (``evidence.signed``); every site scored CONTRADICTED on chain has such evidence in the log
    (``evidence.contradicted``): an aggregator cannot zero a site with a fabricated lie.
    Rounds with neither add no check."""
    contradicted = [s for s in subs if s.reason == Reason.CONTRADICTED]
    entries = log.evidence if log is not None else ()
    if not entries and not contradicted:
        return
    updates = _updates(subs)
    valid = {
        e.site.lower(): e
        for e in _valid_evidence(ledger.chain_id, ledger.address, round_id, log, subs)
    }
    by_site = {s.site.lower(): s for s in subs}
    problems = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        key = e.site.lower()
        if key in seen:
            problems.append(f"evidence/{i}: a second entry for {e.site[:10]}")
            continue
        seen.add(key)
        site = next((k for k in updates if k.lower() == key), None)
        if site is None:
            problems.append(f"evidence/{i}: {e.site[:10]} has no revealed update this round")
            continue
        why = evidence_problems(
            e.reply,
            chain_id=ledger.chain_id,
            ledger=ledger.address,
            round_id=round_id,
            site=site,
            chain=updates[site],
        )
        if why:
            problems.append(f"evidence/{i} ({e.site[:10]}): " + "; ".join(why))
            continue
        if e.contradicts != valid[key].contradicts:
            problems.append(
                f"evidence/{i} ({e.site[:10]}): contradicts {list(e.contradicts)}, "
                f"the chain says {list(valid[key].contradicts)}"
            )
        sub = by_site[key]
        if sub.score != 0 or sub.reason != Reason.CONTRADICTED:
            problems.append(
                f"evidence/{i} ({e.site[:10]}): scored {sub.score} reason {sub.reason} on "
                "chain, not 0 CONTRADICTED"
            )
    if entries:
        audit.add(
            "evidence.signed",
            not problems,
            "; ".join(problems)
            or f"{len(entries)} signed repl(ies) in the log: each recovers to its site, "
            "contradicts the site's on-chain update, and the site is scored 0 CONTRADICTED",
        )
    unbacked = [s.site[:10] for s in contradicted if s.site.lower() not in valid]
    if contradicted:
        audit.add(
            "evidence.contradicted",
            not unbacked,
            f"scored CONTRADICTED without valid signed evidence in the log: {', '.join(unbacked)}"
            if unbacked
            else f"{len(contradicted)} site(s) scored CONTRADICTED, each with its signed reply "
            "in the log",
        )


def _is_peer_round(peer: PeerRecord | None, terms: RoundTerms | None, log: RoundLog | None) -> bool:
    """Whether the chain, the terms or the log say the round was scored by its peers (when
    they disagree, ``peers.quorum`` fails)."""
    return (
        peer is not None
        or (terms is not None and terms.valuation.get("mode") == "peers")
        or (log is not None and (log.settings.valuation.peers or log.peer_votes is not None))
    )


def _check_public_screen(
    audit: RoundAudit,
    ledger: Ledger,
    store: ContentStore,
    info: RoundInfo,
    peer: PeerRecord,
    terms: RoundTerms | None,
    subs: list[Submission],
    spec: ModelSpec | None,
    start: Mapping[str, torch.Tensor] | Exception | None,
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    declared_noise: frozenset[str],
    history: _History | None = None,
) -> None:
    """``peers.screen`` (:func:`~fedtrail.auditor.peers.check_screen`): the round's public
    free-rider screen recomputed from the chain and the store, as the aggregator ran it
    (:func:`~fedtrail.valuation.chained.public_screen_of` over the inputs the chain names,
    :func:`~fedtrail.protocol.peers.screen_inputs`, as a validator reads them; an update that
    reads only now and is no input is not read), against the updates dropped as screened.
    ``history``: as :func:`_valuation_checks`'."""
    from fedtrail.valuation import Candidate
    from fedtrail.valuation.chained import combiner_from, public_screen_of, screen_left_out_of

    valuation = None
    if terms is not None:
        try:
            valuation = ValuationSettings.from_json(terms.valuation)
        except InvalidLog:
            valuation = None
    public = bool(valuation is not None and valuation.public_screen and valuation.standing)
    try:
        outcome: PeerOutcome | None = peer.outcome([s.site for s in subs])
    except InvalidVotes:
        outcome = None
    marked: dict[str, str] | None = None
    left_out: tuple[str, ...] = ()
    if (
        public
        and valuation is not None
        and outcome is not None
        and spec is not None
        and start is not None
    ):
        candidates = [
            Candidate(
                site=s.site,
                num_samples=s.num_samples,
                delta=None if s.site in unusable else deltas.get(s.site),
                status=unusable.get(s.site, Reason.OK if s.site in deltas else Reason.MALFORMED),
                noise_declared=s.site in declared_noise,
            )
            for s in subs
        ]
        # an input this audit cannot read that carries no weight is left out, as if withheld
        # (the aggregator's rule; one it reads is screened, whatever the aggregator claimed)
        left_out = screen_left_out_of(candidates, outcome)
        try:
            with _Timer(audit, "rescore"):
                global_state = _state(start)
                combiner = combiner_from(valuation)
                marked = public_screen_of(
                    ledger,
                    store,
                    info.id,
                    spec,
                    global_state=global_state,
                    candidates=candidates,
                    combiner=combiner,
                    outcome=outcome,
                    decoded=None if history is None else history.decoded,
                    fetch=None if history is None else history.fetch,
                )
        except (FedtrailError, *NOT_GIVEN) as exc:
            unchecked = ", ".join(s[:10] for s in peer.screened)
            audit.add(
                SCREEN,
                False,
                f"the public screen cannot be recomputed: {exc}"
                + (f"; dropScreened zeroed {unchecked}, unchecked" if unchecked else ""),
            )
            return
    audit.add(
        *check_public_screen(
            peer,
            outcome,
            marked,
            public=public,
            settled=info.phase == Phase.FINALIZED,
            num_samples=[s.num_samples for s in subs],
            left_out=left_out,
        )
    )


def _settle_left_out(
    audit: RoundAudit,
    peer: PeerRecord,
    terms: RoundTerms | None,
    subs: list[Submission],
    unusable: Mapping[str, Reason],
    unread_at_zero: Mapping[str, int],
) -> None:
    """Passes the ``update.<site>`` check (at its place ``unread_at_zero[site]``) of each
    update this audit cannot read that the round's public screen left out
    (:func:`~fedtrail.protocol.peers.screen_left_out` over this audit's reading: an input, a
    positive peer median, at weight 0 once the updates dropped as withheld are dropped): the
    contract cannot drop it (``NotWeighted``), so it keeps reason OK and weight 0 on the
    honest finalize, adds nothing to the model and is paid nothing (session 62, h-300; before,
    the check failed it as unreadable, reason OK being no unusable reason). Under terms without
    the public screen (with standing), or without ``valuation.references`` \"weighted\" (terms
    written before session 62: absent is the old rule, under which the row fails, so an input
    withheld after the finalize cannot launder a copy of it there; h-307), nothing changes."""
    from fedtrail.protocol.peers import screen_left_out

    if terms is None:
        return
    try:
        valuation = ValuationSettings.from_json(terms.valuation)
    except InvalidLog:
        return
    if not (valuation.public_screen and valuation.standing):
        return
    if valuation.references != WEIGHTED_REFERENCES:
        return  # older terms keep their verdict: absent is the old rule, which fails the row
    try:
        outcome = peer.outcome([s.site for s in subs])
    except InvalidVotes:
        return
    by_key = {address_key(s.site): s.num_samples for s in subs}
    if any(address_key(site) not in by_key for site in outcome.sites):
        return
    counts = [by_key[address_key(site)] for site in outcome.sites]
    for site in screen_left_out(outcome, counts, list(unusable)):
        at = unread_at_zero.get(site)
        if at is None:
            continue
        was = audit.checks[at]
        audit.checks[at] = replace(
            was,
            passed=True,
            detail=was.detail
            + "; left out of the public screen unread (a positive peer median at weight 0, "
            "reason OK, which the contract cannot drop): consistent",
        )


def _check_peers(
    audit: RoundAudit,
    peer: PeerRecord | None,
    terms: RoundTerms | None,
    log: RoundLog | None,
    subs: list[Submission],
) -> None:
    """A peer round's checks (:mod:`fedtrail.auditor.peers`): the votes, their medians, the
    quorum and the validators' reputations, from the chain alone; the standing checks, which
    re-derive an aggregator's accumulated values, do not apply."""
    if peer is None:
        audit.add(
            QUORUM,
            False,
            "the terms or the log say the sites scored this round, but the chain holds an "
            "aggregator round (no peer record)",
        )
        return
    audit.add(*check_votes(peer, None if log is None else log.peer_votes))
    median, outcome = check_median(peer, subs, None if log is None else log.sites)
    audit.add(*median)
    audit.add(*check_quorum(peer, terms))
    audit.add(*check_reputation(peer, outcome))
    if log is not None and log.standing is not None:
        # nothing here checks it, yet the next round valued with standing would continue it:
        # a block of made-up values would wipe or forge every site's record
        audit.add(
            "standing.chain",
            False,
            "a peer round's log has a standing block: the sites scored this round, so the "
            "aggregator accumulated nothing, and a round valued with standing would continue it",
        )
    elif log is not None and log.settings.valuation.standing:
        audit.not_applicable(
            "standing.accumulated",
            "peer round: each validator keeps its own standing on its private split; the "
            "scores follow from the revealed vectors (peers.median)",
        )


def _valuation_checks(
    audit: RoundAudit,
    ledger: Ledger,
    store: ContentStore,
    log: RoundLog,
    terms: RoundTerms | None,
    subs: list[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    spec: ModelSpec | None,
    start_model: Mapping[str, torch.Tensor] | Exception | None = None,
    *,
    declared_noise: frozenset[str] = frozenset(),
    history: _History | None = None,
) -> None:
    """An aggregator round's public valuation checks, under the terms' valuation settings (the
    log's for a round without terms): ``log.components``, the data-free statistics recomputed
    from the decoded updates (:mod:`fedtrail.auditor.components`; not without a model spec to
    decode them, which fails the round elsewhere), and the standing block's checks
    (:mod:`fedtrail.auditor.standing`), whose scores are weighed with the recomputed norms.
    ``declared_noise``: the sites whose updates carry DP parameters (exempt from the free-rider
    screen's white-noise test). ``history``: how the free-rider history reads its references
    (:class:`_History`; default: each fetched from ``store`` in turn)."""
    settings = log.settings.valuation
    if terms is not None:
        try:
            settings = ValuationSettings.from_json(terms.valuation)
        except InvalidLog as exc:
            # whether the round is valued with standing is unknown: nothing can be checked
            audit.add(
                "standing.chain",
                False,
                f"cannot check the standing: the terms' valuation block is invalid ({exc})",
            )
            return
    robust: Recomputed | None = None
    explained = [EXPLANATION_SHIFT_CHECK] if settings.explanation_check else []
    if spec is None:
        names = [
            "log.components",
            "reasons.screen",
            "reasons.public",
            "reasons.oversized",
            *explained,
        ]
        _unchecked(audit, [*names, *(["reasons.free_rider"] if settings.standing else [])], NO_SPEC)
    else:
        check, robust = check_components(log, subs, deltas, unusable, spec, settings)
        audit.add(*check)
        if robust is not None:
            audit.add(*check_screen(subs, robust, settings))
        else:
            _unchecked(
                audit,
                ("reasons.screen",),
                "the updates' statistics cannot be recomputed (log.components)",
            )
        audit.add(*check_public_reasons(subs, unusable, settings))
        if start_model is None:
            _unchecked(
                audit,
                [
                    "reasons.oversized",
                    *explained,
                    *(["reasons.free_rider"] if settings.standing else []),
                ],
                "the start model is unavailable (start_model.hash)",
            )
        else:
            # decoded once for both data-free checks that measure against it
            start: Mapping[str, torch.Tensor] | Exception
            try:
                start = _state(start_model)
            except (FedtrailError, TypeError, ValueError) as exc:
                start = exc
            audit.add(
                *check_oversized(
                    log,
                    subs,
                    deltas,
                    unusable,
                    spec,
                    start,
                    None if robust is None else {k: v.norm for k, v in robust.stats.items()},
                )
                if not isinstance(start, Exception)
                else ("reasons.oversized", False, f"cannot read the start model: {start}")
            )
            if explained:
                audit.add(
                    *check_explanation_shift(
                        store, log, subs, deltas, unusable, spec, settings, start
                    )
                    if not isinstance(start, Exception)
                    else (EXPLANATION_SHIFT_CHECK, False, f"cannot read the start model: {start}")
                )
            if settings.standing:
                audit.add(
                    *_check_free_riders(
                        ledger,
                        store,
                        log,
                        subs,
                        deltas,
                        unusable,
                        spec,
                        settings,
                        start,
                        declared_noise,
                        history,
                    )
                )
    for check in check_standing(ledger, store, log, settings, subs, robust):
        audit.add(*check)


def _check_free_riders(
    ledger: Ledger,
    store: ContentStore,
    log: RoundLog,
    subs: list[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    spec: ModelSpec,
    settings: ValuationSettings,
    start: Mapping[str, torch.Tensor] | Exception,
    declared_noise: frozenset[str] = frozenset(),
    history: _History | None = None,
) -> tuple[str, bool, str]:
    """``reasons.free_rider`` (:func:`~fedtrail.auditor.components.check_free_riders`) with the
    history's references read as the aggregator reads them. ``start``: the decoded start model,
    or why it could not be decoded; ``declared_noise``: the sites whose updates declare DP-SGD;
    ``history``: as :func:`_valuation_checks`'."""
    from fedtrail.valuation.chained import carried_history, combiner_from

    if isinstance(start, Exception):
        return ("reasons.free_rider", False, f"cannot read the history: {start}")
    try:
        stale_rounds = combiner_from(settings).stale_rounds
    except (FedtrailError, TypeError, ValueError) as exc:
        return ("reasons.free_rider", False, f"cannot read the history: {exc}")
    try:
        carried = carried_history(
            ledger,
            store,
            log.round,
            spec,
            stale_rounds=stale_rounds,
            decoded=None if history is None else history.decoded,
            fetch=None if history is None else history.fetch,
        )
    except (FedtrailError, TypeError, ValueError) as exc:
        return ("reasons.free_rider", False, f"cannot read the history: {exc}")
    return check_free_riders(
        subs,
        deltas,
        unusable,
        spec,
        settings,
        start,
        carried.history.references,
        declared_noise=declared_noise,
        log=log,
    )


def _spec_limit(spec: ModelSpec) -> tuple[int | None, str]:
    """``(read_limit(spec), "")``, or ``(None, why)`` when no store returns a model that large
    or the codec cannot lay it out."""
    try:
        return read_limit(spec), ""
    except ConfigError as exc:
        return None, f"the round's model spec cannot be decoded: {exc}"


def _blob_limit(audit: RoundAudit, spec: ModelSpec | None) -> int | None:
    """:func:`_spec_limit`, recording a failed ``model.size`` check when there is none."""
    if spec is None:
        return None
    limit, problem = _spec_limit(spec)
    if limit is None:
        audit.add("model.size", False, problem)
    return limit


def _spec_from(log: RoundLog) -> ModelSpec:
    """The log's model spec; :class:`InvalidLog` when it is not a valid one (the updates would
    be decoded with a spec the aggregator never used)."""
    try:
        return ModelSpec(**log.settings.model_spec)
    except (TypeError, ValueError, ConfigError) as exc:
        raise InvalidLog(
            f"explanation log's settings/model_spec is not a valid model spec: {exc}"
        ) from None


def _round_spec(
    log: RoundLog | None, terms: RoundTerms | None, no_log: str
) -> tuple[ModelSpec | None, int | None, list[tuple[str, bool, str]]]:
    """The model spec a finalized round's blobs are decoded with, the largest blob it allows
    (:func:`_spec_limit`; None: no spec), and the checks that say so, in their order: the
    log's, which must be a valid one (``log.model_spec``); the terms' when the round has terms
    (``terms.model``; the log's must equal it, ``terms.model`` against the log); neither
    readable: none (no update is decoded with a spec the round may not have used). The spec
    only if the store can return a model under it (``model.size``): the aggregator chose it,
    and a topk8 update of a few bytes per tensor decodes to the spec's full dense size
    (gigabytes, for a spec no round could have trained)."""
    checks: list[tuple[str, bool, str]] = []
    spec: ModelSpec | None = None
    if log is not None:
        try:
            spec = _spec_from(log)
            checks.append(
                ("log.model_spec", True, f"valid model spec {log.settings.spec_hash[:16]}…")
            )
        except InvalidLog as exc:
            spec = None
            checks.append(("log.model_spec", False, str(exc)))
    else:
        checks.append(("log.model_spec", False, f"not checked: {no_log}"))
    if terms is not None:
        try:
            spec = ModelSpec(**terms.model_spec)
        except (TypeError, ValueError, ConfigError) as exc:
            spec = None
            checks.append(("terms.model", False, f"the terms name no valid model spec: {exc}"))
    if spec is None:
        return None, None, checks
    limit, problem = _spec_limit(spec)
    if limit is None:
        checks.append(("model.size", False, problem))
        return None, None, checks
    return spec, limit, checks


def _read_terms(
    store: ContentStore, info: RoundInfo, round_id: int
) -> tuple[RoundTerms | None, tuple[str, bool, str]]:
    """The round's terms fetched by the on-chain hash (None when unusable), and the
    ``terms.hash`` check that says so."""
    return _terms_from(
        _fetch(store, info.terms_cid, info.terms_sha256, MAX_TERMS_BYTES), info, round_id
    )


def _terms_from(
    fetched: Fetched, info: RoundInfo, round_id: int
) -> tuple[RoundTerms | None, tuple[str, bool, str]]:
    """:func:`_read_terms` of the terms' blob fetched (or why not)."""
    if fetched.blob is None:
        return None, ("terms.hash", False, fetched.detail)
    try:
        terms = RoundTerms.from_bytes(fetched.blob)
    except InvalidTerms as exc:
        return None, ("terms.hash", False, f"{info.terms_cid} matches its hash but: {exc}")
    ok = terms.round == round_id
    return terms, (
        "terms.hash",
        ok,
        f"{info.terms_cid} matches its on-chain sha256"
        if ok
        else f"the committed terms name round {terms.round}",
    )


def _replayed_rule(terms: RoundTerms | None, log: RoundLog) -> str | None:
    """The name of the aggregation rule ``global.recomputed`` replays: the terms' (the log's
    settings' for a round without readable terms); None when it is no valid rule."""
    try:
        return AggregationRule.from_terms(
            terms.aggregation_rule if terms is not None else log.settings.aggregation_rule
        ).name
    except (ConfigError, TypeError, ValueError):
        return None


def _check_log(
    audit: RoundAudit,
    log: RoundLog,
    info: RoundInfo,
    subs: list[Submission],
    sites: Mapping[str, SiteInfo],
    ledger: Ledger,
    rule: str | None,
    held: Mapping[str, set[str]],
) -> None:
    """Every log field the chain pins equals the chain (:mod:`fedtrail.auditor.claims`, the
    same marks ``audit log`` prints: each site's weight and weight fraction included), the log
    names the ledger being audited (the valuation replay binds signed evidence to it) and the
    start model by the chain's CID, and its aggregation rule is ``rule``, the one the replay
    uses, and its metrics agree with themselves (:func:`calibration_problems`); the rest is the
    aggregator's claim and not checked here."""
    problems = []
    if log.round != info.id:
        problems.append(f"log is for round {log.round}")
    if (log.ledger.address.lower(), log.ledger.chain_id) != (
        ledger.address.lower(),
        ledger.chain_id,
    ):
        problems.append(
            f"log names ledger {log.ledger.address} on chain {log.ledger.chain_id}, audited: "
            f"{ledger.address} on chain {ledger.chain_id}"
        )
    if log.aggregation.global_sha256 != info.global_sha256:
        problems.append("log names another global model")
    if log.start_model.sha256 != info.start_sha256:
        problems.append("log names another start model")
    if log.start_model.cid != info.start_cid:
        problems.append(
            f"log's start model CID {log.start_model.cid}, the chain's {info.start_cid}"
        )
    if rule is None:
        problems.append(
            f"cannot compare aggregation rule {log.aggregation.rule!r}: the rule replayed is "
            "not a valid one"
        )
    elif log.aggregation.rule != rule:
        problems.append(f"log's aggregation rule {log.aggregation.rule!r}, the replayed {rule!r}")
    by_site = {e.site: e for e in log.sites}
    if set(by_site) != {s.site for s in subs}:
        problems.append("log lists other sites than the chain")
    included = sorted(s.site for s in subs if s.weight > 0)
    if sorted(log.aggregation.included_sites) != included:
        problems.append("log's included_sites are not the sites with on-chain weight")
    # the summary repeats fields checked here (sites, included sites, rule) and the metrics'
    # AUCs (metrics.recomputed, with the validation set): it must be exactly their sentence
    if log.summary != summary_of(log):
        problems.append(
            f"log's summary {_bounded(repr(log.summary))} is not its fields' "
            f"{_bounded(repr(summary_of(log)))}"
        )
    problems += calibration_problems(log)
    # a name the site held from the valuation to the finalize is the registry as the aggregator
    # could have read it for this log (a rename in between, a66: ``held``,
    # RegistryHistory.names_while_finalizing); any other name mismatches
    for s in subs:
        e = by_site.get(s.site)
        if e is None:
            continue
        site = sites.get(s.site)
        if site is not None and e.name != site.name and e.name in held.get(s.site, set()):
            site = replace(site, name=e.name)
        marks = mark_site(e, s, site)
        problems += [
            "{} {} {} != chain {}".format(
                s.site[:10], name, *_unalike(_shown(e, name), marks.chain_values[name])
            )
            for name in marks.mismatches
        ]
    audit.add(
        "log.agrees",
        not problems,
        "; ".join(problems)
        or "log's ledger, start model, sites, names, sample counts, CIDs, hashes, scores, "
        "reasons, weights, weight fractions and included sites equal the chain's (an "
        "explanation that begins with a reason begins with the chain's); its "
        f"aggregation rule {rule!r} is the one replayed; its summary is its fields'; its "
        "metrics' thresholds are their biases', one figure per class, n its validation size",
    )


def check_names(names: Mapping[str, str]) -> tuple[str, bool, str]:
    """``sites.names``: no two sites registered when the round was finalized (``names``:
    address -> name then) have names that read alike (one skeleton under
    :mod:`fedtrail.protocol.names`' rule: ``hospital-a`` and ``hospital-\\u0430``, or ``Site-1``
    and ``site-l``). Weights are paid to addresses and every check compares addresses, but the
    log, the report and every table show names: a coordinator who registers a look-alike
    beside a site lets a reader credit one with the other's weight. Each group is named with
    its addresses, each name with every non-ASCII character escaped (``escaped``), so the
    names differ on screen as they do in bytes."""
    groups = confusable_groups(names)
    if not groups:
        return (
            "sites.names",
            True,
            f"the {len(names)} registered name(s) read apart (no two are confusable)",
        )
    listed = "; ".join(
        " ~ ".join(f"'{escaped(names[a])}' ({a})" for a in group) for group in groups
    )
    return (
        "sites.names",
        False,
        f"registered names read alike (fedtrail.protocol.names.confusable): {listed}; "
        "a reader who goes by name can credit one site with another's weight (addresses are "
        "the identity)",
    )


def _unalike(logged: object, chain: object) -> tuple[str, str]:
    """The two values as a mismatch message shows them: ``repr``, or ``ascii`` when both are
    texts that read alike (one skeleton under :mod:`fedtrail.protocol.names`: ``ô`` and ``o`` +
    U+0302, a Cyrillic ``a`` (U+0430) and a Latin one), so the message shows how they differ
    (a59)."""
    if isinstance(logged, str) and isinstance(chain, str) and confusable(logged, chain):
        return _bounded(ascii(logged)), _bounded(ascii(chain))
    return _bounded(repr(logged)), _bounded(repr(chain))


QUOTED_CHARS = SHOWN_CHARS
"""At most this many characters of a logged or chain value quoted in a mismatch message: the
log is the aggregator's text (up to 32 MiB), so a dishonest one must not fill verify's
output with it (:func:`~fedtrail.protocol.cids.bounded`, as ``audit round`` shows CIDs)."""


def _bounded(quoted: str) -> str:
    return bounded(quoted)


def _shown(e: SiteEntry, name: str) -> object:
    if name in ("cid", "sha256", "num_samples"):
        return getattr(e.update, name)
    if name == "explanation":  # the reason it begins with: the part the chain pins
        return explanation_head(e.explanation)[:80]
    return getattr(e, name)


def _spec_key(model_spec: Mapping[str, Any]) -> str:
    """A model spec as its canonical settings: terms written before ``ModelSpec.to_json``
    (``asdict``, later settings at their defaults included) and after name the same spec
    alike; a spec that is no valid one is compared as written."""
    try:
        return _canonical(ModelSpec(**model_spec).to_json())
    except (TypeError, ValueError, ConfigError):
        return "invalid " + _canonical(model_spec)


def _task_key(terms: RoundTerms) -> tuple[str, str, tuple[str, ...]]:
    return _spec_key(terms.model_spec), terms.spec_hash, terms.class_names


def _spec_binding(terms: RoundTerms) -> str | None:
    """Why the terms' ``spec_hash`` is not the hash of their ``model_spec`` (None when it is,
    or when the spec is no valid one: ``terms.model`` fails for that where the spec is built).
    Nodes refuse such terms (``fedtrail.ml.task.require_terms``); the auditor must too, or
    ``terms.task_fixed`` would compare a hash the spec replayed does not have."""
    try:
        actual = ModelSpec(**terms.model_spec).spec_hash()
    except (TypeError, ValueError, ConfigError):
        return None
    if actual == terms.spec_hash:
        return None
    return (
        f"the terms' spec_hash {terms.spec_hash[:16]}… is not the hash of their model_spec "
        f"({actual[:16]}…)"
    )


def _check_task_fixed(
    audit: RoundAudit, ledger: Ledger, store: ContentStore, terms: RoundTerms
) -> None:
    """``terms.task_fixed``: the federation's task (model spec and class names) and the
    settings that decide payment (:func:`~fedtrail.protocol.terms.payment_differences`: the
    validation split's commitment, the valuation settings, the aggregation rule, the duplicate
    rule) are the ones round 1's terms fixed: an aggregator cannot swap the model, relabel the
    classes, or re-choose per round the split, the standing or the rule that pays the sites."""
    if terms.round == 1:
        audit.add(
            "terms.task_fixed", True, "round 1 fixes the federation's task and payment settings"
        )
        return
    first = ledger.get_round(1)
    fetched = _fetch(store, first.terms_cid, first.terms_sha256, MAX_TERMS_BYTES)
    try:
        if fetched.blob is None:
            raise InvalidTerms(fetched.detail)
        reference = RoundTerms.from_bytes(fetched.blob)
    except InvalidTerms as exc:
        audit.add("terms.task_fixed", False, f"round 1's terms are unreadable: {exc}")
        return
    problems = []
    if _task_key(reference) != _task_key(terms):
        spec_changed = _spec_key(reference.model_spec) != _spec_key(terms.model_spec)
        problems.append(
            f"the task changed since round 1: spec {reference.spec_hash[:16]}… -> "
            f"{terms.spec_hash[:16]}…"
            + (
                f", model spec {_spec_key(reference.model_spec)} -> {_spec_key(terms.model_spec)}"
                if spec_changed
                else ""
            )
            + f", classes {list(reference.class_names)} -> {list(terms.class_names)}"
        )
    # the seed is bound to the chain's round: terms naming another round fail terms.hash
    named = terms if terms.round == audit.round else replace(terms, round=audit.round)
    payment = payment_differences(reference, named)
    if payment:
        problems.append("the payment settings changed since round 1: " + "; ".join(payment))
    audit.add(
        "terms.task_fixed",
        not problems,
        "; and ".join(problems)
        or f"the task round 1 fixed (model spec and spec {terms.spec_hash[:16]}…, "
        f"{len(terms.class_names)} named classes) and its payment settings (validation split, "
        "valuation, aggregation rule, duplicate rule)",
    )


def _canonical(doc: Mapping[str, Any]) -> str:
    """Canonical JSON: equal strings exactly when the documents are equal with their JSON types
    (``true``, ``1`` and ``1.0`` differ, as they do to every parser of the settings)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _compare_valuation(logged: ValuationSettings, terms: RoundTerms) -> tuple[str, bool, str]:
    """``terms.valuation``: the terms' valuation block is settings every party reads
    (:meth:`ValuationSettings.from_json`, as the nodes, the validators, the aggregator and the
    replay do: a number where a flag or an integer is due is refused there, so every honest
    node skips such a round), and the log's settings are the same, compared as canonical JSON
    of both parsed blocks (Python's ``==`` takes ``1 == 1.0 == True``)."""
    name = "terms.valuation"
    try:
        committed = ValuationSettings.from_json(terms.valuation)
    except InvalidLog as exc:
        return name, False, f"the terms' valuation block is not valid settings: {exc}"
    got, want = _canonical(logged.to_json()), _canonical(committed.to_json())
    return (
        name,
        got == want,
        "valuation settings are the committed ones"
        if got == want
        else f"log's valuation {got} != terms' {want}",
    )


def _check_limits(audit: RoundAudit, terms: RoundTerms, accept: ThresholdLimits) -> None:
    """``terms.limits``: no valuation threshold in the terms is stricter than ``accept``, nor
    looser than ``accept.loosest``, and a model with running statistics combines them by a rule
    ``accept.statistics`` takes. A round replayed bit for bit under thresholds that flag
    honest updates (a ``stale_cosine`` of 0.5, a ``max_norm_z`` of 0.1), or that pay copies,
    zero updates or inflated counts (``stale_cosine`` 1.0, ``free_rider_norm`` 0,
    ``max_sample_ratio`` 1e9), or that average a BatchNorm model's statistics, would pass every
    other check; the sites' software refuses to train under them unless the site widened its
    ``[accept]`` (then the auditor is given the same table: ``audit verify --accept``).
    Thresholds or a rule that cannot be read fail too: no honest aggregator writes them, and
    the sites refuse them (a peer round is not replayed through the combiner, so nothing else
    would say so). A valuation block that is not valid settings at all is ``terms.valuation``'s
    to fail: then this check is not applicable unless the statistics already fail it. Payment
    settings outside ``accept`` are named without failing it (:func:`_payment_note`)."""
    from fedtrail.valuation.chained import combiner_from

    name = "terms.limits"
    problems = []
    statistics = _statistics_breach(terms, accept)
    if statistics:
        problems.append(statistics)
    try:
        settings = ValuationSettings.from_json(terms.valuation)
    except InvalidLog as exc:  # terms.valuation fails it
        if not problems:
            audit.not_applicable(name, f"the terms' valuation settings are not valid: {exc}")
            return
        settings = None
    try:
        combiner = None if settings is None else combiner_from(settings)
    except ConfigError as exc:
        problems.append(f"the terms' valuation thresholds are not valid settings: {exc}")
        combiner = None
    if combiner is not None:
        stricter = accept.breaches(combiner, terms.duplicates)
        looser = accept.loosest.breaches(combiner, terms.duplicates)
        if stricter:
            problems.append("thresholds stricter than the sites accept: " + "; ".join(stricter))
        if looser:
            problems.append("thresholds looser than the sites accept: " + "; ".join(looser))
    note = "" if settings is None else _payment_note(terms, settings, accept)
    audit.add(
        name,
        not problems,
        (
            "; and ".join(problems)
            or "no valuation threshold is stricter or looser than the sites accept"
        )
        + note,
    )


def _payment_note(terms: RoundTerms, settings: ValuationSettings, accept: ThresholdLimits) -> str:
    """The terms' payment settings outside ``accept``
    (:meth:`~fedtrail.valuation.limits.ThresholdLimits.payment_breaches`: standing off,
    leave-one-out, a freezing clip norm...), as a note on ``terms.limits`` that does not fail
    it: only a site's own table says whether it opted in (``per_round``, ``methods``,
    ``rules``...), and federations that chose such settings with consenting sites (per-round
    valuation, leave-one-out) would otherwise fail every round for an auditor not handed the
    sites' table. Empty when none is outside (or the rule is ``terms.rule``'s to report)."""
    try:
        rule = AggregationRule.from_terms(terms.aggregation_rule)
    except (TypeError, ValueError, ConfigError):
        return ""
    breaches = accept.payment_breaches(rule, settings)
    if not breaches:
        return ""
    return (
        "; noted, not failed: payment settings an honest site's node refuses unless its "
        "[accept] opts in: " + "; ".join(breaches)
    )


def _statistics_breach(terms: RoundTerms, accept: ThresholdLimits) -> str | None:
    """Why the terms' running-statistics rule is not one the sites accept
    (:func:`~fedtrail.valuation.limits.statistics_refusal`), or why it cannot be read; None when
    it is accepted or the model has no running statistics. An invalid model spec is
    ``terms.model``'s to report."""
    from fedtrail.valuation.limits import statistics_refusal

    try:
        spec = ModelSpec(**terms.model_spec)
    except (TypeError, ValueError, ConfigError):
        return None
    try:
        rule = AggregationRule.from_terms(terms.aggregation_rule)
    except (TypeError, ValueError, ConfigError) as exc:
        return f"the terms' aggregation rule is not valid: {exc}"
    return statistics_refusal(accept, rule, running_statistics=bool(spec.statistic_names()))


def _check_windows(
    info: RoundInfo, terms: RoundTerms, accept: ThresholdLimits
) -> tuple[str, bool, str]:
    """``terms.windows``: the commit and reveal windows the chain gave the sites are exactly
    the ones the terms promised: the commit window (``commitDeadline - openedAt``, the opening
    block's time) is ``commit_seconds`` and the reveal window (``revealDeadline -
    commitDeadline``) ``reveal_seconds``. The contract sets both deadlines from the opening
    block and the lengths it is given, so an honest open has no slack to allow for. (A peer
    round's score windows are ``peers.quorum``'s, exact too.) A commit window shorter than
    ``accept``'s ``min_commit_seconds`` fails too (attack a43: round 1's window, which bounds
    every later round's, opened at the contract's minimum shuts out the slowest sites; honest
    nodes decline it, ``terms.declined``)."""
    from fedtrail.valuation.limits import window_refusal

    problems = window_differences(
        terms,
        opened_at=info.opened_at,
        commit_deadline=info.commit_deadline,
        reveal_deadline=info.reveal_deadline,
    )
    short = window_refusal(accept, terms)
    if short is not None:
        problems.append(short.replace("this site accepts", "the sites accept"))
    commit = info.commit_deadline - info.opened_at
    reveal = info.reveal_deadline - info.commit_deadline
    return (
        "terms.windows",
        not problems,
        "; ".join(problems)
        or f"commit window {commit} s (terms: {terms.commit_seconds} s) and reveal window "
        f"{reveal} s are the committed ones",
    )


def _check_declined(
    ledger: Ledger,
    info: RoundInfo,
    terms: RoundTerms | None,
    accept: ThresholdLimits,
    every: Sequence[Submission] | None = None,
    registry: Sequence[SiteInfo] | None = None,
) -> tuple[str, bool, str]:
    """``terms.declined``: which sites declared on chain that they refuse the round's
    committed terms, and why (:meth:`~fedtrail.ledger.Ledger.declines`: a site's node commits
    a :func:`~fedtrail.ledger.decline_commitment` instead of an update). Before, a refusal
    left no trace: an aggregator could write terms some sites refuse (payment settings outside
    their ``[accept]``, a DP delta outside their bounds, too short a commit window) and pay the
    rest, and the round read as one those sites missed (attack a42). It fails when a site
    declined for a reason ``accept`` (the auditor's table of what the sites accept) confirms:
    settings it refuses (:func:`~fedtrail.valuation.consent.unrunnable`), a commit window
    below its ``min_commit_seconds`` (:func:`~fedtrail.valuation.limits.window_refusal`) or
    chain windows that are not the terms' (a peer round's score windows included, and a round
    opened on chain as another kind than the terms name, :func:`~fedtrail.protocol.terms.
    valuation_mode_difference`: nodes decline both since a132/a133), in a finalized round that
    paid someone. A ``windows`` decline where the chain's windows are the terms' stays named,
    not confirmed. Any other
    decline is named, not failed (in a cancelled round nobody was paid): only the site's own
    table says what it refuses, and a site may decline any round. Commitments never
    revealed that are no decline are counted apart. ``every`` (the round's commitments,
    :meth:`~fedtrail.ledger.Ledger.get_submissions` with ``include_unrevealed``) and
    ``registry`` (:meth:`~fedtrail.ledger.Ledger.get_sites`): the caller's reads, read here
    when not given."""
    from fedtrail.valuation.consent import unrunnable
    from fedtrail.valuation.limits import window_refusal

    sites = ledger.get_sites() if registry is None else registry
    names = {s.address: s.name for s in sites}
    if every is None:  # one read for all three
        every = ledger.get_submissions(info.id, include_unrevealed=True)
    declines = declines_among(every, info.id, info.terms_sha256)
    silent = sum(1 for s in every if not s.revealed and s.site not in declines)
    tail = f"; {silent} other commitment(s) never revealed" if silent else ""
    if not declines:
        return "terms.declined", True, f"no site declared it refuses the round's terms{tail}"
    confirmed: dict[Decline, str | None] = {}
    if terms is not None:
        confirmed[Decline.UNACCEPTED] = unrunnable(terms, accept)
        confirmed[Decline.SHORT_WINDOW] = window_refusal(accept, terms)
        # the peer record, read (one request) only to weigh a windows decline
        windowed = Decline.WINDOWS in declines.values()
        peer = ledger.get_peer_round(info.id) if windowed else None
        windows = opening_differences(terms, info, peer)
        if windowed:
            mode = valuation_mode_difference(terms, peer_round=peer is not None)
            windows += [] if mode is None else [mode]
        confirmed[Decline.WINDOWS] = "; ".join(windows) or None
    ordered = sorted(declines.items(), key=lambda kv: int(kv[0], 16))
    listed = "; ".join(
        f"{shown_name(names.get(site, '')) or site} ({site[:10]}…): {reason.label}"
        for site, reason in ordered
    )
    why = {
        f"{reason.label}: {confirmed[reason]}"
        for _, reason in ordered
        if confirmed.get(reason) is not None
    }
    head = (
        f"{len(declines)} of the {info.active_at_open} site(s) active at open declared on chain "
        f"that they refuse these terms: {listed}{tail}"
    )
    paid = info.phase == Phase.FINALIZED and any(s.revealed and s.weight > 0 for s in every)
    if why and paid:
        return (
            "terms.declined",
            False,
            f"{head}; this audit's [accept] refuses them too ({'; '.join(sorted(why))}): the "
            "round paid only the sites that took terms the others refused",
        )
    return "terms.declined", True, f"noted, not failed: {head}"


def _move_words(kind: str, value: int | None) -> str:
    """A :class:`~fedtrail.ledger.RegistryMove` in words."""
    if kind == "cap":
        return f"cap set to {value}"
    if kind == "budget":
        return f"privacy budget set to {value} micro-epsilon"
    return "removed"


def _check_registry(
    ledger: Ledger,
    info: RoundInfo,
    every: Sequence[Submission],
    registry: Sequence[SiteInfo],
    history: RegistryHistory,
    *,
    peer: tuple[PeerRecord | None] | None = None,
) -> tuple[str, bool, str]:
    """``sites.registry``: no site the round's participants counted (registered when it opened) was
    kept out of it by the coordinator's own move inside its windows. A removal, a cap or a privacy
    budget set after ``RoundOpened`` applies to the site's next commitment or reveal
    (:meth:`~fedtrail.ledger.RegistryHistory.registry_moves`, from ``history``), so one made once a
    site has committed voids its commitment: its reveal reverts (removed, even if registered again
    at once; a cap below the count its commitment binds; a budget on a site that revealed plainly),
    and the round read as one the site committed to and never revealed, its own failure (attack
    a65). In a peer round a removal up to the score reveal deadline voids a validator's committed
    score vector the same way, and with it its say in every median. Fails a finalized round that
    paid someone when a participant was moved so by the reveal deadline and revealed no update
    (declaring no refusal), or, in a peer round, by the score reveal deadline and revealed no score
    vector; a move on a site that revealed anyway (a cap raised, a budget changed) is named, not
    failed. ``peer``: the round's peer record as the audit read it (:func:`read_peer_record`;
    default: its score reveal deadline read here)."""
    record = ledger.get_peer_round(info.id) if peer is None else peer[0]
    until = info.reveal_deadline if record is None else record.score_reveal_deadline
    moves = history.registry_moves(info.id, max(until, info.reveal_deadline))
    if not moves:
        return "sites.registry", True, "no site's registry entry changed inside the round"
    names = {s.address: s.name for s in registry}
    revealed = {s.site for s in every if s.revealed}
    # a decline for a cap below the site's data is the coordinator's move, not the site's
    # refusal: such a site lost its update as one with no commitment did (a96)
    declined = {
        site
        for site, reason in declines_among(every, info.id, info.terms_sha256).items()
        if reason is not Decline.CAP_BELOW_DATA
    }
    voted: set[str] | None = set()
    if record is not None:
        try:
            voted = {v.validator for v in ledger.peer_votes(info.id)}
        except LedgerError:  # peers.votes fails it; no vote is then read as voided here
            voted = None
    participants = history.participants_at_open(info.id)
    by_site: dict[str, list[str]] = {}
    voided: dict[str, set[str]] = {}  # site -> what it could no longer reveal
    for move in moves:
        if move.site not in participants:
            continue
        by_site.setdefault(move.site, []).append(_move_words(move.kind, move.value))
        lost = voided.setdefault(move.site, set())
        if move.timestamp <= info.reveal_deadline and move.site not in revealed | declined:
            lost.add("no update")
        if (
            voted is not None
            and record is not None
            and move.kind == "removed"
            and move.site not in voted
        ):
            lost.add("no score vector")

    def listed(sites: Sequence[str], with_lost: bool = False) -> str:
        return "; ".join(
            f"{shown_name(names.get(site, '')) or site} ({site[:10]}…): "
            + ", ".join(by_site[site])
            + (f", then revealed {' and '.join(sorted(voided[site]))}" if with_lost else "")
            for site in sorted(sites, key=lambda a: int(a, 16))
        )

    kept_out = [site for site in by_site if voided[site]]
    others = [site for site in by_site if site not in kept_out]
    paid = info.phase == Phase.FINALIZED and any(s.revealed and s.weight > 0 for s in every)
    note = f"; moved but revealed or declined: {listed(others)}" if others else ""
    if kept_out and paid:
        return (
            "sites.registry",
            False,
            f"the coordinator changed the registry entry of {len(kept_out)} participant(s) "
            f"inside the round: {listed(kept_out, with_lost=True)}{note}; a change made after a "
            "site committed voids its commitment, so the round paid only the others (registry "
            "changes belong between rounds)",
        )
    if not by_site:
        return (
            "sites.registry",
            True,
            "registry changes inside the round touched no site registered when it opened",
        )
    kept = f"kept out, nobody paid: {listed(kept_out, with_lost=True)}" if kept_out else ""
    parts = (kept, note.removeprefix("; "))
    return "sites.registry", True, "noted, not failed: " + "; ".join(p for p in parts if p)


def _check_terms(audit: RoundAudit, log: RoundLog, terms: RoundTerms) -> None:
    """The log's settings repeat the terms committed at open (:data:`TERMS_AGAINST_LOG`)."""
    s = log.settings
    audit.add(
        "terms.rule",
        dict(s.aggregation_rule) == dict(terms.aggregation_rule),
        f"rule {dict(s.aggregation_rule)} is the committed one"
        if dict(s.aggregation_rule) == dict(terms.aggregation_rule)
        else f"log's rule {dict(s.aggregation_rule)} != terms' {dict(terms.aggregation_rule)}",
    )
    audit.add(*_compare_valuation(s.valuation, terms))
    same_val = (log.validation.sha256, log.validation.images) == (
        terms.validation_sha256,
        terms.validation_images,
    )
    audit.add(
        "terms.validation",
        same_val,
        "validation-set hash is the committed one"
        if same_val
        else f"log's validation set {log.validation.sha256[:16]}… is not the committed "
        f"{terms.validation_sha256[:16]}…",
    )
    same_model = (dict(s.model_spec), s.spec_hash, s.seed, tuple(s.class_names)) == (
        dict(terms.model_spec),
        terms.spec_hash,
        terms.seed,
        terms.class_names,
    )
    problems = (
        []
        if same_model
        else ["log's model spec, spec hash, class names or seed differ from the terms'"]
    )
    unbound = _spec_binding(terms)
    if unbound is not None:
        problems.append(unbound)
    audit.add(
        "terms.model",
        not problems,
        "; ".join(problems)
        or "model spec (its hash the terms' spec_hash), class names and seed are the committed "
        "ones",
    )


def _check_terms_reference(log: RoundLog, info: RoundInfo) -> tuple[str, bool, str]:
    """``terms.reference``: the log's terms reference is the chain's (logs written before
    references: absent, which is not a failure). Needs the log, not the terms' bytes."""
    ref = log.settings.terms
    ok = ref is None or (ref.cid, ref.sha256) == (info.terms_cid, info.terms_sha256)
    return (
        "terms.reference",
        ok,
        "log names the committed terms"
        if ref is not None and ok
        else "log predates terms references"
        if ok
        else f"log names terms {ref.sha256[:16]}…, the chain {info.terms_sha256[:16]}…"
        if ref is not None
        else "",
    )


def verify_all(ledger: Ledger, store: ContentStore, **kwargs: Any) -> list[RoundAudit]:
    """Every round opened so far; refuses (``DeploymentMismatch``) a ledger whose event reads
    start after the contract's creation, which would hide events from every check."""
    ledger.check_from_block()
    history = PrivacyHistory(ledger, store)  # each earlier blob's DP parameters read once
    registry = ledger.registry_history()  # every round's names and registry moves, one read
    logs: dict[tuple[str, str], RoundLog | None] = {}  # each round's log fetched once
    models: dict[tuple[str, str], bytes] = {}  # the latest global, the next round's start
    reads = AuditReads()  # logs and terms, and the last rounds' updates for the next history
    return [
        verify_round(
            ledger,
            store,
            r,
            privacy_history=history,
            registry_history=registry,
            logs=logs,
            models=models,
            reads=reads,
            **kwargs,
        )
        for r in range(1, ledger.current_round() + 1)
    ]
