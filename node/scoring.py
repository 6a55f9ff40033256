"""A site's part as a validator of peer rounds (``[valuation] mode = "peers"``, issue 14):
score the others' updates on the site's own validation split, commit, then reveal — restart-safe.

In a peer round every site registered when the round opened is a validator, whether or not it
sent an update. After the round's update reveal deadline the node fetches every revealed update
exactly as the aggregator would (:func:`fedtrail.valuation.candidates.revealed_candidates`),
scores all but its own with :func:`fedtrail.valuation.peer_vector` under the round's committed
valuation settings, and commits ``keccak(validator, round, scores, salt)`` with a fresh random
32-byte salt; after the score commit deadline it reveals the vector and salt. Only the score
vector leaves the site (no label counts, no metrics).

Every step is recorded in ``scores.json`` (written atomically) before the next one starts:

    peer round past its reveal deadline -> scored (vector and salt on disk) -> committed (the
    chain holds our commitment) -> [score commit deadline] -> revealed

A crash anywhere resumes at the last recorded step: a scored vector is committed and revealed
as it is (never rescored with another salt), a commitment or reveal the chain already holds is
recognised from the chain (never sent again), and a closed window or a refusal marks the
scoring ``skipped`` with the reason.

The validator's standing (its values accumulated across rounds on its private split, when the
round's terms ask for standing) is kept in ``validator/history-<round>.json``; the free-rider
references that go with it (the previous finalized round's readable updates and its global
delta) are public and are read back from the chain and the store, as the aggregator's are, except
the blobs this validator already read when it scored that round (its updates and start model,
kept decoded by sha256: :class:`~fedtrail.valuation.chained.Decoded`), which are not fetched and
decoded a second time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import torch
from eth_account.signers.local import LocalAccount

from fedtrail.chain import next_block_timestamp
from fedtrail.errors import (
    ConfigError,
    ContentTooLarge,
    ContractRevert,
    FedtrailError,
)
from fedtrail.fsutil import atomic_write
from fedtrail.hooks import StepHook, no_step
from fedtrail.ledger import Ledger, PeerRoundInfo, RoundInfo, Submission, score_commitment
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.roundlog import InvalidLog, ValuationSettings
from fedtrail.protocol.terms import (
    MAX_TERMS_BYTES,
    InvalidTerms,
    RoundTerms,
    valuation_mode_difference,
    window_differences,
)
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.storage.codec import decode_model, default_max_bytes
from fedtrail.storage.store import ContentStore
from fedtrail.valuation import (
    Candidate,
    History,
    UnfitValidation,
    peer_vector,
    screened_history,
)
from fedtrail.valuation.candidates import CandidateCache, pin_readable, revealed_candidates
from fedtrail.valuation.chained import (
    Decoded,
    References,
    check_playable,
    previous_rounds,
    recent_references,
)
from fedtrail.valuation.limits import (
    ThresholdLimits,
    payment_refusal,
    statistics_refusal,
    window_refusal,
)

__all__ = ["SCORES_NAME", "STEPS", "PeerScorer", "ScoreRecord", "ScoreState"]

log = logging.getLogger("fedtrail.node.scoring")

SCORES_NAME: Final = "scores.json"
HISTORY_DIR: Final = "validator"
STEPS: Final = ("scored", "score_committed", "score_revealed")
"""The named steps at which the scorer calls its ``at_step`` hook, each right after it is
recorded: the vector and salt are on disk; the commitment is on chain; the reveal is mined."""
FINAL: Final = frozenset({"revealed", "skipped"})
CLOCK_SLACK: Final = 2
"""Seconds past a deadline before acting on it (a block may carry a timestamp a second or two
behind the pending block's), as the update steps of the daemon."""
RETRY: Final = frozenset({"ScoringNotOpen", "ScoreRevealNotOpen"})
"""Refusals that only say the chain's clock lags ours: tried again on the next poll."""


SUPERSEDED_NAME: Final = "superseded.jsonl"
"""Records (of ``state.json`` and ``scores.json``) set aside because their round was opened
again under other terms or deadlines, a JSON line each with the key of the round that replaced
them (:meth:`node.daemon.SiteNode._reopened`, :meth:`PeerScorer._check_opened`)."""


@dataclass
class ScoreRecord:
    """What this site did as a validator in one round, as persisted."""

    round: int
    phase: str  # "scored" | "committed" | "revealed" | "skipped"
    sites: list[str] = field(default_factory=list)
    """The revealed updates scored, in ascending address order (the vector's order)."""
    scores: list[int] = field(default_factory=list)
    salt: str = ""
    """32 random bytes, hex, drawn once when the vector was scored."""
    commitment: str = ""
    tx_hash: str = ""
    seconds: float = 0.0
    """Wall-clock seconds the scoring took."""
    game: str = ""
    """The game the vector came from (the terms' validator game, or the method's; empty in
    records written before it was kept)."""
    note: str = ""
    opened: str = ""
    """Which round this record is of (:meth:`RoundInfo.key`; empty in older records): a
    scores.json of another ledger, or of a chain restarted and redeployed at the same address,
    is refused instead of standing in for this ledger's rounds."""


@dataclass
class ScoreState:
    rounds: dict[int, ScoreRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ScoreState:
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            rounds = {int(k): ScoreRecord(**v) for k, v in raw["rounds"].items()}
        except OSError as exc:
            raise FedtrailError(f"validator state {path} cannot be read: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FedtrailError(f"validator state {path} is corrupt: {exc!r}") from exc
        if any(rec.round != r for r, rec in rounds.items()):
            raise FedtrailError(f"validator state {path} is corrupt: a record of another round")
        return cls(rounds)

    def save(self, path: Path) -> None:
        doc = {"rounds": {str(k): asdict(v) for k, v in sorted(self.rounds.items())}}
        atomic_write(path, json.dumps(doc, indent=2).encode("utf-8"))


def _same_hex(a: str, b: str) -> bool:
    return a.lower().removeprefix("0x") == b.lower().removeprefix("0x")


class PeerScorer:
    """One site's validator work over a ledger and a store; ``val`` is its validation split."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        store: ContentStore,
        account: LocalAccount,
        spec: ModelSpec,
        folder: Path,
        val: ImageDataset | None,
        at_step: StepHook = no_step,
        accept: ThresholdLimits | None = None,
    ) -> None:
        self.ledger = ledger
        self.accept = accept or ThresholdLimits()
        """The strictest thresholds this validator scores under (its site's ``[accept]``):
        scoring its peers under stricter terms would lend the round's median a vote for them."""
        self.store = store
        self.account = account
        self.spec = spec
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.val = val
        self._at_step = at_step
        self.path = self.folder / SCORES_NAME
        self.state = ScoreState.load(self.path)
        self._cache = CandidateCache()
        self._references: dict[int, References] = {}
        """Finalized round -> its free-rider references, for the rounds the next vector uses."""
        self._decoded = Decoded()
        """The updates of the rounds this validator scored and the start models it read, kept
        for the next rounds' references (read once, not fetched and decoded again)."""
        self._peer: dict[int, bool] = {}
        self._opened: dict[int, str] = {}
        """:meth:`RoundInfo.key` of each round :meth:`score` saw; stamped on its record."""

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _save(self) -> None:
        for r, key in self._opened.items():
            rec = self.state.rounds.get(r)
            if rec is not None and not rec.opened:
                rec.opened = key
        self.state.save(self.path)

    def _check_opened(
        self, round_id: int, record: ScoreRecord | None, info: RoundInfo | None = None
    ) -> ScoreRecord | None:
        """The record to go on with for ``round_id`` (checked at each call with a record, once
        per round without): ``record``, or
        None when it was made under an earlier opening of this ledger's round (other terms or
        deadlines: a reorganisation dropped ``openRound`` and the round was opened again). That
        record is set aside in :data:`SUPERSEDED_NAME` (its vector scored the
        earlier opening's updates: never committed or revealed again), and the round is scored
        as a new one (a score commitment of the old vector that lands again in the new branch
        is then "committed, but the scored vector is lost", never revealed). Before, such a
        record stopped the node. A record of another ledger is refused. ``info``: the round as
        the caller read it now (its key replaces the one kept: a143, a record made after the
        round was opened again is stamped with the opening it was made in)."""
        if info is None:
            if record is None and round_id in self._opened:
                return None
            info = self.ledger.get_round(round_id)
        key = info.key(self.ledger.address)
        self._opened[round_id] = key
        if record is None or not record.opened or record.opened == key:
            return record
        if record.opened.split("/", 1)[0] != self.ledger.address:
            raise FedtrailError(
                f"{self.path} records round {round_id} ({record.phase}) of another ledger "
                f"({record.opened}; this ledger's is {key}): this folder's validator "
                "state is not this ledger's. Give the node a folder of its own for this ledger"
            )
        line = json.dumps({"superseded_by": key, "scores": asdict(record)}) + "\n"
        aside = self.folder / SUPERSEDED_NAME
        before = aside.read_bytes() if aside.exists() else b""
        atomic_write(aside, before + line.encode("utf-8"))
        del self.state.rounds[round_id]
        self._save()
        log.warning(
            "round %d was opened again (this validator's record, %s, was made under %s; the "
            "chain's round is %s: a reorganisation, or the chain redeployed): record moved to "
            "%s; the round is scored as a new one",
            round_id,
            record.phase,
            record.opened,
            key,
            aside,
        )
        return None

    def _step(self, name: str) -> None:
        self._at_step(name)

    def forget(self, round_id: int) -> None:
        """Drops what this validator keeps of ``round_id``'s opening (whether it is a peer
        round, its key): the site's node saw the chain open the round again (a145: before, a
        round reopened as a peer round read as an aggregator round for the life of the
        process, and this validator lent it no vote)."""
        self._peer.pop(round_id, None)
        self._opened.pop(round_id, None)

    def is_peer_round(self, round_id: int) -> bool:
        if round_id not in self._peer:
            self._peer[round_id] = self.ledger.get_peer_round(round_id) is not None
        return self._peer[round_id]

    def _skip(self, round_id: int, record: ScoreRecord | None, note: str) -> ScoreRecord:
        record = record or ScoreRecord(round=round_id, phase="skipped")
        record.phase, record.note = "skipped", note
        self.state.rounds[round_id] = record
        self._save()
        log.warning("round %d: scoring skipped: %s", round_id, note)
        return record

    # ---------------------------------------------------------------- one round

    def done(self, round_id: int) -> bool:
        """Whether nothing is left for this site to score in ``round_id`` (not a peer round, not
        a validator of it, the round no longer open, or this site's scoring finished)."""
        record = self.state.rounds.get(round_id)
        if record is not None and record.phase in FINAL:
            return True
        if not self.is_peer_round(round_id):
            return True
        if self.ledger.get_round(round_id).phase != Phase.OPEN:
            return True
        site = self.ledger.get_site(self.address)
        return site is None or not site.registered or site.active_from > round_id

    def _keep(self, round_id: int, pairs: Sequence[tuple[Submission, Candidate]]) -> None:
        """Pins every update this validator read and scored in its own store: an update its
        peers weighted stays retrievable from them, so neither its site withdrawing the blob
        once scored nor an aggregator that cancels the valued round as "unreadable" can make it
        unreadable to the aggregator or an auditor (verify's ``peers.cancelled`` then fails such
        a cancellation). A pin that fails is logged; the vector is sent regardless."""
        pin_readable(self.store, round_id, pairs, logger=log)

    def score(self, round_id: int) -> ScoreRecord | None:
        """Do whatever of ``round_id``'s peer scoring this site can do now; its record, or None
        when the round is not a peer round, this site is not one of its validators, or it is
        too early (the update reveal window is still open). A record ``scored``/``committed``
        has a step left that waits for chain time; call again later."""
        record = self.state.rounds.get(round_id)
        if record is not None:
            record = self._check_opened(round_id, record)
        if record is not None and record.phase in ("committed", "revealed"):
            dropped = self._dropped(round_id, record)
            if dropped == "reveal":
                return self._reveal(round_id, record)
        if record is not None and record.phase in FINAL:
            return record
        if not self.is_peer_round(round_id):
            return None
        info = self.ledger.get_round(round_id)
        record = self._check_opened(round_id, record, info)  # a143: the opening as read now
        if info.phase != Phase.OPEN:
            if record is not None:
                return self._skip(round_id, record, f"round {info.phase.label} before our reveal")
            return None
        site = self.ledger.get_site(self.address)
        if site is None or not site.registered or site.active_from > round_id:
            return None  # not a validator of this round
        peer = self.ledger.get_peer_round(round_id)
        if peer is None:
            return None
        now = next_block_timestamp(self.ledger.w3)
        if now <= info.reveal_deadline + CLOCK_SLACK:
            return record  # updates may still be revealed: the candidates are not fixed yet
        if record is None:
            stored, _ = self.ledger.score_vote(round_id, self.address)
            if int(stored, 16):
                # Committed, but the vector and salt behind the commitment are lost.
                return self._skip(round_id, None, "committed, but the scored vector is lost")
            if now > peer.score_commit_deadline:
                return self._skip(
                    round_id, None, "score commit window closed before this node scored"
                )
            record = self._score(round_id, info.start_cid, info.start_sha256, (info, peer))
            if record.phase in FINAL:
                return record
            now = next_block_timestamp(self.ledger.w3)
        if record.phase == "scored":
            self._commit(round_id, record, now, peer.score_commit_deadline)
            if record.phase != "committed":
                return record
        if next_block_timestamp(self.ledger.w3) <= peer.score_commit_deadline + CLOCK_SLACK:
            return record  # reveal only once the score commit window has closed
        return self._reveal(round_id, record)

    def _terms(self, round_id: int) -> RoundTerms:
        info = self.ledger.get_round(round_id)
        try:
            blob = self.store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
        except ContentTooLarge as exc:
            raise InvalidTerms(str(exc)) from None
        return RoundTerms.from_bytes(blob)

    def _score(
        self,
        round_id: int,
        start_cid: str,
        start_sha256: str,
        chain: tuple[RoundInfo, PeerRoundInfo] | None = None,
    ) -> ScoreRecord:
        """Scores the round's revealed updates on this site's split; records the vector and a
        fresh salt (``scored``) before anything is sent. ``chain``: the round and its peer
        record as read from the chain, whose windows are then held to the terms' and to this
        site's floors (a132)."""
        if self.val is None:
            return self._skip(round_id, None, "this site has no validation split to score with")
        try:
            terms = self._terms(round_id)
            valuation = ValuationSettings.from_json(terms.valuation)
            combiner = check_playable(valuation)
            rule = AggregationRule.from_terms(terms.aggregation_rule)
        except (InvalidTerms, InvalidLog, ConfigError, TypeError, ValueError) as exc:
            return self._skip(round_id, None, f"the round's terms are unusable: {exc}")
        # a site lends its votes only to a round it would train in (the same [accept])
        refusal = (
            payment_refusal(self.accept, rule, valuation)
            or self.accept.refusal(combiner, terms.duplicates)
            or statistics_refusal(
                self.accept, rule, running_statistics=bool(self.spec.statistic_names())
            )
        )
        if refusal is not None:
            return self._skip(round_id, None, f"the round's {refusal}")
        if chain is not None:
            # nor to a round whose windows it would decline (a132: score windows on chain
            # shorter than the terms', or terms' windows below this site's floors)
            short = window_refusal(self.accept, terms)
            if short is not None:
                return self._skip(round_id, None, f"the round's {short}")
            info, peer = chain
            windows = window_differences(
                terms,
                opened_at=info.opened_at,
                commit_deadline=info.commit_deadline,
                reveal_deadline=info.reveal_deadline,
                score_deadlines=(peer.score_commit_deadline, peer.score_reveal_deadline),
            )
            mode = valuation_mode_difference(terms, peer_round=True)  # a peer record is read
            if mode is not None:  # terms that say the aggregator values the round: not lent
                windows.append(mode)
            if windows:
                return self._skip(
                    round_id,
                    None,
                    "the round's windows on chain are not its terms' (" + "; ".join(windows) + ")",
                )
        started = time.perf_counter()
        limit = default_max_bytes(self.spec)
        global_state: Mapping[str, torch.Tensor]
        known_start = self._decoded.models.get(start_sha256)
        if known_start is None:
            global_state, _ = decode_model(
                self.store.get(start_cid, start_sha256, max_bytes=limit), spec=self.spec
            )
        else:
            global_state = known_start
        pairs = revealed_candidates(
            self.ledger,
            self.store,
            round_id,
            terms=terms,
            spec=self.spec,
            cache=self._cache,
            logger=log,
        )
        # this round's start model is the previous round's global one (its references' end)
        self._remember(round_id, start_sha256, global_state, pairs, combiner.stale_rounds)
        history = (
            self.history_for(round_id, stale_rounds=combiner.stale_rounds)
            if valuation.standing
            else None
        )
        try:
            vector = peer_vector(
                validator=self.address,
                round_id=round_id,
                global_state=global_state,
                spec=self.spec,
                candidates=[c for _, c in pairs],
                validation=self.val,
                method=valuation.method,
                metric=valuation.metric,
                seed=terms.seed + round_id if valuation.seed is None else valuation.seed,
                combiner=combiner,
                history=history,
                large_game=valuation.large_game,
                explanation_check=bool(valuation.explanation_check),
                validator_game=valuation.validator_game,
                project_shift=bool(valuation.project_shift),
                public_screen=bool(valuation.public_screen),
            )
        except UnfitValidation as exc:
            return self._skip(round_id, None, f"abstains: {exc}")
        except ConfigError as exc:  # settings this site cannot score under: said, not retried
            return self._skip(round_id, None, f"cannot score under the round's terms: {exc}")
        seconds = time.perf_counter() - started
        self._keep(round_id, pairs)
        if vector.history is not None:
            # under the public screen, the values it scored with too: the ones put back for the
            # sites the aggregator drops as free-riders (history_for)
            carried_in = vector.carried_in if valuation.public_screen else None
            self._save_history(round_id, vector.history, carried_in)
        salt = os.urandom(32)
        record = ScoreRecord(
            round=round_id,
            phase="scored",
            sites=list(vector.sites),
            scores=list(vector.scores),
            salt=salt.hex(),
            commitment=score_commitment(self.address, round_id, vector.scores, salt),
            seconds=round(seconds, 3),
            game=vector.report.method or "",
        )
        self.state.rounds[round_id] = record
        self._save()
        log.info(
            "round %d: scored %d peer update(s) on %d validation images in %.1f s (%s): %s",
            round_id,
            sum(1 for s in vector.sites if not _same_hex(s, self.address)),
            len(self.val),
            seconds,
            vector.report.method or "no game",
            ", ".join(
                f"{s[:8]} {v / SCORE_SCALE:.3f}"
                for s, v in zip(vector.sites, vector.scores, strict=True)
                if not _same_hex(s, self.address)
            )
            or "nothing to score",
        )
        self._step("scored")
        return record

    def _dropped(self, round_id: int, record: ScoreRecord) -> str | None:
        """Which of this validator's transactions the chain no longer holds although ``record``
        says it was mined (a reorganisation left it out of the new branch): ``"commit"`` when
        the score commitment is gone inside the score commit window (``record`` goes back to
        ``scored``: the same vector and salt are committed again), ``"reveal"`` when the chain
        holds the commitment but not the reveal inside the score reveal window (the caller
        reveals again). None otherwise (one view call; the round and its windows are read
        only when a transaction is missing). Before, the node trusted its record: a dropped
        reveal left a commitment the contract rates as withheld, at the largest distance, and
        two such rounds took the validator's reputation below the gate (attack a131)."""
        stored, revealed = self.ledger.score_vote(round_id, self.address)
        if record.phase == "revealed":
            if revealed or not _same_hex(stored, record.commitment):
                return None
        elif int(stored, 16):
            return None
        info, peer = self.ledger.get_round(round_id), self.ledger.get_peer_round(round_id)
        if info.phase != Phase.OPEN or peer is None:
            return None
        now = next_block_timestamp(self.ledger.w3)
        if record.phase == "committed" and now <= peer.score_commit_deadline:
            log.warning(
                "round %d: the chain no longer holds this validator's score commitment (tx %s: "
                "a reorganisation?); committing the same vector again",
                round_id,
                record.tx_hash or "?",
            )
            record.phase = "scored"
            self._save()
            return "commit"
        if record.phase == "revealed" and now <= peer.score_reveal_deadline:
            log.warning(
                "round %d: the chain no longer holds this validator's score reveal (tx %s: a "
                "reorganisation?); revealing again",
                round_id,
                record.tx_hash or "?",
            )
            return "reveal"
        return None

    def _commit(self, round_id: int, record: ScoreRecord, now: int, deadline: int) -> None:
        """Commits to the recorded vector; a commitment the chain already holds (a crash after
        the transaction) is recognised, never sent again."""
        stored, _ = self.ledger.score_vote(round_id, self.address)
        if not int(stored, 16):
            if now > deadline:
                self._skip(
                    round_id, record, "score commit window closed before this node committed"
                )
                return
            try:
                tx = self.ledger.commit_scores(self.account, round_id, record.commitment)
            except ContractRevert as exc:
                if exc.error in RETRY:
                    log.info("round %d: score commits not open yet; will retry", round_id)
                    return
                if exc.error != "ScoresAlreadyCommitted":
                    self._skip(round_id, record, f"score commit refused: {exc}")
                    return
                stored, _ = self.ledger.score_vote(round_id, self.address)
            else:
                record.tx_hash = tx.tx_hash
                stored = record.commitment
                log.info(
                    "round %d: committed to scores in tx %s (%d gas)",
                    round_id,
                    tx.tx_hash,
                    tx.gas_used,
                )
        if not _same_hex(stored, record.commitment):
            self._skip(round_id, record, "the chain holds another score commitment of ours")
            return
        record.phase = "committed"
        self._save()
        self._step("score_committed")

    def _reveal(self, round_id: int, record: ScoreRecord) -> ScoreRecord:
        """Reveals the committed vector (after the score commit deadline). A reveal the chain
        already holds is recognised; a refused one marks the scoring skipped with the reason."""
        try:
            tx = self.ledger.reveal_scores(
                self.account, round_id, record.scores, bytes.fromhex(record.salt)
            )
        except ContractRevert as exc:
            if exc.error in RETRY:
                log.info("round %d: score reveals not open yet; will retry", round_id)
                return record
            if exc.error == "ScoresAlreadyRevealed":
                return self._mark_revealed(round_id, record)
            return self._skip(round_id, record, f"score reveal refused: {exc}")
        record.tx_hash = tx.tx_hash
        log.info(
            "round %d: revealed scores for %d update(s) in tx %s (%d gas)",
            round_id,
            len(record.scores),
            tx.tx_hash,
            tx.gas_used,
        )
        self._mark_revealed(round_id, record)
        self._step("score_revealed")
        return record

    def _mark_revealed(self, round_id: int, record: ScoreRecord) -> ScoreRecord:
        record.phase = "revealed"
        self.state.rounds[round_id] = record
        self._save()
        return record

    def _remember(
        self,
        round_id: int,
        start_sha256: str,
        start: Mapping[str, torch.Tensor],
        pairs: Sequence[tuple[Submission, Candidate]],
        stale_rounds: int,
    ) -> None:
        """Keeps what scoring ``round_id`` decoded for the next rounds' references: its readable
        updates by (round, sha256), and its start model by sha256 (the global models of the
        rounds a reference list spans, two at most kept per round: start and end). Rounds
        older than the references reach are dropped."""
        updates = self._decoded.updates
        for key in [k for k in updates if k[0] < round_id - max(stale_rounds, 1)]:
            del updates[key]
        for sub, c in pairs:
            if c.delta is not None:  # decoded (whatever its status): the bytes' delta
                updates[(round_id, sub.sha256)] = c.delta
        models = self._decoded.models
        models[start_sha256] = start
        while len(models) > 2 * max(stale_rounds, 1) + 1:  # oldest first
            del models[next(iter(models))]

    # ---------------------------------------------------------------- the validator's history

    def _history_path(self, round_id: int) -> Path:
        return self.folder / HISTORY_DIR / f"history-{round_id}.json"

    def _save_history(
        self, round_id: int, history: History, carried_in: Mapping[str, float] | None = None
    ) -> None:
        """The standing this validator reached scoring ``round_id`` (its accumulated values and
        valued rounds; the references are public and read back from the chain), and under the
        public screen ``carried_in``, the accumulated values it scored the round with."""
        path = self._history_path(round_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, object] = {
            "round": round_id,
            "accumulated": dict(history.accumulated),
            "valued_rounds": history.valued_rounds,
        }
        if carried_in is not None:
            doc["carried_in"] = dict(carried_in)
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))

    def _load_history(
        self, round_id: int
    ) -> tuple[dict[str, float], int, dict[str, float] | None] | None:
        path = self._history_path(round_id)
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            carried = doc.get("carried_in")
            return (
                {str(k): float(v) for k, v in doc["accumulated"].items()},
                int(doc["valued_rounds"]),
                None if carried is None else {str(k): float(v) for k, v in carried.items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("validator history %s is unusable (%s): starting afresh", path, exc)
            return None

    def history_for(self, round_id: int, *, stale_rounds: int = 1) -> History:
        """The history this validator scores ``round_id`` with: its own accumulated values from
        the latest finalized round before it that it scored (a cancelled round carries nothing,
        as for the aggregator; none: the warm-up), and as free-rider references the readable
        updates and the global deltas of the latest ``stale_rounds`` finalized rounds before it
        (the terms' threshold), newest first. Under the public screen (a saved history that
        holds the values it was scored with), the sites the chain names as dropped from that
        round as free-riders (``UpdateScreened``) gain no standing from it
        (:func:`~fedtrail.valuation.peers.screened_history`)."""
        prevs = previous_rounds(self.ledger, round_id, stale_rounds)
        if not prevs:
            return History()
        prev = prevs[0]
        accumulated: Mapping[str, float] = {}
        valued = 0
        for r in range(prev, 0, -1):
            saved = self._load_history(r)
            if saved is not None and self.ledger.get_round(r).phase == Phase.FINALIZED:
                accumulated, valued, carried_in = saved
                if carried_in is not None:
                    screened = self.ledger.peer_screened(r)
                    if screened:
                        accumulated = screened_history(accumulated, carried_in, screened)
                break
        return History(
            accumulated=accumulated,
            valued_rounds=valued,
            references=recent_references(
                self.ledger,
                self.store,
                prevs,
                self.spec,
                skip_unreadable=True,
                known=self._references,
                decoded=self._decoded,
            ),
        )
