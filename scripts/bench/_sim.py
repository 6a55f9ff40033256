"""Seeded in-process federated-learning simulation shared by the accuracy and compression
benchmarks.

No chain and no content store run here. Each round's aggregation weights come from
:func:`fedtrail.protocol.weights.onchain_weights` over the sites' sample counts and valuation scores
— the exact integer rule FederationLedger applies in ``recordValuation`` — and the global model is
built by :func:`fedtrail.ml.aggregation.aggregate` and :func:`fedtrail.ml.aggregation.apply_delta`,
as the aggregator service does after reading those weights back from the chain. A round run here
therefore ends with the global model the ledger-driven federation would produce from the same
updates (the chain and store only add hashes, transactions and blobs around it).

Set-up of one run (:func:`run_method`):

* sites: a Dirichlet(``alpha``) label-skew split of the bundled training split
  (:func:`fedtrail.ml.datasets.partition_dirichlet`); in aggregator mode sites have no validation
  split of their own;
* the aggregator's validation split (valuation only) is the bundled ``val`` split; in peer mode
  (``SimConfig.valuation_mode = "peers"``) each site instead holds its own shard of it
  (:func:`validation_shards`, ``SimConfig.validation_shards``): by default a Dirichlet
  partition of the val split drawn like the training split's (same alpha and seed, at least
  one image per site, its sizes unrelated to the training shards'), as a node's ``[data]``
  shard does (``DataConfig.load``); ``"proportional"``: each site holds out the same fraction
  of its own data (its training shard's class counts scaled to the val split's); final metrics
  are on the bundled ``test`` split, never seen during training or valuation;
* faults (:class:`fedtrail.simulation.faults.SiteFault`): label noise changes a site's training
  data, update faults change what it sends (as the node hooks of :meth:`SiteFault.hooks` do);
  a zero delta is the ``scale`` fault with factor 0, tiny noise the ``random`` fault with a
  small factor; :class:`Stale` (harness-only: the node hooks have no memory of earlier rounds)
  makes a site resend its own previous update or the last global delta from round 2 on;
* local training: :func:`fedtrail.ml.training.train_local` (FedAvg local SGD, the trainer's
  defaults: batch 32, lr 0.02, momentum 0.9), ``epochs`` per round, seeded per site and round the
  way the node daemon seeds it; with ``SimConfig.dp_epsilon`` every site (faulty ones too: an
  update fault then applies to the private update) trains with the node's DP-SGD,
  :func:`fedtrail.ml.privacy.train_private`, each round's update at ``dp_epsilon / rounds``
  (``dp_accounting="summed"``, the chain's old summed rule) or at the per-round target whose rounds
  compose (RDP) to ``dp_epsilon`` (``"composed"``, :func:`round_target`, as ``privacy.py``'s
  table; ``local``: one training at ``dp_epsilon``), with the node's ``[privacy]`` defaults
  (clipping norm, DP-SGD's batch size, lr and momentum), at ``dp_delta``, as
  ``fedtrail demo --dp-epsilon`` sets them; each update's DP parameters and epsilon go into
  :attr:`RoundRecord.privacy`;
* optional compression: every sent update goes through
  :func:`fedtrail.storage.codec.encode_update` (with the site's error-feedback residual) and
  :func:`fedtrail.storage.codec.decode_update`; the bytes of every blob are counted.

Methods (:data:`METHODS`):

``local``
    each site trains alone from the same initial model for ``rounds * epochs`` epochs (one
    :func:`train_local` call); the result is the mean over sites of their test metrics (and the
    mean over honest sites, ``fault.kind == "none"``). Update faults do not apply (a site's own
    model is not an update); label noise does.
``fedavg``
    every score 1e6, so the on-chain weights are the sample-count shares.
``valuation``
    scores from :func:`fedtrail.valuation.value_round` with a :class:`~fedtrail.valuation.History`
    carried across rounds by the rule `fedtrail aggregator run` uses (its defaults: ``--standing``,
    metric ``balanced_loss``, :data:`~fedtrail.valuation.HISTORY_COMBINER`;
    :mod:`fedtrail.valuation.chained`): from the last round that closed with weights, its
    accumulated values, the number of rounds valued (round 1 is the warm-up), and as free-rider
    references the updates and the global deltas of the latest ``stale_rounds`` (the combiner's)
    rounds that closed with weights. Exact Shapley (replaced by Monte-Carlo above 8 sites;
    ``SimConfig.valuation`` selects ``mc_shapley`` or ``loo``), on the aggregator's validation
    split. A round where every score is 0 is skipped (the global model stays) and carries nothing
    on, as the service cancels it: the contract refuses a valuation of zero total weight. Not
    simulated here: the chain's commit-then-reveal, duplicate detection in commit order and
    canonical-encoding checks (no site in these scenarios copies another).
``valuation`` in peer mode (``SimConfig.valuation_mode = "peers"``, issue 14)
    every site is a validator: it scores every other submitted update on its own validation
    shard with :func:`fedtrail.valuation.peer_vector` (the same value_round settings as above
    but the game: ``SimConfig.validator_game``, the aggregator's default ``linear_shapley``,
    its own History chained from its previous vector; a shard of one class abstains), and each
    update's score is the median of the other counted validators' entries (validators whose
    reputation fell below the gate are not counted; quorum a majority of the committee),
    :func:`fedtrail.protocol.peers.peer_outcome` - the rule FederationLedger's
    ``recordPeerValuation`` applies; under the public screen (``SimConfig.public_screen``, the
    product's default for a new peer federation since session 57) the validators skip the
    free-rider screen and the aggregator runs it once on the updates the medians pay, zeroing
    the ones it marks (``dropScreened``); ``public_screen=False``: every validator screens, the
    mode before; weights and aggregation as above. Validator reputation is
    tracked with the contract's EMA (``DEFAULT_REPUTATION_ALPHA``) in rounds that close with
    weights. ``SimConfig.adversaries`` makes chosen validators lie (:class:`AdversarialValidator`:
    ``invert`` reports ``SCORE_SCALE`` minus its honest vector, ``collude`` zeroes one honest
    site and is honest elsewhere); they still train and send honest updates. Each site's
    scoring and training time per round are recorded.
``median``, ``trimmed_mean``, ``krum``, ``norm_clip``
    the robust rule of :class:`fedtrail.ml.aggregation.AggregationRule` over every update, with the
    FedAvg weights (``trim_ratio`` 0.2; ``krum_f`` = the number of faulty sites, at least 1 and
    at most what multi-Krum allows: ``n >= 2f + 3``; ``norm_clip`` at the median norm).

Metrics of a global model (after every round and at the end): on the ``test`` split, with the
calibrated decision of the intercept :func:`fedtrail.ml.metrics.fit_intercept` fits to the
model's logits on the ``val`` split (``f1_calibrated``, ``threshold``; ``f1`` stays the plain
0.5 decision). ``local`` models are calibrated the same way, each on the ``val`` split.

A site whose local training diverges (NaN loss, e.g. after a poisoned global model) submits
nothing that round, as a real node would fail to; a round without any update is skipped.

Reproducibility: the same :class:`SimConfig` and data give the same numbers in one process with
a given torch build and thread count (the scripts set ``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch

ROOT: Final = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedtrail.aggregator.service import (  # noqa: E402
    DEFAULT_PUBLIC_SCREEN,
    AggregatorSettings,
)
from fedtrail.errors import ConfigError  # noqa: E402
from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta  # noqa: E402
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled, partition_dirichlet  # noqa: E402
from fedtrail.ml.metrics import Metrics, evaluate, fit_intercept, predict_logits  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated  # noqa: E402
from fedtrail.ml.privacy import round_target, train_private  # noqa: E402
from fedtrail.ml.training import TrainConfig, TrainingDiverged, train_local  # noqa: E402
from fedtrail.node.config import PrivacyConfig  # noqa: E402
from fedtrail.protocol.peers import (  # noqa: E402
    InvalidVotes,
    PeerOutcome,
    PeerVote,
    default_quorum,
    peer_outcome,
)
from fedtrail.protocol.weights import (  # noqa: E402
    DEFAULT_REPUTATION_ALPHA,
    SCORE_SCALE,
    onchain_weights,
)
from fedtrail.simulation.faults import SiteFault  # noqa: E402
from fedtrail.storage.codec import Compression, decode_update, encode_update  # noqa: E402
from fedtrail.valuation import (  # noqa: E402
    HISTORY_COMBINER,
    Candidate,
    Combiner,
    History,
    PeerVector,
    RoundValuation,
    UnfitValidation,
    ValuationContext,
    peer_vector,
    public_screen,
    value_round,
)
from fedtrail.valuation.chained import screen_candidates  # noqa: E402
from fedtrail.valuation.standing import (  # noqa: E402
    global_label,
    reference_label,
    reference_round,
)
from scripts.bench.valuation_bench import _synthetic_sites, real_updates  # noqa: E402

__all__ = [
    "ADVERSARY_KINDS",
    "METHODS",
    "ONCHAIN_NOTE",
    "ROBUST_RULES",
    "VALUATION_MODES",
    "VAL_SHARDS",
    "AdversarialValidator",
    "Method",
    "RoundRecord",
    "SimConfig",
    "SimResult",
    "Stale",
    "ValShards",
    "bench_game",
    "krum_f_for",
    "mean_std",
    "peer_address",
    "provenance",
    "run_method",
    "site_splits",
    "tap_value_round",
    "validation_shards",
]

Method = Literal["local", "fedavg", "valuation", "median", "trimmed_mean", "krum", "norm_clip"]
METHODS: Final[tuple[Method, ...]] = (
    "local",
    "fedavg",
    "valuation",
    "median",
    "trimmed_mean",
    "krum",
    "norm_clip",
)
ROBUST_RULES: Final = ("median", "trimmed_mean", "krum", "norm_clip")
ValuationMode = Literal["aggregator", "peers"]
VALUATION_MODES: Final[tuple[ValuationMode, ...]] = ("aggregator", "peers")
ValShards = Literal["dirichlet", "proportional"]
VAL_SHARDS: Final[tuple[ValShards, ...]] = ("dirichlet", "proportional")
AdversaryKind = Literal["invert", "collude"]
ADVERSARY_KINDS: Final[tuple[AdversaryKind, ...]] = ("invert", "collude")

ONCHAIN_NOTE: Final = (
    "In-process simulation (no chain, no store): every round's weights are "
    "fedtrail.protocol.weights.onchain_weights(sample counts, scores) - exactly the integer rule "
    "FederationLedger applies on chain - so the weights and global models equal what the "
    "ledger-driven federation would produce from the same updates."
)

Delta = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Stale:
    """A free-rider that resends an earlier update from round 2 on (round 1: its honest update):
    ``source`` ``"own"`` its own update of the previous round (which is then its round-1 update
    every round), ``"global"`` the last global delta applied. ``noise`` > 0 adds seeded Gaussian
    noise whose L2 norm is that fraction of the copy's (above 0.45% a copy's cosine to its
    source falls below the stale screen's 0.99999), fresh every round. ``shape`` ``"white"``:
    i.i.d. noise (the white-noise screen's target); ``"shaped"``: each coordinate's Gaussian
    scaled by the copy's magnitude there (the adaptive copier: its noise has the copy's
    structure, :func:`fedtrail.valuation.freeride.structure_z`)."""

    site: int
    source: Literal["own", "global"]
    noise: float = 0.0
    seed: int = 0
    shape: Literal["white", "shaped"] = "white"

    @property
    def label(self) -> str:
        if self.noise <= 0:
            return f"stale_{self.source}"
        return f"stale_{self.source}_" + ("noisy" if self.shape == "white" else "shaped")

    def resend(self, copy: Mapping[str, torch.Tensor], round_id: int) -> Delta:
        """What the free-rider sends in ``round_id``: ``copy``, plus its noise."""
        out = {k: v.clone() for k, v in copy.items()}
        if self.noise <= 0:
            return out
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + round_id)
        noise = {
            k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in out.items()
        }
        if self.shape == "shaped":
            noise = {k: n * out[k].to(torch.float64).abs() for k, n in noise.items()}
        norm = math.sqrt(sum(float((v.to(torch.float64) ** 2).sum()) for v in out.values()))
        scale = self.noise * norm / math.sqrt(sum(float((n**2).sum()) for n in noise.values()))
        return {k: (v.to(torch.float64) + scale * noise[k]).to(v.dtype) for k, v in out.items()}


@dataclass(frozen=True, kw_only=True)
class AdversarialValidator:
    """A validator of a peer round that lies about its scores (it still trains and sends an
    honest update): ``invert`` reports ``SCORE_SCALE`` minus each entry of its honest vector
    (the site it values most gets its lowest score); ``collude`` scores ``target`` 0 and every
    other site honestly (several colluders with one target: a cartel against one site)."""

    site: int
    kind: AdversaryKind
    target: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ADVERSARY_KINDS:
            raise ConfigError(f"adversary kind must be one of {ADVERSARY_KINDS}, got {self.kind!r}")
        if (self.kind == "collude") != (self.target is not None):
            raise ConfigError("a colluding validator needs a target site, an inverting one none")
        if self.target is not None and self.target == self.site:
            raise ConfigError("a colluding validator targets another site, not itself")

    def lie(self, honest: Sequence[int], sites: Sequence[int]) -> tuple[int, ...]:
        """The vector it reveals instead of ``honest`` (entries for ``sites``, by index; its own
        entry stays 0, the chain ignores it)."""
        if self.kind == "invert":
            return tuple(
                0 if i == self.site else SCORE_SCALE - s for i, s in zip(sites, honest, strict=True)
            )
        return tuple(0 if i == self.target else s for i, s in zip(sites, honest, strict=True))


def peer_address(index: int) -> str:
    """Site ``index``'s address in the simulated peer rounds: ascending with the index, so the
    chain's address order is the sites' order."""
    return f"0x{index + 1:040x}"


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """One simulated federation. ``faults`` holds one :class:`SiteFault` per site (empty: every
    site honest). ``compression`` None skips the codec; a :class:`Compression` (also
    ``method="none"``) sends every update through it and counts bytes."""

    sites: int = 5
    rounds: int = 5
    epochs: int = 1
    alpha: float = 1.0
    min_size: int = 50
    seed: int = 0
    faults: tuple[SiteFault, ...] = ()
    lr: float = 0.02
    batch_size: int = 32
    valuation: Literal["shapley", "mc_shapley", "loo"] = "shapley"
    metric: Literal["loss", "balanced_loss", "auc"] = "balanced_loss"
    trim_ratio: float = 0.2
    compression: Compression | None = None
    stale: tuple[Stale, ...] = ()
    combiner: Combiner = HISTORY_COMBINER
    """The valuation's thresholds (the preset measured for the history path by default)."""
    large_game: str | None = AggregatorSettings.large_game
    """The game above LARGE_GAME_SITES screened updates, the aggregator's default (the service
    passes its setting to value_round; without it a bench of more than 10 sites would measure
    Monte-Carlo Shapley while the service plays the large game)."""
    dp_epsilon: float | None = None
    """Every site trains with DP-SGD under this epsilon for the whole run (``dp_epsilon /
    rounds`` per round's update, as ``fedtrail demo --dp-epsilon``); None: plain training."""
    dp_delta: float = 1e-5
    dp_accounting: Literal["summed", "composed"] = "summed"
    """How ``dp_epsilon`` is split over the rounds: ``"summed"``, ``dp_epsilon / rounds`` a
    round (what the chain adds up against a site's budget), or ``"composed"``, each site's
    per-round target chosen so that its rounds compose (RDP) to ``dp_epsilon``
    (:func:`round_target`; far less noise for the same total, and a larger on-chain spend)."""
    valuation_mode: ValuationMode = "aggregator"
    """``valuation``'s scorer: the aggregator on the whole val split, or ``"peers"`` (every site
    on its own shard, the median of the others' scores; see the module docstring)."""
    adversaries: tuple[AdversarialValidator, ...] = ()
    """Peer mode: validators that lie about their scores (at most one entry per site)."""
    validator_game: str | None = AggregatorSettings.validator_game
    """Peer mode: the game every validator plays at every size (the round terms'
    ``validator_game``, :data:`fedtrail.valuation.VALIDATOR_GAMES`), the aggregator's default;
    None: ``valuation`` (and ``large_game`` above 10 updates)."""
    public_screen: bool = DEFAULT_PUBLIC_SCREEN
    """Peer mode: the round terms' ``valuation.public_screen``: validators skip the free-rider
    screen and the aggregator runs it once a round on the public updates and references
    (:func:`fedtrail.valuation.public_screen`), zeroing the median score of each update it
    marks whose score is above 0 (the contract's ``dropScreened``); its time is
    ``RoundRecord.screen_seconds``. Default: what a new peer federation's aggregator offers
    (:data:`~fedtrail.aggregator.service.DEFAULT_PUBLIC_SCREEN`, on since session 57); False:
    every validator screens (the mode before session 57, the benches' ``--no-public-screen``)."""
    validators: tuple[int, ...] | None = None
    """Peer mode: the sites that validate (a fixed committee, e.g. to time one site's scoring
    in a large federation); None: every site."""
    validation_shards: ValShards = "dirichlet"
    """Peer mode: how the val split is shared out among the sites (:func:`validation_shards`)."""
    validator_min_class: int = 1
    """Peer mode, an experiment (not a product rule; ``VALIDATOR_MIN_CLASS`` of ``accuracy.py``):
    a validator whose shard holds fewer than this many images of one of the split's classes
    abstains, as one whose shard holds one class does (:class:`fedtrail.valuation.UnfitValidation`);
    1: the product's rule (a class absent from the shard only)."""
    statistics: str = AggregationRule.statistics
    """How the aggregate combines running statistics (:attr:`AggregationRule.statistics`)."""
    server_momentum: float = 0.0
    """An experiment, not a product setting: > 0 moves the global model by that fraction of the
    last global change before each round (heavy-ball server momentum, every method alike), so
    the sites train from, and the valuation's coalitions all start at, the moved model; the
    "last global delta" a stale site resends is then the whole last change."""
    value_window: int = 1
    """An experiment, not a product setting (issue 16, valuing what DP noise averages out): the
    valuation values each site's mean of its last ``value_window`` updates (this round's
    included; earlier rounds' as it sent them, whatever their score) instead of this round's
    alone; the weights still apply to this round's updates. 1: the product's valuation."""
    value_window_sum: bool = False
    """With ``value_window`` above 1: the sum of those updates instead of their mean."""
    valuation_rule: Literal["weighted", "norm_clip"] = "weighted"
    """The aggregation rule of the ``valuation`` method's runs (the aggregator's ``--rule``, a
    round term): ``weighted`` (the default) or ``norm_clip`` (:func:`~fedtrail.ml.aggregation.
    norm_clipped_mean` at the median norm of the paid updates, ``max_norm`` unset), both with
    the on-chain weights."""
    site_size: int | None = None
    """An experiment on the data, not a product setting: each site keeps a seeded random
    ``site_size`` images of its Dirichlet share (a federation of uniformly small sites,
    ``scripts/bench/small_sites.py``). None: the whole share, as before."""
    project_shift: bool = False
    """The round terms' ``valuation.project_shift`` (``aggregator run --project-shift``): the
    validation game values every update with its uniform logit shift removed (value_round's
    option of that name, for the aggregator's and every validator's game). False: off, as the
    aggregator's default."""

    def __post_init__(self) -> None:
        if self.sites < 1 or self.rounds < 1 or self.epochs < 1:
            raise ConfigError("sites, rounds and epochs must be positive")
        if self.value_window < 1:
            raise ConfigError(f"value_window must be at least 1, got {self.value_window!r}")
        if self.dp_epsilon is not None and not (
            math.isfinite(self.dp_epsilon) and self.dp_epsilon > 0
        ):
            raise ConfigError(f"dp_epsilon must be positive, got {self.dp_epsilon!r}")
        if not 0 < self.dp_delta < 1:
            raise ConfigError(f"dp_delta must be in (0, 1), got {self.dp_delta!r}")
        if self.dp_accounting not in ("summed", "composed"):
            raise ConfigError(
                f"dp_accounting must be summed or composed, got {self.dp_accounting!r}"
            )
        if self.faults and len(self.faults) != self.sites:
            raise ConfigError(f"{len(self.faults)} faults for {self.sites} sites")
        if self.seed < 0:
            raise ConfigError("seed must be non-negative")
        if self.site_size is not None and self.site_size < 1:
            raise ConfigError(f"site_size must be positive, got {self.site_size!r}")
        for st in self.stale:
            if not 0 <= st.site < self.sites or self.site_faults[st.site].kind != "none":
                raise ConfigError(f"stale site {st.site} must be an honest site of the federation")
        if self.valuation_mode not in VALUATION_MODES:
            raise ConfigError(
                f"valuation_mode must be one of {VALUATION_MODES}, got {self.valuation_mode!r}"
            )
        if self.adversaries and self.valuation_mode != "peers":
            raise ConfigError("adversarial validators need valuation_mode 'peers'")
        liars = [a.site for a in self.adversaries]
        if len(set(liars)) != len(liars):
            raise ConfigError("at most one adversary entry per validator site")
        for a in self.adversaries:
            for i in (a.site, a.target):
                if i is not None and not 0 <= i < self.sites:
                    raise ConfigError(f"adversary site {i} is not a site of the federation")
        if self.validation_shards not in VAL_SHARDS:
            raise ConfigError(
                f"validation_shards must be one of {VAL_SHARDS}, got {self.validation_shards!r}"
            )
        if self.validators is not None:
            if self.valuation_mode != "peers":
                raise ConfigError("a validator committee needs valuation_mode 'peers'")
            if not self.validators or any(not 0 <= i < self.sites for i in self.validators):
                raise ConfigError("validators must be a non-empty set of the federation's sites")
            if len(set(self.validators)) != len(self.validators):
                raise ConfigError("validators are listed once each")

    @property
    def site_faults(self) -> tuple[SiteFault, ...]:
        return self.faults or tuple(SiteFault() for _ in range(self.sites))

    @property
    def fault_labels(self) -> list[str]:
        """Per site: the fault kind, ``stale_own``/``stale_global`` for a :class:`Stale` site."""
        labels = [f.kind for f in self.site_faults]
        for st in self.stale:
            labels[st.site] = st.label
        return labels

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {
            "sites": self.sites,
            "rounds": self.rounds,
            "epochs": self.epochs,
            "alpha": self.alpha,
            "min_size": self.min_size,
            "seed": self.seed,
            "faults": [asdict(f) for f in self.site_faults],
            "lr": self.lr,
            "batch_size": self.batch_size,
            "valuation": self.valuation,
            "metric": self.metric,
            "trim_ratio": self.trim_ratio,
            "compression": None
            if self.compression is None
            else {"method": self.compression.method, "fraction": self.compression.fraction},
            "stale": [asdict(st) for st in self.stale],
            "combiner": asdict(self.combiner),
            "dp_epsilon": self.dp_epsilon,
            "dp_delta": self.dp_delta if self.dp_epsilon is not None else None,
            "dp_accounting": self.dp_accounting if self.dp_epsilon is not None else None,
            "valuation_mode": self.valuation_mode,
            "adversaries": [asdict(a) for a in self.adversaries],
            "validators": None if self.validators is None else list(self.validators),
            "validator_game": self.validator_game,
            **({"public_screen": self.public_screen} if self.valuation_mode == "peers" else {}),
            "value_window": self.value_window,
            "value_window_sum": self.value_window_sum,
            **({"project_shift": True} if self.project_shift else {}),
            **({"site_size": self.site_size} if self.site_size is not None else {}),
        }


@dataclass
class RoundRecord:
    """What happened in one federated round."""

    round: int
    submitted: list[str]
    """Sites whose update entered the round (diverged sites are missing)."""
    scores: list[int]
    """On-chain scores of the submitted sites (1e6 each without valuation)."""
    reasons: list[str]
    weights: list[int]
    """On-chain weights (integers summing to 1e18); empty when the round was skipped."""
    skipped: bool
    bytes_up: int
    """Total bytes of the update blobs of the round (0 without the codec)."""
    valuation_seconds: float = 0.0
    valuation_method: str | None = None
    """What value_round's scores came from ("shapley" may switch to "mc_shapley" for many
    sites; "cosine" in a data-free fallback round)."""
    valuation_evaluations: int = 0
    """Coalition models evaluated on the validation split."""
    test_auc: float = math.nan
    """Test AUC of the global model after the round (a learning curve; never used in training)."""
    test_f1: float = math.nan
    test_f1_calibrated: float = math.nan
    """Test F1 at the decision threshold fitted on the validation split."""
    test_threshold: float = math.nan
    """That decision threshold (the probability of class 1 the validation-fitted intercept
    puts at the boundary), so the per-round fit can be compared between methods."""
    accumulated: dict[str, float] | None = None
    """``valuation``: every site's accumulated value after the round (the next round's history)."""
    shares: dict[str, float] | None = None
    """``valuation``: this round's normalised values as the standing credited them (after
    ``credit_cosine``); None in the warm-up round and in rounds valued without a history."""
    cosines: dict[str, float] = field(default_factory=dict)
    """``valuation``: per usable update, its cosine to the round's coordinate-wise median update
    (the robust statistics the screens and ``credit_cosine`` read)."""
    norm_ratios: dict[str, float] = field(default_factory=dict)
    """``valuation``: per usable update, its L2 norm over the round's median norm."""
    values: dict[str, float] = field(default_factory=dict)
    """``valuation``: per update the game valued, its raw value (before normalising and
    ``credit_cosine``), so a what-if of another standing rule can be read from a saved run."""
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    """With DP: per site that trained this round, its update's DP parameters and epsilon."""
    training_seconds: dict[str, float] = field(default_factory=dict)
    """Per site that trained this round: its local training time."""
    scoring_seconds: dict[str, float] = field(default_factory=dict)
    """Peer mode: per validator, the time its :func:`peer_vector` took."""
    training_cpu_seconds: dict[str, float] = field(default_factory=dict)
    scoring_cpu_seconds: dict[str, float] = field(default_factory=dict)
    """The same two as the process's CPU seconds (all threads: pin torch's threads to compare
    them; less disturbed than wall time by other processes on a shared machine)."""
    votes: dict[str, list[int]] = field(default_factory=dict)
    """Peer mode: per validator, the vector it revealed (entries for ``submitted``)."""
    abstained: list[str] = field(default_factory=list)
    """Peer mode: validators whose split could not score (one class)."""
    validator_distances: dict[str, int] = field(default_factory=dict)
    """Peer mode: per rated validator, its distance from the medians."""
    validator_reputations: dict[str, int] = field(default_factory=dict)
    """Peer mode, rounds closed with weights: every rated validator's reputation after it."""
    screen_seconds: float = 0.0
    screen_cpu_seconds: float = 0.0
    """Peer mode with ``public_screen``: the aggregator's one public screen of the round."""
    screened: dict[str, str] = field(default_factory=dict)
    """Peer mode with ``public_screen``: the sites the public screen marked, with why."""
    why: dict[str, str] = field(default_factory=dict)
    """``valuation`` in aggregator mode: per update not scored OK, its valuation's detail (which
    test of the screen zeroed it)."""
    refused: str = ""
    """Peer mode: why the contract would refuse this round's valuation (below the quorum, or
    the reputation gate undecided; the round is skipped, as the service cancels it)."""


@dataclass
class SimResult:
    """The outcome of one method in one simulated federation."""

    method: str
    seed: int
    test: dict[str, float]
    """Test metrics (loss, accuracy, auc, f1, n, balanced_accuracy, ece, threshold,
    f1_calibrated, balanced_accuracy_calibrated); for ``local``, means over sites."""
    test_honest: dict[str, float] | None = None
    """``local`` only: means over honest sites."""
    per_site: list[dict[str, float]] = field(default_factory=list)
    """``local`` only: each site's test metrics."""
    rounds: list[RoundRecord] = field(default_factory=list)
    site_names: list[str] = field(default_factory=list)
    site_samples: list[int] = field(default_factory=list)
    site_faults: list[str] = field(default_factory=list)
    diverged_trainings: int = 0
    seconds: float = 0.0
    valuation_mode: str = "aggregator"
    """``valuation`` runs: ``"aggregator"`` or ``"peers"``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bytes_per_round(self) -> float:
        return statistics.fmean(r.bytes_up for r in self.rounds) if self.rounds else 0.0

    def weight_share(self, faulty: Sequence[str]) -> float:
        """Mean over rounds (skipped rounds excluded) of the weight share of ``faulty`` sites."""
        shares = [
            sum(w for s, w in zip(r.submitted, r.weights, strict=True) if s in faulty) / 1e18
            for r in self.rounds
            if not r.skipped
        ]
        return statistics.fmean(shares) if shares else math.nan


METRIC_KEYS: Final = (
    "loss",
    "accuracy",
    "auc",
    "f1",
    "balanced_accuracy",
    "ece",
    "threshold",
    "f1_calibrated",
    "balanced_accuracy_calibrated",
)


def _metrics_dict(m: Metrics) -> dict[str, float]:
    out = {k: float(getattr(m, k)) for k in METRIC_KEYS}
    out["n"] = float(m.n)
    return out


def _nan_metrics(n: int) -> dict[str, float]:
    out = {k: math.nan for k in METRIC_KEYS}
    out["loss"] = math.inf
    out["n"] = float(n)
    return out


def _sub_seed(*parts: int) -> int:
    """A non-negative 63-bit seed mixed from the parts (the node daemon's scheme)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def parse_seeds(text: str) -> list[int]:
    """A seed option: a count N (seeds 0..N-1) or a list such as 0,3,7-9 (one seed S: S-S).
    Nothing to run is a usage error, exit 2 with the message on stderr (every bench parses
    its seeds after its arguments): ``--seeds 0`` ran no seed and wrote an empty run."""
    if "," in text or "-" in text:
        out: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    else:
        out = list(range(int(text)))
    if not out:
        print(
            f"error: --seeds {text!r} names no seed (a count N runs seeds 0..N-1; one seed S: S-S)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return out


def site_splits(train: ImageDataset, config: SimConfig) -> list[ImageDataset]:
    """The sites' training data: the Dirichlet split, then each site's data fault."""
    parts = partition_dirichlet(
        train.labels, config.sites, config.alpha, config.seed, min_size=config.min_size
    )
    if config.site_size is not None:  # a seeded random subset of each share, in index order
        rng = np.random.default_rng(_sub_seed(config.seed, 7919))
        parts = [np.sort(rng.permutation(idx)[: config.site_size]) for idx in parts]
    return [
        fault.apply_to_data(train.subset(idx))
        for fault, idx in zip(config.site_faults, parts, strict=True)
    ]


def validation_shards(
    val: ImageDataset, config: SimConfig, train: ImageDataset | None = None
) -> list[ImageDataset]:
    """Peer mode: each site's own validation split, by ``config.validation_shards``:

    ``"dirichlet"``: the Dirichlet partition of ``val`` (the same alpha and seed as the training
    split, at least one image per site), as a node's ``[data]`` shard takes its part of the
    file's val split. Its draw is not the training split's (another ``min_size``), so a site's
    share of ``val`` is unrelated to its share of the training data (measured, 10 sites, alpha 1,
    seed 0: 1 to 74 images for training shards of 89 to 686);
    ``"proportional"``: each site holds out the same fraction of its own data, as a hospital
    keeps a fixed share of its images for validation: per class, ``val``'s images of that class
    are shared out in proportion to the sites' training images of it (``train``'s partition,
    :func:`site_splits`; largest remainders, ties to the lower site), so a shard has its
    training shard's class mix and about ``len(val) / len(train)`` of its size (a small site
    can end with one class, or none: it then abstains, as it would)."""
    if config.validation_shards == "dirichlet":
        parts = partition_dirichlet(val.labels, config.sites, config.alpha, config.seed, min_size=1)
        return [val.subset(idx) for idx in parts]
    if train is None:
        raise ConfigError("proportional validation shards need the training split")
    own = partition_dirichlet(
        train.labels, config.sites, config.alpha, config.seed, min_size=config.min_size
    )
    train_y = np.asarray(train.labels)
    val_y = np.asarray(val.labels)
    rng = np.random.default_rng(config.seed)
    chunks: list[list[np.ndarray]] = [[] for _ in range(config.sites)]
    for c in np.unique(val_y):
        held = np.array([int(np.sum(train_y[idx] == c)) for idx in own], dtype=np.float64)
        pool = rng.permutation(np.flatnonzero(val_y == c))
        if held.sum() == 0:
            continue  # no site trains on this class: none holds it out
        quota = held * pool.size / held.sum()
        sizes = np.floor(quota).astype(np.int64)
        order = sorted(range(config.sites), key=lambda s: (-(quota[s] - sizes[s]), s))
        for s in order[: pool.size - int(sizes.sum())]:
            sizes[s] += 1
        for s, chunk in enumerate(np.split(pool, np.cumsum(sizes)[:-1])):
            chunks[s].append(chunk)
    return [
        val.subset(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64))
        for p in chunks
    ]


def krum_f_for(n_sites: int, n_faulty: int) -> int:
    """multi-Krum's ``f``: the number of faulty sites, at least 1, at most ``(n - 3) // 2``."""
    if n_sites < 3:
        raise ConfigError(f"multi-Krum needs at least 3 sites, got {n_sites}")
    return min(max(1, n_faulty), (n_sites - 3) // 2)


def _evaluate_state(
    spec: ModelSpec,
    state: Mapping[str, torch.Tensor],
    ds: ImageDataset,
    calibration: ImageDataset | None = None,
) -> dict[str, float]:
    """Metrics on ``ds``, with the decision threshold fitted on ``calibration`` when given."""
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        return _nan_metrics(len(ds))
    model = initial_model(spec, seed=0)
    load_federated(model, state)
    try:
        bias = None
        if calibration is not None:
            bias = fit_intercept(predict_logits(model, calibration), calibration.labels).bias
        return _metrics_dict(evaluate(model, ds, bias=bias))
    except (ConfigError, ValueError):  # non-finite outputs of a broken model
        return _nan_metrics(len(ds))


def _mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys()
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def run_method(
    method: Method,
    config: SimConfig,
    splits: Splits,
    *,
    spec: ModelSpec | None = None,
    log: Any = None,
) -> SimResult:
    """Run ``method`` on the federation ``config`` over ``splits`` (see the module docstring).
    ``log`` (a callable taking one string) receives a progress line per round."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    spec = ModelSpec() if spec is None else spec
    started = time.perf_counter()
    data = site_splits(splits.train, config)
    names = [f"site-{i:02d}" for i in range(config.sites)]
    samples = [len(d) for d in data]
    init = {
        k: v.detach().clone() for k, v in federated_state(initial_model(spec, config.seed)).items()
    }
    result = SimResult(
        method=method,
        seed=config.seed,
        test={},
        site_names=names,
        site_samples=samples,
        site_faults=config.fault_labels,
        valuation_mode=config.valuation_mode if method == "valuation" else "aggregator",
    )
    if method == "local":
        _run_local(result, config, spec, init, data, splits)
    else:
        _run_federated(result, method, config, spec, init, data, splits, log)
    result.seconds = time.perf_counter() - started
    return result


def _train_config(config: SimConfig, epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=config.lr, batch_size=config.batch_size, seed=seed)


def _round_epsilon(config: SimConfig, n: int) -> float | None:
    """A site's per-round target epsilon under ``config.dp_accounting`` (None: no DP)."""
    if config.dp_epsilon is None:
        return None
    if config.dp_accounting == "summed":
        return config.dp_epsilon / config.rounds
    tc = _train_config(
        config, config.epochs, 0
    )  # the plan depends on n and the batch, not the seed
    return round_target(
        n, tc, config.dp_epsilon, config.rounds, config.dp_delta, PrivacyConfig().settings()
    )


def _train(
    config: SimConfig,
    state: Mapping[str, torch.Tensor],
    ds: ImageDataset,
    spec: ModelSpec,
    tc: TrainConfig,
    epsilon: float | None,
) -> tuple[Delta, dict[str, float] | None]:
    """One site's local training: plain, or DP-SGD at ``epsilon`` (the node's call); the
    update and, with DP, its parameters and epsilon."""
    if epsilon is None:
        return train_local(state, ds, spec=spec, config=tc).delta, None
    # the node's [privacy] defaults (clip, DP-SGD's own batch, lr and momentum), this epsilon
    settings = replace(PrivacyConfig().settings(), noise_multiplier=None, target_epsilon=epsilon)
    res = train_private(state, ds, spec=spec, config=tc, settings=settings, delta=config.dp_delta)
    p = res.params
    info = {
        "noise_multiplier": p.noise_multiplier,
        "max_grad_norm": p.max_grad_norm,
        "sample_rate": p.sample_rate,
        "steps": float(p.steps),
        "delta": p.delta,
        "epsilon": res.epsilon,
    }
    return res.local.delta, info


def _run_local(
    result: SimResult,
    config: SimConfig,
    spec: ModelSpec,
    init: Mapping[str, torch.Tensor],
    data: Sequence[ImageDataset],
    splits: Splits,
) -> None:
    rows: list[dict[str, float]] = []
    for i, ds in enumerate(data):
        tc = _train_config(config, config.rounds * config.epochs, _sub_seed(config.seed, i, 0))
        try:
            delta, _ = _train(config, init, ds, spec, tc, config.dp_epsilon)
        except TrainingDiverged:
            result.diverged_trainings += 1
            rows.append(_nan_metrics(len(splits.test)))
            continue
        rows.append(_evaluate_state(spec, apply_delta(init, delta), splits.test, splits.val))
    result.per_site = rows
    result.test = _mean_metrics(rows)
    honest = [
        r for r, f in zip(rows, [f.kind for f in config.site_faults], strict=True) if f == "none"
    ]
    result.test_honest = _mean_metrics(honest) if honest else None


def _run_federated(
    result: SimResult,
    method: Method,
    config: SimConfig,
    spec: ModelSpec,
    init: Mapping[str, torch.Tensor],
    data: Sequence[ImageDataset],
    splits: Splits,
    log: Any,
) -> None:
    faults = config.site_faults
    n_faulty = sum(1 for f in config.fault_labels if f != "none")
    stats = config.statistics
    if method == "valuation":
        rule = AggregationRule(name=config.valuation_rule, statistics=stats)
    elif method == "fedavg":
        rule = AggregationRule(name="weighted", statistics=stats)
    elif method == "krum":
        rule = AggregationRule(
            name="krum", krum_f=krum_f_for(config.sites, n_faulty), statistics=stats
        )
    elif method == "trimmed_mean":
        rule = AggregationRule(name="trimmed_mean", trim_ratio=config.trim_ratio, statistics=stats)
    else:
        rule = AggregationRule(name=method, statistics=stats)
    state: dict[str, torch.Tensor] = dict(init)
    residuals: list[Mapping[str, torch.Tensor] | None] = [None] * config.sites
    stale = {st.site: st for st in config.stale}
    # per round that closed with weights, newest last: its number, what each site sent, the
    # global delta it applied (the free-rider references of the next stale_rounds rounds)
    closed: list[tuple[int, dict[int, Delta], Delta]] = []
    own_first: dict[int, Delta] = {}  # a stale "own" site's update of its first round
    last_global: Delta | None = None  # the last global delta applied
    accumulated: dict[str, float] = {}
    valued_rounds = 0
    window: dict[int, list[Delta]] = {}  # value_window: each site's latest updates, oldest first
    round_epsilon = [_round_epsilon(config, len(ds)) for ds in data]
    peers = (
        _Peers(config, splits.val, splits.train)
        if method == "valuation" and config.valuation_mode == "peers"
        else None
    )
    for r in range(1, config.rounds + 1):
        base = state  # the global model; state moves by the server momentum when it is on
        if config.server_momentum > 0 and last_global is not None:
            state = apply_delta(
                base, {k: config.server_momentum * v for k, v in last_global.items()}
            )
        sent: list[tuple[int, Delta]] = []
        bytes_up = 0
        privacy: dict[str, dict[str, float]] = {}
        trained: dict[str, float] = {}
        trained_cpu: dict[str, float] = {}
        for i, ds in enumerate(data):
            free_rider = stale.get(i)
            source = None if free_rider is None else free_rider.source
            copy = own_first.get(i) if source == "own" else last_global if source else None
            if free_rider is not None and copy is not None:
                sent.append((i, free_rider.resend(copy, r)))
                continue
            tc = _train_config(config, config.epochs, _sub_seed(config.seed, i, r))
            t_train, c_train = time.perf_counter(), time.process_time()
            try:
                delta, dp = _train(config, state, ds, spec, tc, round_epsilon[i])
            except TrainingDiverged:
                result.diverged_trainings += 1
                continue
            trained[result.site_names[i]] = time.perf_counter() - t_train
            trained_cpu[result.site_names[i]] = time.process_time() - c_train
            if dp is not None:
                privacy[result.site_names[i]] = dp
            delta = faults[i].apply_to_update(delta, round_id=r)
            if source == "own":
                own_first[i] = {k: v.clone() for k, v in delta.items()}
            if config.compression is not None:
                enc = encode_update(
                    delta,
                    spec=spec,
                    round=r,
                    compression=config.compression,
                    residual=residuals[i],
                )
                residuals[i] = enc.residual
                bytes_up += len(enc.blob)
                delta, _ = decode_update(enc.blob, spec=spec, expected_round=r)
            sent.append((i, delta))
        record = RoundRecord(
            round=r,
            submitted=[result.site_names[i] for i, _ in sent],
            scores=[],
            reasons=[],
            weights=[],
            skipped=True,
            bytes_up=bytes_up,
            privacy=privacy,
            training_seconds=trained,
            training_cpu_seconds=trained_cpu,
        )
        result.rounds.append(record)
        if not sent:
            state = base
            continue
        counts = [result.site_samples[i] for i, _ in sent]
        if peers is not None:
            peers.score(record, r, state, spec, sent, result)
        elif method == "valuation":
            # The history by the service's rule (fedtrail.valuation.chained): from the latest
            # stale_rounds rounds that closed with weights, newest first, their updates and
            # their global deltas.
            references: dict[str, Mapping[str, torch.Tensor]] = {}
            for number, updates, applied in reversed(closed[-config.combiner.stale_rounds :]):
                for i, d in sorted(updates.items()):
                    references[reference_label(result.site_names[i], number)] = d
                references[global_label(number)] = applied
            history = History(
                accumulated=dict(accumulated), valued_rounds=valued_rounds, references=references
            )
            t0 = time.perf_counter()
            report = value_round(
                global_state=state,
                spec=spec,
                candidates=[
                    Candidate(
                        site=result.site_names[i],
                        num_samples=result.site_samples[i],
                        delta=_windowed(window.setdefault(i, []), d, config),
                        noise_declared=result.site_names[i] in privacy,
                    )
                    for i, d in sent
                ],
                validation=splits.val,
                method=config.valuation,
                metric=config.metric,
                seed=config.seed + r,
                combiner=config.combiner,
                history=history,
                large_game=config.large_game if config.metric != "auc" else None,
                project_shift=config.project_shift,
            )
            record.accumulated = dict(report.accumulated or {})
            record.shares = None if report.normalised is None else dict(report.normalised)
            valuations = report.sites
            record.cosines = {v.site: v.cosine for v in valuations if v.cosine is not None}
            record.norm_ratios = {
                v.site: v.norm / v.median_norm
                for v in valuations
                if v.norm is not None and v.median_norm
            }
            record.values = {v.site: v.value for v in valuations if v.value is not None}
            record.valuation_seconds = time.perf_counter() - t0
            record.valuation_method = report.method
            record.valuation_evaluations = report.evaluations
            record.scores = [v.score for v in valuations]
            record.reasons = [v.reason.name for v in valuations]
            record.why = {v.site: v.detail for v in valuations if v.reason.name != "OK"}
        else:
            record.scores = [SCORE_SCALE] * len(sent)
            record.reasons = ["OK"] * len(sent)
        if not any(record.scores):
            # Cancelled, as the service does: nothing of this round is carried on.
            if log is not None:
                why = record.refused or "every score 0"
                log(f"  {method} round {r}: {why}, round skipped")
            state = base
            continue
        if method == "valuation" and peers is None:
            valued_rounds += 1
            accumulated = dict(record.accumulated or {})
        record.weights = onchain_weights(counts, record.scores)
        record.skipped = False
        agg = aggregate(
            rule, [d for _, d in sent], record.weights, statistics=spec.statistic_names()
        )
        state = apply_delta(state, agg)
        last_global = (
            {k: state[k] - base[k] for k in agg} if config.server_momentum > 0 else dict(agg)
        )
        closed.append((r, dict(sent), last_global))
        del closed[: -config.combiner.stale_rounds]
        if peers is not None:
            peers.close(record, last_global, result)
        after = _evaluate_state(spec, state, splits.test, splits.val)
        record.test_auc, record.test_f1 = after["auc"], after["f1"]
        record.test_f1_calibrated = after["f1_calibrated"]
        record.test_threshold = after["threshold"]
        if log is not None:
            extra = ""
            if method == "valuation":
                extra = (
                    (" peer" if peers is not None else "")
                    + " scores "
                    + " ".join(
                        f"{s // 1000}k" if reason == "OK" else reason.lower()
                        for s, reason in zip(record.scores, record.reasons, strict=True)
                    )
                )
            log(
                f"  {method} round {r}: test AUC {record.test_auc:.3f} "
                f"F1 {record.test_f1:.3f} (calibrated {record.test_f1_calibrated:.3f}){extra}"
            )
    result.test = _evaluate_state(spec, state, splits.test, splits.val)


def _windowed(past: list[Delta], delta: Delta, config: SimConfig) -> Delta:
    """What the valuation values for a site sending ``delta`` (:attr:`SimConfig.value_window`):
    ``delta`` itself, or the mean (sum) of it and the site's earlier updates in ``past``, which
    it joins (``past`` keeps the latest ``value_window``)."""
    if config.value_window <= 1:
        return delta
    past.append(delta)
    del past[: -config.value_window]
    div = 1.0 if config.value_window_sum else float(len(past))
    return {k: torch.stack([p[k] for p in past]).sum(dim=0) / div for k in delta}


def _fewest(shard: ImageDataset, classes: int) -> int:
    """The fewest images ``shard`` holds of one of the ``classes`` classes (0: one absent)."""
    return int(np.bincount(np.asarray(shard.labels), minlength=classes).min())


class _Peers:
    """The validators of a peer-mode run: their validation shards, their own histories and
    the last round's vectors, their on-chain reputations (``(reputation, rated rounds)``)."""

    def __init__(self, config: SimConfig, val: ImageDataset, train: ImageDataset) -> None:
        self.config = config
        self.shards = validation_shards(val, config, train)
        self.classes = int(np.unique(np.asarray(val.labels)).size)
        self.addresses = [peer_address(i) for i in range(config.sites)]
        self.histories: list[History] = [History() for _ in range(config.sites)]
        self.vectors: dict[int, PeerVector] = {}
        self.adversaries = {a.site: a for a in config.adversaries}
        self.standing: dict[str, tuple[int, int]] = {}
        self.last_outcome: PeerOutcome | None = None
        # public_screen: the references of the rounds closed with weights (newest first), as
        # recent_references reads them from chain and store, and this round's candidates
        self.public_references: dict[str, Delta] = {}
        self.candidates: list[Candidate] = []
        self.round = 0
        # public_screen: the round's updates dropped as free-riders (dropScreened)
        self.dropped: list[str] = []

    def score(
        self,
        record: RoundRecord,
        r: int,
        state: Mapping[str, torch.Tensor],
        spec: ModelSpec,
        sent: Sequence[tuple[int, Delta]],
        result: SimResult,
    ) -> None:
        """Every validator's vector, the lies of the adversaries, the median scores."""
        config = self.config
        names = result.site_names
        candidates = [
            Candidate(
                site=self.addresses[i],
                num_samples=result.site_samples[i],
                delta=d,
                noise_declared=result.site_names[i] in record.privacy,
            )
            for i, d in sent
        ]
        indices = [i for i, _ in sent]
        votes: list[PeerVote] = []
        self.vectors = {}
        committee = range(config.sites) if config.validators is None else sorted(config.validators)
        for v in committee:
            if len(self.shards[v]) == 0:  # a proportional share of a tiny site: nothing held out
                record.abstained.append(names[v])
                continue
            if config.validator_min_class > 1 and _fewest(self.shards[v], self.classes) < (
                config.validator_min_class
            ):  # the experiment's abstention (SimConfig.validator_min_class)
                record.abstained.append(names[v])
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                pv = peer_vector(
                    validator=self.addresses[v],
                    round_id=r,
                    global_state=state,
                    spec=spec,
                    candidates=candidates,
                    validation=self.shards[v],
                    method=config.valuation,
                    metric=config.metric,
                    seed=config.seed + r,
                    combiner=config.combiner,
                    history=self.histories[v],
                    large_game=config.large_game if config.metric != "auc" else None,
                    validator_game=config.validator_game
                    if config.metric != "auc" or config.validator_game == "loo"
                    else None,
                    project_shift=config.project_shift,
                    public_screen=config.public_screen,
                )
            except UnfitValidation:
                record.abstained.append(names[v])
                continue
            record.scoring_seconds[names[v]] = time.perf_counter() - t0
            record.scoring_cpu_seconds[names[v]] = time.process_time() - c0
            self.vectors[v] = pv
            scores = pv.scores
            liar = self.adversaries.get(v)
            if liar is not None:
                scores = liar.lie(scores, indices)
            votes.append(PeerVote(validator=self.addresses[v], scores=scores))
            record.votes[names[v]] = list(scores)
        try:
            outcome = peer_outcome(
                [self.addresses[i] for i in indices],
                votes,
                standing=self.standing,
                quorum=default_quorum(len(committee)),
            )
        except InvalidVotes as exc:
            # below the quorum, or the gate undecided: the contract refuses the valuation and
            # the service cancels the round (no score, nobody rated; skipped by the caller)
            record.refused = str(exc)
            self.last_outcome = None
            return
        self.last_outcome = outcome
        record.scores = list(outcome.scores)
        record.reasons = [reason.name for reason in outcome.reasons]
        self.candidates, self.round = candidates, r
        self.dropped = []
        if config.public_screen:
            t0, c0 = time.perf_counter(), time.process_time()
            marked = public_screen(
                global_state=state,
                spec=spec,
                # the inputs the chain names (a positive peer median), as the aggregator
                candidates=screen_candidates(candidates, outcome, r),
                history=History(references=dict(self.public_references)),
                combiner=config.combiner,
            )
            record.screen_seconds = time.perf_counter() - t0
            record.screen_cpu_seconds = time.process_time() - c0
            by_address = dict(zip(self.addresses, names, strict=True))
            record.screened = {by_address[a]: why for a, why in marked.items()}
            for k, c in enumerate(candidates):  # dropScreened: the weighted ones it marks
                if c.site in marked and record.scores[k] > 0:
                    record.scores[k] = 0
                    record.reasons[k] = "FREE_RIDER"
                    self.dropped.append(c.site)
        by_address = dict(zip(self.addresses, names, strict=True))
        record.validator_distances = {by_address[a]: d for a, d in outcome.distances.items()}
        times = list(record.scoring_seconds.values())
        record.valuation_seconds = statistics.fmean(times) if times else 0.0
        first = next(iter(self.vectors.values()), None)
        record.valuation_method = None if first is None else first.report.method
        record.valuation_evaluations = max(
            (pv.report.evaluations for pv in self.vectors.values()), default=0
        )

    def close(self, record: RoundRecord, global_delta: Delta, result: SimResult) -> None:
        """The round closed with weights: each validator that voted chains its history, and the
        rated validators' reputations move by the contract's EMA (a cancelled round does
        neither: the chain refused its valuation)."""
        for v, pv in self.vectors.items():
            # the dropped free-riders gain no validator's standing from the round
            nxt = pv.next_history(global_delta, self.dropped)
            if nxt is not None:
                self.histories[v] = nxt
        if self.config.public_screen:  # as peer_vector's next history, from public data
            r, refs = self.round, self.public_references
            current: dict[str, Delta] = {
                reference_label(c.site, r): c.delta for c in self.candidates if c.delta is not None
            }
            current[global_label(r)] = global_delta
            lag = self.config.combiner.stale_rounds
            current.update(
                {k: v for k, v in refs.items() if r - lag < (reference_round(k) or 0) < r}
            )
            self.public_references = current
        assert self.last_outcome is not None  # score() ran for this round
        reps = self.last_outcome.validator_reputations(
            self.standing, alpha=DEFAULT_REPUTATION_ALPHA
        )
        by_address = dict(zip(self.addresses, result.site_names, strict=True))
        for address, rep in reps.items():
            rated = self.standing.get(address, (0, 0))[1]
            self.standing[address] = (rep, rated + 1)
        record.validator_reputations = {
            by_address[a]: rep for a, (rep, _) in sorted(self.standing.items())
        }


RoundTap = Callable[[int, int, Mapping[str, Any], RoundValuation], RoundValuation | None]
"""``(run, round_id, kwargs, report) -> None`` (the report stands) or a report to use instead."""


def tap_value_round(on_round: RoundTap) -> None:
    """Hand every aggregator-mode valuation round of this process to ``on_round`` (the bench's
    probes: ``game_probe.py``, ``step_length.py``, ``layer_norms.py``): ``value_round`` (this
    module's name for :func:`fedtrail.valuation.value_round`, which the federated runs call) is
    wrapped so that after each call ``on_round(run, round_id, kwargs, report)`` sees the call's
    keyword arguments and its report. ``run`` counts the valuation runs from 0, in the order the
    process runs them (it advances at every warm-up round: a run's first, or a call without a
    history); ``round_id`` is 1 plus the history's valued rounds (1 without one). What
    ``on_round`` returns, when not None, is the report the run goes on with. Taps stack: a later
    one wraps the earlier ones and sees the report they returned."""
    global value_round
    original = value_round
    run = -1

    def tapped(**kwargs: Any) -> RoundValuation:
        nonlocal run
        history: History | None = kwargs.get("history")
        if history is None or history.warm_up:
            run += 1
        report: RoundValuation = original(**kwargs)
        round_id = 1 + (history.valued_rounds if history is not None else 0)
        replaced = on_round(run, round_id, kwargs, report)
        return report if replaced is None else replaced

    value_round = tapped


def provenance() -> dict[str, Any]:
    """The commit the benchmark ran on and the uncommitted changes to the library code."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "fedtrail", "node", "aggregator")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_library_changes": dirty.splitlines()}


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; 0 for one value) and count of the finite
    values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), sd, len(finite)


def write_run(doc: dict[str, Any], out: Path, started: float, cpu: float) -> str:
    """Stamps ``doc`` with the run's wall and CPU seconds (since ``started`` /
    ``cpu``, from ``time.perf_counter`` / ``time.process_time``) and its provenance, writes it
    to ``out`` as JSON, and returns the timing line the measurement scripts print."""
    doc["wall_seconds"] = time.perf_counter() - started
    doc["cpu_seconds"] = time.process_time() - cpu
    doc["provenance"] = provenance()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return (
        f"wall {doc['wall_seconds']:.0f} s, CPU {doc['cpu_seconds']:.0f} s, load average "
        f"{os.getloadavg()[0]:.2f}; JSON: {out}"
    )


def bench_game(
    count: int, extra: Callable[[list[Delta]], list[Candidate]] | None = None
) -> ValuationContext:
    """The game of ``valuation_bench.py``'s sites, as ``coalition_eval_profile.py`` and
    ``large_game_poison.py`` play it: ``count`` candidates ``site00``, ``site01``, ... from
    its ``_synthetic_sites`` (drawn from :func:`real_updates`, five real one-epoch SmallCNN
    updates of the seed-0 initial model), then those ``extra`` makes of the five real updates,
    on the bundled validation split, metric ``balanced_loss``."""
    splits = load_bundled()
    spec = ModelSpec()
    global_state = federated_state(initial_model(spec, seed=0))
    real = real_updates(splits, spec, global_state)
    sites = _synthetic_sites(real, count)
    cands = [Candidate(f"site{i:02d}", ns, d) for i, (ns, d) in enumerate(sites)]
    if extra is not None:
        cands += extra(real)
    return ValuationContext(
        global_state=global_state,
        spec=spec,
        candidates=cands,
        validation=splits.val,
        metric="balanced_loss",
    )
