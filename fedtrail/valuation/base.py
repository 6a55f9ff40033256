"""What a round's valuation looks at: the candidates and the valuation context.

A round's valuation sees one :class:`Candidate` per submitted update, in the sites' address
order. A candidate whose blob could not be used (tampered, malformed, ...) has ``delta=None``
and a non-OK ``status`` set by whoever fetched it. The statistics and games
(:mod:`~fedtrail.valuation.robust`, :mod:`~fedtrail.valuation.shapley`,
:mod:`~fedtrail.valuation.loo`) give the candidates with a usable delta one number each, higher =
better; the combiner (:mod:`fedtrail.valuation.combine`) turns those components into the on-chain
score and :class:`Reason`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason

__all__ = [
    "METRICS",
    "Candidate",
    "Metric",
    "Utility",
    "ValuationContext",
    "size_factor",
    "usable",
]

Metric = Literal["auc", "loss", "balanced_loss"]
METRICS: tuple[str, ...] = get_args(Metric)

Utility = Callable[[frozenset[str]], float]
"""Value of a coalition of sites (by name); the empty coalition is the round's global model."""


@dataclass(frozen=True, eq=False)
class Candidate:
    """One site's submitted update as the aggregator holds it (equality is identity: deltas
    are tensors).

    ``delta`` is None when the blob could not be used; then ``status`` says why (it must not be
    OK). A candidate may keep its delta with a non-OK status (a late update, a duplicate); it is
    scored 0 with that status either way. ``noise_declared``: the update declares DP-SGD (its
    blob carries DP parameters), so its Gaussian noise is declared and the free-rider screen's
    white-noise test leaves it to the DP checks.
    """

    site: str
    num_samples: int
    delta: Mapping[str, torch.Tensor] | None
    status: Reason = Reason.OK
    detail: str = ""
    noise_declared: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.site, str) or not self.site:
            raise ConfigError("a candidate needs a non-empty site name")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int):
            raise ConfigError(f"{self.site}: num_samples must be an integer")
        if self.num_samples < 0:
            raise ConfigError(f"{self.site}: num_samples must be non-negative")
        if not isinstance(self.status, Reason):
            raise ConfigError(f"{self.site}: status must be a Reason, got {self.status!r}")
        if self.delta is None and self.status is Reason.OK:
            raise ConfigError(f"{self.site}: a candidate without a delta needs a non-OK status")

    @property
    def usable(self) -> bool:
        """Whether the valuation looks at it: status OK and a delta present."""
        return self.status is Reason.OK and self.delta is not None


@dataclass(frozen=True, kw_only=True, eq=False)
class ValuationContext:
    """Everything one round's valuation looks at (equality is identity).

    ``global_state`` is the round's global model; ``candidates`` are in address order with
    distinct site names; ``validation`` is the aggregator's validation split (None: only the
    data-free statistics can run); ``metric`` picks the utility of a coalition model: its ROC AUC,
    its negative mean cross-entropy loss, or its negative class-balanced loss after fitting its
    intercept on the split (``"balanced_loss"``: blind to label prior shifts, see
    :func:`fedtrail.ml.metrics.fit_intercept`); ``seed`` seeds every random choice (Monte-Carlo
    permutations).
    """

    global_state: Mapping[str, torch.Tensor]
    spec: ModelSpec
    candidates: Sequence[Candidate]
    validation: ImageDataset | None = None
    metric: Metric = "auc"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        names = [c.site for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"site names must be distinct; repeated: {dupes}")
        if self.validation is not None and len(self.validation) == 0:
            raise ConfigError("the validation split is empty")

    def candidate(self, site: str) -> Candidate:
        for c in self.candidates:
            if c.site == site:
                return c
        raise KeyError(site)


def usable(ctx: ValuationContext) -> list[Candidate]:
    """The candidates the valuation looks at (status OK with a delta), in address order."""
    return [c for c in ctx.candidates if c.usable]


def size_factor(own: int, counts: Sequence[int]) -> float:
    """``own`` claimed samples over the median of ``counts`` (the round's usable updates' claimed
    counts, ``own`` among them): how many times the median site's data the update claims to be
    trained on. 1 when the median is not positive (nothing to compare with)."""
    median = float(statistics.median(counts)) if counts else 0.0
    return own / median if median > 0 else 1.0
