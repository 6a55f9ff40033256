"""From per-site components to the on-chain score (0..1e6) and reason code.

:class:`Combiner` holds the thresholds and applies them in this order; the first that applies
decides the reason, and every rejection scores 0:

1. the candidate's own status (TAMPERED, MALFORMED, DUPLICATE, LATE, EXPLANATION_SHIFT, ... as
   set by whoever fetched and checked it) -> 0 with that status;
2. data-free screening (only with at least ``min_robust_sites`` usable updates; with fewer,
   there is no consensus to compare against and the statistics are recorded but not used):
   ``cosine < min_cosine`` -> OUTLIER_DIRECTION, else ``norm_z > max_norm_z`` -> OUTLIER_NORM;
3. the validation value (Shapley value or leave-one-out gain of the updates that passed 2):
   ``value <= min_gain`` -> LOW_GAIN;
4. otherwise OK with ``score = max(1, round(1e6 * value / best))``, ``best`` the largest value
   among the accepted sites: the best site scores 1e6 and every accepted site scores in
   proportion to its contribution (always positive).

Without a validation split, the cosine stands in for the value: ``cosine <= 0`` ->
OUTLIER_DIRECTION in step 3, and step 4 scores in proportion to the cosine.

:func:`value_round` runs the whole valuation of a round: it marks unusable deltas (layout that
does not fit the global model, non-finite values, no samples -> MALFORMED; a delta equal to an
earlier site's -> DUPLICATE), computes the robust statistics, runs the validation-based scorer
only on the updates that passed the screening, and combines.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation.base import Candidate, ValuationContext, usable
from fedtrail.valuation.loo import LeaveOneOutScorer
from fedtrail.valuation.robust import RobustStats, robust_statistics
from fedtrail.valuation.shapley import (
    AUTO_EXACT_SITES,
    MonteCarloShapleyScorer,
    ShapleyScorer,
)
from fedtrail.valuation.utility import GameValues

__all__ = [
    "METHODS",
    "Combiner",
    "Method",
    "RoundValuation",
    "SiteValuation",
    "any_positive",
    "value_round",
    "value_round_report",
]

Method = Literal["shapley", "mc_shapley", "loo"]
METHODS: tuple[str, ...] = get_args(Method)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return v


@dataclass(frozen=True, kw_only=True)
class SiteValuation:
    """Everything the valuation decided about one site, for the chain and the explanation log.

    ``cosine``, ``norm``, ``norm_z`` and ``median_norm`` are None when the update was not usable;
    ``value`` is None when no validation-based scorer looked at the update (no validation split,
    or rejected before); ``method`` names the scorer of ``value`` (``"shapley"``,
    ``"mc_shapley"``, ``"loo"``, or ``"cosine"`` without a validation split).
    """

    site: str
    num_samples: int
    status: Reason
    """The candidate's status on entry (after :func:`value_round`'s own checks)."""
    cosine: float | None
    norm: float | None
    norm_z: float | None
    median_norm: float | None
    robust_checked: bool
    """Whether the data-free thresholds were applied (enough usable updates)."""
    value: float | None
    method: str | None
    score: int
    """On-chain score, 0..1_000_000."""
    reason: Reason
    detail: str
    """Why, in words, with the numbers and thresholds that decided."""

    @property
    def components(self) -> dict[str, Any]:
        """The components as a JSON-ready dict (for the explanation log)."""
        return {
            "status": self.status.name,
            "cosine": self.cosine,
            "norm": self.norm,
            "norm_z": self.norm_z,
            "median_norm": self.median_norm,
            "robust_checked": self.robust_checked,
            "value": self.value,
            "method": self.method,
        }

    @property
    def explanation(self) -> str:
        """One human-readable line: the reason and its detail."""
        return f"{self.reason.label}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class Combiner:
    """Thresholds that map components to a score and reason (see the module docstring).

    ``min_cosine`` (in [-1, 1]; default -0.5): below it an update points against the consensus.
    Measured on the bundled data: honest IID updates 0.81-0.99, sign-flipped about -0.9; honest
    updates under mild label skew (Dirichlet alpha 5) down to -0.42, under strong skew (alpha 1)
    down to -0.8 — with strongly non-IID sites, lower it (-1 disables the check; a sign-flipped
    update then usually ends as LOW_GAIN through the validation value instead).
    ``max_norm_z`` (> 0; default 10): above it the update's norm is an outlier; with the
    default ``norm_scale_floor`` 0.25 that is at least 3.5x the median norm (honest updates
    measured up to 1.12x IID, 5.7x under strong label skew, where the MAD is large too).
    ``norm_scale_floor`` (> 0): see :mod:`fedtrail.valuation.robust`.
    ``min_gain`` (finite; default 0): a validation value at or below it is LOW_GAIN.
    ``min_robust_sites`` (>= 1; default 3): fewer usable updates skip the data-free thresholds.
    """

    min_cosine: float = -0.5
    max_norm_z: float = 10.0
    norm_scale_floor: float = 0.25
    min_gain: float = 0.0
    min_robust_sites: int = 3

    def __post_init__(self) -> None:
        if not -1.0 <= _number("min_cosine", self.min_cosine) <= 1.0:
            raise ConfigError(f"min_cosine must lie in [-1, 1], got {self.min_cosine}")
        if _number("max_norm_z", self.max_norm_z) <= 0:
            raise ConfigError(f"max_norm_z must be positive, got {self.max_norm_z}")
        if _number("norm_scale_floor", self.norm_scale_floor) <= 0:
            raise ConfigError(f"norm_scale_floor must be positive, got {self.norm_scale_floor}")
        _number("min_gain", self.min_gain)
        m = self.min_robust_sites
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ConfigError(f"min_robust_sites must be a positive integer, got {m!r}")

    def screen(
        self, candidates: Sequence[Candidate], robust: Mapping[str, RobustStats]
    ) -> dict[str, tuple[Reason, str]]:
        """Steps 1-2: the reason (OK for updates that pass) and its detail per site."""
        checked = sum(1 for c in candidates if c.usable) >= self.min_robust_sites
        out: dict[str, tuple[Reason, str]] = {}
        for c in candidates:
            if not c.usable:
                status = c.status if c.status is not Reason.OK else Reason.MALFORMED
                out[c.site] = (status, c.detail or status.description)
                continue
            r = robust.get(c.site)
            if r is None:
                raise ConfigError(f"no robust statistics for usable candidate {c.site}")
            if checked and r.cosine < self.min_cosine:
                out[c.site] = (
                    Reason.OUTLIER_DIRECTION,
                    f"cosine {r.cosine:.3f} to the median update is below {self.min_cosine}",
                )
            elif checked and r.norm_z > self.max_norm_z:
                out[c.site] = (
                    Reason.OUTLIER_NORM,
                    f"norm {r.norm:.4g} is {r.norm / r.median_norm:.1f}x the median "
                    f"{r.median_norm:.4g} (robust z {r.norm_z:.1f} > {self.max_norm_z})"
                    if r.median_norm > 0
                    else f"norm {r.norm:.4g}, robust z {r.norm_z:.1f} > {self.max_norm_z}",
                )
            else:
                out[c.site] = (Reason.OK, "")
        return out

    def combine(
        self,
        candidates: Sequence[Candidate],
        robust: Mapping[str, RobustStats],
        values: Mapping[str, float] | None,
        *,
        method: str | None = None,
    ) -> list[SiteValuation]:
        """Scores and reasons for every candidate, in the given order.

        ``values`` holds the validation value of every update that passed :meth:`screen`
        (computed by ``method``); None means there is no validation split (data-free scoring by
        cosine).
        """
        checked = sum(1 for c in candidates if c.usable) >= self.min_robust_sites
        screened = self.screen(candidates, robust)
        passed = [c.site for c in candidates if screened[c.site][0] is Reason.OK]
        if values is not None:
            missing = [s for s in passed if s not in values]
            if missing:
                raise ConfigError(f"no validation value for {missing}")
            gains = {s: float(values[s]) for s in passed}
            for s, v in gains.items():
                if not math.isfinite(v):
                    raise ConfigError(f"validation value of {s} is not finite ({v})")
        else:
            gains = {s: robust[s].cosine for s in passed}
        threshold = self.min_gain if values is not None else 0.0
        accepted = {s: v for s, v in gains.items() if v > threshold}
        best = max(accepted.values(), default=0.0)
        out = []
        for c in candidates:
            reason, detail = screened[c.site]
            value = gains.get(c.site)
            score = 0
            if reason is Reason.OK:
                assert value is not None
                if c.site not in accepted:
                    if values is not None:
                        reason = Reason.LOW_GAIN
                        detail = f"{method or 'validation'} value {value:.4g} <= {threshold:g}"
                    else:
                        reason = Reason.OUTLIER_DIRECTION
                        detail = f"cosine {value:.3f} to the median update is not positive"
                else:
                    score = max(1, min(SCORE_SCALE, round(SCORE_SCALE * value / best)))
                    what = f"{method or 'validation'} value" if values is not None else "cosine"
                    detail = f"{what} {value:.4g} ({value / best:.1%} of the best {best:.4g})"
            r = robust.get(c.site)
            scorer = None
            if value is not None:
                scorer = method if values is not None else "cosine"
            out.append(
                SiteValuation(
                    site=c.site,
                    num_samples=c.num_samples,
                    status=c.status,
                    cosine=None if r is None else r.cosine,
                    norm=None if r is None else r.norm,
                    norm_z=None if r is None else r.norm_z,
                    median_norm=None if r is None else r.median_norm,
                    robust_checked=checked and r is not None,
                    value=value if values is not None else None,
                    method=scorer,
                    score=score,
                    reason=reason,
                    detail=detail,
                )
            )
        return out


@dataclass(frozen=True, kw_only=True)
class RoundValuation:
    """One round's valuation: per-site results and the round-level facts of the game."""

    sites: list[SiteValuation]
    method: str | None
    """Validation scorer actually run (``"shapley"`` may have switched to ``"mc_shapley"``);
    ``"cosine"`` without a validation split; None when no update passed the screening."""
    evaluations: int = 0
    """Coalition models evaluated on the validation split."""
    permutations: int = 0
    """Monte-Carlo permutations sampled (0 otherwise)."""
    v_empty: float | None = None
    """Validation metric of the round's global model (None when no game was played)."""
    v_full: float | None = None
    """Validation metric of the coalition of every update that passed the screening."""
    combiner: Combiner = field(default_factory=Combiner)


def any_positive(valuations: Sequence[SiteValuation]) -> bool:
    """Whether at least one site has a positive score (then the on-chain total weight
    ``sum n_i * s_i`` is positive too: :func:`value_round` gives no positive score to a site
    with zero samples)."""
    return any(v.score > 0 for v in valuations)


def _fits(delta: Mapping[str, torch.Tensor], global_state: Mapping[str, torch.Tensor]) -> str:
    """Empty when ``delta`` fits the global model's layout; else what is wrong."""
    if set(delta) != set(global_state):
        missing = sorted(set(global_state) - set(delta))
        extra = sorted(set(delta) - set(global_state))
        return f"tensor names differ from the model's (missing {missing}, unexpected {extra})"
    for name, g in global_state.items():
        t = delta[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return f"tensor {name!r} is not floating point"
        if tuple(t.shape) != tuple(g.shape):
            return f"tensor {name!r} has shape {tuple(t.shape)}, the model {tuple(g.shape)}"
        if not bool(torch.isfinite(t).all()):
            return f"tensor {name!r} holds NaN or infinite values"
    return ""


def _fingerprint(delta: Mapping[str, torch.Tensor], names: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        t = delta[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode("utf-8") + b"\x00")
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _prechecked(ctx: ValuationContext) -> list[Candidate]:
    """The candidates with value_round's own checks applied to their status."""
    names = list(ctx.global_state)
    seen: dict[str, str] = {}
    out = []
    for c in ctx.candidates:
        delta = c.delta
        if c.usable and delta is not None:
            problem = _fits(delta, ctx.global_state)
            if problem:
                c = replace(c, status=Reason.MALFORMED, detail=problem)
            elif c.num_samples < 1:
                c = replace(c, status=Reason.MALFORMED, detail="claims no training samples")
            else:
                fp = _fingerprint(delta, names)
                if fp in seen:
                    c = replace(c, status=Reason.DUPLICATE, detail=f"same update as {seen[fp]}'s")
                else:
                    seen[fp] = c.site
        out.append(c)
    return out


def value_round_report(
    ctx: ValuationContext,
    *,
    method: Method = "shapley",
    combiner: Combiner | None = None,
    mc: MonteCarloShapleyScorer | None = None,
) -> RoundValuation:
    """Value one round; the full report (see :func:`value_round`)."""
    if method not in METHODS:
        raise ConfigError(f"valuation method must be one of {METHODS}, got {method!r}")
    comb = Combiner() if combiner is None else combiner
    mc_scorer = MonteCarloShapleyScorer() if mc is None else mc
    cands = _prechecked(ctx)
    checked_ctx = replace(ctx, candidates=cands)
    ok = usable(checked_ctx)
    robust = robust_statistics(
        {c.site: c.delta for c in ok if c.delta is not None},
        norm_scale_floor=comb.norm_scale_floor,
    )
    screened = comb.screen(cands, robust)
    passers = [c for c in ok if screened[c.site][0] is Reason.OK]
    game: GameValues | None = None
    if ctx.validation is None:
        sites = comb.combine(cands, robust, None)
        return RoundValuation(sites=sites, method="cosine" if passers else None, combiner=comb)
    if passers:
        if method == "loo":
            game = LeaveOneOutScorer().run(checked_ctx, passers)
        elif method == "mc_shapley" or len(passers) > AUTO_EXACT_SITES:
            game = mc_scorer.run(checked_ctx, passers)
        else:
            game = ShapleyScorer().run(checked_ctx, passers)
    values = {} if game is None else game.values
    used = None if game is None else game.method
    sites = comb.combine(cands, robust, values, method=used)
    if game is None:
        return RoundValuation(sites=sites, method=None, combiner=comb)
    return RoundValuation(
        sites=sites,
        method=game.method,
        evaluations=game.evaluations,
        permutations=game.permutations,
        v_empty=game.v_empty,
        v_full=game.v_full,
        combiner=comb,
    )


def value_round(
    ctx: ValuationContext,
    *,
    method: Method = "shapley",
    combiner: Combiner | None = None,
    mc: MonteCarloShapleyScorer | None = None,
) -> list[SiteValuation]:
    """Score every candidate of a round: one :class:`SiteValuation` per candidate, in the
    candidates' (address) order, ready for ``recordValuation``.

    Steps: own checks (layout, finiteness and sample count -> MALFORMED; an update equal to an
    earlier site's -> DUPLICATE, the first one in address order keeps its score); robust
    statistics over the usable updates; screening; the validation-based ``method`` on the
    updates that passed (``"shapley"``: exact, switching to ``"mc_shapley"`` above
    :data:`~fedtrail.valuation.shapley.AUTO_EXACT_SITES` of them; ``"mc_shapley"`` with the
    settings of ``mc``; ``"loo"``); then :meth:`Combiner.combine`. Without a validation split,
    scores come from the cosine (data-free).

    When every candidate ends at 0 (all rejected, or no positive gain), the list still holds
    every site with score 0 and its reason — useful for the log — but it must not be recorded
    on chain: the contract refuses a valuation with zero total weight and
    :func:`fedtrail.protocol.weights.onchain_weights` raises ``ZeroTotalWeight``. Check
    :func:`any_positive` first.
    """
    return value_round_report(ctx, method=method, combiner=combiner, mc=mc).sites
