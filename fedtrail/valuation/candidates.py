"""The revealed candidates of a round: every revealed update fetched, checked and decoded.

One home for what the aggregator (to value and to aggregate) and every validator site of a peer
round (to score the others' updates) read from the chain and the store before a valuation:

- each revealed submission's blob is fetched by its CID and checked against the sha256 the
  chain holds (a mismatch: TAMPERED);
- it must decode as an update of this round for the federation's model spec, be the codec's
  canonical encoding of its tensors, and carry DP parameters when the round's terms require
  DP-SGD (any failure, or a blob the store cannot return: MALFORMED);
- later copies (in commit order) of an earlier readable update are marked DUPLICATE under the
  terms' duplicate thresholds.

The submissions come in the ledger's order (ascending site address: the aggregation order and
the order of a peer round's score vectors). A :class:`CandidateCache` keeps each round's fetched
blobs for one process, so a caller that reads the candidates twice (valuation, then finalize)
fetches them once; a restarted process fetches and checks them again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from fedtrail.errors import (
    ContentNotFound,
    ContentTooLarge,
    HashMismatch,
    InvalidCid,
    InvalidUpdate,
    NotAFile,
    StoreError,
)
from fedtrail.ledger import Ledger, Submission
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import RoundTerms
from fedtrail.storage.canonical import check_canonical_update
from fedtrail.storage.codec import decode_update, default_max_bytes
from fedtrail.storage.store import ContentStore
from fedtrail.valuation.base import Candidate

__all__ = ["CandidateCache", "Fetched", "fetch_update", "pin_readable", "revealed_candidates"]

log = logging.getLogger("fedtrail.valuation.candidates")

Fetched = tuple[Reason, str, dict[str, torch.Tensor] | None]
"""One fetched update: its status (OK, TAMPERED or MALFORMED), why, and its delta when OK."""


FETCH_THREADS = 8
"""Updates of a round fetched at once (store requests in flight)."""


@dataclass
class CandidateCache:
    """Fetched updates by round, then by (site, sha256); only the latest round is kept."""

    rounds: dict[int, dict[tuple[str, str], Fetched]] = field(default_factory=dict)

    def of(self, round_id: int) -> dict[tuple[str, str], Fetched]:
        """The round's entries; entries of earlier rounds are dropped."""
        for old in [r for r in self.rounds if r < round_id]:
            del self.rounds[old]
        return self.rounds.setdefault(round_id, {})


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
    try:
        # No more than the spec allows, before any byte is read: a site must not make every
        # reader buffer (and hash) up to the store's general limit, FETCH_THREADS at a time.
        blob = store.get(sub.cid, sub.sha256, max_bytes=default_max_bytes(spec))
        delta, meta = decode_update(blob, spec=spec, expected_round=round_id)
        check_canonical_update(blob, spec=spec, expected_round=round_id, meta=meta)
        if meta.dp is None and terms.privacy is not None and terms.privacy.required:
            # Not an update these terms accept: verify's privacy.required would fail.
            raise InvalidUpdate("the terms require DP-SGD and the update holds no DP parameters")
        return Reason.OK, "", delta
    except HashMismatch as exc:
        status, detail = Reason.TAMPERED, str(exc)
    except (InvalidUpdate, InvalidCid, ContentTooLarge, NotAFile) as exc:
        status, detail = Reason.MALFORMED, str(exc)
    except ContentNotFound as exc:
        status, detail = Reason.MALFORMED, f"update not retrievable: {exc}"
    logger.warning("round %d: %s's update unusable: %s", round_id, sub.site, detail)
    return status, detail, None


def revealed_candidates(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    *,
    terms: RoundTerms,
    spec: ModelSpec,
    cache: CandidateCache | None = None,
    logger: logging.Logger = log,
) -> list[tuple[Submission, Candidate]]:
    """Every revealed update of ``round_id`` (ascending site address) with its decoded delta,
    or the reason it cannot be used; later copies (in commit order) of an earlier update are
    marked DUPLICATE. ``terms`` are the round's committed terms (the duplicate thresholds, the
    DP requirement); ``spec`` the federation's model."""
    entries = (cache or CandidateCache()).of(round_id)
    subs = ledger.get_submissions(round_id)
    missing = {(sub.site, sub.sha256): sub for sub in subs if (sub.site, sub.sha256) not in entries}
    if missing:
        # Fetched concurrently: each update is a few store round trips (probe, stat, cat) and
        # a decode, and the store's latency, not its bandwidth, dominates. Each result depends
        # on its own bytes only, so the order of completion changes nothing.
        def fetch(sub: Submission) -> Fetched:
            return fetch_update(
                store, sub, round_id=round_id, terms=terms, spec=spec, logger=logger
            )

        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(missing))) as pool:
            for key, result in zip(missing, pool.map(fetch, missing.values()), strict=True):
                entries[key] = result
    fetched = [(sub, *entries[(sub.site, sub.sha256)]) for sub in subs]
    copies = find_duplicates(
        [
            Entry(sub.site, sub.commit_order, sub.sha256, delta if status is Reason.OK else None)
            for sub, status, _, delta in fetched
        ],
        terms.duplicates,
    )
    out = []
    for sub, status, detail, delta in fetched:
        if status is Reason.OK and sub.site in copies:
            status = Reason.DUPLICATE
            detail = f"repeats the update {copies[sub.site]} committed earlier"
        out.append(
            (
                sub,
                Candidate(
                    site=sub.site,
                    num_samples=sub.num_samples,
                    delta=delta,
                    status=status,
                    detail=detail,
                ),
            )
        )
    return out


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
