"""A round's :class:`~fedtrail.valuation.standing.History`, read from public data.

Valuation with ``standing`` needs what earlier rounds left: each site's accumulated value and
the earlier updates a free-rider could resend. Both are taken from the chain and the store
only, by the one rule here that the aggregator (to score) and the auditor (to check) share:

* the **previous round** is the latest round finalized before this one (a cancelled round
  leaves nothing behind: its values are not carried);
* the **accumulated values** are that round's log's ``standing.after`` (none, and this round is
  the warm-up, when there is no such round); when its log has no standing block (a round
  valued per round, or by the peers), the latest earlier finalized round whose log has one is
  continued instead, and that log is the one the block names (:func:`standing_source`): before,
  one round valued without standing reset every site's record and made the next a warm-up, so
  an aggregator could wipe a demoted site's record with a passing audit. Only when no earlier
  log has a block does the round start the warm-up, continuing the latest finalized round;
* the **references** come from the latest ``stale_rounds`` finalized rounds before this one
  (the round terms' threshold, :class:`~fedtrail.valuation.combine.Combiner`; 1 in logs
  recorded without it), newest first: each round's readable updates (``"<address>'s update of
  round r"``: every revealed update except those scored TAMPERED, MALFORMED, PEER_REJECTED or
  WITHHELD, whose bytes were unusable or refused (:data:`UNREADABLE`); a free-rider's own
  resend counts, so resending the same update again is caught
  again; under that round's terms' ``valuation.references`` ``"weighted"``, not one the chain
  holds at weight 0 with a positive score, :func:`reference_submissions`), then the global
  delta it applied (``"the global delta of round r"``). Cost: the
  stale screen compares each update with every reference, about ``n (n + 1) stale_rounds``
  pairs (one Gram matrix screens them), and the references of ``stale_rounds`` rounds are
  fetched, decoded and held in memory by whoever values or audits the round.

Everything fetched is checked against its on-chain sha256 by the store; a blob that cannot be
fetched or decoded raises (the history must be the same for everyone, so there is no skipping).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Final

import torch

from fedtrail.errors import (
    ConfigError,
    FedtrailError,
    InvalidUpdate,
)
from fedtrail.ledger import Ledger, Submission
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import PeerOutcome, address_key, screen_inputs, screen_left_out
from fedtrail.protocol.roundlog import (
    MAX_LOG_BYTES,
    WEIGHTED_REFERENCES,
    InvalidLog,
    PreviousLog,
    RoundLog,
    Standing,
    ValuationSettings,
)
from fedtrail.protocol.terms import MAX_TERMS_BYTES, InvalidTerms, RoundTerms
from fedtrail.storage.codec import decode_model, decode_update, default_max_bytes
from fedtrail.storage.store import NOT_GIVEN, ContentStore
from fedtrail.valuation.base import Candidate
from fedtrail.valuation.combine import Combiner, RoundValuation, default_combiner
from fedtrail.valuation.round import METHODS, check_game, public_screen
from fedtrail.valuation.standing import History, global_label, reference_label

__all__ = [
    "LATER_THRESHOLDS",
    "UNREADABLE",
    "UNRECORDED",
    "Carried",
    "Decoded",
    "Fetch",
    "References",
    "ScreenInputUnreadable",
    "carried_history",
    "check_playable",
    "combiner_from",
    "global_label",
    "previous_round",
    "previous_rounds",
    "public_screen_of",
    "recent_references",
    "reference_label",
    "reference_labels",
    "reference_submissions",
    "screen_candidates",
    "screen_left_out_of",
    "sequential",
    "standing_of",
    "standing_source",
    "weighted_references",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class Carried:
    """The history a round is valued with, and where it came from (for the round's log)."""

    history: History
    previous: PreviousLog | None


LATER_THRESHOLDS: Final = MappingProxyType(
    {
        "max_norm_ratio": 0.0,
        "small_norm_ratio": 0.0,
        "stale_rounds": 1,
        "credit_cosine": -1.0,
        "sample_median_self": 0,
        "dp_spend_check": 0,
        "norm_size_cap": 1.0,
        "tiny_size_power": 0.0,
        "tiny_size_reference": 0.0,
        "tiny_size_own": 0,
        "dp_noise_check": 0,
        "relief_cosine": -1.0,
        "boost_clip": 0.0,
        "warm_up_floor": 1.0,
        "warm_up_scope": 0,
        "record_floor": 0.0,
        "white_noise_z": 0.0,
        "shaped_noise_z": 0.0,
        "block_noise_z": 0.0,
        "dp_copy_z": 0.0,
        "stale_support_cosine": 1.0,
        "stale_support_overlap": 1.0,
        "span_residual": 0.0,
        "size_norm_z": 0.0,
        "size_norm_count": 0.0,
    }
)
"""Combiner fields added after logs recorded every threshold, with the value a recorded set
without them was valued with (the norm bounds off, references from one round, declared privacy
spends and their noise not checked before valuation, no allowance for a site's claimed count in
the norm and free-rider screens), whatever today's defaults say, so its replay is unchanged."""

UNRECORDED: Final = MappingProxyType(
    {
        "stale_cosine": 0.9999,
        "stale_distance": 0.01,
        "stale_rounds": 1,
        "credit_cosine": -1.0,
        "sample_median_self": 0,
        "dp_spend_check": 0,
        "norm_size_cap": 1.0,
        "tiny_size_power": 0.0,
        "tiny_size_reference": 0.0,
        "tiny_size_own": 0,
        "dp_noise_check": 0,
        "relief_cosine": -1.0,
        "boost_clip": 0.0,
        "warm_up_floor": 1.0,
        "warm_up_scope": 0,
        "record_floor": 0.0,
        "white_noise_z": 0.0,
        "shaped_noise_z": 0.0,
        "block_noise_z": 0.0,
        "dp_copy_z": 0.0,
        "stale_support_cosine": 1.0,
        "stale_support_overlap": 1.0,
        "span_residual": 0.0,
        "size_norm_z": 0.0,
        "size_norm_count": 0.0,
    }
)
"""Thresholds whose defaults changed, at the values a round whose settings record no
thresholds at all (no ``combiner``: valued with the defaults of its day) was valued with."""


def combiner_from(settings: ValuationSettings) -> Combiner:
    """The thresholds a round's valuation settings name: their ``combiner`` fields over the
    defaults (:func:`~fedtrail.valuation.combine.default_combiner`), with the
    :data:`LATER_THRESHOLDS` a recorded set lacks at their earlier values; without a recorded
    set, the defaults with the :data:`UNRECORDED` values."""
    base = default_combiner(bool(settings.standing))
    values = {f.name: getattr(base, f.name) for f in fields(Combiner)}
    if settings.combiner is None:
        values.update(UNRECORDED)
        return Combiner(**values)
    unknown = sorted(set(settings.combiner) - set(values))
    if unknown:
        raise ConfigError(f"unknown valuation threshold(s) {', '.join(unknown)}")
    values.update(LATER_THRESHOLDS)
    for name, value in settings.combiner.items():
        current = values[name]
        values[name] = int(value) if isinstance(current, int) and value == int(value) else value
    return Combiner(**values)


def check_playable(settings: ValuationSettings) -> Combiner:
    """The thresholds of a round's valuation settings (:func:`combiner_from`), once the settings
    are known to name a valuation the round's scorers can run; ConfigError naming what they
    cannot (an unknown method, metric or game, a linearised game under the AUC, an unknown or
    out-of-range threshold). An aggregator round is scored with ``method`` and ``large_game``
    (``method`` one of :data:`~fedtrail.valuation.METHODS`: the ones ``audit verify`` replays);
    a peer round's validators play ``validator_game``, or ``method`` and ``large_game`` when it
    is absent. A site checks the committed terms with it before it trains, so it spends no
    training or privacy budget on a round nobody can score or audit."""
    if settings.peers:
        game = settings.validator_game
        check_game(
            method=settings.method if game is None else game,
            metric=settings.metric,
            large_game=settings.large_game if game is None else None,
        )
    else:
        if settings.method not in METHODS:
            raise ConfigError(
                f"an aggregator round's valuation method must be one of {METHODS}, "
                f"got {settings.method!r}"
            )
        check_game(method=settings.method, metric=settings.metric, large_game=settings.large_game)
    return combiner_from(settings)


UNREADABLE: Final = frozenset(
    {
        int(Reason.TAMPERED),
        int(Reason.MALFORMED),
        int(Reason.NOT_REVEALED),
        int(Reason.PEER_REJECTED),
        int(Reason.WITHHELD),
    }
)
"""Reasons of updates whose bytes the round could not use, or that the chain already refused:
never references. PEER_REJECTED (a peer round's median of 0, also the verdict on a blob no
validator could read) and WITHHELD (a weighted update the aggregator could not read back) come
from a peer round; an aggregator round after it (the move back is allowed when round 1 was the
aggregator's) would otherwise need a blob that no reader may have, and ``audit verify``
already accepts such a blob as missing. The chain decides, not the reader's store, so every
reader takes the same references."""


def reference_submissions(
    ledger: Ledger, round_id: int, *, weighted: bool = False
) -> list[Submission]:
    """The updates of ``round_id`` that serve as free-rider references, in the chain's order:
    every revealed one not scored :data:`UNREADABLE`; with ``weighted`` (the round's terms
    name :data:`~fedtrail.protocol.roundlog.WEIGHTED_REFERENCES`, :func:`weighted_references`)
    less those the chain holds at weight 0 with a positive score (reason OK, an exact share
    below one unit of 1e-18). Such an update adds nothing to the round's model and is paid
    nothing; the public screen leaves it out unread when it cannot be read
    (:func:`screen_left_out_of`), so nobody need hold it, and as a reference it stalled every
    later round's screen (session 61, h-297). An update the chain zeroed (score 0: TAMPERED
    excepted, a copy, a stale resend, one dropped as screened) stays one, so a resend of it is
    caught again. Read from the chain alone: every reader takes the same references."""
    subs = [s for s in ledger.get_submissions(round_id) if s.cid and s.reason not in UNREADABLE]
    return [s for s in subs if not (weighted and _in_doubt(s))]


def _in_doubt(sub: Submission) -> bool:
    """Whether the reference rule decides ``sub`` (a reference under the earlier rule, at weight
    0 with a positive score): only such an update differs between the rules."""
    return bool(sub.cid) and sub.reason not in UNREADABLE and sub.weight == 0 and sub.score > 0


def _references_of(
    ledger: Ledger, store: ContentStore, round_id: int, *, skip_unreadable: bool = False
) -> list[Submission]:
    """:func:`reference_submissions` of ``round_id`` under its own terms' rule. The terms are
    read only where the rule decides an update (:func:`_in_doubt`; h-307): a round without one
    has the same references under either rule, so a terms blob gone from the store, or one this
    release cannot parse, changes nothing there (every ledger before session 62 keeps its
    verdicts, and no validator stops on it). Where the rule decides, a full reader raises
    (:func:`weighted_references`); with ``skip_unreadable`` (a validator's view) terms the store
    does not give or that do not parse leave the updates in doubt out, as unreadable bytes are
    (a store that cannot be reached still raises: retried)."""
    subs = reference_submissions(ledger, round_id)
    if not any(_in_doubt(s) for s in subs):
        return subs
    try:
        weighted = weighted_references(ledger, store, round_id)
    except (InvalidTerms, InvalidLog, *NOT_GIVEN):
        if not skip_unreadable:
            raise
        weighted = True
    return [s for s in subs if not (weighted and _in_doubt(s))]  # reference_submissions' rule


def weighted_references(ledger: Ledger, store: ContentStore, round_id: int) -> bool:
    """Whether round ``round_id``'s terms (read by their on-chain hash) name the reference rule
    :data:`~fedtrail.protocol.roundlog.WEIGHTED_REFERENCES` (``valuation.references``): the
    round's own terms decide its references, fixed before its updates were seen, whatever the
    terms of the round that reads them say (a federation may move between the aggregator's
    scoring and the peers'). False for a round opened without terms. Raises what the store
    raises, or :class:`~fedtrail.errors.FedtrailError` when the terms do not parse: the history
    must be the same for everyone."""
    info = ledger.get_round(round_id)
    if not info.terms_cid:
        return False
    try:
        terms = RoundTerms.from_bytes(
            store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
        )
        return ValuationSettings.from_json(terms.valuation).references == WEIGHTED_REFERENCES
    except (InvalidTerms, InvalidLog, *NOT_GIVEN) as exc:
        # the same type (callers tell a blob not given from a store not reached), said in full
        raise type(exc)(
            f"round {round_id}'s terms {info.terms_cid}, whose valuation.references decides "
            f"whether its updates at weight 0 with a positive score are free-rider references, "
            f"do not read: {exc}"
        ) from exc


def previous_round(ledger: Ledger, round_id: int) -> int | None:
    """The latest round finalized before ``round_id`` (None: there is none)."""
    latest = previous_rounds(ledger, round_id, 1)
    return latest[0] if latest else None


def previous_rounds(ledger: Ledger, round_id: int, count: int) -> list[int]:
    """The latest ``count`` rounds finalized before ``round_id``, newest first (fewer when
    fewer were)."""
    out: list[int] = []
    for r in range(round_id - 1, 0, -1):
        if len(out) >= count:
            break
        if ledger.get_round(r).phase == Phase.FINALIZED:
            out.append(r)
    return out


def reference_labels(
    ledger: Ledger, store: ContentStore, round_id: int, stale_rounds: int
) -> list[str]:
    """The labels of the references ``round_id`` is valued with (see the module docstring), in
    their order, as a round log's standing block lists them (each earlier round's under its
    own terms' rule, :func:`weighted_references`)."""
    labels: list[str] = []
    for prev in previous_rounds(ledger, round_id, stale_rounds):
        labels += [reference_label(s.site, prev) for s in _references_of(ledger, store, prev)]
        labels.append(global_label(prev))
    return labels


@dataclass
class Decoded:
    """Blobs a reader already fetched, checked against their sha256 and decoded, so that a
    later read of the same bytes reuses them (a validator reads each round's updates when it
    scores the round, then again as the next round's free-rider references; the next round's
    start model is the round's global one). ``updates``: ``(round, sha256)`` -> the delta
    :func:`~fedtrail.storage.codec.decode_update` gave for that round; ``models``: sha256 ->
    the state :func:`~fedtrail.storage.codec.decode_model` gave. The sha256 binds the bytes
    and decoding is a function of them, so a reused value is the one a fresh read gives.
    Entries are shared, not copied: their readers must not modify them; :func:`round_references`
    adds what it reads. One difference from a
    fresh read: an update withdrawn from the store after the reader read it (a validator pins
    what it scores, so only where that pin failed) stays a reference here, where a validator's
    fresh read (``skip_unreadable``) would leave it out; the aggregator's and the audit's reads
    never leave it out (they need it as a reference, and fail when it cannot be read)."""

    updates: dict[tuple[int, str], Mapping[str, torch.Tensor]] = field(default_factory=dict)
    models: dict[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)


Fetch = Callable[[Sequence[tuple[str, str]], int | None], Iterator[Callable[[], bytes]]]
"""Reads blobs ahead of their use: for each ``(cid, sha256)`` of its first argument, in that
order, a function that returns what ``store.get(cid, sha256, max_bytes=limit)`` returns (the
second argument is ``limit``) or raises what it raises. ``audit verify``'s fetch threads
request several at once; :func:`sequential` reads each when its function is called."""


def sequential(store: ContentStore) -> Fetch:
    """A :data:`Fetch` reading ``store`` one blob at a time, each when its function is called."""

    def fetch(
        refs: Sequence[tuple[str, str]], max_bytes: int | None
    ) -> Iterator[Callable[[], bytes]]:
        for cid, sha256 in refs:
            yield functools.partial(store.get, cid, sha256, max_bytes=max_bytes)

    return fetch


def round_references(
    ledger: Ledger,
    store: ContentStore,
    prev: int,
    spec: ModelSpec,
    *,
    skip_unreadable: bool = False,
    decoded: Decoded | None = None,
    fetch: Fetch | None = None,
) -> dict[str, Mapping[str, torch.Tensor]]:
    """The free-rider references finalized round ``prev`` leaves its successor: its revealed
    updates whose bytes the round could use (:func:`reference_submissions`: every one not
    scored TAMPERED, MALFORMED, NOT_REVEALED, PEER_REJECTED or WITHHELD, weighted or not: a
    zeroed free-rider's resend counts too; under its terms' ``valuation.references``
    "weighted", none at weight 0 with a positive score) and the global delta it applied. With
    ``skip_unreadable`` an update whose bytes
    cannot be read is left out (a validator's view); otherwise it raises (the round read it,
    so it must be readable: an update its site withdrew from the store after the round makes
    every later round's history unreadable, ``reasons.free_rider`` fails there).
    ``decoded``: blobs already read (:class:`Decoded`), taken instead of reading them again;
    what is read here is added to it. ``fetch``: how the blobs it does not hold are read
    (default :func:`sequential` of ``store``; ``audit verify`` passes its fetch threads): the
    start and global models are asked for first, then the updates, and each is decoded in the
    order one read after another takes (the updates in the chain's order, then the start and
    the global model), so the first that cannot be read or decoded raises, as there."""
    info = ledger.get_round(prev)
    limit = default_max_bytes(spec)
    read = fetch if fetch is not None else sequential(store)
    held = decoded if decoded is not None else Decoded()
    models = [
        (cid, sha256, held.models.get(sha256))
        for cid, sha256 in (
            (info.start_cid, info.start_sha256),
            (info.global_cid, info.global_sha256),
        )
    ]
    model_reads = read([(cid, sha256) for cid, sha256, state in models if state is None], limit)
    plan = [
        (sub, held.updates.get((prev, sub.sha256)))
        for sub in _references_of(ledger, store, prev, skip_unreadable=skip_unreadable)
    ]
    update_reads = read([(sub.cid, sub.sha256) for sub, known in plan if known is None], limit)
    references: dict[str, Mapping[str, torch.Tensor]] = {}
    for sub, known in plan:
        if known is None:
            blob = next(update_reads)
            try:
                known, _ = decode_update(blob(), spec=spec, expected_round=prev)
            except (InvalidUpdate, *NOT_GIVEN):
                if not skip_unreadable:
                    raise
                continue  # unreadable bytes are no reference (nobody can resend them usefully)
            held.updates[(prev, sub.sha256)] = known
        references[reference_label(sub.site, prev)] = known
    states: list[Mapping[str, torch.Tensor]] = []
    for _, sha256, state in models:
        if state is None:
            state, _ = decode_model(next(model_reads)(), spec=spec)
            held.models[sha256] = state
        states.append(state)
    start, final = states
    # final - start, in float32 as stored: the delta the round applied, up to rounding (the
    # stale check's tolerance is far wider than that).
    references[global_label(prev)] = {k: final[k] - start[k] for k in start}
    return references


References = dict[str, Mapping[str, torch.Tensor]]
"""Reference label -> decoded update or global delta."""


def recent_references(
    ledger: Ledger,
    store: ContentStore,
    rounds: Sequence[int],
    spec: ModelSpec,
    *,
    skip_unreadable: bool = False,
    known: MutableMapping[int, References] | None = None,
    decoded: Decoded | None = None,
    fetch: Fetch | None = None,
) -> References:
    """:func:`round_references` of every round of ``rounds``, in their order. ``known``: the
    caller's rounds already read (round -> references), kept from one round to the next: a
    finalized round's references never change, so each is fetched and decoded once instead of
    once for each of the ``stale_rounds`` rounds that use it; rounds no longer among ``rounds``
    are dropped from it. ``decoded`` and ``fetch``: as :func:`round_references`'."""
    out: References = {}
    for r in rounds:
        refs = None if known is None else known.get(r)
        if refs is None:
            refs = round_references(
                ledger,
                store,
                r,
                spec,
                skip_unreadable=skip_unreadable,
                decoded=decoded,
                fetch=fetch,
            )
            if known is not None:
                known[r] = refs
        out.update(refs)
    if known is not None:
        for r in [r for r in known if r not in rounds]:
            del known[r]
    return out


def standing_source(
    ledger: Ledger, store: ContentStore, round_id: int
) -> tuple[PreviousLog, Standing | None] | None:
    """The log ``round_id``'s standing continues (see the module docstring) and its standing
    block: the latest round finalized before ``round_id`` whose log has one, else the latest
    finalized round with None; None when no round was finalized before. Each log is read
    under its on-chain sha256 and must name its own round."""
    latest: PreviousLog | None = None
    for r in range(round_id - 1, 0, -1):
        info = ledger.get_round(r)
        if info.phase != Phase.FINALIZED:
            continue
        log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES))
        if log.round != r:
            raise FedtrailError(f"the log of round {r} names round {log.round}")
        here = PreviousLog(round=r, cid=info.log_cid, sha256=info.log_sha256)
        if log.standing is not None:
            return here, log.standing
        latest = latest or here
    return None if latest is None else (latest, None)


def carried_history(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    spec: ModelSpec,
    *,
    stale_rounds: int = 1,
    known: MutableMapping[int, References] | None = None,
    decoded: Decoded | None = None,
    fetch: Fetch | None = None,
) -> Carried:
    """The history ``round_id`` is valued with (see the module docstring), its references from
    the latest ``stale_rounds`` finalized rounds (the terms' threshold); ``known`` and
    ``decoded`` and ``fetch`` as for :func:`recent_references`."""
    prevs = previous_rounds(ledger, round_id, stale_rounds)
    source = standing_source(ledger, store, round_id)
    if not prevs or source is None:
        return Carried(history=History(), previous=None)
    previous, standing = source
    references = recent_references(
        ledger, store, prevs, spec, known=known, decoded=decoded, fetch=fetch
    )
    history = History(
        accumulated=dict(standing.after) if standing else {},
        valued_rounds=standing.valued_rounds + 1 if standing else 0,
        references=references,
    )
    return Carried(history=history, previous=previous)


class ScreenInputUnreadable(FedtrailError):
    """An input of a peer round's public screen (:func:`~fedtrail.protocol.peers.screen_inputs`)
    whose update cannot be read or decoded: the screen cannot be computed (the aggregator waits
    or drops it as withheld, ``audit verify`` fails ``peers.screen``)."""


def screen_left_out_of(candidates: Sequence[Candidate], outcome: PeerOutcome) -> tuple[str, ...]:
    """:func:`~fedtrail.protocol.peers.screen_left_out` on the revealed ``candidates`` as this
    reader reads them: the inputs of the chain's ``outcome`` that have no delta (not a copy:
    a copy is screened as DUPLICATE whatever reads) and no weight once the updates dropped as
    withheld are dropped. The public screen leaves them out (README *Peer rounds*). Empty when
    ``candidates`` do not cover the outcome's sites (no sample count to weigh them by)."""
    by_key = {address_key(c.site): c for c in candidates}
    if any(address_key(site) not in by_key for site in outcome.sites):
        return ()
    unread = [c.site for c in candidates if c.delta is None and c.status is not Reason.DUPLICATE]
    counts = [by_key[address_key(site)].num_samples for site in outcome.sites]
    return screen_left_out(outcome, counts, unread)


def screen_candidates(
    candidates: Sequence[Candidate], outcome: PeerOutcome, round_id: int
) -> list[Candidate]:
    """The public screen's candidates: the inputs the chain's ``outcome`` names
    (:func:`~fedtrail.protocol.peers.screen_inputs`) taken from the revealed ``candidates``, in
    their order; a copy stays DUPLICATE, one the noise or spend check scores MALFORMED with its
    delta kept is screened on that delta (OK). :class:`ScreenInputUnreadable` when an input
    other than a copy has no delta and a weight (an unweighted one is left out:
    :func:`screen_left_out_of`). Shared by :func:`public_screen_of` and the peer bench
    (``scripts/bench/_sim.py``), which screened every update before session 56."""
    inputs = {address_key(s) for s in screen_inputs(outcome)}
    left = {address_key(s) for s in screen_left_out_of(candidates, outcome)}
    chosen: list[Candidate] = []
    unread: list[str] = []
    for c in candidates:
        if address_key(c.site) not in inputs or address_key(c.site) in left:
            continue
        if c.status is Reason.DUPLICATE:
            chosen.append(c)
        elif c.delta is None:
            unread.append(c.site)
        else:
            chosen.append(replace(c, status=Reason.OK, detail="") if not c.usable else c)
    if unread:
        raise ScreenInputUnreadable(
            f"round {round_id}: the public screen's input(s) "
            + ", ".join(s[:10] for s in unread)
            + " (a positive peer median, not dropped as withheld) cannot be read"
        )
    return chosen


def public_screen_of(
    ledger: Ledger,
    store: ContentStore,
    round_id: int,
    spec: ModelSpec,
    *,
    global_state: Mapping[str, torch.Tensor],
    candidates: Sequence[Candidate],
    combiner: Combiner,
    known: MutableMapping[int, References] | None = None,
    outcome: PeerOutcome | None = None,
    decoded: Decoded | None = None,
    fetch: Fetch | None = None,
) -> dict[str, str]:
    """Peer round ``round_id``'s public screen (round terms ``valuation.public_screen``): site
    -> why for each input the free-rider screen marks, from public data only: its start model
    (``global_state``), its inputs (:func:`~fedtrail.protocol.peers.screen_inputs` of the
    chain's ``outcome``, default :meth:`~fedtrail.ledger.Ledger.peer_outcome`: the revealed
    updates with a positive peer median, less those dropped as withheld) taken from the revealed
    ``candidates`` in address order (as :func:`~fedtrail.valuation.candidates.
    revealed_candidates` reads them, the validators' reading: a later copy stays DUPLICATE; one
    the noise or spend check scores MALFORMED with its delta kept is screened on that delta, as
    the validators judged it) and the references of the latest ``combiner.stale_rounds``
    finalized rounds (:func:`recent_references`, read as the aggregator's history reads them:
    one that cannot be read raises; ``decoded`` and ``fetch`` as for :func:`recent_references`).
    Every other candidate is left out whether or not it reads now.
    :class:`ScreenInputUnreadable` when an input other than a copy has no delta. The one rule
    the aggregator posts (``dropScreened``) and ``audit verify`` recomputes (``peers.screen``)."""
    chosen = screen_candidates(
        candidates, ledger.peer_outcome(round_id) if outcome is None else outcome, round_id
    )
    prevs = previous_rounds(ledger, round_id, combiner.stale_rounds)
    references = (
        recent_references(ledger, store, prevs, spec, known=known, decoded=decoded, fetch=fetch)
        if prevs
        else {}
    )
    return public_screen(
        global_state=global_state,
        spec=spec,
        candidates=chosen,
        history=History(references=references),
        combiner=combiner,
    )


def standing_of(carried: Carried, report: RoundValuation) -> Standing:
    """The round log's standing block for a round valued with ``carried``."""
    return Standing(
        previous=carried.previous,
        valued_rounds=carried.history.valued_rounds,
        before=dict(carried.history.accumulated),
        normalised=None if report.normalised is None else dict(report.normalised),
        after=dict(report.accumulated or {}),
        references=tuple(carried.history.references),
    )
