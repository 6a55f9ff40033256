"""The revealed candidates of a round: every revealed update fetched, checked and decoded.

One home for what the aggregator (to value and to aggregate) and every validator site of a peer
round (to score the others' updates) read from the chain and the store before a valuation:

- each revealed submission's blob is fetched by its CID and checked against the sha256 the
  chain holds (a mismatch: TAMPERED);
- it must decode as an update of this round for the federation's model spec, be the codec's
  canonical encoding of its tensors, and carry DP parameters when the round's terms require
  DP-SGD (any failure, or a blob the store cannot return: MALFORMED);
- later copies (in commit order) of an earlier readable update are marked DUPLICATE under the
  terms' duplicate thresholds;
- under terms whose ``dp_spend_check`` is on (:class:`~fedtrail.valuation.combine.Combiner`;
  off in terms written before it), every other readable update's declared privacy spend is
  checked against the DP parameters in its blob
  (:func:`fedtrail.storage.privacy_spend.check_spend`, what ``audit privacy`` and ``audit
  verify`` recompute): a binding mismatch makes it MALFORMED, its delta kept (a peer round's
  validators may still weight it, and the aggregator then aggregates it as the chain says),
  with the check that failed as its detail;
- under terms whose ``dp_noise_check`` is on, every other readable update that carries DP
  parameters but not the Gaussian noise they add (or is compressed) is MALFORMED the same way
  (:func:`fedtrail.ml.dp_noise.noise_breach`, what ``audit verify``'s ``privacy.noise``
  recomputes).

The submissions come in the ledger's order (ascending site address: the aggregation order and
the order of a peer round's score vectors). A :class:`CandidateCache` keeps each round's fetched
blobs for one process, so a caller that reads the candidates twice (valuation, then finalize)
fetches them once; a restarted process fetches and checks them again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from fedtrail.errors import (
    ConfigError,
    ContentNotFound,
    ContentTooLarge,
    HashMismatch,
    InvalidCid,
    InvalidUpdate,
    NotAFile,
    StoreError,
)
from fedtrail.ledger import Ledger, Submission
from fedtrail.ml.dp_noise import noise_breach
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.peers import address_key
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.roundlog import InvalidLog, ValuationSettings
from fedtrail.protocol.terms import DuplicateRule, RoundTerms
from fedtrail.storage.canonical import check_canonical_update
from fedtrail.storage.codec import decode_update, default_max_bytes
from fedtrail.storage.privacy_history import PrivacyHistory
from fedtrail.storage.privacy_spend import check_spend, declared_by_site
from fedtrail.storage.store import ContentStore
from fedtrail.valuation.base import Candidate
from fedtrail.valuation.freeride import duplicate_residual_z

__all__ = [
    "CandidateCache",
    "Fetched",
    "checks_noise",
    "checks_spend",
    "fetch_update",
    "noise_rule",
    "pin_readable",
    "prefetch_revealed",
    "revealed_candidates",
]

log = logging.getLogger("fedtrail.valuation.candidates")

Fetched = tuple[Reason, str, dict[str, torch.Tensor] | None]
"""One fetched update: its status (OK, TAMPERED or MALFORMED), why, and its delta when OK."""

Read = tuple[Reason, str, dict[str, torch.Tensor] | None, DpParams | None, str | None]
"""A fetched update as the cache keeps it: :data:`Fetched`, the DP parameters its blob
carries (None: none, or it was not read) and why it fails the noise check
(:func:`~fedtrail.ml.dp_noise.noise_breach`; None: it passes, carries no DP parameters, or was
not read)."""


FETCH_THREADS = 8
"""Updates of a round fetched at once (store requests in flight)."""

FETCH_WINDOW = 4 * FETCH_THREADS
"""Updates fetched before they are decoded (the blobs held in memory at once)."""


@dataclass
class CandidateCache:
    """Fetched updates by round, then by (site, sha256), and the spend verdicts of the readable
    ones (why one is scored 0, or None); only the latest round is kept. A verdict follows from
    the blob, the round's terms and ``PrivacySpent`` events fixed by the reveal, so it is read
    once per process (not at every valuation poll and again at finalize)."""

    rounds: dict[int, dict[tuple[str, str], Read]] = field(default_factory=dict)
    spends: dict[int, dict[tuple[str, str], str | None]] = field(default_factory=dict)
    copies: dict[int, tuple[Hashable, dict[str, str]]] = field(default_factory=dict)

    def of(self, round_id: int) -> dict[tuple[str, str], Read]:
        """The round's entries; entries of earlier rounds are dropped."""
        for old in [r for r in self.rounds if r < round_id]:
            del self.rounds[old]
        for old in [r for r in self.spends if r < round_id]:
            del self.spends[old]
        for old in [r for r in self.copies if r < round_id]:
            del self.copies[old]
        return self.rounds.setdefault(round_id, {})

    def duplicates(
        self, round_id: int, entries: Sequence[Entry], rule: DuplicateRule
    ) -> dict[str, str]:
        """:func:`~fedtrail.protocol.duplicates.find_duplicates` of the round's ``entries``
        under ``rule``, computed once for the same inputs (the valuation and the finalize of
        a round both ask it: 20-40 ms of a 5-site round's CPU, issue 18). The inputs are
        each entry's site, commit order, sha256, whether it has a delta and whether it
        declares noise: a delta here is the one decoded from the blob of that sha256 (this
        cache's entry), so the same key means the same deltas; a new reveal, another status
        or another rule computes it again. After :meth:`of`."""
        key = (
            rule,
            tuple(
                (e.site, e.commit_order, e.sha256, e.delta is not None, e.noise_declared)
                for e in entries
            ),
        )
        found = self.copies.get(round_id)
        if found is not None and found[0] == key:
            return dict(found[1])
        copies = find_duplicates(entries, rule, whiteness=duplicate_residual_z)
        self.copies[round_id] = (key, dict(copies))
        return copies

    def verdicts(self, round_id: int) -> dict[tuple[str, str], str | None]:
        """The round's spend verdicts (after :meth:`of`, which drops earlier rounds')."""
        return self.spends.setdefault(round_id, {})


def fetch_update(
    store: ContentStore,
    sub: Submission,
    *,
    round_id: int,
    terms: RoundTerms,
    spec: ModelSpec,
    logger: logging.Logger = log,
) -> Fetched:
    """Fetches and checks one revealed update (see the module docstring); never raises for
    bad content: the status says what was wrong (logged as a warning on ``logger``)."""
    status, detail, delta, _, _ = _read_update(
        store, sub, round_id=round_id, terms=terms, spec=spec, logger=logger
    )
    return status, detail, delta


def _read_update(
    store: ContentStore,
    sub: Submission,
    *,
    round_id: int,
    terms: RoundTerms,
    spec: ModelSpec,
    logger: logging.Logger = log,
) -> Read:
    """:func:`fetch_update`, with the DP parameters of a readable blob."""
    blob = _get_blob(store, sub, round_id=round_id, spec=spec, logger=logger)
    if not isinstance(blob, bytes):
        return blob
    return _check_blob(blob, sub, round_id=round_id, terms=terms, spec=spec, logger=logger)


def _get_blob(
    store: ContentStore,
    sub: Submission,
    *,
    round_id: int,
    spec: ModelSpec,
    logger: logging.Logger = log,
    absent_raises: bool = False,
) -> bytes | Read:
    """``sub``'s blob as the store gives it (checked against its sha256), or the :data:`Read`
    of a store that does not give it (TAMPERED or MALFORMED, as :func:`_read_update`); with
    ``absent_raises``, a blob the store does not hold (yet) raises its ``ContentNotFound``."""
    try:
        # No more than the spec allows, before any byte is read: a site must not make every
        # reader buffer (and hash) up to the store's general limit, FETCH_THREADS at a time.
        return store.get(sub.cid, sub.sha256, max_bytes=default_max_bytes(spec))
    except HashMismatch as exc:
        status, detail = Reason.TAMPERED, str(exc)
    except (InvalidCid, ContentTooLarge, NotAFile) as exc:
        status, detail = Reason.MALFORMED, str(exc)
    except ContentNotFound as exc:
        if absent_raises:
            raise
        status, detail = Reason.MALFORMED, f"update not retrievable: {exc}"
    logger.warning("round %d: %s's update unusable: %s", round_id, sub.site, detail)
    return status, detail, None, None, None


def _check_blob(
    blob: bytes,
    sub: Submission,
    *,
    round_id: int,
    terms: RoundTerms,
    spec: ModelSpec,
    logger: logging.Logger = log,
) -> Read:
    """The :data:`Read` of ``sub``'s fetched ``blob``: decoded, canonical, DP as the terms
    require (MALFORMED otherwise, as :func:`_read_update`)."""
    try:
        delta, meta = decode_update(blob, spec=spec, expected_round=round_id)
        check_canonical_update(blob, spec=spec, expected_round=round_id, meta=meta)
        if meta.dp is None and terms.privacy is not None and terms.privacy.required:
            # Not an update these terms accept: verify's privacy.required would fail.
            raise InvalidUpdate("the terms require DP-SGD and the update holds no DP parameters")
        rule = noise_rule(terms)
        noise = noise_breach(delta, meta.dp, sub.num_samples, meta.compression.method, rule)
        if noise is not None and rule:  # logged once per fetch, as scored
            logger.warning("round %d: %s's update scored 0: %s", round_id, sub.site, noise)
        return Reason.OK, "", delta, meta.dp, noise
    except InvalidUpdate as exc:
        status, detail = Reason.MALFORMED, str(exc)
    logger.warning("round %d: %s's update unusable: %s", round_id, sub.site, detail)
    return status, detail, None, None, None


def checks_noise(terms: RoundTerms) -> bool:
    """Whether ``terms`` score an update that lacks the noise its DP parameters add 0 (their
    thresholds' ``dp_noise_check``; off in terms written before it), as :func:`checks_spend`."""
    return bool(noise_rule(terms))


def noise_rule(terms: RoundTerms) -> int:
    """``terms``' ``dp_noise_check``: 0 off (terms written before it, or valuation settings
    that cannot be read), 1 the noise check at the claimed count, 2 at a count of at most
    :data:`~fedtrail.ml.dp_noise.NOISE_COUNT` (:func:`~fedtrail.ml.dp_noise.credited_samples`)."""
    from fedtrail.valuation.chained import combiner_from

    try:
        return int(combiner_from(ValuationSettings.from_json(terms.valuation)).dp_noise_check)
    except (InvalidLog, ConfigError):
        return 0


def checks_spend(terms: RoundTerms) -> bool:
    """Whether ``terms`` score an update whose declared privacy spend its blob contradicts 0
    (their thresholds' ``dp_spend_check``; off in terms written before it). Valuation settings
    that cannot be read check nothing here: the valuation itself refuses them."""
    from fedtrail.valuation.chained import combiner_from

    try:
        return bool(combiner_from(ValuationSettings.from_json(terms.valuation)).dp_spend_check)
    except (InvalidLog, ConfigError):
        return False


def revealed_candidates(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    *,
    terms: RoundTerms,
    spec: ModelSpec,
    cache: CandidateCache | None = None,
    logger: logging.Logger = log,
    originals: Collection[int] | None = None,
    submissions: Sequence[Submission] | None = None,
) -> list[tuple[Submission, Candidate]]:
    """Every revealed update of ``round_id`` (ascending site address) with its decoded delta,
    or the reason it cannot be used; later copies (in commit order) of an earlier update are
    marked DUPLICATE. ``terms`` are the round's committed terms (the duplicate thresholds, the
    DP requirement); ``spec`` the federation's model. ``originals``: the only updates (address
    keys) that may be originals, in a valued peer round the ones the chain says were read while
    it was scored (:func:`~fedtrail.protocol.peers.screen_inputs`, as ``audit verify`` reads
    them); None: every update that reads. ``submissions``: the round's revealed updates as the
    caller just read them (:meth:`Ledger.get_submissions`' answer, e.g. in its poll's batch),
    else read here."""
    cache = cache if cache is not None else CandidateCache()
    entries = cache.of(round_id)
    subs = ledger.get_submissions(round_id) if submissions is None else list(submissions)
    missing = {(sub.site, sub.sha256): sub for sub in subs if (sub.site, sub.sha256) not in entries}
    if missing:
        # Fetched concurrently (the store's latency, not its bandwidth, dominates), then
        # decoded and checked in this thread, FETCH_WINDOW blobs at a time (the memory held):
        # on a busy machine a decode in the fetch threads competes with the other fetches for
        # the GIL and the cores the store serves them on. Each result depends on its own
        # bytes only, so the order of completion changes nothing.
        def fetch(sub: Submission) -> bytes | Read:
            return _get_blob(store, sub, round_id=round_id, spec=spec, logger=logger)

        todo = list(missing.items())
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(missing))) as pool:
            for start in range(0, len(todo), FETCH_WINDOW):
                window = todo[start : start + FETCH_WINDOW]
                blobs = list(pool.map(fetch, [sub for _, sub in window]))
                for (key, sub), blob in zip(window, blobs, strict=True):
                    entries[key] = (
                        _check_blob(
                            blob, sub, round_id=round_id, terms=terms, spec=spec, logger=logger
                        )
                        if isinstance(blob, bytes)
                        else blob
                    )
    fetched = [(sub, *entries[(sub.site, sub.sha256)]) for sub in subs]
    copies = cache.duplicates(
        round_id,
        [
            Entry(
                sub.site,
                sub.commit_order,
                sub.sha256,
                delta
                if status is Reason.OK and (originals is None or address_key(sub.site) in originals)
                else None,
                noise_declared=dp is not None,
            )
            for sub, status, _, delta, dp, _ in fetched
        ],
        terms.duplicates,
    )
    check = checks_spend(terms)
    noise_check = checks_noise(terms)
    verdicts = cache.verdicts(round_id)
    spends: SpendChecker | None = None
    out = []
    for sub, status, detail, delta, dp, noise in fetched:
        if status is Reason.OK and sub.site in copies:
            status = Reason.DUPLICATE
            detail = f"repeats the update {copies[sub.site]} committed earlier"
        key = (sub.site, sub.sha256)
        if status is Reason.OK and check:
            if key not in verdicts:
                spends = spends or SpendChecker(ledger, store, round_id, terms)
                verdicts[key] = spends.breach(sub, dp)
                if verdicts[key] is not None:
                    logger.warning(
                        "round %d: %s's update scored 0: %s", round_id, sub.site, verdicts[key]
                    )
            broken = verdicts[key]
            if broken is not None:
                status, detail = Reason.MALFORMED, broken
        if status is Reason.OK and noise_check and noise is not None:
            status, detail = Reason.MALFORMED, noise
        out.append(
            (
                sub,
                Candidate(
                    site=sub.site,
                    num_samples=sub.num_samples,
                    delta=delta,
                    status=status,
                    detail=detail,
                    noise_declared=dp is not None,
                ),
            )
        )
    return out


def prefetch_revealed(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    *,
    terms: RoundTerms,
    spec: ModelSpec,
    cache: CandidateCache,
    logger: logging.Logger = log,
) -> int:
    """Fetches and checks into ``cache`` the updates of ``round_id`` revealed so far that it
    lacks, as :func:`revealed_candidates` would (same checks, same entries), so that a later
    :func:`revealed_candidates` fetches only the reveals that landed after it: called while
    the reveal window is open, the fetches are off the round's critical path. An update the
    store does not hold yet is not recorded (it may arrive before the deadline: the read once
    the round is ready decides). Returns how many updates it recorded."""
    entries = cache.of(round_id)
    missing = [
        sub for sub in ledger.get_submissions(round_id) if (sub.site, sub.sha256) not in entries
    ]
    if not missing:
        return 0

    def fetch(sub: Submission) -> bytes | Read | None:
        try:
            return _get_blob(
                store, sub, round_id=round_id, spec=spec, logger=logger, absent_raises=True
            )
        except ContentNotFound:
            return None

    done = 0
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(missing))) as pool:
        for start in range(0, len(missing), FETCH_WINDOW):
            window = missing[start : start + FETCH_WINDOW]
            for sub, blob in zip(window, pool.map(fetch, window), strict=True):
                if blob is None:
                    continue
                entries[(sub.site, sub.sha256)] = (
                    _check_blob(blob, sub, round_id=round_id, terms=terms, spec=spec, logger=logger)
                    if isinstance(blob, bytes)
                    else blob
                )
                done += 1
    return done


class SpendChecker:
    """One round's declared privacy spends, checked against the updates' DP parameters
    (:func:`~fedtrail.storage.privacy_spend.check_spend`); the chain's events are read once."""

    def __init__(
        self,
        ledger: Ledger,
        store: ContentStore,
        round_id: int,
        terms: RoundTerms,
        history: PrivacyHistory | None = None,
    ) -> None:
        self.round_id = round_id
        self.privacy = terms.privacy
        self.history = history if history is not None else PrivacyHistory(ledger, store)
        self.declared = declared_by_site(ledger.privacy_spends(round_id))

    def breach(self, sub: Submission, params: DpParams | None) -> str | None:
        """Why ``sub``'s readable update, carrying ``params``, is scored 0 (the failed check
        and its detail, as the round log states it); None when its declaration stands."""
        verdict = check_spend(
            self.history,
            round_id=self.round_id,
            site=sub.site,
            params=params,
            declared=self.declared.get(sub.site, 0),
            privacy=self.privacy,
            num_samples=sub.num_samples,
        )
        return verdict.reason if verdict.binding else None


def pin_readable(
    store: ContentStore,
    round_id: int,
    pairs: Sequence[tuple[Submission, Candidate]],
    *,
    logger: logging.Logger = log,
) -> set[str]:
    """Pins every update of ``pairs`` that was read and decoded, in ``store``; the CIDs pinned.
    The aggregator and every validator keep what they scored, so a site that withdraws its blob
    once weighted cannot make it unreadable to the aggregator or to an auditor. A pin that
    fails is logged, not raised: the caller's round goes on."""
    pinned: set[str] = set()
    for sub, cand in pairs:
        if cand.delta is None or sub.cid in pinned:
            continue
        try:
            store.pin(sub.cid)
        except StoreError as exc:
            logger.warning(
                "round %d: cannot pin %s's update %s: %s", round_id, sub.site, sub.cid, exc
            )
            continue
        pinned.add(sub.cid)
    return pinned
