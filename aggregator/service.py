"""The aggregator's round lifecycle, driven by the chain's state so a restart resumes anywhere.

Each call to :meth:`AggregatorService.step` looks at the latest round on chain and does the one
thing its phase asks for — open, value, finalize — so a crash between any two transactions is
resumed by the next step, and no transaction is ever sent twice (the contract's phases refuse a
repeat, and the service never tries one).

    no round / last finalized or cancelled -> put the round's terms -> openRound(global model,
              terms, commit and reveal deadlines)
    Open:     wait for every site active at open to reveal, or the reveal deadline -> fetch,
              verify, decode, check canonical encoding, mark duplicates in commit order, score
              -> recordValuation            (all scores 0: cancelRound after the reveal deadline)
    Valued:   read the weights back from the chain -> aggregate -> put global + log
              -> finalizeRound

The round's terms (:class:`~fedtrail.protocol.terms.RoundTerms`: aggregation rule, valuation
settings, validation-set hash, model spec, duplicate thresholds) are written to the store and
committed on chain when the round opens, before any update exists; valuing and aggregating
read them back by that hash, so a restart with other settings still finishes the round under
the terms it opened with, and an auditor replays exactly them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import torch
from eth_account.signers.local import LocalAccount

from fedtrail.aggregator.clock import STALL_SECONDS as STALL_SECONDS
from fedtrail.aggregator.clock import ClockWatch as ClockWatch
from fedtrail.chain import MAX_POLL_INTERVAL, Wake, next_block_timestamp, wake_delay
from fedtrail.errors import (
    ChainFault,
    ConfigError,
    ContractNotFound,
    ContractRevert,
    FedtrailError,
    LedgerError,
    PaymentSettingsChanged,
    StoreError,
)
from fedtrail.fsutil import atomic_write, folder_lock
from fedtrail.hooks import StepHook, no_step
from fedtrail.ledger import Ledger, PeerRoundInfo, RoundInfo, RoundPoll, Submission, Valuation
from fedtrail.ml.aggregation import AggregationError, AggregationRule, aggregate, apply_delta
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.explain import explain_methods, probe_set
from fedtrail.ml.metrics import CalibratedMetrics, Metrics, evaluate_calibrated
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated
from fedtrail.ml.personalise import personal_part
from fedtrail.ml.task import Task, TaskMismatch
from fedtrail.protocol import roundlog
from fedtrail.protocol.cids import logged_cid
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.evidence import (
    ChainUpdate,
    Evidence,
    InvalidEvidence,
    SignedReply,
    applicable,
)
from fedtrail.protocol.peers import (
    GateUndecided,
    PeerOutcome,
    PeerVote,
    address_key,
    default_quorum,
    drop_withheld,
    peer_explanation,
    screen_drop,
    screen_empties_round,
    screen_inputs,
)
from fedtrail.protocol.terms import (
    ABSENT,
    DEFAULT_VALIDATOR_GAME,
    INITIAL_MODEL_DEPLOYMENT,
    MAX_TERMS_BYTES,
    InvalidTerms,
    Personalisation,
    PrivacyTerms,
    RoundTerms,
    deployment_seed,
    fields_by_path,
    payment_differences,
    round_one_fixed,
    seeded_salt,
    valid_salt,
)
from fedtrail.protocol.weights import SCORE_SCALE, ZeroTotalWeight, onchain_weights
from fedtrail.storage.codec import decode_model, default_max_bytes, encode_model
from fedtrail.storage.probe import MAX_PROBE_BYTES, decode_probe, encode_probe
from fedtrail.storage.store import ContentStore, compute_cid
from fedtrail.valuation import (
    LARGE_GAMES,
    METRICS,
    VALIDATOR_GAMES,
    Candidate,
    Combiner,
    RoundValuation,
    SiteValuation,
    default_combiner,
    value_round,
)
from fedtrail.valuation.candidates import (
    CandidateCache,
    pin_readable,
    prefetch_revealed,
    revealed_candidates,
)
from fedtrail.valuation.chained import (
    Carried,
    Decoded,
    References,
    ScreenInputUnreadable,
    carried_history,
    combiner_from,
    public_screen_of,
    screen_candidates,
    screen_left_out_of,
    standing_of,
)
from fedtrail.valuation.round import NEEDS_GRADIENT, explanation_probe

log = logging.getLogger("fedtrail.aggregator")

KEPT_BLOBS = 6
"""How many of its own blobs the service keeps in memory (:meth:`_put`, :meth:`_keep`): the
round's start model and terms are read back during the round; a finalized model is the next
round's start model, and its log the next valuation's standing source
(:func:`~fedtrail.valuation.chained.standing_source`)."""

HELD_ROUNDS: Final = 2
"""At most how many rounds this service finalized it holds the decoded updates and the start
and global model blobs of (:class:`_Held`) until a later valuation or public screen has read
them into its free-rider references (issue 18: read back from the store before, 7 requests a
5-site round)."""


@dataclass(frozen=True)
class _Held:
    """What a round this service finalized leaves the next rounds' free-rider references
    (:func:`~fedtrail.valuation.chained.round_references`): its updates as the round's
    candidates decoded them (sha256 -> delta; the blob of that sha256, decoded for that
    round and spec, exactly as ``round_references`` decodes it) and its start and global
    models' blobs (sha256 -> bytes, each checked against its sha256 when read or hashed when
    made), decoded only when a valuation needs them."""

    updates: dict[str, Mapping[str, torch.Tensor]]
    models: dict[str, bytes]


class _KeptFirst(ContentStore):
    """``inner``, with the blobs the service keeps (``kept``, CID -> bytes: what it put and
    reads back) given from memory when their sha256 is the one asked for and they fit
    ``max_bytes``; anything else is ``inner``'s answer (its errors included). A kept blob is
    one whose CID the store gave for those bytes (the finalize checks it with
    :func:`~fedtrail.storage.store.compute_cid`), so the answer is the store's."""

    def __init__(self, inner: ContentStore, kept: Mapping[str, bytes]) -> None:
        self.inner, self.kept = inner, kept

    def put(self, data: bytes) -> str:
        return self.inner.put(data)

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        return self.inner.put_many(blobs)

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        blob = self.kept.get(cid)
        if (
            blob is not None
            and (max_bytes is None or len(blob) <= max_bytes)
            and hashlib.sha256(blob).hexdigest() == sha256
        ):
            return blob
        return self.inner.get(cid, sha256, max_bytes=max_bytes)

    def pin(self, cid: str) -> None:
        self.inner.pin(cid)

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)


# The named steps at which the service calls ``at_step``: the valuation transaction is mined.
STEPS = ("valued",)
CLOCK_SLACK = 2
"""Seconds past the reveal deadline before valuing or cancelling on it: the block a
transaction lands in may carry a timestamp a second or two behind the pending block's."""


LOCK_NAME: Final = "aggregator.lock"
"""The file :meth:`AggregatorService.run` locks in its folder."""

DEFAULT_PUBLIC_SCREEN: Final = True
"""What :attr:`AggregatorSettings.public_screen` None offers in a federation's round 1 (and in
every round of one whose round 1 was no peer round): the public screen, since session 57
(before, every validator screened; docs/results.md *Peer scoring time per site*)."""


@dataclass(frozen=True, kw_only=True)
class AggregatorSettings:
    """How the aggregator runs rounds; recorded in every explanation log."""

    rule: AggregationRule = field(default_factory=AggregationRule)
    valuation: str = "shapley"
    # A loss, not AUC: AUC ignores calibration, and a sign-flipped update can keep a model's
    # ranking while wrecking its outputs (measured on the demo scenario, see README). The
    # class-balanced loss after an intercept fit values label quality, not label prior
    # (fedtrail.valuation.utility; issue 12's measurements in the README).
    metric: str = "balanced_loss"
    standing: bool = True
    """Scores from values accumulated across rounds, demote-only (fedtrail.valuation.standing),
    chained through the round logs; False: each round scored on its own."""
    combiner: Combiner | None = None
    """The valuation's thresholds; None: ``default_combiner(standing)``."""
    large_game: str | None = "budget_shapley"
    """The game played instead of Monte-Carlo Shapley when more than ``LARGE_GAME_SITES`` (10)
    updates pass the screening (:data:`fedtrail.valuation.LARGE_GAMES`; written into the round
    terms, ``linear_shapley`` with a loss metric only); None: Monte-Carlo at every size (every
    log written before the setting existed). ``budget_shapley`` (the default since session 61,
    as ``aggregator run``'s): Shapley on real coalition models within a fixed evaluation budget,
    a 100-site round in ~2.5 s where Monte-Carlo took 42 s on synthetic sites and did not
    finish a round in 11 minutes on label-skewed ones; on the 12-site scenario (g) of
    ``scripts/bench/accuracy.py`` its AUC and weights match Monte-Carlo's within the seeds'
    spread (docs/results.md *Valuation time*). A ledger keeps its round 1's game
    (:func:`fedtrail.protocol.terms.round_one_fixed`). ``linear_shapley`` is cheaper still
    but in scenario (g) it paid the x10 site and the global AUC fell far below Monte-Carlo's
    (README, Results)."""
    round_seconds: int = 600
    """The commit window of each round (chain seconds; at least the ledger's minimum)."""
    reveal_seconds: int = 120
    """The reveal window after it (chain seconds; at least the ledger's minimum)."""
    poll_interval: float = 2.0
    seed: int = 0
    initial_salt: str | None = None
    """The round terms' ``initial_salt`` (64 lowercase hex digits), folded with the chain id
    and the contract into the round-1 start model's seed (:func:`~fedtrail.protocol.terms.
    deployment_seed`). None: :func:`~fedtrail.protocol.terms.seeded_salt` of ``seed``, which is
    reproducible (simulations, demos, tests) but predictable, so a twin deployment (the same
    chain id and contract address) with the same seed shares the start model; ``aggregator
    run`` passes 32 random bytes unless told otherwise (attack a23)."""
    model: ModelSpec = field(default_factory=ModelSpec)
    class_names: tuple[str, ...] = ()
    """One name per class of the model (the task, written into every round's terms); empty:
    ``class 0``, ``class 1``, ..."""
    explain_method: str | None = "integrated_gradients"
    """Captum method for the per-round explanations of the global model (None: none)."""
    probe_per_class: int = 4
    explanation_check: bool = False
    """Flag updates whose models move attribution into the image corners (burned-in labels):
    such an update scores 0 with reason EXPLANATION_SHIFT. Probes carry a corner tag, since a
    shortcut only shows on images that have it. The probe images (the first 32 of the
    validation split, tagged) are PUBLISHED on the content store and committed in the terms
    (``valuation.explanation_probe``) so anyone can recompute each verdict: with the check on,
    the split's first 32 images must be consented, public or synthetic."""
    personalise_steps: int = 0
    """Sites personalise each finalized global model with this many SGD steps on their own data
    and keep the result (recorded in the round terms); 0: no personalisation."""
    personalise_lr: float = 0.01
    personalise_method: str = "finetune"
    """Which part of the model each site makes its own (:data:`fedtrail.ml.personalise.METHODS`:
    ``finetune`` the whole model from each global one, ``fedbn`` its normalisation layers,
    ``fedrep`` its classifier head)."""
    dp_delta: float = 0.0
    """The delta every site accounts its DP-SGD epsilon at (round terms ``privacy``); 0: the
    terms ask for no differential privacy."""
    dp_required: bool = False
    """Every update must be DP-trained (an update without DP parameters fails the audit)."""
    valuation_mode: str = "aggregator"
    """Who scores the rounds this aggregator opens (:data:`fedtrail.protocol.roundlog.
    VALUATION_MODES`): ``aggregator``, on its validation split; ``peers``, every site active at
    open on its own split, the contract taking each update's median (issue 14). In a peer round
    the aggregator is a pure combiner: it reads the revealed score vectors, has the contract
    record their medians, and aggregates with the chain's weights."""
    peer_quorum: int | None = None
    """A peer round's quorum (revealed score vectors needed); None: a majority of the sites
    active at open (``active // 2 + 1``). A quorum above the active sites is refused."""
    score_commit_seconds: int | None = None
    """A peer round's score commit window after the reveal deadline (chain seconds, at least
    the ledger's minimum); None: the reveal window."""
    score_reveal_seconds: int | None = None
    """The score reveal window after it; None: the reveal window."""
    validator_game: str | None = DEFAULT_VALIDATOR_GAME
    """A peer round's validator game (:data:`fedtrail.valuation.VALIDATOR_GAMES`, written into
    the terms of peer rounds only): what every validator plays at every size instead of
    ``valuation``'s game; None: ``valuation`` (and ``large_game``), as this aggregator would.
    ``linear_shapley`` (2 coalition models and one gradient pass, not ~300 Monte-Carlo
    evaluations over 9 peers) is the default: a validator's scoring has to stay within its own
    local training time (issue 14; README, peer scoring time). It needs a gradient, so with
    the AUC metric peer rounds fall back to ``valuation``'s game."""

    public_screen: bool | None = None
    """Peer rounds with ``standing``: the free-rider screen (it reads no validation data) runs
    once a round in public instead of by every validator (round terms
    ``valuation.public_screen``, written only when True): this service runs it on the public
    updates and references and drops the weighted updates it marks (``dropScreened``, reason
    FREE_RIDER; :func:`~fedtrail.protocol.peers.screen_drop`), or cancels the round after its
    score reveal deadline when it marks every weighted one (the drop would leave no weight);
    ``audit verify`` recomputes it (``peers.screen``, ``peers.cancelled``). None (default, since
    session 57): on in a federation's round 1 and in every round of a federation whose round 1
    was no peer round; in a later round of a ledger whose round 1 was a peer round, as that
    round's terms have it (:data:`DEFAULT_PUBLIC_SCREEN`; a ledger started without it keeps
    its validators' screen, which round 1 fixed, ``terms.task_fixed``). So each validator's
    scoring stays within its own training time at 10 sites (issue 14; README, *Peer scoring
    time per site*). True or False: as given (False: every validator screens, as before
    session 57); one that changes round 1's is refused."""

    project_shift: bool | None = None
    """The validation game values every update with its first-order uniform logit shift
    removed (round terms ``valuation.project_shift``, written only when True; fixed from round
    1). For federations whose sites train with DP-SGD: there the shift toward each site's label
    majority otherwise decides its value (README, *Valuation under DP*); without DP it measured
    worse. None (default): on exactly when the terms require DP (``dp_required``); True or
    False: as given. Sites accept it or not (``[accept] project_shift``)."""

    explanation_wording: int | None = roundlog.EXPLANATION_WORDING
    """The wording of the explanation texts its aggregator rounds' terms name (round terms
    ``valuation.explanation_wording``, fixed from round 1; session 57, attack a125): this
    release's, :data:`~fedtrail.protocol.roundlog.EXPLANATION_WORDING`. None writes terms as an
    older release did (without the field: their texts are then noted, not failed, by ``audit
    verify``); tests use it to stand in for that writer. Peer rounds never name one."""

    references: str | None = roundlog.WEIGHTED_REFERENCES
    """The free-rider reference rule its peer rounds' terms name with the public screen (round
    terms ``valuation.references``, fixed from round 1; session 62, h-300): this release's,
    :data:`~fedtrail.protocol.roundlog.WEIGHTED_REFERENCES` (a round's updates at weight 0 with
    a positive score are no references, so one the public screen left out unread stalls no
    later round). A later peer round of a ledger whose round 1 was a peer round takes round
    1's (:meth:`AggregatorService._round_one_references`). None writes terms as an older
    release did (every update not scored unreadable is a reference); tests use it to stand in
    for that writer. Terms without the public screen never name one."""

    defaults: AggregatorSettings | None = None
    """The settings this aggregator runs with where its operator chose none (``aggregator
    run``: every flag at its default). Set, a service that continues a ledger takes round 1's
    value of every payment setting round 1 fixed (:func:`~fedtrail.protocol.terms.
    round_one_fixed`) where these settings offer what ``defaults`` offer (an older version
    wrote round 1 with other defaults), and refuses one where they offer another (the
    operator's choice, :class:`~fedtrail.errors.PaymentSettingsChanged`). None: nothing is
    taken from round 1; a setting that changes what it fixed is refused."""

    given: tuple[tuple[str, tuple[AggregatorSettings, ...]], ...] = ()
    """What the operator set (``aggregator run``: each flag given, on the command line or from
    a config's defaults, as given, e.g. ``--max-sample-ratio 10.0``), each with settings that
    differ from these in that flag alone (its default; where it was given at its default, its
    other values): the terms fields where those offer otherwise are the flag's. Continuing a
    ledger, a flag's fields are never taken from round 1, even where the flag was given at
    this version's default, and one that differs from round 1's is refused naming the flag
    (:meth:`AggregatorService._round_one_fixed`)."""

    def __post_init__(self) -> None:
        try:
            plan = self.personalisation()
            self.privacy()
        except InvalidTerms as exc:
            raise ConfigError(str(exc)) from None
        if self.dp_required and not self.dp_delta:
            raise ConfigError("dp_required needs a dp_delta (the delta sites account at)")
        if self.initial_salt is not None and not valid_salt(self.initial_salt):
            raise ConfigError(
                f"initial_salt must be 64 lowercase hex digits, not {self.initial_salt!r}"
            )
        if plan is not None:
            personal_part(plan.method, self.model)  # the federation's model must have the part
        if self.valuation not in ("shapley", "mc_shapley", "loo"):
            raise ConfigError(
                f"valuation must be shapley, mc_shapley or loo, not {self.valuation!r}"
            )
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, not {self.metric!r}")
        if self.large_game is not None and self.large_game not in LARGE_GAMES:
            raise ConfigError(
                f"large_game must be one of {tuple(LARGE_GAMES)} or None, not {self.large_game!r}"
            )
        if self.round_seconds < 1 or self.reveal_seconds < 1 or self.poll_interval <= 0:
            raise ConfigError("round_seconds, reveal_seconds and poll_interval must be positive")
        if not self.poll_interval <= MAX_POLL_INTERVAL:  # NaN: a busy loop; inf: a crash
            raise ConfigError(
                f"poll_interval must be at most {MAX_POLL_INTERVAL} s, got {self.poll_interval}"
            )
        if self.explanation_wording not in (None, *roundlog.EXPLANATION_WORDINGS):
            raise ConfigError(
                f"explanation_wording must be one of {roundlog.EXPLANATION_WORDINGS} or None, "
                f"not {self.explanation_wording!r}"
            )
        if self.references not in (None, *roundlog.REFERENCE_RULES):
            raise ConfigError(
                f"references must be one of {roundlog.REFERENCE_RULES} or None, "
                f"not {self.references!r}"
            )
        if self.valuation_mode not in roundlog.VALUATION_MODES:
            raise ConfigError(
                f"valuation_mode must be one of {roundlog.VALUATION_MODES}, "
                f"not {self.valuation_mode!r}"
            )
        if self.validator_game is not None and self.validator_game not in VALIDATOR_GAMES:
            raise ConfigError(
                f"validator_game must be one of {VALIDATOR_GAMES} or None, "
                f"not {self.validator_game!r}"
            )
        for name in ("peer_quorum", "score_commit_seconds", "score_reveal_seconds"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be a positive integer or None, not {value!r}")

    def personalisation(self) -> Personalisation | None:
        """What the round terms ask sites to do with the global model (None: nothing)."""
        if self.personalise_steps == 0:
            return None
        return Personalisation(
            method=self.personalise_method, steps=self.personalise_steps, lr=self.personalise_lr
        )

    def shifts_projected(self) -> bool:
        """Whether the terms carry ``valuation.project_shift``: as set, or (None) when they
        require DP."""
        if self.project_shift is None:
            privacy = self.privacy()
            return privacy is not None and privacy.required
        return self.project_shift

    def privacy(self) -> PrivacyTerms | None:
        """The differential privacy the round terms ask of sites (None: none)."""
        if not self.dp_delta:
            return None
        return PrivacyTerms(delta=self.dp_delta, required=self.dp_required)

    def valuation_terms(
        self,
        round_id: int,
        *,
        quorum: int | None,
        probe: roundlog.ExplanationProbe | None,
    ) -> roundlog.ValuationSettings:
        """The valuation block of the terms these settings offer for round ``round_id``: one
        home for it, so the terms written at open and the consent warnings at start read the
        same settings. ``quorum``: a peer round's (None otherwise); ``probe``: the published
        explanation probe set (None when the check is off or the round is a peer round)."""
        peers = self.valuation_mode == "peers"
        auc = self.metric == "auc"
        game = self.validator_game
        combiner = self.combiner if self.combiner is not None else default_combiner(self.standing)
        public_screen = (
            True
            if peers
            and self.standing
            and (DEFAULT_PUBLIC_SCREEN if self.public_screen is None else self.public_screen)
            else None
        )
        return roundlog.ValuationSettings(
            method=self.valuation,
            metric=self.metric,
            seed=self.seed + round_id,
            explanation_check=self.explanation_check,
            standing=self.standing,
            combiner=asdict(combiner),
            # the linearised game needs a gradient: none for the AUC (budget_shapley plays
            # under any metric, so --metric never changes it: an upgraded aggregator given
            # --metric keeps round 1's large game)
            large_game=None if auc and self.large_game in NEEDS_GRADIENT else self.large_game,
            mode="peers" if peers else None,
            quorum=quorum if peers else None,
            validator_game=(None if auc and game == "linear_shapley" else game) if peers else None,
            explanation_probe=probe,
            project_shift=True if self.shifts_projected() else None,
            public_screen=public_screen,
            explanation_wording=None if peers else self.explanation_wording,
            # the public screen leaves an unreadable input at weight 0 out unread, so such an
            # update can be no reference (h-300)
            references=self.references if public_screen else None,
        )


@dataclass
class RoundOutcome:
    """What one round ended with, for callers that print progress (the demo, the CLI)."""

    round: int
    phase: Phase
    valuations: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    global_sha256: str = ""


def fresh_or_recorded_salt(ledger: Ledger, store: ContentStore) -> str:
    """An ``initial_salt`` for an aggregator that starts on ``ledger``: the latest round's when
    its terms carry one (a restart keeps the federation's, so a round-1 reopened after a crash
    starts from the same model), else 32 fresh bytes from ``os.urandom``, unknown before round
    1 opens, so no twin deployment's earlier updates fit the start model (attack a23)."""
    current = ledger.current_round()
    if current:
        info = ledger.get_round(current)
        blob = store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
        try:
            salt = RoundTerms.from_bytes(blob).initial_salt
        except InvalidTerms:
            salt = None
        if salt is not None:
            return salt
    return os.urandom(32).hex()


def _metrics_record(m: Metrics) -> roundlog.RoundMetrics:
    """The log's record of ``m``; the calibrated figures (NaN without a bias) are left out
    rather than written as null, so they are absent exactly when no intercept was fitted."""

    def opt(x: float) -> float | None:
        return None if math.isnan(x) else x

    def per_class(values: tuple[float, ...]) -> tuple[float | None, ...] | None:
        return tuple(opt(v) for v in values) or None

    return roundlog.RoundMetrics(
        auc=m.auc,
        f1=m.f1,
        accuracy=m.accuracy,
        loss=m.loss,
        n=m.n,
        balanced_accuracy=opt(m.balanced_accuracy),
        ece=opt(m.ece),
        threshold=opt(m.threshold),
        f1_calibrated=opt(m.f1_calibrated),
        balanced_accuracy_calibrated=opt(m.balanced_accuracy_calibrated),
        bias=m.bias if isinstance(m, CalibratedMetrics) else None,
        recall=per_class(m.recall),
        recall_calibrated=per_class(m.recall_calibrated),
    )


def _reveals(subs: Sequence[Submission]) -> tuple[tuple[str, str, str, int, int], ...]:
    """What a round's valuation covers of its revealed submissions (a set-of-reveals key)."""
    return tuple((s.site, s.cid, s.sha256, s.num_samples, s.commit_order) for s in subs)


@dataclass(frozen=True)
class _ScreenDrop:
    """What a peer round's public screen drops (:meth:`AggregatorService._screen_drop`):
    ``marks`` (site, why) to drop as screened, and ``empties`` whether that drop leaves no
    update with a weight (the round can only be cancelled)."""

    marks: list[tuple[str, str]] = field(default_factory=list)
    empties: bool = False


class AggregatorService:
    """Runs rounds on one ledger with one store and the aggregator's key."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        store: ContentStore,
        account: LocalAccount,
        validation: ImageDataset,
        settings: AggregatorSettings,
        folder: Path,
        stop_event: threading.Event | None = None,
        at_step: StepHook = no_step,
        clock_watch: ClockWatch | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock_watch = clock_watch or ClockWatch()
        self.store = store
        self.account = account
        self.validation = validation
        self.settings = settings
        self.spec = settings.model
        names = settings.class_names or tuple(f"class {i}" for i in range(self.spec.num_classes))
        self.task = Task(spec=self.spec, class_names=names)
        self.task.check_data(validation, "the aggregator's validation split")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stop_event = stop_event or threading.Event()
        self._at_step = at_step
        self._peer_rounds: dict[int, bool] = {}
        self._names: dict[str, str] = {}
        self._fetched = CandidateCache()
        self._retained: dict[int, set[str]] = {}
        """Peer round -> the CIDs of its revealed updates this service fetched and pinned."""
        self._last_model: tuple[str, str, bytes] | None = None
        self._stored_terms: tuple[str, bytes] | None = None
        """(CID, bytes) of the next round's terms, stored at the last finalize."""
        self._seen = 0
        """The round this service last saw current (its guess of the current one at a poll)."""
        self._valued = False
        """Whether the last :meth:`step` recorded a valuation (the run loop then goes on to
        finalize without waiting a poll interval)."""
        self._to_finalize: int | None = None
        """The round this service just valued: the next :meth:`poll` reads its revealed updates
        in the same batch, and the finalize starts from them (issue 18: a round trip of its
        own after the poll)."""
        self.wake: Wake | None = None
        """When the round the last :meth:`step` left waiting can next move by the chain's clock
        (:meth:`_next_wake`); None: at the next poll."""
        self._last_metrics: tuple[str, CalibratedMetrics] | None = None
        """The sha256 of the global model this service last finalized and its metrics on the
        validation split: the next round's start metrics (issue 18: evaluated again before)."""
        self._kept: dict[str, bytes] = {}
        self._references: dict[int, References] = {}
        """Finalized round -> its free-rider references, for the rounds the next valuation uses."""
        self._held: dict[int, _Held] = {}
        """Round this service finalized -> what its references read (:class:`_Held`), until
        they are in ``_references``; at most :data:`HELD_ROUNDS`, none after a restart."""
        self._screens: dict[int, tuple[Hashable, dict[str, str]]] = {}
        """Peer round -> its public screen's inputs and answer (:meth:`_public_screen`): the
        latest round's only."""
        self._terms: dict[int, tuple[RoundTerms, roundlog.BlobRef]] = {}
        self._validation_sha256: str | None = None
        self._probe: roundlog.ExplanationProbe | None = None
        self._round_one: RoundTerms | None = None
        self._told_round_one = False
        """Whether the settings taken from round 1's terms were logged (once a service)."""
        self._unusable: dict[int, tuple[tuple[tuple[str, str, str, int, int], ...], bool]] = {}
        """Round -> the reveals (and whether past the reveal deadline) last valued with no
        usable update: a poll that sees the same is not valued again (issue 18)."""

    # ---------------------------------------------------------------- helpers

    def _site_name(self, address: str) -> str:
        if address not in self._names:
            # one read of the registry for every site (a round's log names them all), not one
            # getSite round trip each; an address it lacks is asked for alone
            for site in self.ledger.get_sites():
                self._names.setdefault(site.address, site.name)
            if address not in self._names:
                info = self.ledger.get_site(address)
                self._names[address] = info.name if info else ""
        return self._names[address]

    def _put(self, blob: bytes, *, keep: bool = False) -> tuple[str, str]:
        """Stores ``blob`` (pinned: :meth:`ContentStore.put` pins); with ``keep`` also kept in
        memory for :meth:`_read` (the round's start model and terms, which this service reads
        back in the same round)."""
        cid = self.store.put(blob)
        if keep:
            self._keep(cid, blob)
        return cid, hashlib.sha256(blob).hexdigest()

    def _put_all(self, blobs: Sequence[bytes]) -> list[tuple[str, str]]:
        """:meth:`_put` with ``keep`` of every blob, in one store request
        (:meth:`ContentStore.put_many`); (CID, sha256) of each, in order."""
        cids = self.store.put_many(blobs)
        out = []
        for cid, blob in zip(cids, blobs, strict=True):
            self._keep(cid, blob)
            out.append((cid, hashlib.sha256(blob).hexdigest()))
        return out

    def _keep(self, cid: str, blob: bytes) -> None:
        self._kept[cid] = blob
        while len(self._kept) > KEPT_BLOBS:
            del self._kept[next(iter(self._kept))]

    @property
    def _reads(self) -> ContentStore:
        """The store (``store`` as it is now), with the kept blobs from memory: what the
        history reads of the previous rounds' logs and models (the valuation's and the public
        screen's) and :meth:`_read`."""
        return _KeptFirst(self.store, self._kept)

    def _read(self, cid: str, sha256: str, *, max_bytes: int) -> bytes:
        """The bytes ``cid`` names, checked against ``sha256`` (the chain's record): a blob this
        service put and kept from memory, anything else from the store, at most ``max_bytes``
        of it (a model's or the terms' limit, not the store's 256 MiB)."""
        return _KeptFirst(self.store, self._kept).get(cid, sha256, max_bytes=max_bytes)

    def _hold(self, round_id: int, info: RoundInfo, global_sha: str, blob: bytes) -> None:
        """Keeps what finalized round ``round_id`` (``info``: its record at the finalize;
        ``blob``: its global model, of sha256 ``global_sha``) leaves the next rounds' free-rider
        references (:class:`_Held`): the updates this process's candidates decoded for it, its
        start model as read for the finalize, its global model as stored."""
        entries = self._fetched.rounds.get(round_id, {})
        models = {global_sha: blob}
        last = self._last_model
        if last is not None and last[:2] == (info.start_cid, info.start_sha256):
            models[info.start_sha256] = last[2]
        self._held[round_id] = _Held(
            updates={sha: read[2] for (_, sha), read in entries.items() if read[2] is not None},
            models=models,
        )
        for old in sorted(self._held)[:-HELD_ROUNDS]:
            del self._held[old]

    def _history_reads(self) -> Decoded:
        """The held rounds' updates and models (:meth:`_hold`) not yet among the references, as
        :func:`~fedtrail.valuation.chained.round_references` takes them (``decoded``): keyed by
        the sha256 the chain records, so a submission or model the chain names otherwise is
        read from the store as before."""
        decoded = Decoded()
        for r, held in self._held.items():
            if r in self._references:
                continue
            decoded.updates.update({(r, sha): delta for sha, delta in held.updates.items()})
            for sha, blob in held.models.items():
                if sha not in decoded.models:
                    decoded.models[sha], _ = decode_model(blob, spec=self.spec)
        return decoded

    def _release_held(self) -> None:
        """Forgets the held rounds the references now hold (read by a valuation or screen)."""
        for r in [r for r in self._held if r in self._references]:
            del self._held[r]

    def _model(self, cid: str, sha256: str) -> dict[str, torch.Tensor]:
        """The model stored as ``cid`` (its bytes checked against ``sha256``). The latest
        blob is kept: valuation and finalize both start from the round's start model (a
        content address names the same bytes; each call decodes its own tensors)."""
        if self._last_model is None or self._last_model[:2] != (cid, sha256):
            blob = self._read(cid, sha256, max_bytes=default_max_bytes(self.spec))
            self._last_model = (cid, sha256, blob)
        state, _ = decode_model(self._last_model[2], spec=self.spec)
        return state

    def _evaluate(self, state: dict[str, torch.Tensor]) -> CalibratedMetrics:
        """Metrics on the validation split with the decision threshold fitted on it (the
        intercept of :func:`~fedtrail.ml.metrics.fit_intercept`): recorded in the log, used by
        the nodes and ``fedtrail explain``, recomputed by ``audit verify --validation``."""
        model = self.spec.build()
        load_federated(model, state)
        return evaluate_calibrated(model, self.validation)

    # ---------------------------------------------------------------- phases

    def _windows(self, settings: AggregatorSettings | None = None) -> tuple[int, int]:
        """(commit, reveal) window lengths: the settings', raised to the ledger's minimum."""
        settings = self.settings if settings is None else settings
        least = self.ledger.min_round_window()
        return max(settings.round_seconds, least), max(settings.reveal_seconds, least)

    def _score_windows(self, settings: AggregatorSettings | None = None) -> tuple[int, int]:
        """A peer round's (score commit, score reveal) window lengths: the settings' (default:
        the reveal window), raised to the ledger's minimum."""
        settings = self.settings if settings is None else settings
        least = self.ledger.min_round_window()
        _, reveal_s = self._windows(settings)
        commit = settings.score_commit_seconds or reveal_s
        reveal = settings.score_reveal_seconds or reveal_s
        return max(commit, least), max(reveal, least)

    def peer_quorum(self, settings: AggregatorSettings | None = None) -> int:
        """The quorum of a peer round opened now: the settings', or a majority of the sites
        active now (those a round opened now counts active at open). ConfigError when it is
        above the active sites (the contract would refuse the round)."""
        settings = self.settings if settings is None else settings
        active = self.ledger.active_site_count()
        quorum = settings.peer_quorum or default_quorum(active)
        if quorum > active:
            raise ConfigError(
                f"peer quorum {quorum} is above the {active} active site(s): no peer round "
                "could ever be valued; lower peer_quorum or register more sites"
            )
        return quorum

    def round_terms(self, round_id: int) -> RoundTerms:
        """The terms this aggregator offers for round ``round_id``: from its settings (a peer
        round's carry the valuation mode, its quorum and the score windows); continuing a
        ledger with :attr:`AggregatorSettings.defaults` set, with round 1's value of every
        payment setting round 1 fixed that its defaults change (:meth:`_round_one_fixed`)."""
        offered = self._offered_terms(round_id, self.settings)
        if round_id <= 1 or self.settings.defaults is None:
            return offered
        return self._round_one_fixed(offered, self.settings.defaults)

    def _offered_terms(
        self, round_id: int, settings: AggregatorSettings, *, publish: bool = True
    ) -> RoundTerms:
        """The terms ``settings`` offer for round ``round_id``, on this service's task and
        validation split. ``publish`` False: terms only compared, never offered, store nothing
        (the explanation probe is the one published, else a stand-in)."""
        if self._validation_sha256 is None:
            self._validation_sha256 = self.validation.content_sha256()
        commit_s, reveal_s = self._windows(settings)
        peers = settings.valuation_mode == "peers"
        if peers and settings.public_screen is None and round_id > 1:
            settings = replace(settings, public_screen=self._round_one_screen())
        if peers and round_id > 1:
            settings = replace(settings, references=self._round_one_references(settings))
        score_windows = self._score_windows(settings) if peers else (None, None)
        probe = None
        if settings.explanation_check and not peers:
            probe = self._published_probe() if publish else self._probe or _UNPUBLISHED_PROBE
        return RoundTerms(
            round=round_id,
            aggregation_rule=settings.rule.to_terms(statistics=bool(self.spec.statistic_names())),
            valuation=settings.valuation_terms(
                round_id,
                quorum=self.peer_quorum(settings) if peers else None,
                probe=probe,
            ).to_json(),
            model_spec=self.spec.to_json(),
            spec_hash=self.spec.spec_hash(),
            seed=settings.seed,
            validation_sha256=self._validation_sha256,
            validation_images=len(self.validation),
            commit_seconds=commit_s,
            reveal_seconds=reveal_s,
            class_names=self.task.class_names,
            personalisation=settings.personalisation(),
            privacy=settings.privacy(),
            score_commit_seconds=score_windows[0],
            score_reveal_seconds=score_windows[1],
            initial_model=INITIAL_MODEL_DEPLOYMENT,
            initial_salt=self.initial_salt(),
        )

    def _round_one_screen(self) -> bool:
        """What :attr:`AggregatorSettings.public_screen` None offers after round 1: round 1's
        ``valuation.public_screen`` where round 1 was a peer round (which fixed it: a ledger
        started before the public screen was the default keeps every validator's screen), else
        :data:`DEFAULT_PUBLIC_SCREEN` (a federation that moved to the peers' scoring)."""
        first = self._first_terms().valuation
        if first.get("mode") != "peers":
            return DEFAULT_PUBLIC_SCREEN
        return first.get("public_screen") is True

    def _round_one_references(self, settings: AggregatorSettings) -> str | None:
        """The reference rule a peer round after round 1 offers with the public screen: round
        1's ``valuation.references`` where round 1 was a peer round (which fixed it: a ledger
        whose round 1 has the screen without the rule keeps the earlier references), else
        ``settings``' (a federation that moved to the peers' scoring)."""
        first = self._first_terms().valuation
        if first.get("mode") != "peers":
            return settings.references
        references = first.get("references")
        return references if isinstance(references, str) else None

    def _first_terms(self) -> RoundTerms:
        """Round 1's terms, read back by their on-chain hash as a node reads them (once: the
        ledger fixes them)."""
        if self._round_one is None:
            first = self.ledger.get_round(1)
            blob = self._read(first.terms_cid, first.terms_sha256, max_bytes=MAX_TERMS_BYTES)
            try:
                self._round_one = RoundTerms.from_bytes(blob)
            except InvalidTerms as exc:
                raise FedtrailError(f"round 1's committed terms are unusable: {exc}") from None
        return self._round_one

    def _round_one_fixed(self, offered: RoundTerms, defaults: AggregatorSettings) -> RoundTerms:
        """``offered`` with round 1's value of each payment setting it fixed where this
        aggregator's settings offer what ``defaults`` offer (:func:`~fedtrail.protocol.terms.
        round_one_fixed`: the settings are those :func:`~fedtrail.protocol.terms.
        payment_differences` holds to round 1, found by it). Never taken: the validation split
        (this aggregator's own data), the valuation mode (how it runs the round) and whatever
        its operator set otherwise than ``defaults`` or gave at all (the fields of each
        :attr:`AggregatorSettings.given` flag). Logs what it took, once. Raises
        :class:`PaymentSettingsChanged` naming what still changes round 1's settings (a
        setting the operator gave, by its flag where known, another split, a mode round 1 does
        not allow)."""
        first = self._first_terms()
        own = _leaf_paths(offered)
        default = _leaf_paths(self._offered_terms(offered.round, defaults, publish=False))
        chosen = {p for p in {*own, *default} if own.get(p) != default.get(p)}
        flags = {flag: self._fields_of(offered, others) for flag, others in self.settings.given}
        chosen.update(*flags.values())
        never = {"validation/sha256", "validation/images", "valuation/mode", *chosen}
        terms, taken = round_one_fixed(first, offered, own=never)
        changed = payment_differences(first, terms)
        if changed:
            theirs = _leaf_paths(first)
            given = []
            for p in sorted(p for p in chosen if own.get(p) != theirs.get(p)):
                values = f"{p} {own.get(p, 'absent')}, round 1's: {theirs.get(p, 'absent')}"
                by = [flag for flag, paths in flags.items() if p in paths]
                given.append(f"{', '.join(by)} ({values})" if by else values)
            raise PaymentSettingsChanged(
                f"round {offered.round} not opened: this aggregator's settings change what "
                "round 1's terms fixed for the deployment ("
                + "; ".join(changed)
                + ")"
                + ("; set by its operator: " + "; ".join(given) if given else "")
                + "; every honest node would refuse the round and audit verify would fail it. "
                "Run with round 1's settings, or deploy a new ledger for new ones"
            )
        if taken and not self._told_round_one:
            self._told_round_one = True
            log.warning(
                "continuing this ledger under round 1's payment settings (fixed for its life, "
                "terms.task_fixed): kept from round 1 where this version's defaults differ: %s",
                "; ".join(
                    f"{p} {_shown(first_value)} (this version: {_shown(ours)})"
                    for p, ours, first_value in taken
                ),
            )
        return terms

    def _fields_of(self, offered: RoundTerms, others: Sequence[AggregatorSettings]) -> set[str]:
        """The paths of the terms fields where ``offered`` and what any of ``others`` offer
        differ (one flag's other values: the fields that flag sets). Settings this ledger
        cannot open a round with (a peer quorum above its sites) show nothing."""
        own = _leaf_paths(offered)
        out: set[str] = set()
        for other in others:
            try:
                theirs = _leaf_paths(self._offered_terms(offered.round, other, publish=False))
            except ConfigError:
                continue
            out.update(p for p in {*own, *theirs} if own.get(p) != theirs.get(p))
        return out

    def initial_salt(self) -> str:
        """The terms' ``initial_salt``: the settings', else the seed's reproducible one."""
        return self.settings.initial_salt or seeded_salt(self.settings.seed)

    def initial_seed(self) -> int:
        """The torch seed of this deployment's round-1 model (the terms declare
        ``initial_model: "deployment"``): bound to the chain, the contract and the salt, so
        another federation's updates, a twin deployment's included, are not aligned with it
        (attack a23)."""
        return deployment_seed(
            self.settings.seed, self.ledger.chain_id, self.ledger.address, self.initial_salt()
        )

    def _published_probe(self) -> roundlog.ExplanationProbe:
        """The explanation check's probe batch (:func:`~fedtrail.valuation.round.
        explanation_probe` of the validation split), stored once and kept: the terms commit its
        CID and sha256, so every verdict can be recomputed from public data."""
        if self._probe is None:
            images = explanation_probe(self.validation)
            cid, sha256 = self._put(encode_probe(images), keep=True)
            self._probe = roundlog.ExplanationProbe(
                cid=cid, sha256=sha256, images=int(images.shape[0])
            )
        return self._probe

    def _probe_of(self, ref: roundlog.ExplanationProbe) -> torch.Tensor:
        """The probe batch the round's terms commit, read back by its CID and checked as any
        reader checks it: the check runs on exactly the published bytes."""
        blob = self._read(ref.cid, ref.sha256, max_bytes=MAX_PROBE_BYTES)
        return decode_probe(blob, channels=self.spec.in_channels, size=self.spec.image_size)

    def terms(
        self, round_id: int, *, info: RoundInfo | None = None
    ) -> tuple[RoundTerms, roundlog.BlobRef]:
        """The terms the chain committed ``round_id`` to, read back by their on-chain hash.
        Kept for the latest round asked (the ledger fixes a round's terms when it opens, so
        valuation, finalize and the log read them from the chain once). ``info``: the round
        as the caller just read it, else read here."""
        if round_id not in self._terms:
            info = self.ledger.get_round(round_id) if info is None else info
            ref = roundlog.BlobRef(info.terms_cid, info.terms_sha256)
            blob = self._read(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
            try:
                terms = RoundTerms.from_bytes(blob)
            except InvalidTerms as exc:
                raise FedtrailError(
                    f"round {round_id}: the committed terms are unusable: {exc}"
                ) from None
            if terms.round != round_id or terms.spec_hash != self.spec.spec_hash():
                raise FedtrailError(
                    f"round {round_id}: the committed terms are for round {terms.round} and "
                    f"spec {terms.spec_hash[:16]}…; this aggregator runs spec "
                    f"{self.spec.spec_hash()[:16]}…"
                )
            if terms.class_names and terms.class_names != self.task.class_names:
                raise TaskMismatch(
                    f"round {round_id}: the committed terms name the classes "
                    f"{list(terms.class_names)}; this aggregator's task names them "
                    f"{list(self.task.class_names)}"
                )
            self._terms = {round_id: (terms, ref)}
        return self._terms[round_id]

    def open_next(self, *, poll: RoundPoll | None = None) -> int:
        """Opens the next round from the last finalized model (or the deployment's seeded
        initial one, :meth:`initial_seed`),
        under terms put on the store first. ``poll``: the current and last finalized rounds as
        the caller just read them (:meth:`step`), else read here (one request)."""
        counters = self.ledger.round_poll() if poll is None else poll
        last = counters.last_finalized
        initial: bytes | None = None
        if last:
            info = self.ledger.get_round(last)
            cid, sha = info.global_cid, info.global_sha256
        else:
            state = federated_state(initial_model(self.spec, self.initial_seed()))
            initial = encode_model(state, spec=self.spec, round=0)
        terms = self.round_terms(counters.current + 1)
        self._refuse_changed_payment(terms)
        stored, self._stored_terms = self._stored_terms, None
        if initial is None and stored is not None and stored[1] == terms.to_bytes():
            # stored with the last finalize's blobs (:meth:`_upcoming_terms`): no request here
            terms_cid, terms_sha = stored[0], hashlib.sha256(stored[1]).hexdigest()
            self._keep(terms_cid, stored[1])
        elif initial is None:
            terms_cid, terms_sha = self._put(terms.to_bytes(), keep=True)
        else:
            # the first round's model and its terms in one store request (issue 18)
            (cid, sha), (terms_cid, terms_sha) = self._put_all([initial, terms.to_bytes()])
        # The contract sets the deadlines from the block that mines the open: the chain's
        # windows are exactly the terms' (what terms.windows checks), however long it waited.
        valuation = roundlog.ValuationSettings.from_json(terms.valuation)
        if valuation.peers:
            assert terms.score_commit_seconds and terms.score_reveal_seconds  # peer terms have them
            assert valuation.quorum is not None
            round_id, tx = self.ledger.open_peer_round(
                self.account,
                model_cid=cid,
                model_sha256=sha,
                terms_cid=terms_cid,
                terms_sha256=terms_sha,
                commit_seconds=terms.commit_seconds,
                reveal_seconds=terms.reveal_seconds,
                score_commit_seconds=terms.score_commit_seconds,
                score_reveal_seconds=terms.score_reveal_seconds,
                quorum=valuation.quorum,
            )
            log.info(
                "round %d: peer scoring (quorum %d of the active sites; scores committed for "
                "%d s, revealed for %d s after the reveal deadline)",
                round_id,
                valuation.quorum,
                terms.score_commit_seconds,
                terms.score_reveal_seconds,
            )
        else:
            round_id, tx = self.ledger.open_round(
                self.account,
                cid,
                sha,
                terms_cid=terms_cid,
                terms_sha256=terms_sha,
                commit_seconds=terms.commit_seconds,
                reveal_seconds=terms.reveal_seconds,
            )
        self._seen = round_id
        # the deadlines the contract set, from the open's own RoundOpened (in its receipt)
        opened = self.ledger.round_opened(tx).args
        log.info(
            "round %d opened from %s under terms %s (commit until %d, reveal until %d, tx %s)",
            round_id,
            cid,
            terms_cid,
            opened["commitDeadline"],
            opened["revealDeadline"],
            tx.tx_hash,
        )
        return round_id

    def _upcoming_terms(self, round_id: int) -> bytes | None:
        """The terms of the round after ``round_id`` as :meth:`open_next` would make them now,
        stored with ``round_id``'s finalized blobs in one request (issue 18: the open's own
        put was a daemon round trip each round); the open uses them when the terms it makes
        then are these bytes, else puts its own. None under peer scoring (those terms carry
        the quorum of the sites active at open) or when they cannot be made now (the open
        makes them and raises what it raises)."""
        if self.settings.valuation_mode == "peers":
            return None
        try:
            return self.round_terms(round_id + 1).to_bytes()
        except FedtrailError as exc:
            log.debug("round %d: next round's terms left to the open: %s", round_id + 1, exc)
            return None

    def _refuse_changed_payment(self, terms: RoundTerms) -> None:
        """Raises :class:`PaymentSettingsChanged` when ``terms`` change what round 1's fixed."""
        changed = self._payment_changes(terms)
        if changed:
            raise PaymentSettingsChanged(
                f"round {terms.round} not opened: this aggregator's settings change what round "
                "1's terms fixed for the deployment (" + "; ".join(changed) + "); every honest "
                "node would refuse the round and audit verify would fail it. Run with round 1's "
                "settings, or deploy a new ledger for new ones"
            )

    def preflight(self) -> None:
        """At start, before any round work: refuses settings that change round 1's payment
        terms (the check :meth:`open_next` makes again before each opening), so an operator
        learns it now and not when the next round is due. A store or chain that cannot be read
        yet is logged and left to the check at open."""
        current = self.ledger.current_round()
        if current < 1:
            return
        try:
            self._refuse_changed_payment(self.round_terms(current + 1))
        except (StoreError, LedgerError) as exc:
            log.warning("payment settings not checked at start (checked at open): %s", exc)

    def _payment_changes(self, terms: RoundTerms) -> list[str]:
        """What ``terms`` (a round after the first) changes among the payment settings round
        1's terms fixed (:func:`~fedtrail.protocol.terms.payment_differences`, the rule nodes
        and ``audit verify`` apply); empty for round 1 or the same settings. Round 1's terms
        are read back by their on-chain hash, as a node reads them."""
        if terms.round <= 1:
            return []
        return payment_differences(self._first_terms(), terms)

    def ready_to_value(
        self, round_id: int, *, info: RoundInfo | None = None, now: int | None = None
    ) -> bool:
        """After the reveal deadline, or once every site active at open has revealed (``info``:
        the round as the caller just read it, else read here; ``now``: the pending block's
        timestamp as the caller just read it, else read here)."""
        info = self.ledger.get_round(round_id) if info is None else info
        now = next_block_timestamp(self.ledger.w3) if now is None else now
        if now > info.reveal_deadline + CLOCK_SLACK:
            return True
        return info.submission_count >= info.active_at_open > 0

    def candidates(
        self,
        round_id: int,
        *,
        info: RoundInfo | None = None,
        originals: frozenset[int] | None = None,
        submissions: Sequence[Submission] | None = None,
    ) -> list[tuple[Submission, Candidate]]:
        """Every revealed update with its decoded delta, or the reason it cannot be used; later
        copies (in commit order) of an earlier update are marked DUPLICATE
        (:func:`fedtrail.valuation.candidates.revealed_candidates`, the nodes' reading too);
        ``originals``: the only updates that may be originals (a valued peer round's, from
        :meth:`_read_in_round`); ``submissions``: the round's revealed updates as the caller just
        read them, else read here.

        Fetched and decoded once per round and process (valuation and finalize both need them);
        after a restart they are fetched again and verified against the chain as before.
        """
        terms, _ = self.terms(round_id, info=info)
        return revealed_candidates(
            self.ledger,
            self.store,
            round_id,
            terms=terms,
            spec=self.spec,
            cache=self._fetched,
            logger=log,
            originals=originals,
            submissions=submissions,
        )

    def _read_in_round(self, round_id: int) -> frozenset[int]:
        """Valued peer round ``round_id``'s updates the chain says were read while it was
        scored (:func:`~fedtrail.protocol.peers.screen_inputs`, address keys): the only
        *Duplicates* originals there, as ``audit verify`` reads them, so an update nobody could
        read then and served later makes no copy of another (its log status and the public
        screen's copies agree with the audit's at any time)."""
        return frozenset(address_key(s) for s in screen_inputs(self.ledger.peer_outcome(round_id)))

    def prefetch(self, round_id: int, *, info: RoundInfo) -> None:
        """While the reveal window is open, fetches and checks the updates revealed since the
        last poll (:func:`~fedtrail.valuation.candidates.prefetch_revealed`), so that once the
        round is ready only the last reveals are fetched. ``info``: the round as the poll just
        read it; its reveal count says whether anything new landed (no read otherwise). Never
        changes the poll's outcome: a failure here is logged and left to the valuation's own
        read."""
        if info.submission_count <= len(self._fetched.of(round_id)):
            return
        try:
            terms, _ = self.terms(round_id, info=info)
            prefetch_revealed(
                self.ledger,
                self.store,
                round_id,
                terms=terms,
                spec=self.spec,
                cache=self._fetched,
                logger=log,
            )
        except FedtrailError as exc:
            log.debug("round %d: prefetching the revealed updates failed: %s", round_id, exc)

    def value(
        self, round_id: int, *, info: RoundInfo | None = None, now: int | None = None
    ) -> list[SiteValuation] | None:
        """Scores the round and records the valuation; None when no update is usable. ``info``:
        the round as the caller just read it (only its start model and reveal deadline are used,
        which the ledger fixes when the round opens), else read here.

        A set of reveals with no usable update is valued once: until a reveal changes the set
        or the reveal deadline passes, later calls (the service's polls) answer None without
        valuing it again. The valuation is deterministic for its inputs, so the answer is the
        one a new valuation would give.
        """
        if self.is_peer_round(round_id):
            raise FedtrailError(
                f"round {round_id} is a peer round: its sites score it, not the aggregator"
            )
        info = self.ledger.get_round(round_id) if info is None else info
        now = next_block_timestamp(self.ledger.w3) if now is None else now
        past = now > info.reveal_deadline + CLOCK_SLACK
        unusable = self._unusable.get(round_id)
        if unusable is not None and unusable == (
            _reveals(self.ledger.get_submissions(round_id)),
            past,
        ):
            log.debug("round %d: the same reveals, already valued: no usable update", round_id)
            return None
        global_state = self._model(info.start_cid, info.start_sha256)
        pairs = self.candidates(round_id, info=info)
        report, standing = self._valuate(round_id, global_state, pairs)
        valuations = report.sites
        self._save_valuation(round_id, valuations, standing)
        if not any(v.score > 0 for v in valuations):
            # keyed on the reveals actually valued: one that lands meanwhile is not skipped
            self._unusable = {round_id: (_reveals([s for s, _ in pairs]), past)}
            log.warning("round %d: no usable update (all scores 0)", round_id)
            return None
        self.ledger.record_valuation(
            self.account,
            round_id,
            [Valuation(site=v.site, score=v.score, reason=int(v.reason)) for v in valuations],
        )
        log.info(
            "round %d valued: %s",
            round_id,
            ", ".join(
                f"{v.site[:8]} {v.score / SCORE_SCALE:.3f} {v.reason.name}" for v in valuations
            ),
        )
        self._at_step("valued")
        return valuations

    def _valuate(
        self,
        round_id: int,
        global_state: dict[str, torch.Tensor],
        pairs: list[tuple[Submission, Candidate]],
    ) -> tuple[RoundValuation, roundlog.Standing | None]:
        """Deterministic for a given round: the same inputs give the same scores. The settings
        are the round's committed terms; with ``standing`` the history is the one the chain
        and the previous round's log hold (:mod:`fedtrail.valuation.chained`)."""
        terms = self.terms(round_id)[0]
        valuation = roundlog.ValuationSettings.from_json(terms.valuation)
        base_seed = terms.seed  # the log's (RoundLog.valuation_seed): round 1's when taken
        carried: Carried | None = None
        combiner = combiner_from(valuation)
        if valuation.standing:
            carried = carried_history(
                self.ledger,
                self._reads,
                round_id,
                self.spec,
                stale_rounds=combiner.stale_rounds,
                known=self._references,
                decoded=self._history_reads(),
            )
            self._release_held()
        report = value_round(
            global_state=global_state,
            spec=self.spec,
            candidates=self._contradicted(round_id, pairs),
            validation=self.validation,
            method=valuation.method,
            metric=valuation.metric,
            seed=base_seed + round_id if valuation.seed is None else valuation.seed,
            explanation_check=bool(valuation.explanation_check),
            combiner=combiner,
            history=None if carried is None else carried.history,
            large_game=valuation.large_game,
            project_shift=bool(valuation.project_shift),
            probe=None
            if valuation.explanation_probe is None
            else self._probe_of(valuation.explanation_probe),
        )
        return report, None if carried is None else standing_of(carried, report)

    # ---------------------------------------------------------------- signed evidence

    def _evidence_path(self, round_id: int) -> Path:
        return self.folder / f"evidence-{round_id}.json"

    def submit_evidence(self, round_id: int, replies: Sequence[SignedReply]) -> list[Evidence]:
        """Hands the service the signed replies of ``round_id`` (the Flower ServerApp's, before
        the round is valued) and returns those that are evidence against a site right now.

        They are kept in ``evidence-<r>.json`` beside the valuation, so a restarted aggregator
        values and logs the round the same way. Nothing here is trusted: at valuation only the
        replies that :func:`fedtrail.protocol.evidence.applicable` accepts against the chain
        (signed by the site, bound to this ledger and round, contradicting the site's revealed
        update) zero a score. Refused once the round is no longer open (the chain's scores are
        then fixed, and evidence handed later would make the log disagree with them).
        """
        phase = self.ledger.get_round(round_id).phase
        if phase != Phase.OPEN:
            raise ConfigError(
                f"round {round_id} is {phase.label}: evidence is taken only before valuation"
            )
        kept = self._load_evidence(round_id)
        seen = {r.signature for r in kept}
        kept += [r for r in replies if r.signature and r.signature not in seen]
        atomic_write(
            self._evidence_path(round_id),
            json.dumps([r.to_json() for r in kept], indent=1).encode(),
        )
        subs = [s for s in self.ledger.get_submissions(round_id) if s.revealed]
        return self._evidence(round_id, subs)

    def _load_evidence(self, round_id: int) -> list[SignedReply]:
        path = self._evidence_path(round_id)
        if not path.exists():
            return []
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return [SignedReply.from_json(d) for d in doc]
        except (OSError, ValueError, TypeError, InvalidEvidence) as exc:
            # never valued without it silently: a corrupt file stops the round here
            raise FedtrailError(f"cannot read the round's evidence {path}: {exc}") from None

    def _evidence(self, round_id: int, subs: Sequence[Submission]) -> list[Evidence]:
        """The stored replies that are evidence against a site whose update ``subs`` holds."""
        return applicable(
            self._load_evidence(round_id),
            chain_id=self.ledger.chain_id,
            ledger=self.ledger.address,
            round_id=round_id,
            updates={
                s.site: ChainUpdate(cid=s.cid, sha256=s.sha256, num_samples=s.num_samples)
                for s in subs
            },
        )

    def _contradicted(
        self, round_id: int, pairs: list[tuple[Submission, Candidate]]
    ) -> list[Candidate]:
        """The round's candidates for ``value_round``, with the documented override for signed
        evidence: a site with valid evidence against it enters the valuation with status
        CONTRADICTED, so it is scored 0 with that reason and, like any update that is not
        usable, takes no part in the game, the standing or the others' scores (the auditor
        replays the same). Everything else is as :meth:`candidates` read it."""
        found = {e.site.lower(): e for e in self._evidence(round_id, [s for s, _ in pairs])}
        out = []
        for _, cand in pairs:
            e = found.get(cand.site.lower())
            if e is None:
                out.append(cand)
                continue
            log.warning("round %d: site %s scored 0: %s", round_id, e.site, e.detail)
            out.append(replace(cand, status=Reason.CONTRADICTED, detail=e.detail))
        return out

    def _valuation_path(self, round_id: int) -> Path:
        return self.folder / f"valuation-{round_id}.json"

    def _save_valuation(
        self,
        round_id: int,
        valuations: list[SiteValuation],
        standing: roundlog.Standing | None,
    ) -> None:
        doc = {
            "sites": [
                {
                    "site": v.site,
                    "score": v.score,
                    "reason": int(v.reason),
                    "components": v.components,
                    "explanation": v.explanation,
                }
                for v in valuations
            ],
            "standing": None if standing is None else standing.to_json(),
        }
        atomic_write(self._valuation_path(round_id), json.dumps(doc, default=float).encode())

    def _load_valuation(
        self, round_id: int
    ) -> tuple[dict[str, dict[str, Any]], roundlog.Standing | None]:
        """The valuation saved at ``value`` time (empty when missing or unreadable: finalize
        then re-runs the valuation, which is deterministic)."""
        path = self._valuation_path(round_id)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            sites = {d["site"]: d for d in doc["sites"]}
            raw = doc["standing"]
            return sites, None if raw is None else roundlog.Standing.from_json(raw)
        except (OSError, ValueError, KeyError, TypeError, FedtrailError):
            return {}, None

    def finalize(
        self,
        round_id: int,
        *,
        info: RoundInfo | None = None,
        submissions: Sequence[Submission] | None = None,
    ) -> RoundOutcome | None:
        """Aggregates with the weights read back from the chain, stores, finalizes. None while a
        valued peer round waits for an unreadable update (:meth:`_unreadable`). ``info``: the
        round as the caller just read it (only its start model is used, which the ledger fixes
        when the round opens), else read here; ``submissions``: its revealed updates (with
        their weights) read with it, in the valued phase, else read here."""
        info = self.ledger.get_round(round_id) if info is None else info
        # the log names each site as the registry does now, not as this process first read it:
        # a site removed and registered again under another name (between rounds, or inside
        # this one) otherwise kept its old name in every later log, and each such round failed
        # log.agrees (attack a66); one get_sites read a round
        self._names.clear()
        global_state = self._model(info.start_cid, info.start_sha256)
        if self.is_peer_round(round_id):
            # a process that did not see the scoring window (restarted, or anyone valued the
            # round first) pins what it aggregates too (no second fetch: the candidates' cache)
            self._retain(round_id)
        read = self._read_in_round(round_id) if self.is_peer_round(round_id) else None
        pairs = self.candidates(round_id, info=info, originals=read, submissions=submissions)
        if read is not None:
            pairs = self._read_again(round_id, pairs, read)
            self._pin_weighted(round_id, pairs)
            while True:  # a step of the screen's drop can weight a marked update: the next
                dropped = self._drop_screened(round_id, global_state, pairs)
                if dropped is None:
                    return None  # the screen's drop waits for its inputs' pins (or, when it
                    # would leave no weight, for the score reveal deadline to cancel the round)
                if isinstance(dropped, RoundOutcome):
                    return dropped  # the screen marks every weighted update: cancelled
                if not dropped:
                    break
                pairs = self.candidates(round_id, info=info, originals=read)  # re-weighted
        subs = [s for s, _ in pairs]
        weights = [s.weight for s in subs]
        usable = [
            (c.delta, w)
            for (_, c), w in zip(pairs, weights, strict=True)
            if w > 0 and c.delta is not None
        ]
        if len(usable) != sum(1 for w in weights if w > 0):
            if self.is_peer_round(round_id):
                outcome = self._unreadable(
                    round_id,
                    [s for (s, c), w in zip(pairs, weights, strict=True) if w and c.delta is None],
                    global_state,
                    pairs,
                )
                if outcome is not None and outcome.phase == Phase.VALUED:
                    return self.finalize(round_id)  # the rest re-weighted: finalize now
                return outcome
            raise FedtrailError(
                f"round {round_id}: an update with on-chain weight > 0 cannot be read back; "
                "refusing to aggregate without it"
            )
        rule = AggregationRule.from_terms(self.terms(round_id)[0].aggregation_rule)
        try:
            delta = aggregate(
                rule,
                [d for d, _ in usable],
                [w for _, w in usable],
                statistics=self.spec.statistic_names(),
            )
        except AggregationError as exc:
            # Every rule gives a model for every count of paid updates (since session 54; before,
            # multi-Krum refused fewer than 2 * krum_f + 3 and halted the federation here), and
            # the valuation scores a malformed update 0: this is a bug, not a retryable fault. It
            # is raised, never retried: the same inputs would fail the same way for ever.
            stuck = (
                "a valued peer round can be cancelled (cancelRound) once its score reveals close"
                if self.is_peer_round(round_id)
                else "the ledger cancels an aggregator round only while it is Open, so no later "
                "round can open until this one is finalized"
            )
            message = (
                f"round {round_id}: the paid updates cannot be aggregated under the terms' rule "
                f"{rule.name!r}: {exc}; the round stays Valued ({stuck})"
            )
            log.error("%s", message)
            raise AggregationError(message) from exc
        new_state = apply_delta(global_state, delta)
        blob = encode_model(new_state, spec=self.spec, round=round_id)
        global_sha = hashlib.sha256(blob).hexdigest()
        # the global model and the next round's terms are stored while the metrics, heatmaps
        # and log are made (issue 18: their add, a third of the finalize's store time, sat on
        # the round's critical path after the log); the heatmaps and the log follow in a
        # second request. Both are stored before the finalize names them, as before; a failed
        # put raises before it. Nothing the chain or the log records depends on the order.
        upcoming = self._upcoming_terms(round_id)
        early = [blob, *([upcoming] if upcoming is not None else [])]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finalize-put") as pool:
            stored = pool.submit(self.store.put_many, early)
            return self._finalize_stored(
                round_id,
                info,
                global_state,
                new_state,
                pairs,
                subs,
                blob,
                global_sha,
                upcoming,
                stored,
            )

    def _finalize_stored(
        self,
        round_id: int,
        info: RoundInfo,
        global_state: dict[str, torch.Tensor],
        new_state: dict[str, torch.Tensor],
        pairs: list[tuple[Submission, Candidate]],
        subs: list[Submission],
        blob: bytes,
        global_sha: str,
        upcoming: bytes | None,
        stored: Future[list[str]],
    ) -> RoundOutcome:
        """:meth:`finalize` from the encoded global model on, while ``stored`` (the put of the
        model and ``upcoming`` terms) runs: metrics, heatmaps, log, their put, the finalize."""
        # the start model's metrics: computed at the finalize that made it when this process
        # did (the same bytes, split and code give the same numbers), else here
        last = self._last_metrics
        before = (
            last[1]
            if last is not None and last[0] == info.start_sha256
            else self._evaluate(global_state)
        )
        after = self._evaluate(new_state)
        votes: list[PeerVote] | None = None
        if self.is_peer_round(round_id):
            # The sites scored: the components are the chain's medians, no standing of ours.
            votes = self.ledger.peer_votes(round_id)
            saved, standing = self._peer_components(round_id, subs, votes), None
        else:
            saved, standing = self._load_valuation(round_id)
        terms_standing = roundlog.ValuationSettings.from_json(
            self.terms(round_id)[0].valuation
        ).standing
        if votes is None and (
            not saved
            or any(saved.get(s.site, {}).get("score") != s.score for s in subs)
            or bool(terms_standing) != (standing is not None)
        ):
            # The local record is gone or disagrees with the chain: rebuild the components.
            report, standing = self._valuate(round_id, global_state, pairs)
            saved = {
                v.site: {"components": v.components, "explanation": v.explanation}
                for v in report.sites
            }
        explanations, pngs = (
            self._explanations(round_id, new_state, after.bias)
            if self.settings.explain_method
            else (None, [])
        )
        record = self._log(
            round_id,
            info.start_cid,
            info.start_sha256,
            pairs,
            saved,
            global_sha,
            before,
            after,
            explanations=explanations,
            standing=standing,
            evidence=self._evidence(round_id, subs) if votes is None else (),
            peer_votes=votes,
        )
        log_blob = record.to_bytes()
        log_sha = hashlib.sha256(log_blob).hexdigest()
        # the heatmaps and the log in one store request (each put is a daemon round trip); the
        # log names the heatmaps by their CIDs, computed before storing them. The model's put
        # is waited for first when it has failed (its error, not a needless second request)
        late = [*pngs, log_blob]
        if stored.done() and stored.exception() is not None:
            stored.result()
        late_cids = self.store.put_many(late)
        cids = stored.result() + late_cids
        blobs = [blob, *([upcoming] if upcoming is not None else []), *late]
        if cids != [compute_cid(b) for b in blobs]:
            raise FedtrailError(
                f"round {round_id}: the store named the global model, heatmaps or log by other "
                "CIDs than their content gives; refusing to finalize with them"
            )
        global_cid, log_cid = cids[0], cids[-1]
        if upcoming is not None:
            self._stored_terms = (cids[1], upcoming)
        self._keep(global_cid, blob)
        self._last_metrics = (global_sha, after)
        self.ledger.finalize_round(
            self.account,
            round_id,
            global_cid=global_cid,
            global_sha256=global_sha,
            log_cid=log_cid,
            log_sha256=log_sha,
        )
        # the next valuation's history reads this round's log (its standing source), updates
        # and models: kept in memory, not read back from the store (issue 18)
        self._keep(log_cid, log_blob)
        self._hold(round_id, info, global_sha, blob)
        log.info(
            "round %d finalized: global %s (AUC %.3f -> %.3f, %s, F1 %.3f at it), log %s",
            round_id,
            global_cid,
            before.auc,
            after.auc,
            f"threshold {after.threshold:.3f}"
            if after.num_classes == 2
            else f"{after.num_classes} classes, macro AUC and F1, decision argmax(logits + bias)",
            after.f1_calibrated,
            log_cid,
        )
        doc = record.to_json()
        return RoundOutcome(
            round=round_id,
            phase=Phase.FINALIZED,
            valuations=doc["sites"],
            metrics=doc["metrics"],
            global_sha256=global_sha,
        )

    def _explanations(
        self,
        round_id: int,
        state: dict[str, torch.Tensor],
        bias: Sequence[float] | None = None,
    ) -> tuple[roundlog.ModelExplanations, list[bytes]]:
        """Heatmaps of the new global model on the fixed probe set as PNGs, named by the CIDs
        the store gives them (the caller stores them, with the global model and the log);
        predictions at the calibrated decision (``bias``, the one the round's metrics record);
        and how faithful the method's heatmaps are there (deletion/insertion areas)."""
        method = self.settings.explain_method or "integrated_gradients"
        probe = probe_set(self.validation, self.settings.probe_per_class)
        (explained,) = explain_methods(
            state,
            self.spec,
            probe,
            methods=(method,),
            seed=self.settings.seed,
            title=f"round {round_id}: ",
            bias=bias,
            class_names=self.task.class_names,
        )
        overlays = explained.overlays
        faithful = explained.faithfulness
        images = []
        pngs = [o.png for o in overlays]  # listed in probe order
        for overlay, png in zip(overlays, pngs, strict=True):
            sha = hashlib.sha256(png).hexdigest()
            images.append(
                roundlog.HeatmapRef(cid=compute_cid(png), sha256=sha, caption=overlay.caption)
            )
        correct = sum(o.prediction == o.label for o in overlays)
        made = roundlog.ModelExplanations(
            method=method,
            probe_sha256=probe.content_sha256(),
            probe_images=len(probe),
            images=tuple(images),
            summary=f"{correct} of {len(overlays)} probe images classified correctly",
            faithfulness=None if faithful is None else faithful.to_json(),
        )
        return made, pngs

    def _log(
        self,
        round_id: int,
        start_cid: str,
        start_sha: str,
        pairs: list[tuple[Submission, Candidate]],
        saved: dict[str, dict[str, Any]],
        global_sha: str,
        before: Metrics,
        after: Metrics,
        *,
        explanations: roundlog.ModelExplanations | None = None,
        standing: roundlog.Standing | None = None,
        evidence: Sequence[Evidence] = (),
        peer_votes: Sequence[PeerVote] | None = None,
    ) -> roundlog.RoundLog:
        """The round's log from the chain's submissions, the saved valuation details and the
        round's committed terms (whose settings it repeats, with a reference to them)."""
        terms, terms_ref = self.terms(round_id)
        rule = AggregationRule.from_terms(terms.aggregation_rule)
        return roundlog.build_round_log(
            round_id=round_id,
            ledger=roundlog.LedgerRef(self.ledger.address, self.ledger.chain_id),
            start_model=roundlog.BlobRef(start_cid, start_sha),
            settings=roundlog.RoundSettings(
                aggregation_rule=dict(terms.aggregation_rule),
                valuation=roundlog.ValuationSettings.from_json(terms.valuation),
                model_spec=dict(terms.model_spec),
                spec_hash=terms.spec_hash,
                seed=terms.seed,
                terms=terms_ref,
                class_names=terms.class_names,
            ),
            validation=roundlog.ValidationRef(terms.validation_sha256, terms.validation_images),
            sites=[
                roundlog.SiteEntry.of(
                    site=sub.site,
                    name=self._site_name(sub.site),
                    # a chain CID with no CID's shape as its fixed-size stand-in (a126)
                    update=roundlog.UpdateRef(logged_cid(sub.cid), sub.sha256, sub.num_samples),
                    status=cand.status,
                    score=sub.score,
                    reason=sub.reason,
                    weight=sub.weight,
                    components=saved.get(sub.site, {}).get("components", {}),
                    explanation=saved.get(sub.site, {}).get("explanation"),
                )
                for sub, cand in pairs
            ],
            rule=rule.name,
            global_sha256=global_sha,
            before=_metrics_record(before),
            after=_metrics_record(after),
            explanations=explanations,
            standing=standing,
            evidence=evidence,
            peer_votes=peer_votes,
        )

    # ---------------------------------------------------------------- peer rounds

    def is_peer_round(self, round_id: int) -> bool:
        """Whether the chain opened ``round_id`` as a peer round (the sites score it)."""
        if round_id not in self._peer_rounds:
            self._peer_rounds[round_id] = self.ledger.get_peer_round(round_id) is not None
        return self._peer_rounds[round_id]

    def _peer_round(self, round_id: int) -> PeerRoundInfo:
        peer = self.ledger.get_peer_round(round_id)
        if peer is None:
            raise FedtrailError(f"round {round_id} is not a peer round")
        return peer

    def _past_score_reveal(self, peer: PeerRoundInfo) -> bool:
        """Whether the next block comes after peer round ``peer``'s score reveal deadline (with
        :data:`CLOCK_SLACK`): from then on its votes are all in and a valued peer round may have
        its withheld updates dropped or be cancelled."""
        return next_block_timestamp(self.ledger.w3) > peer.score_reveal_deadline + CLOCK_SLACK

    def _wait_for_score_reveal(
        self, round_id: int, peer: PeerRoundInfo, level: int, message: str, *args: object
    ) -> None:
        """Logs ``message % (round_id, *args)`` at ``level`` (why peer round ``round_id`` acts
        only after its score reveal deadline) and has the service wake for that deadline (the
        caller then answers None)."""
        log.log(level, message, round_id, *args, stacklevel=2)
        self.clock_watch.observe(self.ledger.w3, round_id, peer.score_reveal_deadline)

    def _cancel(self, round_id: int, level: int, message: str, *args: object) -> RoundOutcome:
        """Cancels round ``round_id`` (``cancelRound``), logs why (``message % (round_id,
        *args)`` at ``level``) and answers the CANCELLED outcome."""
        self.ledger.cancel_round(self.account, round_id)
        log.log(level, message, round_id, *args, stacklevel=2)
        return RoundOutcome(round=round_id, phase=Phase.CANCELLED)

    def ready_to_combine(self, round_id: int) -> bool:
        """A peer round's votes are all in: after its score reveal deadline, or once every site
        active at open has revealed a score vector."""
        info, peer = self.ledger.get_round(round_id), self._peer_round(round_id)
        if self._past_score_reveal(peer):
            return True
        return peer.vote_count >= info.active_at_open > 0

    def combine(self, round_id: int) -> RoundOutcome | None:
        """Values a peer round from its revealed score vectors: the contract records each
        update's median over the other validators (``recordPeerValuation``, predicted here with
        :func:`fedtrail.protocol.peers.peer_outcome`). The aggregator scores nothing itself.

        None while waiting or once recorded (by this service or anyone else: the call is open to
        all, and its result is fixed by the votes); the Cancelled outcome when the round cannot
        be valued (quorum not met, no update revealed, the reputation gate undecided, every
        median 0), after the score reveal deadline, with the reason logged."""
        info, peer = self.ledger.get_round(round_id), self._peer_round(round_id)
        if info.phase != Phase.OPEN:
            return None
        now = next_block_timestamp(self.ledger.w3)
        past = now > peer.score_reveal_deadline + CLOCK_SLACK
        if now > info.reveal_deadline or info.submission_count >= info.active_at_open > 0:
            self._retain(round_id)
        if not self.ready_to_combine(round_id):
            self.clock_watch.observe(self.ledger.w3, round_id, peer.score_reveal_deadline)
            return None
        subs = self.ledger.get_submissions(round_id)
        votes = self.ledger.peer_votes(round_id)
        problem = ""
        outcome = None
        if len(votes) < peer.quorum:
            problem = f"quorum not met: {len(votes)} score vector(s) revealed, quorum {peer.quorum}"
        elif not subs:
            problem = "no update revealed"
        else:
            try:
                outcome = self.ledger.peer_outcome(
                    round_id, sites=[s.site for s in subs], votes=votes
                )
                onchain_weights([s.num_samples for s in subs], list(outcome.scores))
            except GateUndecided as exc:
                outcome, problem = None, str(exc)
            except ZeroTotalWeight:
                problem = "every revealed update's peer median is 0 (zero total weight)"
        if problem:
            if past:
                return self._cancel(round_id, logging.WARNING, "round %d cancelled: %s", problem)
            self._wait_for_score_reveal(
                round_id,
                peer,
                logging.INFO,
                "round %d: %s; cancelling after the score reveal deadline",
                problem,
            )
            return None
        assert outcome is not None
        try:
            tx = self.ledger.record_peer_valuation(
                self.account,
                round_id,
                [s.site for s in subs],
                votes,
                outcome.withheld,
                medians=outcome.peer_medians,
            )
        except ContractRevert:
            if self.ledger.get_round(round_id).phase == Phase.VALUED:
                log.info("round %d: the peer valuation was already recorded", round_id)
                return None
            raise
        log.info(
            "round %d valued by %d peer vote(s) (quorum %d, tx %s): %s",
            round_id,
            len(votes),
            peer.quorum,
            tx.tx_hash,
            ", ".join(
                f"{site[:8]} {score / SCORE_SCALE:.3f} {reason.name} ({n} peers)"
                for site, score, reason, n in zip(
                    outcome.sites, outcome.scores, outcome.reasons, outcome.peer_counts, strict=True
                )
            ),
        )
        self._at_step("valued")
        return None

    def _retain(self, round_id: int) -> None:
        """Fetches every revealed update of peer round ``round_id`` once the validators may
        (the scoring window), keeps it for :meth:`finalize` and pins it in this service's store.
        A site that serves its blob to the validators and withdraws it once scored could
        otherwise make its weighted update unreadable to the aggregator, and have the valued
        round cancelled at no cost to itself, round after round; fetched with the validators, it
        stays readable here and, pinned, to auditors. An update that cannot be read now is not
        fetched again here (its validators cannot read it either); :meth:`finalize` retries a
        weighted one. Once per round and process: from :meth:`combine` in the scoring window, else
        from :meth:`finalize`."""
        if round_id in self._retained:
            return
        for old in [r for r in self._retained if r < round_id]:
            del self._retained[old]
        self._retained[round_id] = pin_readable(
            self.store, round_id, self.candidates(round_id), logger=log
        )

    def _read_again(
        self,
        round_id: int,
        pairs: list[tuple[Submission, Candidate]],
        originals: frozenset[int] | None = None,
    ) -> list[tuple[Submission, Candidate]]:
        """``pairs`` with every update with a positive score that could not be read fetched
        afresh: a failure cached earlier (the scoring window's fetch, or an earlier poll: a store
        timeout reads as not found) is not this poll's answer, and :meth:`_unreadable` drops
        what fails here (a weighted one), or the public screen leaves it out after the score
        reveal deadline (one at weight 0 from rounding, :meth:`_screen_drop`)."""
        stale = [s for s, c in pairs if s.score > 0 and c.delta is None]
        if not stale:
            return pairs
        entries = self._fetched.of(round_id)
        for sub in stale:
            entries.pop((sub.site, sub.sha256), None)
        return self.candidates(round_id, originals=originals)

    def _pin_weighted(self, round_id: int, pairs: Sequence[tuple[Submission, Candidate]]) -> None:
        """Pins every weighted update of ``pairs`` that reads and is not pinned yet (its pin in
        the scoring window failed, or it read only now): the global model is built from it, so
        an auditor must be able to read it after its site withdraws the blob. A pin that fails
        again is logged and tried at the next poll, if any."""
        pinned = self._retained.setdefault(round_id, set())
        todo = [(s, c) for s, c in pairs if s.weight > 0 and s.cid not in pinned]
        if todo:
            pinned |= pin_readable(self.store, round_id, todo, logger=log)

    def _drop_screened(
        self,
        round_id: int,
        global_state: Mapping[str, torch.Tensor],
        pairs: Sequence[tuple[Submission, Candidate]],
    ) -> bool | RoundOutcome | None:
        """Under the round terms' ``valuation.public_screen`` (with ``standing``): runs valued
        peer round ``round_id``'s public screen once (:meth:`_screen_drop`) and drops the
        weighted updates it marks (``dropScreened``: reason FREE_RIDER, the others re-weighted).
        True when it dropped any; idempotent (the drop is fixed by the chain's record, less
        what was dropped already). While one of its inputs cannot be read it does not screen
        (False): finalize then waits for that update or drops it as withheld together with the
        screen's marks on the inputs left (:meth:`_unreadable`, one ``dropUpdates``). None while
        a drop is due but an input is not pinned here (see :meth:`_screen_drop`); finalize
        waits and pins again at the next call. When the drop would leave no update with a
        weight (the screen marks every weighted one: the contract refuses it,
        ``ZeroTotalWeight``, and no global model paying a marked update passes ``audit
        verify``), the round cannot be finalized: it is cancelled (``cancelRound``, the
        CANCELLED outcome) once its score reveal deadline passed, the earliest the contract
        lets a valued peer round be cancelled; None until then."""
        drop = self._screen_drop(round_id, global_state, pairs)
        if drop is None:
            return None
        if drop.empties:
            return self._cancel_screened(round_id, drop.marks)
        # the contract drops only what is weighted now: a marked update the drop re-weights
        # (weight 0 from rounding before it) is the next step's (screen_drop's rule)
        now = {address_key(s.site) for s, _ in pairs if s.weight > 0}
        step = [(site, why) for site, why in drop.marks if address_key(site) in now]
        if not step:
            return False
        try:
            self.ledger.drop_screened(
                self.account, round_id, [s.site for s, _ in pairs], [site for site, _ in step]
            )
        except ContractRevert as exc:
            if exc.error != "ZeroTotalWeight":
                raise
            # the rule above said weight is left; the contract disagrees: retrying the same
            # drop would revert the same way at every poll, so the round ends instead
            log.error(
                "round %d: dropScreened reverted (%s), though the screen's rule left weight: "
                "the round cannot be finalized without paying a marked update",
                round_id,
                exc,
            )
            return self._cancel_screened(round_id, drop.marks)
        self._log_screened(round_id, step)
        return True

    def _cancel_screened(
        self, round_id: int, marks: Sequence[tuple[str, str]]
    ) -> RoundOutcome | None:
        """Valued peer round ``round_id`` whose public screen marks every weighted update
        (``marks``): cancelled once its score reveal deadline passed (the CANCELLED outcome),
        else logged and None (the service wakes for the deadline). No drop is posted: the
        contract refuses one that leaves no weight, and the cancel keeps the round's scores
        and reputations as valued (README *Peer rounds*)."""
        named = "; ".join(f"{site[:10]} {why}" for site, why in marks)
        peer = self._peer_round(round_id)
        if self._past_score_reveal(peer):
            return self._cancel(
                round_id,
                logging.ERROR,
                "round %d cancelled: the public screen marks every weighted update as a "
                "free-rider (%s); dropping them would leave no weight (ZeroTotalWeight), so the "
                "round cannot be finalized",
                named,
            )
        self._wait_for_score_reveal(
            round_id,
            peer,
            logging.WARNING,
            "round %d: the public screen marks every weighted update as a free-rider (%s); "
            "dropping them would leave no weight (ZeroTotalWeight): cancelling the round after "
            "its score reveal deadline",
            named,
        )
        return None

    def _screen_drop(
        self,
        round_id: int,
        global_state: Mapping[str, torch.Tensor],
        pairs: Sequence[tuple[Submission, Candidate]],
        *,
        withheld: Sequence[str] = (),
    ) -> _ScreenDrop | None:
        """The updates of valued peer round ``round_id`` that its public screen
        (:func:`~fedtrail.valuation.chained.public_screen_of`, under the terms'
        ``valuation.public_screen`` with ``standing``) drops, with why, once the weighted
        updates ``withheld`` are dropped as unreadable (the chain's outcome with that drop
        applied: the inputs are :func:`~fedtrail.protocol.peers.screen_inputs` of it, exactly
        what the screen reads after a ``dropWithheld``): the ones it marks whose weight is
        above 0 then (:func:`~fedtrail.protocol.peers.screen_drop`, the rule ``audit verify``
        applies), less those dropped as screened already; and whether that drop leaves no
        weight (:func:`~fedtrail.protocol.peers.screen_empties_round`: the round can only be
        cancelled). Empty when the terms have no public screen, nothing is weighted, the screen
        marks nothing, or an input cannot be read (finalize then waits for it or drops it as
        withheld, which takes it out of the inputs). None when a drop (or the cancel) is due but
        an input (a weighted update) is not pinned here: auditors re-check the drop on the
        inputs, so their sites must not be able to withdraw them after it (a pin lost to a
        restart or a failed request would let them turn the honest drop into a failed
        ``peers.screen``). An input that cannot be read and carries no weight (a positive
        median at weight 0 from rounding: the contract cannot drop it as withheld) is left out,
        as if withheld (:func:`~fedtrail.valuation.chained.screen_left_out_of`, logged), once
        the score reveal deadline passed; None until then (read again at every poll)."""
        valuation = roundlog.ValuationSettings.from_json(self.terms(round_id)[0].valuation)
        if not (valuation.public_screen and valuation.standing):
            return _ScreenDrop()
        gone = {address_key(site) for site in withheld}
        weighted = [s for s, _ in pairs if s.weight > 0 and address_key(s.site) not in gone]
        if not weighted:
            return _ScreenDrop()
        outcome = self.ledger.peer_outcome(round_id)
        if withheld:
            outcome = drop_withheld(outcome, withheld)
        try:
            marked = self._public_screen(
                round_id, global_state, pairs, combiner_from(valuation), outcome
            )
        except ScreenInputUnreadable as exc:
            # not screened on a part of its inputs: finalize waits for the update or drops it
            # as withheld (which takes it out of the inputs), then screens
            log.info("round %d: the public screen waits: %s", round_id, exc)
            return _ScreenDrop()
        samples = {address_key(s.site): s.num_samples for s, _ in pairs}
        counts = [samples[address_key(site)] for site in outcome.sites]
        # an input that does not read and carries no weight (a positive median at weight 0
        # from rounding) is left out, as if withheld: the contract cannot drop it (NotWeighted)
        left = screen_left_out_of([c for _, c in pairs], outcome)
        peer = self._peer_round(round_id)
        if left and not self._past_score_reveal(peer):
            # as for a weighted update: read again at every poll until the deadline
            self._wait_for_score_reveal(
                round_id,
                peer,
                logging.INFO,
                "round %d: the public screen waits for the score reveal deadline: input(s) %s "
                "cannot be read (weight 0; left out if still unreadable then)",
                ", ".join(site[:10] for site in left),
            )
            return None
        if left:
            log.warning(
                "round %d: the public screen leaves out input(s) that cannot be read and carry "
                "no weight (a positive median at weight 0 from rounding), as if withheld: %s",
                round_id,
                ", ".join(site[:10] for site in left),
            )
        rule = screen_drop(outcome, counts, marked, left_out=left)
        done = {address_key(site) for site in outcome.screened}
        why = {address_key(site): reason for site, reason in marked.items()}
        drop = [(site, why[address_key(site)]) for site in rule if address_key(site) not in done]
        if not drop:
            return _ScreenDrop()
        pinned = self._retained.get(round_id, set())
        unpinned = [s.site for s in weighted if s.cid not in pinned]
        if unpinned:
            log.warning(
                "round %d: the public screen's drop waits until every input is pinned here "
                "(auditors re-check it on them); not pinned: %s",
                round_id,
                ", ".join(site[:10] for site in unpinned),
            )
            return None
        return _ScreenDrop(
            marks=drop,
            empties=screen_empties_round(
                outcome, counts, [site for site, _ in drop], left_out=left
            ),
        )

    def _public_screen(
        self,
        round_id: int,
        global_state: Mapping[str, torch.Tensor],
        pairs: Sequence[tuple[Submission, Candidate]],
        combiner: Combiner,
        outcome: PeerOutcome,
    ) -> dict[str, str]:
        """:func:`~fedtrail.valuation.chained.public_screen_of` of peer round ``round_id``,
        computed once for the same inputs (issue 18: a round with a withheld and a screened
        update screened before ``dropUpdates`` and again at the finalize after it, on the same
        inputs). What the screen reads: the round's start model and references (fixed by the
        round), ``combiner``, the inputs :func:`~fedtrail.protocol.peers.screen_inputs` takes
        from ``outcome``, and each candidate's site, sha256, status, whether it has a delta and
        whether it declares noise (a delta is the one decoded from the blob of that sha256): the
        same key gives the same answer. :class:`ScreenInputUnreadable` is not kept."""
        key = (
            combiner,
            tuple(sorted(address_key(s) for s in screen_inputs(outcome))),
            tuple(
                (s.site, s.sha256, c.status, c.delta is not None, c.noise_declared)
                for s, c in pairs
            ),
        )
        found = self._screens.get(round_id)
        if found is not None and found[0] == key:
            return dict(found[1])
        # an unreadable input raises here, before the held models are decoded for nothing
        screen_candidates([c for _, c in pairs], outcome, round_id)
        marked = public_screen_of(
            self.ledger,
            self._reads,
            round_id,
            self.spec,
            global_state=global_state,
            candidates=[c for _, c in pairs],
            combiner=combiner,
            known=self._references,
            outcome=outcome,
            decoded=self._history_reads(),
        )
        self._release_held()
        self._screens = {round_id: (key, dict(marked))}
        return marked

    @staticmethod
    def _log_screened(round_id: int, drop: Sequence[tuple[str, str]]) -> None:
        log.warning(
            "round %d: the public screen marks weighted update(s) as free-riders, dropped "
            "(reason FREE_RIDER; the other updates re-weighted): %s",
            round_id,
            "; ".join(f"{site[:10]} {why}" for site, why in drop),
        )

    def _unreadable(
        self,
        round_id: int,
        missing: Sequence[Submission],
        global_state: Mapping[str, torch.Tensor],
        pairs: Sequence[tuple[Submission, Candidate]],
    ) -> RoundOutcome | None:
        """A valued peer round in which updates the validators weighted (``missing``, of the
        revealed updates in ``pairs``) cannot be read back: their sites may withhold the blobs
        once scored, and no global model without them passes ``audit verify``. Fetched again at
        every poll (:meth:`_read_again`, the one after the deadline included) until the score
        reveal deadline; then dropped (``dropWithheld``: reason WITHHELD, the others
        re-weighted; answers a VALUED outcome, the caller finalizes) while another weighted
        update reads, else the round is cancelled. The public screen (terms'
        ``valuation.public_screen``) cannot run while an input is unreadable; its marks on the
        inputs left once these are dropped (:meth:`_screen_drop`) are dropped in the same
        transaction (``dropUpdates``: one re-weighting; the same state and per-site events as
        ``dropWithheld`` then ``dropScreened``, which is what a ledger without ``dropUpdates``
        gets, :meth:`~fedtrail.ledger.Ledger.drop_updates`). While the screen's drop waits for
        an input's pin, both wait (the round could not finalize before the screen's drop
        anyway); when it would leave nothing weighted, the withheld updates are dropped alone
        and the screen's drop follows as before. Verify's ``peers.withheld``, ``peers.screen``
        and ``peers.cancelled`` check each drop."""
        subs = [s for s, _ in pairs]
        names = ", ".join(f"{s.site[:10]} ({s.cid})" for s in missing)
        peer = self._peer_round(round_id)
        if self._past_score_reveal(peer):
            gone = {s.site for s in missing}
            # an update left with a positive score keeps the round: its weight may be 0 from
            # rounding (exact share below one unit of 1e-18), and the drop re-weights it
            left = [s.site for s in subs if s.score > 0 and s.site not in gone]
            if left:
                withheld = sorted(gone, key=address_key)
                drop = self._screen_drop(round_id, global_state, pairs, withheld=withheld)
                if drop is None:
                    return None  # an input's pin failed: both drops wait for it (logged)
                unweighted = {address_key(s.site) for s in subs if s.weight == 0}
                screened = drop.marks
                if drop.empties or any(address_key(site) in unweighted for site, _ in screened):
                    # alone: the screen's drop follows at finalize, on the re-derived weights
                    # (one dropUpdates checks the screened updates' weights before it re-derives
                    # them), or the round's cancel when it would leave no weight
                    screened = []
                self.ledger.drop_updates(
                    self.account,
                    round_id,
                    [s.site for s in subs],
                    withheld=withheld,
                    screened=[site for site, _ in screened],
                )
                log.warning(
                    "round %d: dropped update(s) with on-chain weight > 0 that cannot be read "
                    "back (reason WITHHELD; the other updates re-weighted): %s",
                    round_id,
                    names,
                )
                if screened:
                    self._log_screened(round_id, screened)
                return RoundOutcome(round=round_id, phase=Phase.VALUED)
            return self._cancel(
                round_id,
                logging.WARNING,
                "round %d cancelled: update(s) with on-chain weight > 0 cannot be read back: %s",
                names,
            )
        self._wait_for_score_reveal(
            round_id,
            peer,
            logging.WARNING,
            "round %d: update(s) with on-chain weight > 0 cannot be read back: %s; dropping "
            "them after the score reveal deadline unless they become readable",
            names,
        )
        return None

    def _peer_components(
        self, round_id: int, subs: Sequence[Submission], votes: Sequence[PeerVote]
    ) -> dict[str, dict[str, Any]]:
        """Each site's log components in a peer round: its median and how many peers scored it,
        from the chain's votes (a median that differs from the chain's score is logged: the
        audit's peers.median check fails on it)."""
        outcome = self.ledger.peer_outcome(round_id, sites=[s.site for s in subs], votes=votes)
        gated = len(votes) - len(outcome.counted)
        out: dict[str, dict[str, Any]] = {}
        for sub, score, median, count in zip(
            subs, outcome.scores, outcome.peer_medians, outcome.peer_counts, strict=True
        ):
            if score != sub.score:
                log.error(
                    "round %d: %s's on-chain score %d is not the median %d of its peers' votes",
                    round_id,
                    sub.site,
                    sub.score,
                    score,
                )
            out[sub.site] = {
                "components": {"peer_median": median, "peer_count": count},
                "explanation": peer_explanation(
                    count=count, median=median, gated=gated, withheld=sub.reason == Reason.WITHHELD
                ),
            }
        return out

    # ---------------------------------------------------------------- driving

    def poll(self) -> tuple[RoundPoll, float]:
        """The current round, the one this service last saw, its peer record (until known) and
        the chain's clock in one read (issue 18: four round trips before), with the monotonic
        time it was read at: what :meth:`step` starts from."""
        seen = self._seen
        poll = self.ledger.round_poll(
            seen, peer=seen not in self._peer_rounds, submissions=seen == self._to_finalize
        )
        return poll, time.monotonic()

    def step(self, *, polled: tuple[RoundPoll, float] | None = None) -> RoundOutcome | None:
        """Advances the latest round by one phase if it can; the outcome of a finished round.
        ``polled``: :meth:`poll` as the caller just read it (the run loop, which decides from it
        whether to step at all), else read here."""
        self._valued = False
        self.wake = None
        # the round's record is read again only when another round is current than the one
        # this service last saw
        seen = self._seen
        poll, read_at = self.poll() if polled is None else polled
        self._to_finalize = None  # read with the poll, or not at all: once
        current = self._seen = poll.current
        if current == 0:
            self.open_next(poll=poll)
            return None
        info = poll.info
        if info is None:
            info = self.ledger.get_round(current)
        elif seen not in self._peer_rounds:
            self._peer_rounds[current] = poll.peer is not None
        if info.phase in (Phase.FINALIZED, Phase.CANCELLED):
            self.open_next(poll=poll)
            return None
        if info.phase == Phase.OPEN:
            if self.is_peer_round(current):
                return self.combine(current)
            now = poll.pending_timestamp  # one read for both checks
            if poll.info is None:  # the poll's clock predates this record: read it after it
                now = next_block_timestamp(self.ledger.w3)
                read_at = time.monotonic()
            if not self.ready_to_value(current, info=info, now=now):
                self.prefetch(current, info=info)
                self.clock_watch.observe(self.ledger.w3, current, info.reveal_deadline)
                self.wake = _next_wake(info, now, read_at)
                return None
            if self.value(current, info=info, now=now) is None:
                now = next_block_timestamp(self.ledger.w3)
                read_at = time.monotonic()
                if now > info.reveal_deadline + CLOCK_SLACK:
                    return self._cancel(
                        current, logging.WARNING, "round %d cancelled: no usable update"
                    )
                self.clock_watch.observe(self.ledger.w3, current, info.reveal_deadline)
                self.wake = _next_wake(info, now, read_at)
                return None
            self._valued = True  # finalize can follow at once
            self._to_finalize = current
            return None
        # the round's updates from the poll only when it read them with this record, valued
        submissions = poll.submissions if poll.info is info else None
        if info.phase != Phase.VALUED:
            submissions = None
        return self.finalize(current, info=info, submissions=submissions)

    def run(
        self, *, rounds: int | None = None, until_round: int | None = None, on_round: Any = None
    ) -> list[RoundOutcome]:
        """Runs until ``rounds`` rounds are closed (finalized or cancelled) in this run, or until
        the ledger's round ``until_round`` is closed, counted on chain so that a restarted
        aggregator stops at the same round instead of overshooting. One of the two is required.
        Holds the folder's lock (``aggregator.lock``) throughout: a second aggregator on the
        same folder is refused."""
        if (rounds is None) == (until_round is None):
            raise ConfigError("give exactly one of rounds and until_round")
        if (rounds is not None and rounds < 1) or (until_round is not None and until_round < 1):
            raise ConfigError("rounds and until_round must be positive")
        harm = "two on one folder would both open, value and finalize rounds and rewrite its files"
        with folder_lock(self.folder, LOCK_NAME, daemon="aggregator", harm=harm):
            self.preflight()
            return self._run(rounds, until_round, on_round)

    def _run(
        self, rounds: int | None, until_round: int | None, on_round: Any
    ) -> list[RoundOutcome]:
        outcomes: list[RoundOutcome] = []
        while not self.stop_event.is_set():
            if rounds is not None and len(outcomes) >= rounds:
                break
            failed = False
            current: int | None = None  # None: the poll itself failed
            try:
                # the step's own poll decides whether to step (issue 18: a current_round read
                # of its own before each step, and another after it). Inside the retry: a chain
                # that stops answering for a while (restarted, a dropped connection) ended the
                # aggregator here, between two steps, where a step's reads were retried
                polled = self.poll()
                current = polled[0].current
                if until_round is not None and current >= until_round:
                    info = polled[0].info
                    if info is None:  # not the round last seen: its record is not in the poll
                        info = self.ledger.get_round(current)
                    if current > until_round or info.phase in (Phase.FINALIZED, Phase.CANCELLED):
                        break
                # Don't open a round beyond the target: stop right after the last one closes.
                outcome = self.step(polled=polled)
            except (StoreError, LedgerError) as exc:
                still_open = isinstance(exc, ContractRevert) and exc.error == "RoundStillOpen"
                permanent = ContractRevert | ContractNotFound | ChainFault
                if isinstance(exc, permanent) and not still_open:
                    raise
                log.error("will retry: %s", exc)
                outcome, failed = None, True
                self.wake = None  # a whole poll interval: not a deadline read before it failed
            if outcome is not None:
                outcomes.append(outcome)
                if on_round is not None:
                    on_round(outcome)
                continue
            if self._valued and not failed:
                # valued just now: the next step finalizes, nothing to wait for (issue 18: a
                # whole poll interval, 2 s by default, sat between the two on every round)
                continue
            # a round opened by this step (only the aggregator opens rounds) is worked on at
            # once; after a failed step the chain says whether one was (its open may have
            # landed before the error); a chain that does not say is waited for
            now_current = self._current_after_failure() if failed else self._seen
            if current is None or current == now_current:
                self.stop_event.wait(
                    wake_delay(self.settings.poll_interval, self.wake, time.monotonic())
                )
        return outcomes

    def _current_after_failure(self) -> int | None:
        """The ledger's current round after a failed step; None when the chain does not say
        (it is still down): the run loop then waits a poll interval before trying again."""
        try:
            return self.ledger.current_round()
        except LedgerError as exc:
            if isinstance(exc, ContractRevert | ContractNotFound | ChainFault):
                raise
            return None


_UNPUBLISHED_PROBE: Final = roundlog.ExplanationProbe(cid="unpublished", sha256="0" * 64, images=1)
"""The explanation probe of terms only compared (``_offered_terms(publish=False)``) where none
is published yet."""

REVEAL_GRACE = 1
"""Seconds after the first second the sites may reveal (the commit deadline plus
``CLOCK_SLACK`` plus one, when a site's run loop wakes for it) that the aggregator looks for
their reveals: their store put and reveal transaction take that long."""


def _leaf_paths(terms: RoundTerms) -> dict[str, str]:
    """The terms' fields by path (:func:`~fedtrail.protocol.terms.round_one_fixed`'s), each
    as canonical JSON."""
    return {p: _shown(v) for p, v in fields_by_path(terms.to_json()).items()}


def _shown(value: object) -> str:
    return "absent" if value is ABSENT else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _next_wake(info: RoundInfo, now: int, read_at: float) -> Wake:
    """When a round still open at chain time ``now`` (read at monotonic ``read_at``) can next be
    ready to value by the chain's clock: once the sites' reveals can have landed, before that;
    after it, once the reveal deadline has passed. Reveals landing earlier are seen at the next
    poll, as before (issue 18: the round was valued up to a whole poll interval after these)."""
    reveals = info.commit_deadline + CLOCK_SLACK + 1 + REVEAL_GRACE
    due = reveals if now < reveals else info.reveal_deadline + CLOCK_SLACK + 1
    return Wake(due=due, clock=now, at=read_at)
