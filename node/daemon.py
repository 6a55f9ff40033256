"""The site daemon: watch the ledger for open rounds, train, commit, then store and reveal —
restart-safe.

Submissions are commit-then-reveal: before the round's commit deadline the node commits to
``keccak(site, round, sha256, num_samples)`` of its encoded update, which nobody else can see;
only after the deadline does it put the blob on the store and reveal CID, sha256 and sample
count. Every step that has an effect outside the process is recorded in ``state.json`` (written
atomically) *before* the next step starts, and the chain is asked first on every (re)start:

    open round seen -> encoded (blob and pending residual on disk) -> committed (chain holds
    our commitment) -> [commit deadline] -> stored (CID) -> revealed -> residual promoted

A residual that is zero before and after the round (compression ``"none"``) is no file at all:
nothing is pending or promoted, and an absent residual file reads as zero.

A crash anywhere resumes at the last recorded step: an encoded blob is committed and revealed
as it is (never retrained into different bytes), a commitment or reveal the chain already holds
is recognised from the chain (never sent again), and a refused reveal (too many samples, a
closed window) marks the round ``skipped`` with the reason instead of retrying forever. SIGTERM
sets a flag that training checks between batches; the current step is finished or abandoned
cleanly and the process exits.

:class:`NodeHooks` let a caller act on the node without the node knowing why: change the
training data or the update (the simulation's faulty sites), or act at a named step (the
simulation's crash tests, :data:`STEPS`). Production runs with the defaults, which do nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Final

import numpy as np
import torch
from eth_account.signers.local import LocalAccount

from fedtrail.chain import Wake, next_block_timestamp, wake_delay
from fedtrail.errors import (
    ChainFault,
    CommitmentMismatch,
    ConfigError,
    ContentNotFound,
    ContentTooLarge,
    ContractNotFound,
    ContractRevert,
    DuplicateSubmission,
    FedtrailError,
    InvalidUpdate,
    LedgerError,
    PrivacyBudgetError,
    RoundStateError,
    SampleLimitExceeded,
    StoreError,
    Unauthorized,
)
from fedtrail.fsutil import atomic_write, folder_lock
from fedtrail.hooks import StepHook, no_step
from fedtrail.ledger import (
    Ledger,
    PeerRoundInfo,
    PreparedCommit,
    RoundInfo,
    SiteRoundView,
    Submission,
    commitment,
    decline_commitment,
    read_decline,
)
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.metrics import Metrics, calibration_problems, evaluate, evaluate_calibrated
from fedtrail.ml.models import ModelSpec, load_federated
from fedtrail.ml.personalise import personalise
from fedtrail.ml.privacy import epsilon_spent, plan_privacy, train_private
from fedtrail.ml.task import Task, require_terms
from fedtrail.ml.training import (
    FineTuned,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    resolve_device,
    train_local,
)
from fedtrail.node.config import NodeConfig
from fedtrail.node.scoring import SUPERSEDED_NAME, PeerScorer
from fedtrail.protocol.codes import Decline, Phase
from fedtrail.protocol.privacy import DpParams, InvalidPrivacy, from_micro
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, InvalidLog, RoundLog
from fedtrail.protocol.terms import (
    MAX_TERMS_BYTES,
    InvalidTerms,
    RoundTerms,
    opening_differences,
    payment_differences,
    valuation_mode_difference,
)
from fedtrail.storage.codec import (
    decode_model,
    decode_update,
    default_max_bytes,
    encode_update,
    read_update_meta,
)
from fedtrail.storage.personal import PERSONAL_MODEL, PersonalInfo, load_personal, save_personal
from fedtrail.storage.privacy_history import PrivacyHistory
from fedtrail.storage.residual import load_residual, save_residual
from fedtrail.storage.store import NOT_GIVEN, ContentStore
from fedtrail.valuation.candidates import checks_noise
from fedtrail.valuation.consent import unrunnable
from fedtrail.valuation.limits import (
    ThresholdLimits,
    start_refusal,
    window_refusal,
)

# What `node init` also prints in the register command it suggests: the coordinator knows the size.
MAX_SAMPLES_PLACEHOLDER = "<size of this site's training set>"

log = logging.getLogger("fedtrail.node")

STATE_NAME = "state.json"
RESIDUAL_NAME = "residual.safetensors"
PENDING_DIR = "pending"
SET_ASIDE_DIR: Final = "superseded"
"""Where a record set aside (:meth:`SiteNode._reopened`) keeps an update that never left the
node, by round and sha256: restored only when the chain holds that record's opening again and
its commitment (:meth:`SiteNode._restore`)."""
SET_ASIDE_KEPT: Final = 4
"""The most update copies :data:`SET_ASIDE_DIR` keeps, all of the latest round set aside (the
newest first): a reorganisation back to an older round's opening would undo this round's
opening and that round's close too. Before (h-323), no copy was ever deleted but by a
restore: one per round reopened and per update trained for it, without bound."""
# The named steps at which the node calls ``hooks.at_step``, each right after it is recorded in
# state.json: the update is encoded (blob on disk); the commitment is on chain; the blob is on
# the store (after the commit deadline); the reveal's transaction is mined.
STEPS = ("encoded", "committed", "stored", "revealed")
CLOCK_SLACK = 2
"""Seconds past a deadline before acting on it: the block a transaction lands in may carry a
timestamp a second or two behind the pending block's (Anvil)."""
MEASURED_ROUNDS = 3
"""How many of its latest trained rounds' chain times a node compares a commit window with (the
least of them: one slow round alone does not make it decline)."""
MEASURE_HORIZON = 5
"""Rounds after which a measure no longer counts: a node that declined for a slow spell trains
again (and measures again) within this many rounds."""
MEASURE_OWN_SLACK = 10
"""Seconds a training measure may exceed this node's own clock over the same span: the measure
is chain time (what the deadlines are in), capped at the node's own elapsed time plus this
slack, so whoever moves a local chain's clock while a site trains (``evm_increaseTime``)
inflates the measure by at most this much instead of shutting the site out (attack a45)."""
# Phases after which nothing is left to do in a round ("submitted": state files written before
# commit-then-reveal).
FINAL_PHASES = frozenset({"revealed", "skipped", "submitted"})

PERSONAL_YIELD_SECONDS = 1.0
"""How often personalisation asks the chain whether a newer round waits for this site."""


class NodeNotRegistered(FedtrailError):
    """This node's account is not a registered site of the ledger."""


LOCK_NAME = "node.lock"


class NodeStateError(FedtrailError):
    """``state.json`` cannot be used: unreadable, corrupt, or written for another ledger's
    rounds. Never reset silently: a record may hold a commitment only its update opens."""


PHASES = frozenset({"encoded", "committed", "stored", "revealed", "skipped", "submitted"})


@dataclass(frozen=True, kw_only=True)
class UpdateContext:
    """What an update hook may read: the node's ledger, store, model and address, and the stop
    flag it must honour while it waits."""

    ledger: Ledger
    store: ContentStore
    address: str
    spec: ModelSpec
    poll_interval: float
    stop_event: threading.Event


Delta = dict[str, torch.Tensor]
TrainTransform = Callable[[ImageDataset], ImageDataset]
UpdateTransform = Callable[[Delta, int, UpdateContext], Delta | None]


def _same_data(ds: ImageDataset) -> ImageDataset:
    return ds


def _same_update(delta: Delta, round_id: int, context: UpdateContext) -> Delta | None:
    return delta


@dataclass(frozen=True, kw_only=True)
class Reveal:
    """What a reveal sends: where the update is, its sha256 and its sample count."""

    cid: str
    sha256: str
    num_samples: int


RevealTransform = Callable[[Reveal, int, UpdateContext], Reveal]


def _same_reveal(reveal: Reveal, round_id: int, context: UpdateContext) -> Reveal:
    return reveal


@dataclass(frozen=True, kw_only=True)
class HandedUpdate:
    """An update trained outside the node, handed to :meth:`SiteNode.participate` to submit as
    the site's own in place of the node's training (a Flower ClientApp's own training loop,
    through :mod:`fedtrail.flower.mod`). The node encodes it with its codec and residual,
    commits, and reveals it after the commit deadline, through the same restart-safe steps as
    an update it trained. ``delta`` is ``trained - start`` per federated tensor of the round's
    start model (float32); ``num_samples`` the training samples it claims (capped on chain by
    the site's sample limit)."""

    delta: Delta
    num_samples: int
    train_loss: float = 0.0
    train_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.delta, dict) or not self.delta:
            raise ConfigError("a handed update needs a non-empty delta (name -> tensor)")
        if not all(isinstance(v, torch.Tensor) for v in self.delta.values()):
            raise ConfigError("every entry of a handed update's delta must be a torch.Tensor")
        n = self.num_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"a handed update's num_samples must be a positive int, got {n!r}")
        for name in ("train_loss", "train_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"a handed update's {name} must be a number, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class NodeHooks:
    """Where a caller may act on a node; the defaults do nothing.

    ``transform_train(train)`` gives the training data the node uses (called once, when the node
    is built); ``transform_update(delta, round_id, context)`` gives the update it sends instead of
    its trained ``delta``, or None to send nothing that round; ``transform_reveal(reveal,
    round_id, context)`` gives what the node reveals instead of its own committed update (the
    simulation's copier; the contract refuses a reveal that does not open the commitment);
    ``at_step(name)`` runs right after each step named in :data:`STEPS` has been recorded.
    """

    transform_train: TrainTransform = _same_data
    transform_update: UpdateTransform = _same_update
    transform_reveal: RevealTransform = _same_reveal
    at_step: StepHook = no_step


@dataclass
class RoundRecord:
    """What this node did in one round, as persisted."""

    round: int
    phase: str  # "encoded" | "committed" | "stored" | "revealed" | "skipped"
    cid: str = ""
    sha256: str = ""
    num_samples: int = 0
    tx_hash: str = ""
    train_seconds: float = 0.0
    train_loss: float = 0.0
    val_auc: float | None = None
    val_f1: float | None = None
    """F1 on the site's validation split at the plain 0.5 threshold (more than two classes:
    macro F1 of the most probable class)."""
    note: str = ""
    val_threshold: float | None = None
    """The decision threshold the validation F1 below used (None in records written before
    the node used the round log's; those decided at 0.5)."""
    val_f1_calibrated: float | None = None
    """F1 on the site's validation split at ``val_threshold`` (more than two classes: macro F1
    of the decision ``argmax(logits + bias)`` at the round log's bias; ``val_threshold`` None)."""
    threshold_from: str = ""
    """Where ``val_threshold`` came from: the round log that recorded it, or why the default."""
    val_classes: int | None = None
    """Classes of the model the validation figures are for (None in older records)."""
    val_balanced_accuracy_calibrated: float | None = None
    """Balanced accuracy of the decision ``val_f1_calibrated`` is for."""
    val_recall_calibrated: list[float | None] | None = None
    """Recall of every class under that decision (None for a class absent from the split)."""
    personal_sha256: str = ""
    """sha256 of ``personal.safetensors`` fine-tuned from this round's global model (empty:
    none made); the model stays in the node's folder, never uploaded."""
    personal_note: str = ""
    """Why no personalised model was made for this round (terms without personalisation...)."""
    global_val_auc: float | None = None
    """This round's finalized global model on the site's validation split (personalisation)."""
    global_val_f1_calibrated: float | None = None
    global_val_balanced_accuracy_calibrated: float | None = None
    personal_val_auc: float | None = None
    """The personalised model (this round's global, fine-tuned here) on the same split."""
    personal_val_f1_calibrated: float | None = None
    personal_val_balanced_accuracy_calibrated: float | None = None
    personal_preferred: bool | None = None
    """Whether the personalised model's validation AUC is at least the global model's: the
    model this site should use (None without a validation split). At strong label skew
    fine-tuning can hurt (measured: scripts/bench/personalisation.py), so the site checks."""
    chain_seconds: int = 0
    """Chain time (s) that passed from the round's first look until its update was encoded:
    the commit window this site needs. A later round whose window leaves less is declined on
    chain (``SHORT_WINDOW``) before training, rather than trained and missed unseen (a43)."""
    epsilon_micro: int = 0
    """The epsilon this round's update spent (DP-SGD, micro-epsilon, declared at reveal); 0:
    trained without differential privacy."""
    opened: str = ""
    """Which round this record is of: the ledger's address, the round's commit deadline and
    its terms' sha256 as the chain had them (:meth:`RoundInfo.key`; empty in older records, which
    are not checked). A state file of another ledger, or of a chain restarted and redeployed at
    the same address, is refused instead of its records standing in for this ledger's rounds
    (a round recorded ``revealed`` there would be sat out here in silence)."""
    declined: int = 0
    """The :class:`~fedtrail.protocol.codes.Decline` code of the decline this site committed
    for the round (0: none), so that a decline a chain reorganisation dropped is committed
    again while the commit window is open, with the same reason (before, the reason was only
    in ``note`` and a dropped decline left the site reading as absent)."""
    start_sha256: str = ""
    """sha256 of the round's start model as the chain named it when :attr:`opened` was stamped
    (empty in older records): an opening mined again at another time under the same terms,
    start model and windows keeps the update trained for it (:meth:`SiteNode._same_opening`);
    an older record without it is set aside as under other terms."""
    put_tried: bool = False
    """A put of this update on the store was tried and did not return its CID (the store may
    hold the bytes, h-323): the update may have left the node although :attr:`cid` is empty,
    so it is never committed again, kept or restored into another opening (a colluder who
    fetched the bytes could commit them first: the duplicate rule would make this site the
    copy); a reopening sets it aside as published."""


_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_DECLINED_NOTE: Final = re.compile(r" \[declined on chain \(([a-z ]+)\) in tx ([^\s\]]+)\]\Z")
"""How every node since decline commitments (a42) ends the note of the decline it committed:
"<why> [declined on chain (<reason's label>) in tx <its hash>]"."""

_DECLINED_FIRST: Final = re.compile(
    r"declined on chain \(([a-z ]+)\) before this node's record of it was saved; nothing to do"
)
"""The whole note of a decline that landed before its record was saved (and its reason)."""


def _declined_in(note: str, tx_hash: str) -> int:
    """The :class:`Decline` code the note of a record written before
    :attr:`RoundRecord.declined` names (0: none, or no reason's label). The note holds the
    reason the site signed, so a decline of such a record a reorganisation drops is committed
    again with that reason (recomputing the decision instead would depend on the store, the
    site's cap and its ``[accept]`` as they are now, not as they were). Only the node's own
    wording counts: the note's end (naming the record's ``tx_hash`` where it has one), or the
    whole note (the text before that end quotes what others wrote, an InvalidTerms message
    with the terms' values among it, which named a reason anywhere in it before: the last
    one found won, and a decline that was never sent was committed with it)."""
    found = _DECLINED_FIRST.fullmatch(note)
    if found is None:
        found = _DECLINED_NOTE.search(note)
        if found is None or (tx_hash and found.group(2) != tx_hash):
            return 0
    labels = {d.label: int(d) for d in Decline}
    return labels.get(found.group(1), 0)


@dataclass
class NodeState:
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    _lines: dict[int, tuple[dict[str, tuple[type, object]], str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The line :meth:`save` last wrote for each round, with the record's values it encodes."""

    @classmethod
    def load(cls, path: Path) -> NodeState:
        """The state in ``path`` (none yet: empty); a file that cannot be read or is not a
        node state raises :class:`NodeStateError` naming it, never an empty state."""
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise NodeStateError(f"node state {path} cannot be read: {exc}") from exc
        except ValueError as exc:
            raise NodeStateError(f"node state {path} is corrupt: {exc}") from exc
        try:
            rounds = {int(k): RoundRecord(**v) for k, v in raw["rounds"].items()}
            unsaid = {int(k) for k, v in raw["rounds"].items() if "declined" not in v}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NodeStateError(f"node state {path} is corrupt: {exc!r}") from exc
        for r, rec in rounds.items():
            if rec.round != r or rec.phase not in PHASES:
                raise NodeStateError(
                    f"node state {path} is corrupt: round {r}'s record says round "
                    f"{rec.round!r}, phase {rec.phase!r}"
                )
            seconds = rec.chain_seconds
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
                # a44: a value that is not a whole number of seconds either crashed the window
                # check later (TypeError) or was silently taken as a measure
                raise NodeStateError(
                    f"node state {path} is corrupt: round {r}'s chain_seconds is "
                    f"{seconds!r}, not a whole number of seconds >= 0"
                )
            if (
                r in unsaid
                and rec.phase == "skipped"
                and isinstance(rec.note, str)
                and isinstance(rec.tx_hash, str)
            ):
                rec.declined = _declined_in(rec.note, rec.tx_hash)  # written before the field
            code = rec.declined
            if type(code) is not int or code not in (0, *(int(d) for d in Decline)):
                # a decline re-sent after a reorganisation takes its reason from here
                raise NodeStateError(
                    f"node state {path} is corrupt: round {r}'s declined is {code!r}, not 0 "
                    "or a decline reason's code"
                )
        return cls(rounds)

    def uncharged_releases(self, *, besides: int | None = None) -> dict[int, int]:
        """The micro-epsilon of each DP update that left the node with no spend on chain for
        it, by round: its ``skipped`` records that keep a CID and an epsilon (a reveal a
        reorganisation dropped with the round's opening, or a refused one), all but round
        ``besides`` (the round the budget check is for). The budget check adds them to the
        chain's spend; ``node status`` shows them beside it."""
        return {
            r: rec.epsilon_micro
            for r, rec in sorted(self.rounds.items())
            if r != besides and rec.phase == "skipped" and rec.cid and rec.epsilon_micro > 0
        }

    def save(self, path: Path) -> None:
        """Writes every record to ``path`` atomically (fsynced), one JSON line a round. A record
        unchanged since this state's last save reuses the line it had, so a write encodes only
        what changed: the whole file was re-encoded at each of a round's ~4 writes, which grew
        with the history (issue 18: 217 ms a write at 1,000 rounds, 13 ms at 10). The document
        is the same as before (``{"rounds": {"<round>": {record}}}``), only laid out a line a
        round, so older and newer nodes read each other's files."""
        lines: dict[int, tuple[dict[str, tuple[type, object]], str]] = {}
        for k, v in sorted(self.rounds.items()):
            # a copy (lists too) with each value's type, compared by ==: a record whose values
            # equal the ones encoded, of the same types, keeps its line (1 and 1.0 differ here;
            # 0.0 and -0.0 do not, nor do the float and None entries of a list by type)
            values = {
                n: (type(x), list(x) if isinstance(x, list) else x) for n, x in vars(v).items()
            }
            last = self._lines.get(k)
            if last is None or last[0] != values:
                last = (values, f"{json.dumps(str(k))}: {json.dumps(asdict(v))}")
            lines[k] = last
        self._lines = lines
        body = ",\n".join(line for _, line in lines.values())
        atomic_write(path, ('{"rounds": {\n' + body + "\n}}\n").encode("utf-8"))


def _is_zero(state: dict[str, torch.Tensor]) -> bool:
    """Every value of ``state`` is +0.0, bit for bit (a -0.0 would change a sum's sign of zero,
    so only +0.0 stands for the zero residual that no file means)."""
    return all(not t.any() and not torch.signbit(t).any() for t in state.values())


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _headline(m: Metrics | None) -> tuple[float | None, float | None, float | None]:
    """AUC, calibrated F1 and calibrated balanced accuracy (None where not defined)."""
    if m is None:
        return None, None, None
    return (
        _finite(m.auc),
        _finite(m.f1_calibrated),
        _finite(m.balanced_accuracy_calibrated),
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _round_seed(seed: int, round_id: int, *purpose: int) -> int:
    words = [seed, round_id, *purpose]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


PERSONAL_SEED_TAG = 1
"""Fine-tuning after round r draws from ``SeedSequence([seed, r, 1])``, a stream apart from the
round's training (``[seed, r]``)."""


def _unrunnable(terms: RoundTerms, accept: ThresholdLimits | None = None) -> str | None:
    """:func:`fedtrail.valuation.consent.unrunnable`, the rule ``audit verify`` shares
    (``terms.declined``)."""
    return unrunnable(terms, accept)


TERMS_KEPT = 4
"""Terms documents a node keeps in memory (this round's and round 1's, which every later
round's payment check compares with, and a few more)."""


MISSES_BEFORE_DECLINE: Final = 3
"""Polls on which the store must fail to give a round's terms or start model before the node
declines the round for it (:meth:`SiteNode._gives_up`)."""


def _half_window_gone(info: RoundInfo, now: int) -> bool:
    """Whether the chain clock ``now`` has passed half of ``info``'s commit window: from then
    on blobs no node serves are declined, no longer retried (attacks a80, a81)."""
    return 2 * (now - info.opened_at) >= info.commit_deadline - info.opened_at


class SiteNode:
    """One site's participation logic over a ledger and a content store."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        store: ContentStore,
        account: LocalAccount,
        config: NodeConfig,
        folder: Path,
        train: ImageDataset,
        val: ImageDataset | None,
        progress: bool = False,
        stop_event: threading.Event | None = None,
        hooks: NodeHooks = NodeHooks(),
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.account = account
        self.config = config
        self.hooks = hooks
        self.folder = Path(folder)
        self.train = hooks.transform_train(train)
        self.val = val
        names = config.data.class_names or tuple(
            f"class {i}" for i in range(config.model.num_classes)
        )
        self.task = Task(spec=config.model, class_names=names)
        self.task.check_data(self.train, "this site's training split")
        if val is not None:
            self.task.check_data(val, "this site's validation split")
        # at start: `device = "cuda"` on a machine without one was found only when the first
        # round opened, and ended the daemon there (ConfigError, exit 2), hours after `node run`
        resolve_device(config.training.device)
        self.progress = progress
        self.stop_event = stop_event or threading.Event()
        # the DP parameters of revealed updates (immutable: a blob pinned by its sha256)
        self._dp_params: dict[tuple[int, str], DpParams | None] = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / PENDING_DIR).mkdir(exist_ok=True)
        self.state_path = self.folder / STATE_NAME
        self.state = NodeState.load(self.state_path)
        self._opened: dict[int, str] = {}
        """:meth:`RoundInfo.key` of each round :meth:`participate` saw; stamped on its record."""
        self._starts: dict[int, str] = {}
        """The start model's sha256 of each round :meth:`participate` saw; stamped with
        :attr:`_opened`'s key (:attr:`RoundRecord.start_sha256`)."""
        self._settled: set[int] = set()
        """Rounds whose finished record :meth:`participate` found settled (:meth:`_droppable`
        false): the run loop polls a finished round again only until it is here."""
        self._terms: dict[str, RoundTerms] = {}
        """Terms read, by their sha256 (:meth:`_terms_of`)."""
        self.wake: Wake | None = None
        """When the step :meth:`participate` last left waiting can be taken (the reveal, once
        the commit window has closed); None: nothing waits on a deadline."""
        self._misses: dict[str, int] = {}
        """Polls of this process on which the store did not give a CID (:meth:`_gives_up`)."""
        self.scorer = PeerScorer(
            ledger=ledger,
            store=store,
            account=account,
            spec=config.model,
            folder=self.folder,
            val=val,
            at_step=hooks.at_step,
            accept=config.accept,
        )
        """This site's part as a validator of peer rounds (:mod:`fedtrail.node.scoring`)."""

    # ---------------------------------------------------------------- helpers

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _terms_of(self, info: RoundInfo) -> RoundTerms:
        """The terms ``info`` commits to, read by their on-chain hash (:class:`InvalidTerms`,
        or the store's error, when they cannot be). Kept by that hash, which pins their bytes:
        the checks before training and the privacy plan read a round's terms once, not once
        each (issue 18); the latest few are kept."""
        found = self._terms.get(info.terms_sha256)
        if found is None:
            blob = self.store.get(info.terms_cid, info.terms_sha256, max_bytes=MAX_TERMS_BYTES)
            found = RoundTerms.from_bytes(blob)
            kept = list(self._terms.items())[-(TERMS_KEPT - 1) :]
            self._terms = {**dict(kept), info.terms_sha256: found}
        return found

    def _save(self) -> None:
        for r, key in self._opened.items():
            rec = self.state.rounds.get(r)
            if rec is not None and not rec.opened:
                rec.opened = key
                rec.start_sha256 = self._starts.get(r, "")
        self.state.save(self.state_path)

    def _check_opened(
        self,
        round_id: int,
        info: RoundInfo,
        record: RoundRecord | None,
        on_chain: Submission | None,
        *,
        peer: PeerRoundInfo | None = None,
        peer_read: bool = False,
    ) -> RoundRecord | None:
        """The record to go on with for ``round_id``: ``record`` when it was made for this
        round as the chain has it now; None when it was made for an earlier opening of the
        same ledger's round ``round_id`` (other terms or deadlines: a reorganisation dropped
        ``openRound`` and the round was opened again, or the chain was restarted and redeployed
        at the same address), set aside by :meth:`_reopened`, or the ``skipped`` record that
        puts in its place. Refuses (:class:`NodeStateError`) a record of another ledger's round
        (state.json of another federation in this folder): by its :attr:`RoundRecord.opened`,
        or for an older record without one, a reveal it records that the chain does not hold."""
        key = info.key(self.ledger.address)
        if self._opened.get(round_id, key) != key:
            self.scorer.forget(round_id)  # a145: the round was opened again under this process
        self._opened[round_id] = key
        self._starts[round_id] = info.start_sha256.removeprefix("0x")
        if record is None:
            return None
        if record.opened:
            if record.opened == key:
                moved = False
                if record.phase in ("encoded", "committed", "stored"):
                    try:
                        moved = self._opening_moved(
                            round_id, record, info, peer=peer, peer_read=peer_read
                        )
                    except (StoreError, *NOT_GIVEN):
                        # terms not given now (a restarted node keeps none): the record stands,
                        # as before h-323, rather than a reveal held up at every poll
                        moved = False
                if moved:
                    # the same key, another opening: another start model, or windows other
                    # than the terms' (the key pins neither; a fresh look declines those)
                    return self._reopened(
                        round_id, record, key, still_open=info.phase == Phase.OPEN
                    )
                return record
            if record.opened.split("/", 1)[0] == self.ledger.address:
                if self._same_opening(round_id, record, info):
                    return self._kept(round_id, record, key)
                return self._reopened(round_id, record, key, still_open=info.phase == Phase.OPEN)
            theirs = f"of another ledger ({record.opened}; this ledger's is {key})"
        elif record.phase in ("revealed", "submitted") and (
            on_chain is None or not on_chain.revealed or on_chain.sha256 != record.sha256
        ):
            theirs = f"revealed with sha256 {record.sha256[:16]}, which this ledger does not hold"
        else:
            return record
        raise NodeStateError(
            f"{self.state_path} records round {round_id} ({record.phase}) {theirs}: this "
            "folder's state is not this ledger's. Give the node a folder of its own for this "
            "ledger, or move state.json, residual.safetensors and pending/ aside if the old "
            "federation is gone for good"
        )

    def _same_opening(self, round_id: int, record: RoundRecord, info: RoundInfo) -> bool:
        """Whether ``record``, made under an earlier opening of round ``round_id`` of this
        ledger (another key: :meth:`_reopened` would set it aside), holds an update that stands
        in the opening the chain has now: the same ``openRound`` mined again later (a shallow
        reorganisation dropped its block and the transaction came back from the mempool), its
        commit deadline moved with the block's time and nothing the site consented to changed:
        the same terms' sha256 and start model (:attr:`RoundRecord.start_sha256`), the chain's
        windows (and aggregator or peer round) the ones the terms name, as
        :meth:`_terms_refusal` checks them (``openRound`` sets the windows; the terms' hash does
        not pin them). Only an update that never left the node (``encoded`` or ``committed``,
        no CID: its bytes never put on the store), its pending blob here, the round open, and
        the chain holding no commitment of this site or this update's (the site's own commit
        transaction replayed in the new branch); a different commitment is not this update's
        (:meth:`_reopened`, then "lost locally"). Before, the record was set aside and its
        blob deleted, so the site's replayed commitment was never revealed: the site read as
        withheld in the most common reorganisation of a round's opening. The terms are read
        by their hash (kept since this node read them; a store that does not give them
        raises: retried) and the round's peer record and this site's submission are read."""
        if record.phase not in ("encoded", "committed") or record.cid or not record.sha256:
            return False
        if record.put_tried:
            return False
        if info.phase != Phase.OPEN or not self._pending_blob(round_id).exists():
            return False
        if not record.start_sha256:
            return False  # an older record names no start model: set aside as before
        if record.opened.rpartition("/")[2] != info.terms_sha256.removeprefix("0x"):
            return False
        if self._opening_moved(round_id, record, info):
            return False
        on_chain = self.ledger.get_submission(round_id, self.address)
        if on_chain is None:
            return True
        ours = self._commitment(round_id, record)
        return not on_chain.revealed and on_chain.commitment.removeprefix("0x") == ours

    def _opening_moved(
        self,
        round_id: int,
        record: RoundRecord,
        info: RoundInfo,
        *,
        peer: PeerRoundInfo | None = None,
        peer_read: bool = False,
    ) -> bool:
        """Whether the opening the chain holds now is not one ``record``'s update may be sent
        into: another start model than :attr:`RoundRecord.start_sha256` (when recorded), or
        windows (and aggregator or peer round) other than the terms name, as
        :meth:`_terms_refusal` checks them before training (``openRound`` sets the windows;
        neither the terms' hash nor the key pins them or the start model). With the key (its
        commit deadline and terms) and windows the terms' own, the opening block's time and
        both deadlines are the ones the site consented to. ``peer``: the round's peer record
        when ``peer_read`` (else read here). Terms the store no longer gives raise (retried);
        terms that do not parse: moved."""
        start = info.start_sha256.removeprefix("0x")
        if record.start_sha256 and record.start_sha256 != start:
            return True
        try:
            terms = self._terms_of(info)
        except (InvalidTerms, ContentTooLarge):
            return True
        chain_peer = peer if peer_read else self.ledger.get_peer_round(round_id)
        windows = opening_differences(terms, info, chain_peer)
        mode = valuation_mode_difference(terms, peer_round=chain_peer is not None)
        return bool(windows) or mode is not None

    def _kept(self, round_id: int, record: RoundRecord, key: str) -> RoundRecord:
        """Carries ``record`` over to the opening ``key`` (:meth:`_same_opening`): the key
        re-stamped, the pending update and residual kept. Its phase goes back to ``encoded``,
        so :meth:`participate` commits the same bytes again inside the commit window, takes the
        site's replayed commitment of them as its own (:meth:`_commit`), or skips the round once
        the commit window is closed with nothing committed (never storing an update the chain
        holds no commitment of). One write: a crash before it decides again from the chain."""
        was = record.opened
        self._settled.discard(round_id)
        record.opened = key
        record.start_sha256 = self._starts.get(round_id, record.start_sha256)
        record.phase = "encoded"
        record.note = (
            f"{record.note} " if record.note else ""
        ) + f"[opened again at another time ({was}), same terms, start model and windows: kept]"
        self._save()
        log.warning(
            "round %d was opened again (was %s, now %s) under the same terms, start model and "
            "windows (its openRound mined again: a reorganisation): this node's update is kept",
            round_id,
            was,
            key,
        )
        return record

    def _reopened(
        self, round_id: int, record: RoundRecord, key: str, *, still_open: bool
    ) -> RoundRecord | None:
        """Sets aside ``record``, made under an earlier opening of round ``round_id`` of this
        ledger (its key, :attr:`RoundRecord.opened`, is not ``key``): the record goes to
        :data:`SUPERSEDED_NAME` and the round's pending update and residual are deleted (an
        update that never left the node kept as a copy in :data:`SET_ASIDE_DIR`, restored only
        under this record's opening again: :meth:`_restore`), so
        nothing trained, committed or consented to under the earlier terms is ever committed,
        revealed or declined under these (a commitment of the old update that lands again in
        the new branch is then "committed, but lost locally", never revealed; the same opening
        mined again later is not set aside: :meth:`_same_opening`). None: the round
        is taken as new, every check before training runs on its terms again. A ``skipped``
        record is put in its place instead (not declared on chain: no decline reason says it)
        when the update had left the node (``stored``/``revealed``, or ``skipped`` with its CID
        after a refused reveal: its bytes public, perhaps fetched; the skipped record keeps its
        CID, sha256 and epsilon, so a later reopening sees it as published too, h-319):
        training is seeded, so training again would commit the same bytes, which
        anyone could have committed first in the new opening (the duplicate rule, by commit
        order, would make this site the copy), and a DP update's second release would be one
        the chain no longer counts (h-316's a142); and when the round is no longer open
        (``still_open`` false: nothing can be sent). Before, such a record made the node raise
        :class:`NodeStateError` and stop: whoever controls the chain could halt every node by
        reopening a round."""
        self._settled.discard(round_id)
        blob = self._pending_blob(round_id)
        left = bool(record.cid) or record.put_tried
        if record.phase in ("encoded", "committed") and record.sha256 and not left:
            # never left the node: a copy kept out of pending/ (where _recover never looks),
            # for a reorganisation back to this opening (_restore)
            try:
                data = blob.read_bytes()
            except FileNotFoundError:
                data = b""
            if data and hashlib.sha256(data).hexdigest() == record.sha256:
                (self.folder / SET_ASIDE_DIR).mkdir(exist_ok=True)
                atomic_write(self._set_aside_blob(round_id, record.sha256), data)
                self._prune_set_aside(round_id, keep=record.sha256)
        # the pending update first: a crash before the record is gone sets it aside again,
        # where one after it, the update kept, would let _recover reveal it under these terms
        self._pending_residual(round_id).unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        line = json.dumps({"superseded_by": key, "record": asdict(record)}) + "\n"
        path = self.folder / SUPERSEDED_NAME
        before = path.read_bytes() if path.exists() else b""
        atomic_write(path, before + line.encode("utf-8"))
        # on the store: stored or revealed, or skipped after that (a reveal refused: its CID
        # kept), which a check of the phase alone took for an update that never left (h-319)
        published = record.phase in ("stored", "revealed", "submitted") or left
        was = f"round {round_id} was opened again under other terms or deadlines"
        note = ""
        if published:
            note = (
                f"{was} after this site's update of its earlier opening left the node "
                f"({record.phase}): not committed again (a copy of it may be committed first "
                "in the new opening) nor trained again (seeded training gives the same bytes; "
                "a second release of this site's data for the round)"
            )
        elif not still_open:
            note = f"{was} and closed before this node saw it: nothing can be sent"
        kept: RoundRecord | None = None
        if note:
            # a published update's CID, sha256 and epsilon kept: a later reopening sees this
            # record as published too (without them a second reopening trained the same data
            # again) and the privacy budget counts its epsilon (h-319)
            kept = RoundRecord(round=round_id, phase="skipped", opened=key)
            if published:
                kept.cid, kept.sha256 = record.cid, record.sha256
                kept.put_tried = record.put_tried
                kept.epsilon_micro = record.epsilon_micro
            kept.note = note
            self.state.rounds[round_id] = kept
        else:
            del self.state.rounds[round_id]
        self._save()
        log.warning(
            "round %d was opened again (this node's record, %s, was made under %s; the chain's "
            "round is %s: a reorganisation, or the chain redeployed): record moved to %s%s",
            round_id,
            record.phase,
            record.opened,
            key,
            path,
            "; " + kept.note
            if kept is not None
            else "; the round's terms are checked again as a new round's",
        )
        return kept

    def _prune_set_aside(self, round_id: int, *, keep: str) -> None:
        """Deletes the update copies of :data:`SET_ASIDE_DIR` but the newest
        :data:`SET_ASIDE_KEPT` of round ``round_id`` (``keep``'s, just written, among them)."""
        mine: list[tuple[float, Path]] = []
        for path in (self.folder / SET_ASIDE_DIR).glob("update-*.safetensors"):
            if path == self._set_aside_blob(round_id, keep):
                continue
            try:
                if path.name.startswith(f"update-{round_id}-"):
                    mine.append((path.stat().st_mtime, path))
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
        for _, path in sorted(mine, reverse=True)[SET_ASIDE_KEPT - 1 :]:
            path.unlink(missing_ok=True)

    def _set_aside_blob(self, round_id: int, sha256: str) -> Path:
        return self.folder / SET_ASIDE_DIR / f"update-{round_id}-{sha256}.safetensors"

    def _restore(
        self,
        round_id: int,
        on_chain: Submission,
        info: RoundInfo,
        peer: PeerRoundInfo | None,
    ) -> RoundRecord | None:
        """The record of this site's commitment ``on_chain`` made under an opening the chain
        holds again (a reorganisation back to it, after :meth:`_reopened` set the record aside
        for another opening): the latest set-aside record of round ``round_id`` made under the
        round's key as the chain has it now, whose update never left the node and whose
        commitment is ``on_chain``'s, its update's copy kept (:data:`SET_ASIDE_DIR`). Its
        bytes go back to pending/ first, then the record to state.json (a crash between:
        found again here, or by :meth:`_recover`). None: no such record or copy. Before, the
        copy was deleted and the commitment, which the site consented to, read as withheld.
        The key pins neither the start model nor the windows: the opening is held to the
        record's start model and to the terms' windows (:meth:`_opening_moved`, ``peer`` the
        round's peer record); a put tried (:attr:`RoundRecord.put_tried`), a line unreadable
        or of the wrong types is passed over (h-323)."""
        key = self._opened.get(round_id, "")
        path = self.folder / SUPERSEDED_NAME
        if not key or not path.exists():
            return None
        # the node's own file, read leniently: a line it cannot read is skipped, not raised
        for line in reversed(path.read_bytes().decode("utf-8", "replace").splitlines()):
            try:
                entry = json.loads(line)
                raw = entry.get("record") if isinstance(entry, dict) else None
                if not isinstance(raw, dict) or raw.get("round") != round_id:
                    continue
                old = RoundRecord(**raw)
            except (ValueError, TypeError):
                continue
            if old.opened != key or old.phase not in ("encoded", "committed") or old.cid:
                continue
            if old.put_tried:
                continue
            if not isinstance(old.sha256, str) or not _SHA256_HEX.fullmatch(old.sha256):
                continue
            if not isinstance(old.num_samples, int) or not isinstance(old.start_sha256, str):
                continue
            if self._commitment(round_id, old) != on_chain.commitment.removeprefix("0x"):
                continue
            if self._opening_moved(round_id, old, info, peer=peer, peer_read=True):
                continue  # the same key, another opening (start model, windows): not restored
            kept = self._set_aside_blob(round_id, old.sha256)
            data = kept.read_bytes() if kept.exists() else b""
            if hashlib.sha256(data).hexdigest() != old.sha256:
                continue
            atomic_write(self._pending_blob(round_id), data)
            old.phase = "committed"
            old.note = (f"{old.note} " if old.note else "") + (
                "[restored: the chain holds this opening and this commitment again]"
            )
            self.state.rounds[round_id] = old
            self._save()
            kept.unlink(missing_ok=True)
            log.warning(
                "round %d: the chain holds the opening %s and this site's commitment made under "
                "it again (a reorganisation back): its update, set aside, restored",
                round_id,
                key,
            )
            return old
        return None

    def _pending_blob(self, round_id: int) -> Path:
        return self.folder / PENDING_DIR / f"update-{round_id}.safetensors"

    def _pending_residual(self, round_id: int) -> Path:
        return self.folder / PENDING_DIR / f"residual-{round_id}.safetensors"

    def check_registered(self) -> None:
        site = self.ledger.get_site(self.address)
        if site is None or not site.registered:
            raise NodeNotRegistered(
                f"{self.address} is not a registered site of the ledger at "
                f"{self.ledger.address}; ask the coordinator to run "
                f"`fedtrail node register {self.address} --name {shlex.quote(self.config.name)} "
                f"--max-samples {MAX_SAMPLES_PLACEHOLDER}`"
            )

    # ---------------------------------------------------------------- one round

    def participate(
        self, round_id: int, *, update: HandedUpdate | None = None
    ) -> RoundRecord | None:
        """Do whatever of ``round_id`` this site can do now; the round's record, or None if it
        cannot take part. A record still ``encoded``/``committed``/``stored`` has a step left
        that waits for chain time (the commit deadline); call again later.

        ``update``: an update trained elsewhere, encoded and submitted in place of training
        (only when this round has nothing encoded yet: once encoded, the blob on disk is what
        is committed and revealed, as after a restart)."""
        # the round, this site's commitment, the chain's clock, the last finalized round and the
        # privacy account, read in one batch at each step (issue 18: five to nine requests)
        self.wake = None
        view = self.ledger.site_round(round_id, self.address)
        view_at = time.monotonic()  # the chain's clock was read no later than this
        info, on_chain = view.info, view.submission
        record = self._check_opened(
            round_id,
            info,
            self.state.rounds.get(round_id),
            on_chain,
            peer=view.peer,
            peer_read=True,
        )
        if (
            record is not None
            and record.phase in FINAL_PHASES
            and not self._droppable(record, info, view.pending_timestamp)
        ):
            self._settled.add(round_id)  # nothing the chain could still drop can be sent again
        if on_chain is not None and on_chain.revealed:
            if (
                record is not None
                and record.phase == "revealed"
                and (record.sha256, record.cid) == (on_chain.sha256, on_chain.cid)
                and not self._pending_residual(round_id).exists()
            ):
                return record  # the chain still holds the reveal recorded (polled in its window)
            return self._mark_revealed(round_id, record, on_chain.sha256, on_chain.cid)
        if record is not None and info.phase == Phase.OPEN:
            dropped = self._dropped(round_id, record, on_chain, info, view.pending_timestamp)
            if dropped == "reveal":
                return self._reveal(round_id, record, info.reveal_deadline)
            if dropped == "decline":
                return self._declare_again(round_id, record, info)
        if record is not None and record.phase in FINAL_PHASES:
            return record
        if info.phase != Phase.OPEN:
            log.info("round %d is %s; nothing to do", round_id, info.phase.label)
            if record is not None and on_chain is not None:
                return self._skip(record, f"round {info.phase.label} before our reveal")
            return None
        now = view.pending_timestamp
        started = time.monotonic()  # this node's own clock over the same span (a45)
        acted = False  # trained or sent a transaction since `now` was read
        prepared: PreparedCommit | None = None  # the commitment's preflight, read ahead
        have_blob = record is not None and self._pending_blob(round_id).exists()
        if record is None and on_chain is not None:
            # state.json lost, pending/ kept; or a reorganisation back to a set-aside opening
            record = self._recover(round_id, on_chain) or self._restore(
                round_id, on_chain, info, view.peer
            )
            have_blob = record is not None
        if record is None or not have_blob:
            if on_chain is not None:
                record = record or RoundRecord(round=round_id, phase="committed")
                declined = read_decline(
                    on_chain.commitment, self.address, round_id, info.terms_sha256
                )
                if declined is not None:
                    # this site's decline landed but its record did not (a crash between):
                    # nothing was trained, nothing is lost
                    record.declined = int(declined)
                    return self._skip(
                        record,
                        f"declined on chain ({declined.label}) before this node's record of "
                        "it was saved; nothing to do",
                    )
                # Committed, but the update behind the commitment is gone (state or blob lost):
                # nothing can open the commitment.
                return self._skip(record, "committed, but the committed update is lost locally")
            if now > info.commit_deadline:
                log.warning("round %d: commit window closed before this node committed", round_id)
                return None
            refusal = self._terms_refusal(
                round_id, info, last_finalized=view.last_finalized, now=now, peer=view.peer
            ) or self._window_refusal(info)
            if refusal is not None:
                # the terms are hash-pinned: the same answer at every poll, so recorded once,
                # and declared on chain (a42: a refusal used to leave no trace)
                return self._decline(round_id, info, *refusal)
            acted = True
            claim = len(self.train) if update is None else update.num_samples
            over = self._over_cap(claim, view.max_samples)
            if over is not None:
                # the reveal would revert (TooManySamples) after training, committing and
                # storing the update (a DP one published with no spend on chain): a66. Declared
                # on chain, as a refusal is: a cap the coordinator cut between rounds kept the
                # site out of every later round with no trace but its absence (a96)
                return self._decline(round_id, info, Decline.CAP_BELOW_DATA, over)
            if update is None:
                record = self._train_and_encode(round_id, view)
            else:
                record = self._encode_handed(round_id, update, view)
            if record is None or record.phase in FINAL_PHASES:
                return record
            # the clock for the chain-time measure and the commitment's preflight in one
            # round trip (issue 18): the commit follows this write at once
            prepared = self.ledger.prepare_commit(
                self.account, round_id, self._commitment(round_id, record)
            )
            # the encoded record and its chain-time measure reach state.json in one write (one
            # fsync a round fewer, issue 18); written even when the clock cannot be read
            try:
                clock_now = prepared.clock
                if clock_now is None:
                    clock_now = next_block_timestamp(self.ledger.w3)
                chain = clock_now - now
                own = math.ceil(time.monotonic() - started) + MEASURE_OWN_SLACK
                record.chain_seconds = max(0, min(chain, own))
            finally:
                self._save()
            self.hooks.at_step("encoded")
        if record.phase == "encoded":
            acted = True
            outcome = self._commit(
                round_id, record, on_chain, now, info.commit_deadline, prepared=prepared
            )
            if outcome is not record or record.phase != "committed":
                return outcome
        # the clock read with the round when nothing took time since (the reveal step's call)
        clock, read_at = now, view_at
        if acted:
            clock = next_block_timestamp(self.ledger.w3)
            read_at = time.monotonic()
        if clock <= info.commit_deadline + CLOCK_SLACK:
            # reveal only once the commit window has closed: the run loop wakes then
            self.wake = Wake(due=info.commit_deadline + CLOCK_SLACK + 1, clock=clock, at=read_at)
            return record
        if record.phase == "committed":
            # The daemon may have crashed between the store's put and recording it: put again.
            try:
                record.cid = self.store.put(self._pending_blob(round_id).read_bytes())  # pins
            except BaseException:
                # the store may have taken the bytes (h-323): never committed again elsewhere
                record.put_tried = True
                self._save()
                raise
            record.phase = "stored"
            self._save()
            log.info("round %d: stored update %s", round_id, record.cid)
            self.hooks.at_step("stored")
        return self._reveal(round_id, record, info.reveal_deadline)

    def _dropped(
        self,
        round_id: int,
        record: RoundRecord,
        on_chain: Submission | None,
        info: RoundInfo,
        now: int,
    ) -> str | None:
        """Which of this site's transactions the chain no longer holds although ``record`` says
        it was mined (a reorganisation left it out of the new branch): ``"commit"`` when the
        commitment is gone inside the commit window (``record`` goes back to ``encoded``, so
        this poll commits again), ``"reveal"`` when the reveal is gone inside the reveal window
        (the caller reveals again from the record: the blob is on the store, pinned),
        ``"decline"`` when the decline it committed (:attr:`RoundRecord.declined`) is gone inside
        the commit window (the caller commits the same decline again). None: the chain holds
        what the record says, or the window is closed and nothing can be sent again. Before,
        the node trusted its record: a dropped commit left it waiting to reveal a commitment
        the chain did not hold (the reveal refused, the round skipped), a dropped reveal left a
        committed update that reads as withheld (attacks a129, a130), a dropped decline a site
        that reads as absent, with no reason on chain."""
        if (
            on_chain is None
            and record.phase == "skipped"
            and record.declined
            and now <= info.commit_deadline
        ):
            log.warning(
                "round %d: the chain no longer holds this site's decline (tx %s: a "
                "reorganisation?); declining again",
                round_id,
                record.tx_hash or "?",
            )
            return "decline"
        if (
            on_chain is None
            and record.phase == "committed"
            and not record.put_tried  # the store may hold it: not committed again (h-323)
            and now <= info.commit_deadline
        ):
            log.warning(
                "round %d: the chain no longer holds this site's commitment (tx %s: a "
                "reorganisation?); committing again",
                round_id,
                record.tx_hash or "?",
            )
            record.phase = "encoded"
            self._save()
            return "commit"
        if (
            on_chain is not None
            and not on_chain.revealed
            and record.phase == "revealed"
            and record.cid
            and record.sha256
            and record.num_samples
            and now <= info.reveal_deadline
        ):
            log.warning(
                "round %d: the chain no longer holds this site's reveal (tx %s: a "
                "reorganisation?); revealing again",
                round_id,
                record.tx_hash or "?",
            )
            return "reveal"
        return None

    def _droppable(self, record: RoundRecord, info: RoundInfo, now: int) -> bool:
        """Whether a transaction ``record`` says was mined could still be dropped by a
        reorganisation and sent again (:meth:`_dropped`): a reveal inside the reveal window, a
        decline inside the commit window, the round open. The run loop polls a finished round
        until this is false (before, it never polled a finished record again, so a dropped
        reveal or decline was never seen outside a direct :meth:`participate` call)."""
        if info.phase != Phase.OPEN:
            return False
        if record.phase == "revealed":
            return now <= info.reveal_deadline
        declined = record.phase == "skipped" and bool(record.declined)
        return declined and now <= info.commit_deadline

    def _recover(self, round_id: int, on_chain: Submission) -> RoundRecord | None:
        """The record of a commitment the chain holds but state.json lost (deleted after it was
        found corrupt): the pending blob opens it when it was claimed with this site's
        training-set size, the claim the node makes for an update it trained (an update handed
        in with another count cannot be recovered). The epsilon to declare is recomputed from
        the DP parameters the blob carries. None: the blob is gone or does not open it."""
        path = self._pending_blob(round_id)
        if not path.exists() or on_chain.revealed:
            return None
        blob = path.read_bytes()
        sha = hashlib.sha256(blob).hexdigest()
        n = len(self.train)
        if commitment(self.address, round_id, sha, n) != on_chain.commitment.removeprefix("0x"):
            return None
        try:
            _, meta = decode_update(blob, spec=self.config.model, expected_round=round_id)
        except InvalidUpdate:
            return None
        record = RoundRecord(
            round=round_id,
            phase="committed",
            sha256=sha,
            num_samples=n,
            epsilon_micro=0 if meta.dp is None else self._declared(round_id, meta.dp),
            note="recovered from pending/ after state.json was lost",
        )
        self.state.rounds[round_id] = record
        self._save()
        log.warning("round %d: committed update recovered from %s", round_id, path)
        return record

    def _terms_refusal(
        self,
        round_id: int,
        info: RoundInfo,
        *,
        last_finalized: int | None = None,
        now: int | None = None,
        peer: PeerRoundInfo | None,
    ) -> tuple[Decline, str] | None:
        """Why this site does not take part under the round's committed terms (None: it does).
        ``peer``: the round's peer record, read in this step's batch (:attr:`SiteRoundView.peer`).
        Terms for another task raise :class:`TaskMismatch` (the site's config or the federation
        must change: no retry can help); unreadable terms, terms of another round, and terms
        this site cannot or will not run (:func:`_unrunnable`: a valuation no scorer can run,
        or thresholds stricter than its ``[accept]``) are refused before any training or
        privacy budget is spent; so are windows on chain other than the terms' (a commit window
        cut below the promised one shuts out the slowest sites: a40). A store that does not
        answer raises (the daemon retries). Terms the store does not give are refused too:
        at once for a verdict on the CID (other bytes than the chain's sha256, not a CID, a
        directory), and, when no node serves them (``ContentNotFound``, retried), once the
        chain's clock ``now`` has passed half the commit window: an aggregator that opened a
        round under terms only its allies were handed (published after the round, so every
        audit reads them) otherwise shut every honest node out leaving no trace on chain but
        its absence (attack a80)."""
        late = now is not None and _half_window_gone(info, now)
        try:
            terms = self._terms_of(info)
        except (InvalidTerms, ContentTooLarge) as exc:
            return (
                Decline.TERMS_UNUSABLE,
                f"the committed terms are unusable ({exc}); not taking part",
            )
        except NOT_GIVEN as exc:
            if not self._gives_up(info.terms_cid, exc, late=late):
                raise  # retried
            if isinstance(exc, ContentNotFound):
                why = f"the committed terms {info.terms_cid} could not be fetched for half the "
                why += f"commit window ({exc})"
            else:
                why = f"the store does not give the committed terms {info.terms_cid} ({exc})"
            return Decline.TERMS_UNUSABLE, f"{why}; not taking part"
        if terms.round != round_id:
            return (
                Decline.TERMS_UNUSABLE,
                f"the committed terms are for round {terms.round}; not taking part",
            )
        require_terms(self.task, terms, mine="this site's config.toml")
        windows = opening_differences(terms, info, peer)
        if peer is not None:
            # a139 (a133's reverse): a peer round on chain under terms that say the aggregator
            # values it, score windows nobody was promised; checked with the windows, where the
            # score window comparison found it before valuation_mode_difference was its one home
            mode = valuation_mode_difference(terms, peer_round=True)
            if mode is not None:
                windows.append(mode)
        if windows:
            return (
                Decline.WINDOWS,
                "the round's windows on chain are not its terms' (" + "; ".join(windows) + "); "
                "not taking part",
            )
        changed = self._payment_refusal(terms, late=late)
        if changed is not None:
            return Decline.PAYMENT_CHANGED, changed
        short = window_refusal(self.config.accept, terms)
        if short is not None:
            return Decline.SHORT_WINDOW, f"{short}; not taking part"
        if last_finalized is None:
            last_finalized = self.ledger.last_finalized_round()
        if last_finalized == 0:  # the round starts from the initial model
            unbound = start_refusal(self.config.accept, terms)
            if unbound is not None:
                return Decline.UNBOUND_START, f"{unbound}; not taking part"
        problem = _unrunnable(terms, self.config.accept)
        if problem is not None:
            return (
                Decline.UNACCEPTED,
                "the committed terms name settings this site cannot or will not run "
                f"({problem}); not taking part",
            )
        # a133: terms that name a peer round's score windows under a round opened on chain as
        # an aggregator round (the aggregator would value it alone; before, the node trained
        # and committed). Last, as since a133: such terms that also fail an earlier check are
        # declined for that one (tests/node/test_daemon.py, "peer-auc-linear": `unaccepted`)
        mode = valuation_mode_difference(terms, peer_round=peer is not None)
        if mode is not None:
            return (
                Decline.WINDOWS,
                f"the round's windows on chain are not its terms' ({mode}); not taking part",
            )
        return None

    def _window_refusal(self, info: RoundInfo) -> tuple[Decline, str] | None:
        """Why this site cannot make the round's commit deadline: its commit window (from the
        opening block) is shorter than the chain time training took in each of this site's
        latest trained rounds (:attr:`RoundRecord.chain_seconds`: the least of the last
        :data:`MEASURED_ROUNDS` measures within :data:`MEASURE_HORIZON` rounds). Declined on
        chain instead of trained and missed: before, a site slower than round 1's window (which
        bounds every later round's) was shut out of every round with no trace (attack a43).
        Measures older than the horizon are dropped, so a site that declined for a slow spell
        trains again (and measures again) within that many rounds. A site's first round has no
        measure: its ``[accept] min_commit_seconds`` floor is what bounds it. A measure is
        chain time capped at the node's own elapsed time plus :data:`MEASURE_OWN_SLACK`, so a
        chain clock moved while the site trained does not shut it out (a45)."""
        recent = sorted(
            (
                r
                for r in self.state.rounds.values()
                if r.chain_seconds > 0 and info.id - MEASURE_HORIZON <= r.round < info.id
            ),
            key=lambda r: r.round,
        )[-MEASURED_ROUNDS:]
        if not recent:
            return None
        need = min(r.chain_seconds for r in recent)
        window = info.commit_deadline - info.opened_at
        if window >= need:
            return None
        rounds = ", ".join(str(r.round) for r in recent)
        return (
            Decline.SHORT_WINDOW,
            f"the commit window is {window} s and this site's training took at least {need} s "
            f"of chain time in its latest rounds ({rounds}): it cannot commit in time; not "
            "taking part (a longer window, or min_commit_seconds under [accept], says so "
            "before training)",
        )

    def _gives_up(self, cid: str, exc: Exception, *, late: bool) -> bool:
        """Counts one more poll on which the store did not give ``cid`` (``exc``, one of
        ``NOT_GIVEN``) and says whether the node now declines the round for it: from the
        :data:`MISSES_BEFORE_DECLINE`-th miss, and for ``ContentNotFound`` (perhaps not yet
        reached this node) only once ``late``, half the commit window gone. A decline spends the
        round's one commitment, and the IPFS client reads a timed-out or hung daemon as
        ``ContentNotFound`` (a cut answer as other bytes), so a node declines only what it
        failed to read on several polls: never on a restart's first read, nor on one hiccup of
        its own daemon."""
        seen = self._misses.get(cid, 0) + 1
        self._misses[cid] = seen
        return seen >= MISSES_BEFORE_DECLINE and (late or not isinstance(exc, ContentNotFound))

    def _payment_refusal(self, terms: RoundTerms, *, late: bool = True) -> str | None:
        """Why a later round's terms are refused for re-choosing what round 1's fixed for the
        deployment (:func:`~fedtrail.protocol.terms.payment_differences`: the validation split,
        the valuation settings, the aggregation rule; ``audit verify`` fails such a round's
        ``terms.task_fixed``), or round 1's terms cannot be read. None: round 1, or the same.
        Round 1's terms that no node serves (``ContentNotFound``) are retried (raised) until
        ``late`` (half the commit window gone), then refused like unusable ones: an aggregator
        that stopped serving them otherwise shut out every node that had not kept them (a
        restarted or newly registered one) with no trace on chain (a80's variant)."""
        if terms.round == 1:
            return None
        first = self.ledger.get_round(1)
        try:
            reference = self._terms_of(first)
        except (InvalidTerms, ContentTooLarge) as exc:
            return f"round 1's terms are unusable ({exc}), so nothing binds these; not taking part"
        except NOT_GIVEN as exc:
            if not self._gives_up(first.terms_cid, exc, late=late):
                raise  # retried
            return (
                f"round 1's terms {first.terms_cid} cannot be fetched ({exc}), so nothing binds "
                "these; not taking part"
            )
        changed = payment_differences(reference, terms)
        if not changed:
            return None
        return (
            "the committed terms change settings that decide payment, which round 1's terms "
            "fixed for this deployment (" + "; ".join(changed) + "); not taking part"
        )

    def _train_and_encode(self, round_id: int, view: SiteRoundView) -> RoundRecord | None:
        """Trains from the round's start model and encodes the update (``view``: the round and
        this site's privacy account as :meth:`participate` just read them)."""
        spec = self.config.model
        cid, sha256 = view.info.start_cid, view.info.start_sha256
        log.info("round %d: fetching global model %s", round_id, cid)
        try:
            blob = self._start_model(round_id, cid, sha256, view.last_finalized)
        except NOT_GIVEN as exc:
            info = view.info
            if not self._gives_up(cid, exc, late=_half_window_gone(info, view.pending_timestamp)):
                raise  # retried
            return self._decline(
                round_id,
                info,
                Decline.START_UNAVAILABLE,
                f"the start model {cid} cannot be fetched ({exc}); not taking part",
            )
        global_state, _ = decode_model(blob, spec=spec)
        train_cfg = replace(
            self.config.training, seed=_round_seed(self.config.training.seed, round_id)
        )
        bias, threshold_from = (
            (None, "")
            if self.val is None
            else self._decision(round_id, sha256, last_finalized=view.last_finalized)
        )
        dp = self._privacy_plan(round_id, train_cfg, view=view)
        if isinstance(dp, RoundRecord):
            return dp  # refused: recorded as skipped
        log.info("round %d: training on %d images", round_id, len(self.train))
        try:
            if dp is None:
                result = train_local(
                    global_state,
                    self.train,
                    spec=spec,
                    config=train_cfg,
                    val=self.val,
                    val_bias=(0.0,) * spec.num_classes if bias is None else bias,
                    progress=self.progress,
                    should_stop=self.stop_event.is_set,
                )
            else:
                private = train_private(
                    global_state,
                    self.train,
                    spec=spec,
                    config=train_cfg,
                    settings=self.config.privacy.settings(),
                    delta=dp.delta,
                    val=self.val,
                    val_bias=(0.0,) * spec.num_classes if bias is None else bias,
                    should_stop=self.stop_event.is_set,
                )
                if private.params != dp:  # planned and trained from the same inputs
                    raise ConfigError(f"DP-SGD ran {private.params}, not the planned {dp}")
                result = private.local
        except TrainingInterrupted:
            log.info("round %d: training interrupted by shutdown; nothing kept", round_id)
            return None
        return self._encode(
            round_id,
            result.delta,
            num_samples=result.num_samples,
            train_seconds=result.seconds,
            train_loss=result.train_loss,
            metrics=result.metrics,
            dp=dp,
            threshold_from=threshold_from,
        )

    def _encode_handed(
        self, round_id: int, update: HandedUpdate, view: SiteRoundView
    ) -> RoundRecord | None:
        """Encodes an update trained elsewhere (:class:`HandedUpdate`). DP-SGD accounting is
        the node's own training's: a round or a site that needs it gets no handed update."""
        dp = self._privacy_plan(round_id, self.config.training, view=view)
        if isinstance(dp, RoundRecord):
            return dp  # refused: recorded as skipped
        if dp is not None:
            return self._skip(
                RoundRecord(round=round_id, phase="skipped"),
                "this node trains with DP-SGD ([privacy] enabled): a handed update was not "
                "DP-trained by the node, so it is not submitted",
            )
        return self._encode(
            round_id,
            update.delta,
            num_samples=update.num_samples,
            train_seconds=float(update.train_seconds),
            train_loss=float(update.train_loss),
            metrics=None,
            dp=None,
            threshold_from="",
        )

    def _encode(
        self,
        round_id: int,
        trained: Delta,
        *,
        num_samples: int,
        train_seconds: float,
        train_loss: float,
        metrics: Metrics | None,
        dp: DpParams | None,
        threshold_from: str,
    ) -> RoundRecord | None:
        """Encodes ``trained`` (after the update hook) with the residual and records the round
        as ``encoded``: blob and pending residual on disk (no residual file when it is zero
        before and after, as with compression ``"none"``); the caller (:meth:`participate`)
        writes state.json once it has added the round's chain-time measure."""
        spec = self.config.model
        delta = self.hooks.transform_update(trained, round_id, self._context())
        if delta is None:
            log.info("round %d: the update hook sent nothing", round_id)
            return None
        residual = load_residual(self.folder / RESIDUAL_NAME, spec)
        encoded = encode_update(
            delta,
            spec=spec,
            round=round_id,
            compression=self.config.compression,
            residual=residual,
            dp=dp,
        )
        if _is_zero(residual) and _is_zero(encoded.residual):
            # zero before and after (compression "none", once any earlier residual was flushed):
            # no file is the zero residual (load_residual), so there is nothing to keep pending,
            # promote or drop, at any step; a zero file an older node left is the same zero
            self._pending_residual(round_id).unlink(missing_ok=True)
            (self.folder / RESIDUAL_NAME).unlink(missing_ok=True)
        else:
            save_residual(
                self._pending_residual(round_id), encoded.residual, spec=spec, round=round_id
            )
        atomic_write(self._pending_blob(round_id), encoded.blob)
        record = RoundRecord(
            round=round_id,
            phase="encoded",
            sha256=hashlib.sha256(encoded.blob).hexdigest(),
            num_samples=num_samples,
            train_seconds=round(train_seconds, 3),
            train_loss=train_loss,
            val_auc=None if metrics is None else metrics.auc,
            val_f1=None if metrics is None else metrics.f1,
            val_threshold=None if metrics is None else _finite(metrics.threshold),
            val_f1_calibrated=None if metrics is None else _finite(metrics.f1_calibrated),
            threshold_from=threshold_from,
            val_classes=None if metrics is None else metrics.num_classes,
            val_balanced_accuracy_calibrated=None
            if metrics is None
            else _finite(metrics.balanced_accuracy_calibrated),
            val_recall_calibrated=None
            if metrics is None
            else [_finite(r) for r in metrics.recall_calibrated] or None,
            epsilon_micro=0 if dp is None else self._declared(round_id, dp),
        )
        self.state.rounds[round_id] = record
        multi = (record.val_classes or 2) > 2
        log.info(
            "round %d: encoded update %s (%d bytes, %.1f s training, val %sAUC %s, %sF1 %s at "
            "%s: %s)",
            round_id,
            record.sha256[:16],
            len(encoded.blob),
            train_seconds,
            "macro " if multi else "",
            "n/a" if record.val_auc is None else f"{record.val_auc:.3f}",
            "macro " if multi else "",
            "n/a" if record.val_f1_calibrated is None else f"{record.val_f1_calibrated:.3f}",
            "argmax(logits + bias)"
            if multi
            else "threshold "
            + ("n/a" if record.val_threshold is None else f"{record.val_threshold:.3f}"),
            threshold_from or "no validation split",
        )
        return record

    def _privacy_plan(
        self, round_id: int, config: TrainConfig, *, view: SiteRoundView | None = None
    ) -> DpParams | RoundRecord | None:
        """The DP parameters this round's training will have (None: train without DP), or the
        round's skipped record when this site must not train it: its terms require DP and the
        node's ``[privacy]`` is off, or the update's epsilon would take the site's on-chain
        spend past its budget (recorded, not a crash; the next round is checked again).
        ``view``: the round and the site's privacy account as just read (else read here)."""
        settings = self.config.privacy
        info = self.ledger.get_round(round_id) if view is None else view.info
        terms = self._terms_of(info)
        asked = terms.privacy
        account = self.ledger.privacy(self.address) if view is None else view.privacy
        if not settings.enabled:
            why = (
                "the round's terms require DP-SGD training"
                if asked is not None and asked.required
                else f"the site has a privacy budget on chain (epsilon "
                f"{from_micro(account.budget_micro):g}), so each update must declare its spend"
                if account.budget_micro
                else ""
            )
            if why:
                note = f"{why}, and this node's [privacy] is not enabled; not training"
                if asked is not None and asked.required:  # the terms' demand, not the coordinator's
                    return self._decline(round_id, info, Decline.PRIVACY, note)
                return self._skip(RoundRecord(round=round_id, phase="skipped"), note)
            return None
        method = self.config.compression.method
        if method != "none" and checks_noise(terms):
            # the aggregator would score the update 0 (privacy noise UNCHECKABLE): the site
            # would spend its privacy budget on an update that earns nothing. Declared on chain
            # (a47): dp_noise_check on (2) is the default, so terms that keep it shut every DP topk8
            # site out, which a silent skip left looking like sites that were offline
            return self._decline(
                round_id,
                info,
                Decline.PRIVACY,
                f"DP-SGD: the round's terms check each DP update's noise (dp_noise_check 1 or 2), "
                f"which a {method} update (the top of delta + the residual of earlier rounds) "
                "cannot show, so it would be scored 0 after spending privacy budget; not "
                'training (send DP updates with [compression] method = "none" to join rounds '
                "that keep the check)",
            )
        delta = settings.delta if asked is None else asked.delta
        ceiling = min(settings.delta, 1 / len(self.train))
        if delta > ceiling:
            # the aggregator chose it: a looser delta buys a smaller recorded epsilon (or, with
            # target_epsilon, less noise) for the same training
            return self._decline(
                round_id,
                info,
                Decline.PRIVACY,
                f"DP-SGD: the round's terms account at delta {delta:g}, above this site's "
                f"ceiling {ceiling:g} (its [privacy] delta, and 1 / its {len(self.train)} "
                "training images): its recorded epsilon would understate the privacy spent; "
                "not training",
            )
        if delta < settings.min_delta:
            # the aggregator chose it: a tighter delta records a larger epsilon for the same
            # training, so tiny deltas would spend the site's budget in a few rounds
            return self._decline(
                round_id,
                info,
                Decline.PRIVACY,
                f"DP-SGD: the round's terms account at delta {delta:g}, below this site's "
                f"floor {settings.min_delta:g} ([privacy] min_delta): the same training would "
                "record a larger epsilon and spend its privacy budget faster; not training",
            )
        try:
            params = plan_privacy(settings.settings(), len(self.train), config, delta)
            own = epsilon_spent(params)
            spend = self._declared(round_id, params)
        except (ConfigError, InvalidPrivacy) as exc:
            return self._skip(RoundRecord(round=round_id, phase="skipped"), f"DP-SGD: {exc}")
        # DP updates that left the node with no spend on chain for them (a reveal a reorg
        # dropped with the round's opening, or a refused one): released all the same
        uncounted = sum(self.state.uncharged_releases(besides=round_id).values())
        spent = account.spent_micro + uncounted
        if account.budget_micro and spent + spend > account.budget_micro:
            return self._skip(
                RoundRecord(round=round_id, phase="skipped", epsilon_micro=spend),
                f"privacy budget: this round's update would spend epsilon {from_micro(spend):g} "
                f"({params.accounting} accounting) and take the site's spend from "
                f"{from_micro(spent):g}"
                + (
                    f" ({from_micro(uncounted):g} of it released in rounds the chain does not "
                    "charge)"
                    if uncounted
                    else ""
                )
                + f" past its budget of {from_micro(account.budget_micro):g}; not training",
            )
        log.info(
            "round %d: DP-SGD (noise %.4g, clip %g, q %.4g, %d steps): epsilon %.4f at delta %g "
            "alone, declares %.6f (%s accounting)",
            round_id,
            params.noise_multiplier,
            params.max_grad_norm,
            params.sample_rate,
            params.steps,
            own,
            delta,
            from_micro(spend),
            params.accounting,
        )
        return params

    def _declared(self, round_id: int, params: DpParams) -> int:
        """The micro-epsilon this site declares for an update with ``params`` revealed in
        ``round_id``, under the rule they name: computed from the chain's ``PrivacySpent``
        events and this site's earlier blobs in the store (never from state.json), so a
        restarted node declares what an auditor recomputes (:class:`PrivacyHistory`). Raises
        ``InvalidPrivacy`` when an earlier update cannot be read, ``StoreError`` when the
        store does not answer (the daemon retries)."""
        history = PrivacyHistory(self.ledger, self.store, self._dp_params)
        return history.expected_micro(self.address, round_id, params)

    def _decision(
        self, round_id: int, start_sha256: str, *, last_finalized: int | None = None
    ) -> tuple[tuple[float, ...] | None, str]:
        """The decision rule for the model round ``round_id`` starts from: the intercept in the
        log of the round that finalized it (the aggregator fitted it on its validation split,
        the log's bytes are checked against the chain's sha256), and where it came from; None
        (the plain decision: the 0.5 threshold, or the most probable of more classes) and why,
        when there is none. ``last_finalized``: the chain's last finalized round as just read
        (else read here)."""
        k = self.config.model.num_classes
        plain, wanted = (
            ("default 0.5", "threshold") if k == 2 else ("default argmax", f"bias for {k} classes")
        )
        last = self.ledger.last_finalized_round() if last_finalized is None else last_finalized
        if not last or last >= round_id:
            return None, f"{plain}: no earlier round finalized"
        info = self.ledger.get_round(last)
        if info.global_sha256 != start_sha256:
            return None, f"{plain}: the start model is not round {last}'s global model"
        try:
            blob = self.store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES)
            after = RoundLog.from_bytes(blob).metrics.after
        except (StoreError, InvalidLog) as exc:
            log.warning("round %d: round %d's log is unusable: %s", round_id, last, exc)
            return None, f"{plain}: round {last}'s log is unusable"
        bias = after.decision_bias(k)
        if bias is None:
            return None, f"{plain}: round {last}'s log records no {wanted}"
        return bias, f"round {last}'s log"

    # ---------------------------------------------------------------- personalisation

    def personalise_latest(self) -> RoundRecord | None:
        """Personalise the global model of the latest finalized round this site took part in,
        if not done yet (see :meth:`personalise`). The latest one it took part in, not the
        chain's latest: a newer round the site missed (its commit window closed while it
        personalised, or it was not in it) used to make the node move on to that round, which
        it has no record of, and the round it did take part in lost its personalised model
        for good (a108)."""
        last = self.ledger.last_finalized_round()
        taken = sorted(
            (
                r
                for r, rec in self.state.rounds.items()
                if r <= last and rec.phase in ("revealed", "submitted")
            ),
            reverse=True,
        )
        for round_id in taken:
            record = self.state.rounds[round_id]
            if record.personal_sha256 or record.personal_note:
                return record
            if round_id == last or self.ledger.get_round(round_id).phase == Phase.FINALIZED:
                return self.personalise(round_id)
        return None

    def _round_waiting(self, round_id: int) -> bool:
        """Whether a round after ``round_id`` is open with work due in it for this site:
        personalisation gives way to it (a108). Due: an update to commit (the commit window
        open), to reveal (the commit window over) or to recover, or a score vector (a peer
        round's scoring not finished; its steps wait on chain windows, and personalisation
        gives way to all of them). Not due: no record and no commitment with the commit window
        over (``participate`` does nothing then), or committed with the reveal not yet due
        (``participate`` waits for the commit deadline; this is read again every
        :data:`PERSONAL_YIELD_SECONDS`, so the reveal waits that long and one step more)."""
        current = self.ledger.current_round()
        if current <= round_id:
            return False
        view = self.ledger.site_round(current, self.address)
        info = view.info
        if info.phase != Phase.OPEN:
            return False
        record = self.state.rounds.get(current)
        now = view.pending_timestamp
        if record is None:
            if view.submission is not None or now <= info.commit_deadline:
                return True
        elif record.phase not in FINAL_PHASES and not (
            record.phase == "committed" and now <= info.commit_deadline + CLOCK_SLACK
        ):
            return True
        return not self.scorer.done(current)

    def _gives_way(self, round_id: int) -> Callable[[], bool]:
        """``should_stop`` for personalising ``round_id``: the node stops, or a newer round
        waits for this site (:meth:`_round_waiting`, read from the chain at most once every
        :data:`PERSONAL_YIELD_SECONDS`; an unreadable chain does not stop it). The terms' steps
        are the aggregator's choice (up to 10,000) and the watch loop does not look at the chain
        while they run, so an aggregator that opened the next round at once kept every honest
        node fine-tuning past its commit window, and an ally that does not personalise took the
        whole round, with ``audit verify`` passing (attack a108)."""
        checked, waiting = -math.inf, False

        def should_stop() -> bool:
            nonlocal checked, waiting
            if self.stop_event.is_set():
                return True
            now = time.monotonic()
            if now - checked >= PERSONAL_YIELD_SECONDS:
                checked = now
                try:
                    waiting = self._round_waiting(round_id)
                except LedgerError:
                    waiting = False
            return waiting

        return should_stop

    def personalise(self, round_id: int) -> RoundRecord | None:
        """Personalise finalized round ``round_id``'s global model on this site's training split
        as its terms ask (:func:`fedtrail.ml.personalise.personalise`; a carried part goes on
        from the site's last personalised model), keep it as ``personal.safetensors`` (never
        uploaded), and record the validation metrics of the global model (at the round log's
        decision) and of the personalised one (at its decision calibrated on this site's
        validation split, kept in ``personal.json``) in the round's record.

        Restart-safe: the record is saved only after the model files are written, and a crash
        in between repeats the work, which gives the same bytes (seeded from the node's
        training seed and the round). Returns the record, or None when interrupted or when
        the site has no record of the round."""
        record = self.state.rounds.get(round_id)
        if record is None:
            return None
        info = self.ledger.get_round(round_id)
        if info.phase != Phase.FINALIZED or not info.global_cid:
            return None
        try:
            terms = self._terms_of(info)
        except (InvalidTerms, ContentTooLarge) as exc:
            return self._personal_note(record, f"the round's terms are unusable: {exc}")
        plan = terms.personalisation
        if plan is None or plan.steps == 0:
            return self._personal_note(record, "the round's terms ask for no personalisation")
        spec = self.config.model
        try:
            global_state, _ = decode_model(
                self.store.get(
                    info.global_cid, info.global_sha256, max_bytes=default_max_bytes(spec)
                ),
                spec=spec,
            )
        except (InvalidUpdate, ContentTooLarge) as exc:
            return self._personal_note(record, f"the global model is unusable: {exc}")
        bias, source = self._log_bias(round_id)
        k = spec.num_classes
        val_bias = (0.0,) * k if bias is None else bias
        config = replace(
            self.config.training,
            seed=_round_seed(self.config.training.seed, round_id, PERSONAL_SEED_TAG),
            lr=plan.lr,
            algorithm="fedavg",
            mu=0.0,
        )
        previous, done = self._previous_personal(round_id, info.global_sha256, plan.method, spec)
        if done is not None:  # written before a crash: the same bytes again, not retrained
            tuned, saved = done
        else:
            log.info("round %d: personalising (%s) for %d steps", round_id, plan.method, plan.steps)
            try:
                tuned = personalise(
                    global_state,
                    self.train,
                    method=plan.method,
                    spec=spec,
                    config=config,
                    steps=plan.steps,
                    previous=previous,
                    val=self.val,
                    val_bias=val_bias,
                    should_stop=self._gives_way(round_id),
                )
            except TrainingInterrupted:
                why = (
                    "shutdown"
                    if self.stop_event.is_set()
                    else "a newer round this site has to work in"
                )
                log.info(
                    "round %d: personalisation interrupted by %s; nothing kept (done again once "
                    "that is over)",
                    round_id,
                    why,
                )
                return None
            except TrainingDiverged as exc:
                return self._personal_note(record, f"personalisation diverged: {exc}")
            except ConfigError as exc:
                return self._personal_note(record, f"cannot personalise: {exc}")
            own_bias, own_source = bias, source
            if self.val is not None:
                # The personal model is adapted to this site's case mix, so its decision is
                # calibrated on this site's validation split, not taken from the round log.
                model = spec.build()
                load_federated(model, tuned.state, what="the personalised model")
                calibrated = evaluate_calibrated(model, self.val)
                if calibrated.bias is not None:
                    own_bias, own_source = calibrated.bias, "the site's validation split"
                    tuned = replace(tuned, metrics=calibrated)
            saved = save_personal(
                self.folder,
                tuned.state,
                spec=spec,
                info=PersonalInfo(
                    round=round_id,
                    global_sha256=info.global_sha256,
                    sha256="",
                    method=plan.method,
                    steps=plan.steps,
                    lr=plan.lr,
                    bias=own_bias,
                    decision_from=own_source,
                ),
            )
        before = None
        if self.val is not None:
            model = spec.build()
            load_federated(model, global_state, what=f"round {round_id}'s global model")
            before = evaluate(model, self.val, bias=val_bias)
        record.personal_sha256 = saved.sha256
        record.personal_note = ""
        (
            record.global_val_auc,
            record.global_val_f1_calibrated,
            record.global_val_balanced_accuracy_calibrated,
        ) = _headline(before)
        (
            record.personal_val_auc,
            record.personal_val_f1_calibrated,
            record.personal_val_balanced_accuracy_calibrated,
        ) = _headline(tuned.metrics)
        g, p = record.global_val_auc, record.personal_val_auc
        record.personal_preferred = None if g is None or p is None else p >= g
        self._save()
        log.info(
            "round %d: personalised model %s (%.1f s): val AUC global %s, personal %s%s",
            round_id,
            saved.sha256[:16],
            tuned.seconds,
            _fmt(record.global_val_auc),
            _fmt(record.personal_val_auc),
            "" if record.personal_preferred is not False else " (worse: use the global model)",
        )
        return record

    def _previous_personal(
        self, round_id: int, global_sha256: str, method: str, spec: ModelSpec
    ) -> tuple[dict[str, torch.Tensor] | None, tuple[FineTuned, PersonalInfo] | None]:
        """The site's last personalised model, to carry its personal part into round
        ``round_id`` (None: none usable, or made another way), and the model already written
        for this very round (a crash before the record was saved), evaluated again."""
        try:
            state, kept = load_personal(self.folder, spec)
        except (ConfigError, InvalidUpdate) as exc:
            if (self.folder / PERSONAL_MODEL).exists():
                log.warning("round %d: the last personalised model is unusable: %s", round_id, exc)
            return None, None
        if kept.round == round_id and kept.global_sha256 == global_sha256:
            metrics = None
            if self.val is not None:
                model = spec.build()
                load_federated(model, state, what="the personalised model")
                k = spec.num_classes
                metrics = evaluate(model, self.val, bias=kept.bias or (0.0,) * k)
            again = FineTuned(
                state=state, steps=kept.steps, train_loss=math.nan, metrics=metrics, seconds=0.0
            )
            return None, (again, kept)
        if kept.round >= round_id or kept.method != method:
            return None, None
        return state, None

    def _personal_note(self, record: RoundRecord, note: str) -> RoundRecord:
        record.personal_note = note
        self._save()
        log.info("round %d: no personalised model: %s", record.round, note)
        return record

    def _log_bias(self, round_id: int) -> tuple[tuple[float, ...] | None, str]:
        """The calibrated decision finalized round ``round_id``'s log records for its global
        model, and where it came from (None: the plain decision)."""
        info = self.ledger.get_round(round_id)
        try:
            record = RoundLog.from_bytes(
                self.store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES)
            )
        except (StoreError, InvalidLog) as exc:
            log.warning("round %d's log is unusable: %s", round_id, exc)
            return None, f"default: round {round_id}'s log is unusable"
        # a bias its own threshold contradicts reads one way to the audit and another here:
        # verify fails such a log (log.agrees), and the site does not decide with it (a111)
        problems = calibration_problems(record)
        if problems:
            log.warning("round %d's log's metrics disagree: %s", round_id, "; ".join(problems))
            return None, f"default: round {round_id}'s log's metrics disagree with themselves"
        bias = record.metrics.after.decision_bias(self.config.model.num_classes)
        if bias is None:
            return None, f"default: round {round_id}'s log records no decision bias"
        return bias, f"round {round_id}'s log"

    def _context(self) -> UpdateContext:
        return UpdateContext(
            ledger=self.ledger,
            store=self.store,
            address=self.address,
            spec=self.config.model,
            poll_interval=self.config.poll_interval,
            stop_event=self.stop_event,
        )

    def _commitment(self, round_id: int, record: RoundRecord) -> str:
        return commitment(self.address, round_id, record.sha256, record.num_samples)

    def _commit(
        self,
        round_id: int,
        record: RoundRecord,
        on_chain: Submission | None,
        now: int,
        commit_deadline: int,
        *,
        prepared: PreparedCommit | None = None,
    ) -> RoundRecord | None:
        """Commits to the encoded update; a commitment already on chain (a crash after the
        transaction) is recognised, not sent again. ``prepared``: its preflight, read with
        the chain-time measure's clock just before (:meth:`Ledger.prepare_commit`)."""
        ours = self._commitment(round_id, record)
        if on_chain is None and now > commit_deadline:
            return self._skip(record, "commit window closed before this node could commit")
        if on_chain is None:
            try:
                if prepared is None:
                    tx = self.ledger.commit_update(self.account, round_id, ours)
                else:
                    tx = self.ledger.commit_update(self.account, round_id, ours, prepared=prepared)
                record.tx_hash = tx.tx_hash
                log.info("round %d: committed in tx %s (%d gas)", round_id, tx.tx_hash, tx.gas_used)
            except DuplicateSubmission:
                on_chain = self.ledger.get_submission(round_id, self.address)
            except RoundStateError as exc:
                return self._skip(record, f"commit refused: {exc}")
        if on_chain is not None and on_chain.commitment.removeprefix("0x") != ours:
            return self._skip(record, "the chain holds another commitment of ours")
        record.phase = "committed"
        self._save()
        self.hooks.at_step("committed")
        return record

    def _reveal(self, round_id: int, record: RoundRecord, reveal_deadline: int) -> RoundRecord:
        """Reveals the committed update (after the commit deadline). A reveal the chain already
        holds is recognised; a refused one (too many samples, mismatch, window closed) marks the
        round skipped with the reason; transient failures propagate to be retried."""
        if record.epsilon_micro and self._pending_blob(round_id).exists():
            # what the rule gives now, from the chain: the same as planned unless the chain
            # moved (or state.json was written by an older node)
            meta = read_update_meta(
                self._pending_blob(round_id).read_bytes(),
                spec=self.config.model,
                expected_round=round_id,
            )
            if meta.dp is not None:
                try:
                    declared = self._declared(round_id, meta.dp)
                except InvalidPrivacy as exc:
                    return self._skip(record, f"reveal: DP-SGD: {exc}")
                if declared != record.epsilon_micro:
                    log.warning(
                        "round %d: declaring %d micro-epsilon, not the %d planned",
                        round_id,
                        declared,
                        record.epsilon_micro,
                    )
                    record.epsilon_micro = declared
                    self._save()
        reveal = self.hooks.transform_reveal(
            Reveal(cid=record.cid, sha256=record.sha256, num_samples=record.num_samples),
            round_id,
            self._context(),
        )
        try:
            tx = self.ledger.reveal_update(
                self.account,
                round_id,
                reveal.cid,
                reveal.sha256,
                reveal.num_samples,
                epsilon_micro=record.epsilon_micro or None,
            )
        except DuplicateSubmission:
            on_chain = self.ledger.get_submission(round_id, self.address)
            if on_chain is not None and on_chain.revealed:
                return self._mark_revealed(round_id, record, on_chain.sha256, on_chain.cid)
            raise
        except RoundStateError as exc:
            if exc.error == "RevealNotOpen":  # the chain's clock lags ours: try again
                log.info("round %d: reveals not open yet; will retry", round_id)
                return record
            return self._skip(record, f"reveal refused: {exc}")
        except (SampleLimitExceeded, CommitmentMismatch, Unauthorized, PrivacyBudgetError) as exc:
            return self._skip(record, f"reveal refused: {exc}")
        record.tx_hash = tx.tx_hash
        log.info("round %d: revealed in tx %s (%d gas)", round_id, tx.tx_hash, tx.gas_used)
        self.hooks.at_step("revealed")
        return self._mark_revealed(round_id, record, reveal.sha256, reveal.cid)

    def _decline(self, round_id: int, info: RoundInfo, reason: Decline, note: str) -> RoundRecord:
        """Gives up a round whose committed terms this site refuses, and says so on chain: the
        site's one commitment of the round becomes its :func:`~fedtrail.ledger.
        decline_commitment` of these terms with ``reason``, which no reveal can open and
        ``audit verify`` reads back (``terms.declined``). Before, a refusal left no trace but
        the site's absence (attack a42). Nothing is declared once the commit window is closed
        or the site already committed; a refused transaction is noted, not raised."""
        record = RoundRecord(round=round_id, phase="skipped")
        tx_hash, why = self._declare(round_id, info, reason)
        if tx_hash:
            record.tx_hash, record.declined = tx_hash, int(reason)
            declared = f"declined on chain ({reason.label}) in tx {tx_hash}"
        else:
            declared = f"not declared on chain: {why}"
        return self._skip(record, f"{note} [{declared}]")

    def _declare(self, round_id: int, info: RoundInfo, reason: Decline) -> tuple[str, str]:
        """Commits this site's decline of ``info``'s terms with ``reason``: (the transaction's
        hash, "") or ("", why nothing was sent or the transaction was refused)."""
        if self.ledger.get_submission(round_id, self.address) is not None:
            return "", "this site already committed in this round"
        if next_block_timestamp(self.ledger.w3) > info.commit_deadline:
            return "", "the commit window is closed"
        ours = decline_commitment(self.address, round_id, info.terms_sha256, reason)
        try:
            tx = self.ledger.commit_update(self.account, round_id, ours)
        except (RoundStateError, DuplicateSubmission, Unauthorized) as exc:
            return "", str(exc)
        return tx.tx_hash, ""

    def _declare_again(self, round_id: int, record: RoundRecord, info: RoundInfo) -> RoundRecord:
        """Commits again the decline a reorganisation dropped (:meth:`_dropped`), with the
        reason recorded: the round's terms are the ones declined (:meth:`_check_opened` refuses
        a record of other terms), so the reason stands and nothing is re-read."""
        reason = Decline(record.declined)
        dropped = record.tx_hash or "?"
        tx_hash, why = self._declare(round_id, info, reason)
        if tx_hash:
            record.tx_hash = tx_hash
            record.note += f" [tx {dropped} dropped by the chain; declined again in tx {tx_hash}]"
        else:
            record.note += f" [tx {dropped} dropped by the chain; not declared again: {why}]"
        self._save()
        return record

    def _start_model(self, round_id: int, cid: str, sha256: str, last_finalized: int) -> bytes:
        """The round's start model by the CID ``openRound`` named; where the store cannot give
        it there, by the CID the last finalized round's global model was published under, when
        its sha256 is the start model's (which the contract requires once a round is
        finalized). An aggregator that opened a round under a CID nobody can resolve (another
        encoding of the same bytes, published only later) otherwise kept every honest node out
        of it while its allies trained from the earlier CID (a67)."""
        limit = default_max_bytes(self.config.model)
        try:
            return self.store.get(cid, sha256, max_bytes=limit)
        except StoreError as first:
            if not last_finalized or last_finalized >= round_id:
                raise
            last = self.ledger.get_round(last_finalized)
            if last.global_sha256 != sha256 or last.global_cid == cid:
                raise
            log.warning(
                "round %d: the start model is not available as %s (%s); fetching it as round "
                "%d's global model %s, the same sha256",
                round_id,
                cid,
                first,
                last_finalized,
                last.global_cid,
            )
            return self.store.get(last.global_cid, sha256, max_bytes=limit)

    def _over_cap(self, claim: int, cap: int | None) -> str | None:
        """Why this site cannot claim ``claim`` samples (its cap on chain, ``maxSamples``, as
        the step's :class:`~fedtrail.ledger.SiteRoundView` read it, is lower: the contract
        refuses the reveal), or None. The coordinator sets the cap at registration and may
        lower it between rounds."""
        if cap is None or claim <= cap:
            return None
        return (
            f"this site's cap on chain is {cap} samples, below the {claim} its update would "
            "claim: the ledger would refuse the reveal, so it does not train; ask the "
            f"coordinator to run `fedtrail node set-max-samples {self.address} {claim}`"
        )

    def _skip(self, record: RoundRecord, note: str) -> RoundRecord:
        """Gives up the round for good: recorded, with why; the pending residual is dropped
        (the update it belongs to was never counted)."""
        record.phase = "skipped"
        record.note = note
        self.state.rounds[record.round] = record
        self._save()
        log.error("round %d: skipped: %s", record.round, note)
        self._pending_residual(record.round).unlink(missing_ok=True)
        self._pending_blob(record.round).unlink(missing_ok=True)
        return record

    def _mark_revealed(
        self, round_id: int, record: RoundRecord | None, sha256: str, cid: str
    ) -> RoundRecord:
        if record is None:
            record = RoundRecord(round=round_id, phase="revealed", cid=cid, sha256=sha256)
        if (
            record.phase in ("revealed", "submitted")
            and not self._pending_residual(round_id).exists()
        ):
            return record
        ours = record.sha256 == sha256  # the chain holds the blob whose residual is pending
        record.phase = "revealed"
        record.cid, record.sha256 = cid, sha256
        self.state.rounds[round_id] = record
        self._save()
        pending_res = self._pending_residual(round_id)
        if pending_res.exists():
            if ours:
                os.replace(pending_res, self.folder / RESIDUAL_NAME)
            else:
                log.warning(
                    "round %d: the chain holds another update of ours; residual dropped", round_id
                )
                pending_res.unlink()
        self._pending_blob(round_id).unlink(missing_ok=True)
        return record

    # ---------------------------------------------------------------- the loop

    def _idle(self, record: RoundRecord) -> bool:
        """Whether the run loop leaves ``record``'s round alone: finished, and nothing in it a
        reorganisation may still drop in its window (a reveal or a decline, a130) unless
        :meth:`participate` found it settled."""
        if record.phase not in FINAL_PHASES:
            return False
        return record.round in self._settled or not (
            record.phase == "revealed" or bool(record.declined)
        )

    def run(self, *, once: bool = False, on_idle: Callable[[], None] | None = None) -> int:
        """Watch the chain until stopped (or one round done with ``once``); rounds taken part in.
        Holds the folder's lock throughout: a second daemon on the same folder is refused."""
        harm = "two on one folder would both train, commit and rewrite state.json"
        with folder_lock(self.folder, LOCK_NAME, daemon="node daemon", harm=harm):
            return self._watch(once=once, on_idle=on_idle)

    def _watch(self, *, once: bool, on_idle: Callable[[], None] | None) -> int:
        self.check_registered()
        done = 0
        seen = 0
        finished: int | None = None  # once: the round whose update is done
        log.info("site %s watching ledger %s", self.address, self.ledger.address)
        while not self.stop_event.is_set():
            try:
                current = self.ledger.current_round()
                prior = self.state.rounds.get(current)
                if current and prior is not None and (current != seen or self._idle(prior)):
                    # a record not participated again: is it still of this round, or was the
                    # round opened again under other terms (a reorganisation)? Asked at each
                    # poll while idle (one read, a closed round's too: the ledger client's
                    # kept record of a closed round hid a reopening deeper than its closing)
                    info = self.ledger.get_round(current, fresh=True)
                    on_chain = None
                    if not prior.opened:  # an older record: the chain must hold its reveal
                        on_chain = self.ledger.get_submission(current, self.address)
                    prior = self._check_opened(current, info, prior, on_chain)
                if current and current != seen:
                    seen = current
                    log.info("round %d is the ledger's latest round", current)
                record = None
                unfinished = prior is None or not self._idle(prior)
                if current and (unfinished or self._pending_residual(current).exists()):
                    was = None if prior is None else prior.phase  # participate edits prior
                    record = self.participate(current)
                    if record is not None and record.phase == "revealed" and was != "revealed":
                        done += 1  # a round counts once, however often it is polled
                if once and record is not None and record.phase in FINAL_PHASES:
                    finished = current
                if current:
                    self.scorer.score(current)  # a peer round's validator work, update or not
                if finished is not None and self.scorer.done(finished):
                    return done
                self.personalise_latest()
            except (StoreError, LedgerError, InvalidUpdate) as exc:
                if isinstance(exc, ContractRevert | ContractNotFound | ChainFault):
                    raise  # no retry changes these: the node stops and says why
                log.error("will retry: %s", exc)
            if on_idle is not None:
                on_idle()
            self.stop_event.wait(wake_delay(self.config.poll_interval, self.wake, time.monotonic()))
            self.wake = None
        log.info("stopping")
        return done
