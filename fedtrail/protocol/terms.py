"""A round's terms: what the aggregator commits to when it opens a round, before any update.

The aggregator writes a :class:`RoundTerms` document to the content store and puts its CID and
sha256 into ``openRound``; sites see it before they commit, and an auditor fetches it by the
on-chain hash and replays the round under these terms (not under whatever the round's log
claims at finalize time). Format ``fedtrail.round-terms/1``: canonical JSON (sorted keys, no
whitespace), so the sha256 is over exactly the stored bytes.

``model_spec`` and ``class_names`` are the federation's task (``fedtrail.ml.task.Task``). The
aggregation rule and the model spec are plain JSON mappings (the ``asdict`` of
``AggregationRule`` and ``ModelSpec``): those types live above the protocol, so their callers
rebuild them and handle a bad one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from fedtrail import safejson
from fedtrail.errors import FedtrailError

__all__ = [
    "ABSENT",
    "DEFAULT_VALIDATOR_GAME",
    "DUPLICATE_COSINE",
    "DUPLICATE_RELATIVE_L2",
    "DUPLICATE_SCALED_COSINE",
    "DUPLICATE_SUPPORT_COSINE",
    "DUPLICATE_SUPPORT_OVERLAP",
    "DUPLICATE_WHITE_NOISE_DP_COSINE",
    "INITIAL_MODEL_DEPLOYMENT",
    "MAX_IMAGE_SIZE",
    "MAX_TERMS_BYTES",
    "PAYMENT_FREE_VALUATION",
    "PERSONALISATION_METHODS",
    "TERMS_FORMAT",
    "VALIDATOR_GAMES",
    "DuplicateRule",
    "InvalidTerms",
    "Personalisation",
    "PrivacyTerms",
    "RoundTerms",
    "deployment_seed",
    "fields_by_path",
    "payment_differences",
    "round_one_fixed",
    "seeded_salt",
    "valid_salt",
    "valuation_mode_difference",
    "window_differences",
]
MAX_IMAGE_SIZE: Final = 1024
"""Largest model input size (pixels a side) a spec may name. The spec is the aggregator's
choice, and every auditor resizes its validation split to it before anything else: a
ResNet's parameter count does not grow with the input, so no byte limit caught a
100,000-pixel spec, which would have allocated tens of GB per image. Medical imaging models
take 28-512 px."""

INITIAL_MODEL_DEPLOYMENT: Final = "deployment"
"""The terms' ``initial_model`` value that binds the round-1 start model to the deployment
and the terms' ``initial_salt`` (:func:`deployment_seed`); terms without the field use the
legacy rule (the bare ``seed``)."""

_INITIAL_MODEL_DOMAIN: Final = b"fedtrail/initial-model/v1\x00"
_SEEDED_SALT_DOMAIN: Final = b"fedtrail/initial-salt/seeded\x00"
_SALT_DIGITS: Final = frozenset("0123456789abcdef")


def deployment_seed(seed: int, chain_id: int, contract: str, salt: str) -> int:
    """The torch seed of a deployment's round-1 model: the first 8 bytes (big-endian) of
    sha256 over a domain tag, then ``<chain id>:<contract, lower case>:<seed>:<salt>``. The
    chain and the contract part federations on different deployments; the salt (chosen at
    random by ``aggregator run``) parts twin deployments too (the same chain id and contract
    address, e.g. any fresh Anvil's first contract), whose updates would otherwise be aligned
    with each other's start model and could be replayed for pay (attack a23)."""
    text = f"{int(chain_id)}:{contract.lower()}:{int(seed)}:{salt}".encode("ascii")
    return int.from_bytes(hashlib.sha256(_INITIAL_MODEL_DOMAIN + text).digest()[:8], "big")


def seeded_salt(seed: int) -> str:
    """A reproducible ``initial_salt`` derived from a base seed (sha256 over a domain tag and
    the seed, hex): what simulations, the demos and tests use so their figures repeat. Anyone
    can compute it, so it parts no twin deployment that uses the same seed."""
    return hashlib.sha256(_SEEDED_SALT_DOMAIN + str(int(seed)).encode("ascii")).hexdigest()


def valid_salt(salt: object) -> bool:
    """Whether ``salt`` is an ``initial_salt``: 64 lowercase hex digits (32 bytes)."""
    return isinstance(salt, str) and len(salt) == 64 and set(salt) <= _SALT_DIGITS


MAX_TERMS_BYTES: Final = 1 << 20
"""Largest terms document read (fetch it with ``max_bytes=MAX_TERMS_BYTES``). Terms are under
1 KiB; parsing hostile JSON takes some 26 bytes of memory per byte, so 1 MiB costs at most
~30 MB where the store's general limit (256 MiB) would cost every node ~7 GB."""

TERMS_FORMAT: Final = "fedtrail.round-terms/1"

DUPLICATE_COSINE: Final = 0.9999
"""Two decoded updates with cosine similarity above this ..."""
DUPLICATE_RELATIVE_L2: Final = 1e-3
"""... and ``||b - a|| / ||a||`` below this are the same update (a near-copy: a few ulps, a
re-encoding, tiny noise). Honest sites training on different data are further apart: up
to cosine 0.99993 on the bundled data, but then 1.2% apart or more in L2; a copy scaled by
1.01 is 1% apart, which is what :data:`DUPLICATE_SCALED_COSINE` catches."""
DUPLICATE_SCALED_COSINE: Final = 0.999995
"""A later update whose cosine to an earlier one, or whose int8 codes' cosine to the earlier
one's (:func:`fedtrail.protocol.duplicates.codes`), is above this is a copy whatever the two
norms (:attr:`DuplicateRule.scaled_cosine`). Measured on the bundled data
(``scripts/bench/dup_cosine.py``): a copy scaled by 1.01 or 0.5 has cosine 1, one recoded
through ``topk8`` at fraction 1 has its original's codes (codes cosine 1; plain 0.99976), one
with 0.2% Gaussian noise cosine 0.999998; two honest updates of the same round came up to
0.999930 (20 sites of mostly one class each, Dirichlet alpha 0.3), 14 times further from 1
than this (3.7 times in angle); the honest maximum rose with the number of sites (5: 0.99921,
10: 0.99976, 20: 0.99993). Noise above about 0.3% of each tensor's std (1 - cosine is about
half the squared level; 1%: cosine 0.99995) escapes: a cosine that caught it would come within
a few times of two honest sites."""
DUPLICATE_SUPPORT_COSINE: Final = 0.999995
"""A later update that leaves out some of an earlier one's nonzero entries is a copy when, on
the entries it does carry, it repeats the earlier one: the earlier update with every entry the
later one holds at 0 set to 0 has cosine, or int8 codes' cosine, above this to the later one
(:attr:`DuplicateRule.support_cosine`). A Sybil that sent its partner's dense update through
``topk8`` at a fraction of its own choosing (0.5: codes cosine 0.99887 to the original, under
:data:`DUPLICATE_SCALED_COSINE`) repeats its codes exactly there (cosine 1;
``scripts/attacks/a90_sparse_copy.py``); two honest updates of the same round, one of them
sparsified to fraction 0.001-1, came at most to 0.99998 (six sites of 150 bundled images,
three of them of one class; fraction 0.05: 0.99877), 4x further from 1 than this."""

DUPLICATE_SUPPORT_OVERLAP: Final = 0.99
"""A later *sparse* update (more than half of its values 0 outside its all-zero rows and
columns) is a copy of an earlier one when more than this share of its nonzero entries are
among the earlier one's largest: in each tensor, where the earlier one is nonzero and above
its ``k``-th largest magnitude there, ``k`` the later one's nonzero entries in that tensor, or
at it for a share ``(k - A) / T`` (``A``, ``T`` its magnitudes above and at it: ties cannot
widen the ``k`` largest, attack a98) (:attr:`DuplicateRule.support_overlap`,
:func:`fedtrail.protocol.duplicates.support_overlap`).
A copy sent through ``topk8`` keeps exactly those entries (share 1) whatever noise it then adds
to their values, which takes it past ``support_cosine`` (attack a93); two honest ``topk8``
updates of one round came to 0.9772 at most (40 sites, Dirichlet 1, at least 10 images;
``scripts/bench/support_overlap.py``; docs/results.md *Sparse noisy copies*), with error feedback
as a
node keeps it; sites that encode every round alone (no residual) reached 0.9940 against a dense
update at Dirichlet 0.3 in later rounds and are marked (``scripts/bench/either_order.py
--no-error-feedback``; docs/results.md *Sparse copies committed first*)."""

DUPLICATE_WHITE_NOISE_Z: Final = 1000.0
"""A later update whose residual from an earlier one (the later minus the earlier scaled to fit
it best), each tensor divided by its own root mean square, looks like white noise (the
free-rider screen's structure statistic below this) is a copy of it plus noise
(:attr:`DuplicateRule.white_noise_z`, :func:`fedtrail.valuation.freeride.duplicate_residual_z`).
A Sybil that adds Gaussian noise of a share of each tensor's standard deviation to its
partner's update (``a1_sybil_scaled_copy.py noise``: 1% passes ``scaled_cosine``) leaves such
a residual (statistic at most 4.6 at 0.5-20% noise); two honest updates of one round left 5,838
at least (``scripts/bench/dup_white.py``; docs/results.md *Noisy same-round copies*)."""

DUPLICATE_SHARED_TENSOR: Final = 1
"""On (1): a later update that carries some tensor with at least :data:`SHARED_TENSOR_MIN_SIZE`
nonzero entries, within relative L2 distance :data:`SHARED_TENSOR_RELATIVE_L2` of an earlier
update's tensor of that name (which has at least as many nonzero entries), is a copy of that
update (:attr:`DuplicateRule.shared_tensor`, :func:`fedtrail.protocol.duplicates.shared_tensor`).
A Sybil that adds noise to every tensor of its partner's update but one, or copies some tensors
and trains the others itself, repeats that tensor exactly or nearly
(``scripts/attacks/a101_partial_copy.py``: paid under the tests before it); no two honest
updates of one round came within 20x of the distance (``scripts/bench/dup_tensor.py``; README,
*Partial copies*)."""

SHARED_TENSOR_MIN_SIZE: Final = 16
"""The fewest nonzero entries a tensor needs, in both updates, for the shared-tensor test
(:attr:`DuplicateRule.shared_tensor`) to look at it: a tensor of a handful of values (a
two-class head's bias, a ``topk8`` tensor that keeps one or two entries) may come out close at
two honest sites, and copying it alone carries next to none of an update's value."""

SHARED_TENSOR_RELATIVE_L2: Final = 1e-3
"""The shared-tensor test's distance: a later update's tensor ``b`` is a copy of an earlier
one's ``a`` when ``|b - a| / |a|`` is below this, decided without a square root as
``d2 < SHARED_TENSOR_SQUARED * n2`` (:data:`SHARED_TENSOR_SQUARED`). Honest pairs came no
closer than 0.0214 (dense), and a copy that moves the kept tensor by one float32 step or by
noise of 5e-4 of its std stays below it (docs/results.md *Partial copies*)."""

SHARED_TENSOR_SQUARED: Final = 1e-6
""":data:`SHARED_TENSOR_RELATIVE_L2` squared: the float64 ``1e-6`` (the double nearest 10**-6,
which ``1e-3 * 1e-3`` also gives), the factor the shared-tensor test multiplies the original
tensor's sum of squares by."""

DUPLICATE_WHITE_MIN_COSINE: Final = 0.5
"""The white-noise test (:attr:`DuplicateRule.white_noise_z`) looks only at an earlier original
at cosine above this to the later update: a copy plus noise of up to 1.7 times its own norm is
above it; two unrelated updates (cosine near 0) are not tested, as the residual of an update
that the original does not explain is the update itself, white when the update is noise."""

DUPLICATE_WHITE_NOISE_DP_COSINE: Final = 0.5
"""The value terms may name for :attr:`DuplicateRule.white_noise_dp_cosine` (opt-in: the
product writes no such key, so every DP-declared update is exempt from the white-noise test):
a later update that declares DP-SGD then takes the test when its closest earlier original's
cosine to it is above this. The declaration is the copier's to make: a Sybil that declares
DP-SGD parameters under which its partner's update plus Gaussian noise passes the noise check
escapes the test (``scripts/attacks/a100_dp_declared_copy.py``). Not the default: a copier adding
noise of twice its original's norm (cosine 0.45) escapes it too, declaring less epsilon, and
honest DP-SGD updates at epsilon 50 came to 0.55 and were marked (``scripts/bench/
dup_white_dp.py``; docs/results.md *DP-declared same-round copies*)."""

PERSONALISATION_METHODS: Final = ("finetune", "fedbn", "fedrep")
"""How a site may adapt the round's global model to its own data (the result never leaves it)."""
VALIDATOR_GAMES: Final = ("linear_shapley", "loo")
"""The games a peer round's terms may tell its validators to play at every size instead of the
round's ``method`` (``valuation.validator_game``; absent: the method, and the large game above
``LARGE_GAME_SITES`` updates, as the aggregator plays). ``"linear_shapley"``: Shapley values of
the game linearised at the grand coalition, two coalition models and one gradient pass;
``"loo"``: leave-one-out, ``n + 2`` coalition models."""
DEFAULT_VALIDATOR_GAME: Final = "linear_shapley"
"""The aggregator's default for peer rounds: 2 coalition models and one gradient pass a
validator (Monte-Carlo Shapley over 9 peers costs ~300 models)."""
MAX_PERSONALISATION_STEPS: Final = 10_000

_SHA256_HEX: Final = frozenset("0123456789abcdef")


class InvalidTerms(FedtrailError):
    """A round-terms document that is not valid JSON or not format ``round-terms/1``."""


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _SHA256_HEX


@dataclass(frozen=True, kw_only=True)
class DuplicateRule:
    """When a later update (in commit order) repeats an earlier one: byte-identical, or cosine
    above ``cosine`` with relative L2 distance below ``relative_l2``, or cosine (or the int8
    codes' cosine, :func:`fedtrail.protocol.duplicates.codes`) above ``scaled_cosine`` whatever
    the norms (decoded tensors).

    ``scaled_cosine`` closes the Sybil's way past the first two: a copy scaled by 1.01, recoded
    or with a little noise is 1% away in L2 but still points the same way. None (terms written
    before it, which lack the key) is the rule of those rounds, cosine and distance together,
    so their replay is unchanged.

    ``support_cosine`` closes the way past ``scaled_cosine`` by leaving entries out (a copy sent
    through ``topk8`` at a fraction below 1, or with entries zeroed): the earlier update
    restricted to the later one's nonzero entries is compared with the later one
    (:data:`DUPLICATE_SUPPORT_COSINE`). None (terms written before it) replays without it.

    ``support_overlap`` closes the way past ``support_cosine`` by perturbing the values a
    sparse copy keeps: a sparse later update most of whose nonzero entries are the earlier
    one's largest is a copy whatever its values (:data:`DUPLICATE_SUPPORT_OVERLAP`). None
    (terms written before it) replays without it.

    ``white_noise_z`` closes the way past ``scaled_cosine`` by adding noise: a later update
    whose residual from an earlier one is white noise within each tensor is a copy
    (:data:`DUPLICATE_WHITE_NOISE_Z`; 0: off). None (terms written before it) replays without
    it.

    ``shared_tensor`` (1: on) closes the way past ``white_noise_z`` by leaving one tensor
    without noise, or nearly (or training the others): a later update that repeats an earlier
    one's tensor of at least :data:`SHARED_TENSOR_MIN_SIZE` nonzero entries within relative L2
    distance :data:`SHARED_TENSOR_RELATIVE_L2` is a copy (:data:`DUPLICATE_SHARED_TENSOR`).
    None (terms written before it) or 0 replays without it.

    ``either_order`` closes the way past ``support_cosine`` and ``support_overlap`` by
    committing the sparse copy *before* its original (attack a99): those two tests also compare
    each pair the other way round, the later update as the original, so an earlier update that
    repeats a later one on the entries it carries is the copy whoever committed first; the later
    (dense) original is never marked by it. None or False (terms written before it, which lack
    the key) replays the one-way rule.

    ``white_noise_dp_cosine`` closes the way past ``white_noise_z`` by declaring DP-SGD: a later
    update that declares it takes the white-noise test when its closest original is at cosine
    above this (:data:`DUPLICATE_WHITE_NOISE_DP_COSINE`). None (the default, and terms written
    before it) exempts every DP-declared update."""

    cosine: float = DUPLICATE_COSINE
    relative_l2: float = DUPLICATE_RELATIVE_L2
    scaled_cosine: float | None = DUPLICATE_SCALED_COSINE
    support_cosine: float | None = DUPLICATE_SUPPORT_COSINE
    support_overlap: float | None = DUPLICATE_SUPPORT_OVERLAP
    white_noise_z: float | None = DUPLICATE_WHITE_NOISE_Z
    shared_tensor: int | None = DUPLICATE_SHARED_TENSOR
    either_order: bool | None = True
    white_noise_dp_cosine: float | None = None

    def __post_init__(self) -> None:
        scaled, support, overlap = self.scaled_cosine, self.support_cosine, self.support_overlap
        white, shared = self.white_noise_z, self.shared_tensor
        white_dp = self.white_noise_dp_cosine
        if self.either_order is not None and type(self.either_order) is not bool:
            raise InvalidTerms(
                f"duplicates either_order must be true or false: {self.either_order!r}"
            )
        if not (
            0.0 < self.cosine <= 1.0
            and 0.0 <= self.relative_l2 < 1.0
            and (scaled is None or 0.0 < scaled <= 1.0)
            and (support is None or 0.0 < support <= 1.0)
            and (overlap is None or 0.0 < overlap <= 1.0)
            and (white is None or 0.0 <= white < math.inf)
            and (shared is None or (not isinstance(shared, bool) and shared in (0, 1)))
            and (white_dp is None or 0.0 < white_dp <= 1.0)
        ):
            raise InvalidTerms(
                f"duplicate thresholds out of range: cosine {self.cosine}, "
                f"relative_l2 {self.relative_l2}, scaled_cosine {scaled}, "
                f"support_cosine {support}, support_overlap {overlap}, white_noise_z {white}, "
                f"shared_tensor {shared}, white_noise_dp_cosine {white_dp}"
            )

    def to_json(self) -> dict[str, Any]:
        """The terms' ``duplicates`` object; ``scaled_cosine``, ``support_cosine``,
        ``support_overlap``, ``white_noise_z``, ``shared_tensor``, ``either_order`` and
        ``white_noise_dp_cosine`` only when set, so terms without them keep their bytes."""
        overlap, white_dp = self.support_overlap, self.white_noise_dp_cosine
        return {
            "cosine": self.cosine,
            "relative_l2": self.relative_l2,
            **({} if self.scaled_cosine is None else {"scaled_cosine": self.scaled_cosine}),
            **({} if self.support_cosine is None else {"support_cosine": self.support_cosine}),
            **({} if overlap is None else {"support_overlap": overlap}),
            **({} if self.white_noise_z is None else {"white_noise_z": self.white_noise_z}),
            **({} if self.shared_tensor is None else {"shared_tensor": int(self.shared_tensor)}),
            **({} if self.either_order is None else {"either_order": self.either_order}),
            **({} if white_dp is None else {"white_noise_dp_cosine": white_dp}),
        }


@dataclass(frozen=True, kw_only=True)
class Personalisation:
    """What each site does with the round's global model once the round is finalized, for
    itself alone: ``steps`` seeded SGD steps at learning rate ``lr`` on the site's training
    split of the method's personal part (``finetune``: the whole model, from each global model;
    ``fedbn``: the normalisation layers, ``fedrep``: the classifier head, both carried by the
    site from round to round; :mod:`fedtrail.ml.personalise`), kept on the site (never
    uploaded, never valued). Recorded in the terms so every site of the federation personalises
    the same way; the shared model and its audit are untouched. ``steps == 0``: none."""

    method: str = "finetune"
    steps: int = 50
    lr: float = 0.01

    def __post_init__(self) -> None:
        if self.method not in PERSONALISATION_METHODS:
            raise InvalidTerms(
                f"personalisation method must be one of {PERSONALISATION_METHODS}, "
                f"not {self.method!r}"
            )
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise InvalidTerms(f"personalisation steps must be an integer, not {steps!r}")
        if not 0 <= steps <= MAX_PERSONALISATION_STEPS:
            raise InvalidTerms(
                f"personalisation steps must lie in 0..{MAX_PERSONALISATION_STEPS}, not {steps}"
            )
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr):
            raise InvalidTerms(f"personalisation lr must be a finite number, not {lr!r}")
        if lr <= 0:
            raise InvalidTerms(f"personalisation lr must be positive, not {lr!r}")
        object.__setattr__(self, "lr", float(lr))

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "steps": self.steps, "lr": self.lr}

    @classmethod
    def from_json(cls, doc: Any) -> Personalisation:
        """From an untrusted mapping; :class:`InvalidTerms` names what is wrong."""
        if not isinstance(doc, dict) or set(doc) != {"method", "steps", "lr"}:
            raise InvalidTerms("round terms: personalisation must hold method, steps and lr")
        return cls(method=doc["method"], steps=doc["steps"], lr=doc["lr"])


@dataclass(frozen=True, kw_only=True)
class PrivacyTerms:
    """The federation's differential privacy for the round: the ``delta`` every site accounts
    its DP-SGD epsilon at (:mod:`fedtrail.protocol.privacy`), and whether every update must be
    DP-trained (``required``: an update without DP parameters fails the audit)."""

    delta: float
    required: bool = False

    def __post_init__(self) -> None:
        delta = self.delta
        ok = isinstance(delta, int | float) and not isinstance(delta, bool)
        if not (ok and math.isfinite(delta) and 0 < delta < 1):
            raise InvalidTerms(f"privacy delta must lie in (0, 1), not {delta!r}")
        if not isinstance(self.required, bool):
            raise InvalidTerms(f"privacy required must be true or false, not {self.required!r}")
        object.__setattr__(self, "delta", float(delta))

    def to_json(self) -> dict[str, Any]:
        return {"delta": self.delta, "required": self.required}

    @classmethod
    def from_json(cls, doc: Any) -> PrivacyTerms:
        """From an untrusted mapping; :class:`InvalidTerms` names what is wrong."""
        if not isinstance(doc, dict) or set(doc) != {"delta", "required"}:
            raise InvalidTerms("round terms: privacy must hold delta and required")
        return cls(delta=doc["delta"], required=doc["required"])


@dataclass(frozen=True, kw_only=True)
class RoundTerms:
    """Everything an audit replays, fixed when the round opens.

    ``valuation`` is the log's ``settings/valuation`` mapping (method, metric, seed,
    explanation_check); ``validation_sha256`` is the content hash of the aggregator's
    validation split (the data stays private); ``commit_seconds``/``reveal_seconds`` the
    windows the aggregator gives sites.
    """

    round: int
    aggregation_rule: Mapping[str, Any]
    valuation: Mapping[str, Any]
    model_spec: Mapping[str, Any]
    spec_hash: str
    seed: int
    validation_sha256: str
    validation_images: int
    commit_seconds: int
    reveal_seconds: int
    duplicates: DuplicateRule = field(default_factory=DuplicateRule)
    canonical_encoding: bool = True
    """Only updates whose bytes are the codec's canonical encoding of their tensors count."""
    class_names: tuple[str, ...] = ()
    """One name per class of the federation's task (with ``model_spec``, the task fixed once);
    written only when set, so terms written before tasks named their classes still parse."""
    personalisation: Personalisation | None = None
    """How sites personalise the global model for themselves (None: they do not); written only
    when set, so terms without it keep their bytes."""
    privacy: PrivacyTerms | None = None
    """The round's differential privacy (None: none asked); written only when set, so terms
    without it keep their bytes."""
    score_commit_seconds: int | None = None
    """A peer round's score windows (``valuation`` mode ``"peers"``): how long validators have
    to commit their score vectors after the reveal deadline, then to reveal them; written (in
    ``windows``) only when set, so terms of aggregator rounds keep their bytes."""
    score_reveal_seconds: int | None = None
    initial_model: str | None = None
    """How the round-1 start model is seeded: ``"deployment"`` (:func:`deployment_seed` of
    ``seed``, the chain id, the contract and ``initial_salt``) or None, the legacy rule
    (``seed`` itself) of terms written before the field existed; written only when set, so
    those keep their bytes."""
    initial_salt: str | None = None
    """32 bytes (64 lowercase hex digits) folded into :func:`deployment_seed`: present exactly
    when ``initial_model`` is ``"deployment"``."""

    def __post_init__(self) -> None:
        if self.initial_model not in (None, INITIAL_MODEL_DEPLOYMENT):
            raise InvalidTerms(
                f"round terms: initial_model must be {INITIAL_MODEL_DEPLOYMENT!r} or absent, "
                f"not {self.initial_model!r}"
            )
        if self.initial_model is None and self.initial_salt is not None:
            raise InvalidTerms("round terms: initial_salt without initial_model 'deployment'")
        if self.initial_model is not None and not valid_salt(self.initial_salt):
            raise InvalidTerms(
                "round terms: initial_model 'deployment' needs an initial_salt of 64 lowercase "
                f"hex digits, not {self.initial_salt!r}"
            )
        peers = self.valuation.get("mode") == "peers"
        windows = (self.score_commit_seconds, self.score_reveal_seconds)
        if peers and any(w is None or w < 1 for w in windows):
            raise InvalidTerms("round terms: a peer round needs positive score windows")
        if not peers and any(w is not None for w in windows):
            raise InvalidTerms("round terms: score windows belong to peer rounds only")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TERMS_FORMAT,
            "round": self.round,
            "aggregation_rule": dict(self.aggregation_rule),
            "valuation": dict(self.valuation),
            "model_spec": dict(self.model_spec),
            "spec_hash": self.spec_hash,
            "seed": self.seed,
            "validation": {"sha256": self.validation_sha256, "images": self.validation_images},
            "windows": {
                "commit_seconds": self.commit_seconds,
                "reveal_seconds": self.reveal_seconds,
                **(
                    {
                        "score_commit_seconds": self.score_commit_seconds,
                        "score_reveal_seconds": self.score_reveal_seconds,
                    }
                    if self.score_commit_seconds is not None
                    else {}
                ),
            },
            "duplicates": self.duplicates.to_json(),
            "canonical_encoding": self.canonical_encoding,
            **({"class_names": list(self.class_names)} if self.class_names else {}),
            **(
                {"personalisation": self.personalisation.to_json()}
                if self.personalisation is not None
                else {}
            ),
            **({"privacy": self.privacy.to_json()} if self.privacy is not None else {}),
            **({"initial_model": self.initial_model} if self.initial_model is not None else {}),
            **({"initial_salt": self.initial_salt} if self.initial_salt is not None else {}),
        }

    def initial_seed(self, chain_id: int, contract: str) -> int:
        """The torch seed of the round-1 start model these terms declare on this deployment."""
        if self.initial_model == INITIAL_MODEL_DEPLOYMENT and self.initial_salt is not None:
            return deployment_seed(self.seed, chain_id, contract, self.initial_salt)
        return self.seed

    def to_bytes(self) -> bytes:
        """Canonical bytes: what is stored and whose sha256 goes into ``openRound``."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes) -> RoundTerms:
        """Parses an untrusted terms document; :class:`InvalidTerms` names what is wrong."""
        if len(blob) > MAX_TERMS_BYTES:
            raise InvalidTerms(
                f"round terms are {len(blob)} bytes, over the limit of {MAX_TERMS_BYTES}"
            )
        try:
            doc = safejson.loads(blob)
        except ValueError as exc:  # not UTF-8, not JSON, nested too deep, too many digits
            raise InvalidTerms(f"round terms are not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != TERMS_FORMAT:
            raise InvalidTerms(f"round terms are not {TERMS_FORMAT}")
        try:
            val, win, dup = doc["validation"], doc["windows"], doc["duplicates"]
            terms = cls(
                round=_int(doc["round"], "round"),
                aggregation_rule=_map(doc["aggregation_rule"], "aggregation_rule"),
                valuation=_map(doc["valuation"], "valuation"),
                model_spec=_map(doc["model_spec"], "model_spec"),
                spec_hash=str(doc["spec_hash"]),
                seed=_int(doc["seed"], "seed"),
                validation_sha256=str(val["sha256"]),
                validation_images=_int(val["images"], "validation/images"),
                commit_seconds=_int(win["commit_seconds"], "windows/commit_seconds"),
                reveal_seconds=_int(win["reveal_seconds"], "windows/reveal_seconds"),
                score_commit_seconds=None
                if "score_commit_seconds" not in win
                else _int(win["score_commit_seconds"], "windows/score_commit_seconds"),
                score_reveal_seconds=None
                if "score_reveal_seconds" not in win
                else _int(win["score_reveal_seconds"], "windows/score_reveal_seconds"),
                duplicates=DuplicateRule(
                    cosine=_float(dup["cosine"], "duplicates/cosine"),
                    relative_l2=_float(dup["relative_l2"], "duplicates/relative_l2"),
                    scaled_cosine=None
                    if "scaled_cosine" not in dup
                    else _float(dup["scaled_cosine"], "duplicates/scaled_cosine"),
                    support_cosine=None
                    if "support_cosine" not in dup
                    else _float(dup["support_cosine"], "duplicates/support_cosine"),
                    support_overlap=None
                    if "support_overlap" not in dup
                    else _float(dup["support_overlap"], "duplicates/support_overlap"),
                    white_noise_z=None
                    if "white_noise_z" not in dup
                    else _float(dup["white_noise_z"], "duplicates/white_noise_z"),
                    shared_tensor=None
                    if "shared_tensor" not in dup
                    else _int(dup["shared_tensor"], "duplicates/shared_tensor"),
                    either_order=None
                    if "either_order" not in dup
                    else _bool(dup["either_order"], "duplicates/either_order"),
                    white_noise_dp_cosine=None
                    if "white_noise_dp_cosine" not in dup
                    else _float(dup["white_noise_dp_cosine"], "duplicates/white_noise_dp_cosine"),
                ),
                canonical_encoding=doc["canonical_encoding"] is True,
                class_names=_names(doc.get("class_names", [])),
                personalisation=None
                if "personalisation" not in doc
                else Personalisation.from_json(doc["personalisation"]),
                privacy=None if "privacy" not in doc else PrivacyTerms.from_json(doc["privacy"]),
                initial_model=doc.get("initial_model"),
                initial_salt=doc.get("initial_salt"),
            )
        except (KeyError, TypeError) as exc:
            raise InvalidTerms(f"round terms lack or mistype a field: {exc}") from None
        if not (_is_sha256(terms.spec_hash) and _is_sha256(terms.validation_sha256)):
            raise InvalidTerms("round terms: spec_hash and validation sha256 must be sha256 hex")
        if terms.to_bytes() != blob:
            raise InvalidTerms("round terms are not in canonical form (or hold unknown fields)")
        return terms


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidTerms("round terms: class_names must be a list of non-empty strings")
    if len(set(value)) != len(value):
        raise InvalidTerms("round terms: class_names repeat")
    return tuple(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTerms(f"round terms: {where} is not an integer")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidTerms(f"round terms: {where} is not a finite number")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidTerms(f"round terms: {where} is not true or false")
    return value


def _map(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidTerms(f"round terms: {where} is not an object")
    return dict(value)


PAYMENT_FREE_VALUATION: Final = ("seed", "quorum")
"""The valuation keys a later round's terms may change from round 1's: the Monte-Carlo seed
(bound instead to ``seed - round``, which is fixed) and a peer round's quorum (a majority of
the sites active at open, which registrations change)."""


def payment_differences(first: RoundTerms, later: RoundTerms) -> list[str]:
    """What in ``later``'s terms differs from round 1's (``first``) among the settings that
    decide payment: the validation split's commitment (sha256 and size), the valuation
    settings (method, metric, standing, combiner thresholds, games; the valuation seed's offset
    from the round number, the base ``seed``'s where the valuation names none; while the
    valuation ``mode`` stays round 1's), the aggregation rule with its
    parameters, the duplicate rule and canonical encoding, and the privacy block (whether DP is
    required, ``privacy.required``, and the delta every site accounts at, ``privacy.delta``,
    or that the terms set none), and a commit or reveal window shorter than round 1's. Empty:
    the same. Longer windows, the round, the start model, the personalisation block, a peer
    round's quorum, and its score windows when round 1 had none, may change per round; a
    score window shorter than a peer round 1's may not. A deployment that must change a
    payment setting starts a new ledger."""
    out = []
    if (first.validation_sha256, first.validation_images) != (
        later.validation_sha256,
        later.validation_images,
    ):
        out.append(
            f"validation split {first.validation_sha256[:16]}… ({first.validation_images} "
            f"images) -> {later.validation_sha256[:16]}… ({later.validation_images} images)"
        )
    if _canon(first.aggregation_rule) != _canon(later.aggregation_rule):
        out.append(
            f"aggregation rule {_canon(first.aggregation_rule)} -> {_canon(later.aggregation_rule)}"
        )
    # a federation that moved from the aggregator's scoring to the sites' (``mode``) is held
    # to round 1's split, rule and duplicates only: its valuation is the peers' (open). The
    # other way is no free move: it would hand the aggregator a valuation of its choosing
    # (standing off, another method) that round 1 never fixed.
    modes = [t.valuation.get("mode") for t in (first, later)]
    if modes[0] != modes[1] and modes[1] != "peers":
        out.append(f"valuation mode {modes[0]} -> {modes[1]} (only a move to the peers' is free)")
    if modes[0] == modes[1]:
        ours = {k: v for k, v in first.valuation.items() if k not in PAYMENT_FREE_VALUATION}
        theirs = {k: v for k, v in later.valuation.items() if k not in PAYMENT_FREE_VALUATION}
        if _canon(ours) != _canon(theirs):
            out.append(f"valuation {_canon(ours)} -> {_canon(theirs)}")
        offsets = [_seed_offset(t) for t in (first, later)]
        if offsets[0] != offsets[1]:
            out.append(
                f"valuation seed minus round {offsets[0]} -> {offsets[1]} (a re-chosen seed)"
            )
    if first.duplicates != later.duplicates:
        out.append(f"duplicate rule {first.duplicates.to_json()} -> {later.duplicates.to_json()}")
    if first.canonical_encoding != later.canonical_encoding:
        out.append(f"canonical encoding {first.canonical_encoding} -> {later.canonical_encoding}")
    # required DP decides who can be paid at all: free per round, it let the aggregator keep
    # its plain (non-DP) sites out of the rounds it chose, MALFORMED or skipped (attack a36)
    if _dp_required(first) != _dp_required(later):
        out.append(f"privacy required {_dp_required(first)} -> {_dp_required(later)}")
    # the delta decides which DP sites take part (a node refuses a delta above its [privacy]
    # delta or 1 / its images, or below its min_delta) and what each is charged: free per
    # round, it let the aggregator keep chosen DP sites out of chosen rounds, and terms with no
    # block let a site account at any delta up to 1 / its samples (attack a39)
    if _dp_delta(first) != _dp_delta(later):
        out.append(f"privacy delta {_dp_delta(first)} -> {_dp_delta(later)}")
    # a window shortened for a chosen round shuts out the sites that train (or reveal) slowest,
    # with no trace on chain but their absence (attack a40); a longer one shuts out no one
    # a peer round's score windows likewise decide which validators' vectors count: bound by
    # round 1's when round 1 was a peer round
    for name, was, now in (
        ("commit", first.commit_seconds, later.commit_seconds),
        ("reveal", first.reveal_seconds, later.reveal_seconds),
        ("score commit", first.score_commit_seconds, later.score_commit_seconds),
        ("score reveal", first.score_reveal_seconds, later.score_reveal_seconds),
    ):
        if was is not None and now is not None and now < was:
            out.append(f"{name} window {was} s -> {now} s (shorter than round 1's)")
    return out


ABSENT: Final = object()
"""A field that one of two terms documents does not hold (:func:`round_one_fixed`)."""


def round_one_fixed(
    first: RoundTerms, later: RoundTerms, *, own: Collection[str] = ()
) -> tuple[RoundTerms, list[tuple[str, object, object]]]:
    """``later`` with round 1's (``first``'s) value of every field that
    :func:`payment_differences` holds to round 1, and its own everywhere else: what an
    aggregator whose defaults changed since round 1 (a newer version) offers on the ledger
    round 1 fixed. The fields are not listed here: a field of ``later`` (a ``/``-separated path
    into its JSON, e.g. ``valuation/combiner/dp_noise_check``) is taken from round 1 exactly
    when keeping ``later``'s value would add to what :func:`payment_differences` finds, whole
    objects first, then their fields (a block such as ``privacy`` or ``personalisation`` is
    taken or left whole where half of it would not parse). ``own``: paths never taken (the
    caller's own inputs, such as its validation split, or values its operator chose); the
    round number is ``later``'s. Returns the terms and ``(path, later's value, round 1's
    value)`` of each field taken, :data:`ABSENT` for a value a document does not hold. What
    still differs (an ``own`` path) is for the caller to check with
    :func:`payment_differences`."""
    theirs = fields_by_path(first.to_json())
    ours = fields_by_path(later.to_json())
    keep = {*own, "round"}
    differing = {
        p
        for p in {*theirs, *ours}
        if p not in keep and _json(theirs.get(p, ABSENT)) != _json(ours.get(p, ABSENT))
    }
    current = dict(ours)
    for path in differing:
        _set_leaf(current, path, theirs.get(path, ABSENT))
    adopted = _terms_of(current)
    if adopted is None:  # round 1's fields do not fit these terms: nothing taken
        return later, []
    found = payment_differences(first, adopted)

    def revert(prefix: str) -> None:
        """Keeps ``later``'s values under ``prefix`` where that adds nothing to what
        :func:`payment_differences` finds (round 1's valuation seed at a later round does, its
        offset moved); else tries each field below it."""
        nonlocal adopted, found
        under = sorted(
            p for p in differing if not prefix or p == prefix or p.startswith(prefix + "/")
        )
        if not under:
            return
        trial = dict(current)
        for path in under:
            _set_leaf(trial, path, ours.get(path, ABSENT))
        terms = _terms_of(trial)
        after = None if terms is None else payment_differences(first, terms)
        if terms is not None and after is not None and set(after) <= set(found):
            current.clear()
            current.update(trial)
            adopted, found = terms, after
            differing.difference_update(under)
            return
        if under == [prefix]:
            return
        depth = prefix.count("/") + 1 if prefix else 0
        for child in sorted({"/".join(p.split("/")[: depth + 1]) for p in under}):
            revert(child)

    revert("")
    taken = [(p, ours.get(p, ABSENT), theirs.get(p, ABSENT)) for p in sorted(differing)]
    return adopted, taken


def fields_by_path(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A JSON object's fields by ``/``-separated path, down to values that are not non-empty
    objects."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.update(fields_by_path(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set_leaf(leaves: dict[str, Any], path: str, value: object) -> None:
    if value is ABSENT:
        leaves.pop(path, None)
    else:
        leaves[path] = value


def _terms_of(leaves: Mapping[str, Any]) -> RoundTerms | None:
    """The terms whose fields are ``leaves`` (:func:`fields_by_path`), or None where they do not
    parse (a half-taken block)."""
    doc: dict[str, Any] = {}
    for path, value in leaves.items():
        *parents, name = path.split("/")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # a field and an object at one path: no terms
                return None
        node[name] = value
    try:
        return RoundTerms.from_bytes(_canon(doc).encode("utf-8"))
    except (InvalidTerms, TypeError, ValueError):
        return None


def _json(value: object) -> str:
    """Equal exactly when two JSON values are, with their types (1 is not 1.0 or true)."""
    if value is ABSENT:
        return "<absent>"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _dp_delta(terms: RoundTerms) -> float | None:
    """The delta the terms have every site account at (None: no privacy block, each site's
    own)."""
    return None if terms.privacy is None else terms.privacy.delta


def _dp_required(terms: RoundTerms) -> bool:
    """Whether the terms require every update to be DP-trained (no privacy block: no)."""
    return terms.privacy is not None and terms.privacy.required


def _seed_offset(terms: RoundTerms) -> object:
    """The valuation seed's offset from the round number. Terms whose valuation names no seed
    (written before it had one, or by an aggregator that leaves it out) are valued with the
    base ``seed`` plus the round (``RoundLog.valuation_seed``, as the aggregator and the replay
    run them), so their offset is that base seed: comparing only ``valuation.seed`` let such
    terms re-choose the Monte-Carlo seed every round through the base seed (attack a30)."""
    seed = terms.valuation.get("seed")
    if seed is None:
        return terms.seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed - terms.round
    return seed


def _canon(doc: Mapping[str, Any]) -> str:
    """Canonical JSON: equal exactly when the documents are, with their JSON types."""
    return json.dumps(dict(doc), sort_keys=True, separators=(",", ":"), allow_nan=False)


def window_differences(
    terms: RoundTerms,
    *,
    opened_at: int,
    commit_deadline: int,
    reveal_deadline: int,
    score_deadlines: tuple[int, int] | None = None,
) -> list[str]:
    """How the windows the chain gave a round differ from its terms' (empty: not at all). The
    contract sets both deadlines from the opening block and the lengths the aggregator passes,
    so an honest open has no slack: a commit window shorter than the terms promise shuts out
    the slowest sites (attack a40), and both ``audit verify`` (``terms.windows``) and every node
    (before it trains) hold the chain to the terms. ``score_deadlines``: a peer round's score
    commit and score reveal deadlines on chain, compared with the terms' score windows when
    both are there (attack a132: terms whose score windows pass every site's floors, opened on
    chain at the contract's 10-s minimum, left validators a score reveal window too short for
    them, and a vote committed and not revealed is rated at the largest distance; ``audit
    verify``'s ``peers.quorum`` failed the round only afterwards). A peer round on chain under
    terms that name no score windows (a139), and terms that name them under a round opened
    without (a133), are :func:`valuation_mode_difference`'s: callers that hold a peer record
    check both."""
    commit = commit_deadline - opened_at
    reveal = reveal_deadline - commit_deadline
    problems = []
    if commit != terms.commit_seconds:
        problems.append(
            f"the chain's commit window is {commit} s from the opening block, the terms' "
            f"{terms.commit_seconds} s"
        )
    if reveal != terms.reveal_seconds:
        problems.append(
            f"the chain's reveal window is {reveal} s, the terms' {terms.reveal_seconds} s"
        )
    return problems + _score_window_differences(terms, reveal_deadline, score_deadlines)


class Opening(Protocol):
    """A round's opening as the chain holds it (the ledger's ``RoundInfo``)."""

    @property
    def opened_at(self) -> int: ...
    @property
    def commit_deadline(self) -> int: ...
    @property
    def reveal_deadline(self) -> int: ...


class ScoreDeadlines(Protocol):
    """A peer round's score deadlines as the chain holds them (the ledger's peer record)."""

    @property
    def score_commit_deadline(self) -> int: ...
    @property
    def score_reveal_deadline(self) -> int: ...


def opening_differences(
    terms: RoundTerms, opening: Opening, peer: ScoreDeadlines | None
) -> list[str]:
    """:func:`window_differences` of a round the chain opened, ``peer`` its peer record (None:
    an aggregator round): the one reading of the chain's windows the node (before it trains,
    and for a round opened again) and ``audit verify`` (``terms.declined``) share."""
    return window_differences(
        terms,
        opened_at=opening.opened_at,
        commit_deadline=opening.commit_deadline,
        reveal_deadline=opening.reveal_deadline,
        score_deadlines=None
        if peer is None
        else (peer.score_commit_deadline, peer.score_reveal_deadline),
    )


def valuation_mode_difference(terms: RoundTerms, *, peer_round: bool) -> str | None:
    """How the kind of round the chain opened differs from the one the terms name (None: it
    does not): terms that name a peer round's score windows under a round opened as an
    aggregator round (``openRound``: the aggregator would value alone a round its sites were
    promised their peers would score, attack a133), or a peer round on chain (``openPeerRound``,
    score windows the terms never promised) under terms that say the aggregator values it.
    ``peer_round``: whether the chain holds a peer record for the round. Nodes decline either
    before training (``windows``, with :func:`window_differences`' findings), validators do not
    score the second, and ``audit verify``'s ``terms.declined`` confirms such a decline. The one
    home of both checks (the second, a139, was also a branch of the score window comparison
    until session 63, which stated it twice wherever both ran)."""
    promised = terms.score_commit_seconds is not None
    if promised and not peer_round:
        return (
            "the terms name a peer round's score windows, the chain opened no peer round "
            "(the aggregator values it alone)"
        )
    if peer_round and not promised:
        return (
            "the chain opened a peer round with score windows, the terms name none (they name "
            "no score windows and promise no peer scoring: the aggregator values it)"
        )
    return None


def _score_window_differences(
    terms: RoundTerms, reveal_deadline: int, score_deadlines: tuple[int, int] | None
) -> list[str]:
    if score_deadlines is None:
        return []
    if terms.score_commit_seconds is None:
        # a peer round under terms that name no score windows (a139) is a round of another
        # kind than the terms', valuation_mode_difference's, the one home of that check
        return []
    score_commit = score_deadlines[0] - reveal_deadline
    score_reveal = score_deadlines[1] - score_deadlines[0]
    if (score_commit, score_reveal) == (terms.score_commit_seconds, terms.score_reveal_seconds):
        return []
    return [
        f"the chain's score windows are {score_commit} s / {score_reveal} s (commit / reveal), "
        f"the terms' {terms.score_commit_seconds} s / {terms.score_reveal_seconds} s"
    ]
