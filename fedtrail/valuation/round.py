"""One round's valuation: :func:`value_round`, the single entry point.

The aggregator service scores each round with it, an auditor re-runs it with the settings the
round's explanation log names (method, metric, seed, explanation check), the benchmarks measure
it and the tests pin it — so anyone holding the same validation split recomputes the same scores.

Steps, in order:

1. optional explanation check (:class:`~fedtrail.valuation.explanation.ExplanationScorer` on 32
   validation images stamped with a corner tag: a shortcut only shows on images that have one)
   -> EXPLANATION_SHIFT;
2. own checks: layout, finiteness and sample count -> MALFORMED; an update byte-equal in its
   tensors to an earlier candidate's -> DUPLICATE (the first in the given order keeps its score;
   the service and the audit pass candidates already marked in on-chain commit order by
   :func:`~fedtrail.protocol.duplicates.find_duplicates`, so this only catches copies that reach
   it unmarked, e.g. from library callers); a sample count above
   ``Combiner.max_sample_ratio`` times the median of the usable updates' (``sample_median_self``) ->
   IMPLAUSIBLE_SAMPLES;
3. an update over :data:`MAX_UPDATE_TO_MODEL_NORM` times the global model's norm, and with a
   validation split an update whose model alone gives NaN or infinite outputs -> OUTLIER_NORM
   (:func:`_oversized`, :func:`_broken`); with a history, in its warm-up round, an update whose
   model alone is clearly worse than the global model on the validation split -> LOW_GAIN
   (:func:`_harmful`: these three need no majority, so they hold in a round of two updates);
   robust statistics over the usable updates' trainable parameters (running statistics left
   out: :mod:`~fedtrail.valuation.robust`) and the data-free screening
   (:meth:`~fedtrail.valuation.combine.Combiner.screen`);
4. the validation game (:data:`GAMES`) on the updates that passed: ``"shapley"`` exact, switching
   to ``"mc_shapley"`` above :data:`~fedtrail.valuation.shapley.AUTO_EXACT_SITES` of them;
   ``"mc_shapley"``; ``"loo"``; a method of :data:`LARGE_GAMES` (``"linear_shapley"``, a peer
   round's validator game) at every size. Without a validation split, scores come from the cosine;
5. :meth:`~fedtrail.valuation.combine.Combiner.combine` into on-chain scores and reasons;
6. when no update improves the validation metric (early, uncalibrated models raise the loss
   while ranking well), the data-free scores instead, rather than stall the round.

With a :class:`~fedtrail.valuation.standing.History` (the previous round's accumulated values,
recorded in its log), steps 5-6 change: free-riders are rejected after step 2 (FREE_RIDER,
:mod:`~fedtrail.valuation.freeride`; also an update below :data:`MIN_UPDATE_TO_MODEL_NORM` of
the global model's norm), this round's values are normalised and accumulated (after the
warm-up, each scored site's record kept within ``record_floor`` of its reference:
:meth:`~fedtrail.valuation.combine.Combiner.floor_records`), and the scores are demote-only
(:meth:`~fedtrail.valuation.combine.Combiner.settle`); the result's ``accumulated`` is the next
round's history. A validation split is required then, and metric
``"balanced_loss"`` is the one measured to value label quality rather than label prior.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Final, cast

import numpy as np
import numpy.typing as npt
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import Classifier, ModelSpec
from fedtrail.ml.shortcuts import add_marker
from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import METRICS, Candidate, Metric, Utility, ValuationContext, usable
from fedtrail.valuation.combine import (
    Combiner,
    RoundValuation,
    any_positive,
    passed_sites,
    sample_reference,
)
from fedtrail.valuation.explanation import ExplanationScorer
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.loo import leave_one_out
from fedtrail.valuation.robust import RobustStats, robust_statistics, without_statistics
from fedtrail.valuation.shapley import (
    AUTO_EXACT_SITES,
    BUDGET3_FIT_SITES,
    LARGE_GAME_SITES,
    budget_shapley,
    budget_shapley2,
    budget_shapley3,
    exact_shapley,
    linear_shapley,
    mc_shapley,
)
from fedtrail.valuation.standing import (
    History,
    accumulate,
    credited,
    normalised_values,
    outweighing,
)
from fedtrail.valuation.utility import CoalitionUtility, GameValues, scratch_model

__all__ = [
    "EXPLANATION_PROBES",
    "GAMES",
    "LARGE_GAMES",
    "METHODS",
    "Game",
    "explanation_probe",
    "public_screen",
    "value_round",
]

log = logging.getLogger(__name__)

Game = Callable[[Sequence[str], Utility, int], GameValues]
"""A validation game: (players in address order, coalition utility, seed) -> values."""


def _exact(players: Sequence[str], utility: Utility, seed: int) -> GameValues:
    return exact_shapley(players, utility)


def _monte_carlo(players: Sequence[str], utility: Utility, seed: int) -> GameValues:
    return mc_shapley(players, utility, seed=seed)


def _loo(players: Sequence[str], utility: Utility, seed: int) -> GameValues:
    return leave_one_out(players, utility)


GAMES: Final[Mapping[str, Game]] = MappingProxyType(
    {"shapley": _exact, "mc_shapley": _monte_carlo, "loo": _loo}
)
"""Valuation method name -> its game (the registry the CLI's ``--valuation`` choices come from)."""

METHODS: Final[tuple[str, ...]] = tuple(GAMES)


def _linear(utility: CoalitionUtility, seed: int) -> GameValues:
    players = utility.players
    v_empty = utility(frozenset())
    v_full, slopes = utility.linearised()
    return linear_shapley(
        players,
        v_empty=v_empty,
        v_full=v_full,
        slopes=[slopes[p] for p in players],
        samples=[utility.samples(p) for p in players],
        seed=seed,
    )


def _budget(utility: CoalitionUtility, seed: int) -> GameValues:
    return budget_shapley(utility.players, utility, seed=seed)


def _budget2(utility: CoalitionUtility, seed: int) -> GameValues:
    return budget_shapley2(utility.players, utility, seed=seed)


def _budget3(utility: CoalitionUtility, seed: int) -> GameValues:
    players = utility.players
    if len(players) < BUDGET3_FIT_SITES:
        return budget_shapley3(players, utility, seed=seed)
    _, slopes = utility.linearised()
    samples = {p: utility.samples(p) for p in players}
    return budget_shapley3(players, utility, seed=seed, samples=samples, slopes=slopes)


LARGE_GAMES: Final[Mapping[str, Callable[[CoalitionUtility, int], GameValues]]] = MappingProxyType(
    {
        "linear_shapley": _linear,
        "budget_shapley": _budget,
        "budget_shapley2": _budget2,
        "budget_shapley3": _budget3,
    }
)
"""A round's ``large_game`` setting -> the game played instead of ``"mc_shapley"`` when more
than :data:`~fedtrail.valuation.shapley.LARGE_GAME_SITES` updates pass the screening (None, as
in every log written before it existed: ``"mc_shapley"`` at every size). Those of
:data:`NEEDS_GRADIENT` need a loss metric. ``"budget_shapley"``
(opt-in): Shapley on real coalition models within a fixed evaluation budget (Monte-Carlo up to
12 players, stratified by coalition size above); ``"linear_shapley"``: the first-order game,
cheaper, weaker against an oversized update; ``"budget_shapley2"`` (opt-in): the budget game
sampled toward the small coalitions (attack a141: an update good alone and harmful in every
coalition, which ``"budget_shapley"`` pays from 22 players on, is not paid);
``"budget_shapley3"`` (opt-in): ``"budget_shapley2"`` below 76 players, from 76 each update
alone and in two pairs with the larger coalitions fitted from the slopes at the grand coalition
(so it needs a loss metric, :data:`NEEDS_GRADIENT`)."""


NEEDS_GRADIENT: Final = frozenset({"linear_shapley", "budget_shapley3"})
"""The large games that need the utility's gradient, so a loss metric (not the AUC)."""


def _play(method: str, large_game: str | None, utility: CoalitionUtility, seed: int) -> GameValues:
    """The round's game: ``method``'s, or ``large_game``'s above LARGE_GAME_SITES players; a
    ``method`` of :data:`LARGE_GAMES` (a validator's game) at every size."""
    if method in LARGE_GAMES:
        return LARGE_GAMES[method](utility, seed)
    if method == "shapley" and len(utility.players) > AUTO_EXACT_SITES:
        method = "mc_shapley"
    large = len(utility.players) > LARGE_GAME_SITES
    if large_game is not None and method == "mc_shapley" and large:
        return LARGE_GAMES[large_game](utility, seed)
    return GAMES[method](utility.players, utility, seed)


WARM_UP_ALONE: Final = "warm_up_alone"
"""The method a warm-up round valued without a game names (:func:`value_round`'s
``warm_up_game`` False, a peer validator's): each passer's value is its update alone's gain over
the global model's utility as the warm-up's harm check measured it (to first order when the
round's game is linearised, else the model alone), for the validator's own record; the warm-up's
scores depend on it only under ``warm_up_floor`` below 1 (its shares are then accumulated)."""

EXPLANATION_PROBES: Final = 32
"""Validation images (the first ones, tagged) the explanation check explains."""


def explanation_probe(images: ImageDataset) -> torch.Tensor:
    """The explanation check's probe batch built from ``images``: the first
    :data:`EXPLANATION_PROBES` of them, stamped with the corner tag (a shortcut only shows on
    images that have one). The aggregator publishes it (:mod:`fedtrail.storage.probe`), so the
    images it is built from become public."""
    if len(images) == 0:
        raise ConfigError("the explanation check needs at least one probe image")
    n = min(EXPLANATION_PROBES, len(images))
    tagged = add_marker(images.subset(np.arange(n)), label=None)
    return torch.from_numpy(np.array(tagged.images, dtype=np.float32))


def check_game(*, method: str, metric: str, large_game: str | None) -> None:
    """ConfigError naming what :func:`value_round` cannot play: an unknown ``method``, ``metric``
    or ``large_game``, or a linearised game under the AUC (it needs a gradient:
    :data:`NEEDS_GRADIENT`; ``"budget_shapley"`` plays under any metric). Callers that
    read settings from untrusted terms check them before anyone trains under them."""
    if method not in GAMES and method not in LARGE_GAMES:
        raise ConfigError(
            f"valuation method must be one of {METHODS + tuple(LARGE_GAMES)}, got {method!r}"
        )
    if large_game is not None and large_game not in LARGE_GAMES:
        raise ConfigError(f"large_game must be one of {tuple(LARGE_GAMES)}, got {large_game!r}")
    if large_game in NEEDS_GRADIENT and metric == "auc":
        raise ConfigError(f"large_game {large_game!r} needs a loss metric, not the AUC")
    if method in LARGE_GAMES and metric == "auc":
        raise ConfigError(f"method {method!r} needs a loss metric, not the AUC")
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")


def value_round(
    *,
    global_state: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    candidates: Sequence[Candidate],
    validation: ImageDataset | None,
    method: str,
    metric: str,
    seed: int,
    explanation_check: bool = False,
    combiner: Combiner | None = None,
    history: History | None = None,
    large_game: str | None = None,
    probe: torch.Tensor | None = None,
    warm_up_game: bool = True,
    project_shift: bool = False,
    public_screen: bool = False,
) -> RoundValuation:
    """Score every candidate of a round (see the module docstring): one
    :class:`~fedtrail.valuation.combine.SiteValuation` per candidate in ``report.sites``, in the
    candidates' (address) order, ready for ``recordValuation``; deterministic for its inputs.

    ``validation`` None scores data-free (cosine) only. The explanation check runs on
    ``probe`` (the published probe batch the terms commit); without one, on
    :func:`explanation_probe` of the split (private: nobody without it can check the verdict).
    When the data-free fallback decides, every site's detail says so and ``report.fallback`` is
    set. When every candidate ends at 0 (all rejected, or nothing positive), the sites still hold
    every candidate with its reason — useful for the log — but must not be recorded on chain:
    the contract refuses a valuation of zero total weight; check
    :func:`~fedtrail.valuation.combine.any_positive` first.

    ``history`` None keeps the per-round scoring (best site 1e6, others in proportion); with one,
    the scores come from the accumulated values (see the module docstring).

    ``method`` is one of :data:`METHODS`, or of :data:`LARGE_GAMES` to play that game at every
    size (a peer round's validator game, :func:`~fedtrail.valuation.peer_vector`; its warm-up
    harm check is then first order too, see :func:`_harmful`).

    ``large_game`` (one of :data:`LARGE_GAMES`, or None) is the game played instead of
    ``"mc_shapley"`` when more than :data:`~fedtrail.valuation.shapley.LARGE_GAME_SITES` updates
    pass the screening; smaller rounds are valued the same either way.

    ``warm_up_game`` False (a peer validator, :func:`~fedtrail.valuation.peer_vector`): in the
    warm-up round of a history no game is played. Its values are not accumulated and its
    demote-only scores come from the accumulated values alone, so the scores, reasons and the
    next history are those the game would have given; each passer's value is instead
    :data:`WARM_UP_ALONE`'s, its update alone's gain over the global model as the harm check
    measured it (first order with a linearised game), and ``v_full`` is None. Under
    ``warm_up_floor`` below 1, where the warm-up accumulates, the scores and the next history
    come from those values' shares instead (floored). The aggregator keeps True: its log
    records the game's values and the audit replays them.

    ``project_shift`` (the round terms' ``valuation.project_shift``; False, as in every round
    whose terms lack it): the validation game, and the warm-up's harm check, value each update
    with its first-order uniform logit shift removed
    (:meth:`~fedtrail.valuation.utility.CoalitionUtility.shift_basis`): an opt-in for rounds
    of DP-SGD updates, whose large label-prior shift otherwise ranks sites by how skewed their
    labels are rather than by label quality (README, *Valuation under DP*). The screens, the
    weights and the aggregate still use the updates as submitted.

    ``public_screen`` (a peer validator under the round terms' ``valuation.public_screen``):
    with a history, the free-rider screen is skipped (no FREE_RIDER verdict; the updates it
    would mark are valued as the others), because the aggregator runs it once for the round
    (:func:`public_screen`) and drops what it marks from the median scores on chain, where
    ``audit verify`` recomputes it. Without a history it changes nothing.
    """
    check_game(method=method, metric=metric, large_game=large_game)
    comb = Combiner() if combiner is None else combiner
    ctx = ValuationContext(
        global_state=global_state,
        spec=spec,
        candidates=list(candidates),
        validation=validation,
        metric=cast(Metric, metric),
        seed=seed,
    )
    if explanation_check:
        if probe is None:
            if validation is None:
                raise ConfigError("the explanation check needs a probe set or a validation split")
            probe = explanation_probe(validation)
        ctx = replace(ctx, candidates=ExplanationScorer(probe).flag(ctx))
    if history is not None:
        if validation is None:
            raise ConfigError("valuation with a history needs a validation split")
        return _settle(
            ctx,
            method,
            comb,
            history,
            large_game,
            warm_up_game=warm_up_game,
            project_shift=project_shift,
            public_screen=public_screen,
        )
    report = _value(ctx, method, comb, large_game, project_shift=project_shift)
    if validation is None or any_positive(report.sites):
        return report
    fallback = _value(replace(ctx, validation=None), method, comb, large_game)
    if not any_positive(fallback.sites):
        return report
    log.warning("no update improved the validation %s; data-free fallback", metric)
    note = f"no update improved the validation {metric}, data-free fallback; "
    return replace(
        report,
        sites=[replace(v, detail=note + v.detail) for v in fallback.sites],
        method=fallback.method,
        fallback=True,
    )


def _value(
    ctx: ValuationContext,
    method: str,
    comb: Combiner,
    large_game: str | None,
    *,
    project_shift: bool = False,
) -> RoundValuation:
    """Steps 2-5 for one context (with or without a validation split)."""
    cands = _broken(ctx, _oversized(ctx, _prechecked(ctx, comb)))
    checked_ctx = replace(ctx, candidates=cands)
    ok = usable(checked_ctx)
    robust = robust_statistics(
        {c.site: c.delta for c in ok if c.delta is not None},
        norm_scale_floor=comb.norm_scale_floor,
        statistics=ctx.spec.statistic_names(),
    )
    screened = comb.screen(cands, robust)
    passers = [c for c in ok if screened[c.site][0] is Reason.OK]
    if ctx.validation is None:
        sites = comb.combine(cands, robust, None)
        return RoundValuation(sites=sites, method="cosine" if passers else None, combiner=comb)
    if not passers:
        sites = comb.combine(cands, robust, {})
        return RoundValuation(sites=sites, method=None, combiner=comb)
    utility = CoalitionUtility(checked_ctx, passers, project_shift=project_shift)
    game = _play(method, large_game, utility, ctx.seed)
    return RoundValuation(
        sites=comb.combine(cands, robust, game.values, method=game.method),
        method=game.method,
        evaluations=game.evaluations,
        permutations=game.permutations,
        v_empty=game.v_empty,
        v_full=game.v_full,
        combiner=comb,
    )


def _standing_shares(
    values: Mapping[str, float],
    cands: Sequence[Candidate],
    robust: Mapping[str, RobustStats],
    comb: Combiner,
) -> dict[str, float] | None:
    """This round's shares as the standing accumulates them: :func:`normalised_values`, then,
    with at least ``min_robust_sites`` usable updates, :func:`credited` (no positive share for
    an update pointing against the consensus)."""
    normalised = normalised_values(values)
    if normalised is not None and sum(1 for c in cands if c.usable) >= comb.min_robust_sites:
        # the data-free statistics apply (as in Combiner.screen): no credit against them
        normalised = credited(
            normalised,
            {s: robust[s].cosine for s in normalised if s in robust},
            credit_cosine=comb.credit_cosine,
        )
    return normalised


def _free_riders(
    ctx: ValuationContext,
    cands: Sequence[Candidate],
    comb: Combiner,
    history: History,
    model_norm: float,
    norms: dict[str, float] | None = None,
    squares: dict[str, npt.NDArray[np.float64]] | None = None,
) -> dict[str, str]:
    """The free-rider screen of the prechecked ``cands`` against ``history``'s references (the
    round terms' thresholds of ``comb``): site -> why, for the flagged ones."""
    stats = ctx.spec.statistic_names()
    return free_riders(
        {
            c.site: without_statistics(c.delta, stats)
            for c in cands
            if c.usable and c.delta is not None
        },
        {label: without_statistics(t, stats) for label, t in history.references.items()},
        min_norm_ratio=comb.free_rider_norm,
        stale_cosine=comb.stale_cosine,
        stale_distance=comb.stale_distance,
        model_norm=model_norm,
        min_model_ratio=MIN_UPDATE_TO_MODEL_NORM,
        norms_out=norms,
        reference_squares=history.reference_squares,
        squares_out=squares,
        samples={c.site: c.num_samples for c in cands},
        size_power=comb.tiny_size_power,
        size_reference=comb.tiny_size_reference,
        size_own=bool(comb.tiny_size_own),
        white_z=comb.white_noise_z,
        shaped_z=comb.shaped_noise_z,
        block_z=comb.block_noise_z,
        span_residual=comb.span_residual,
        declared_noise={c.site for c in cands if c.noise_declared},
        dp_copy_z=comb.dp_copy_z,
        stale_support_cosine=comb.stale_support_cosine,
        stale_support_overlap=comb.stale_support_overlap,
    )


def public_screen(
    *,
    global_state: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    candidates: Sequence[Candidate],
    history: History,
    combiner: Combiner | None = None,
) -> dict[str, str]:
    """A peer round's public screen (round terms ``valuation.public_screen``): the free-rider
    screen of :func:`value_round` with a history, run once per round on public data only, by the
    aggregator (which posts its verdicts, ``dropScreened``) and by ``audit verify`` (which
    recomputes them). ``candidates``: the round's revealed updates in address order, as a
    validator receives them; ``history``: the public references (the updates and global deltas
    of the latest ``stale_rounds`` finalized rounds, :func:`~fedtrail.valuation.chained.
    recent_references`; its accumulated values are not read). Returns site -> why for every
    update the screen marks FREE_RIDER, in address order: the verdicts a validator's
    :func:`value_round` gives on the same candidates and references, which skips the screen
    itself under ``public_screen=True``. Reads no validation data."""
    comb = Combiner() if combiner is None else combiner
    ctx = ValuationContext(global_state=global_state, spec=spec, candidates=list(candidates))
    cands = _prechecked(ctx, comb)
    model_norm = _norm(without_statistics(global_state, spec.statistic_names()))
    return _free_riders(ctx, cands, comb, history, model_norm)


def _settle(
    ctx: ValuationContext,
    method: str,
    comb: Combiner,
    history: History,
    large_game: str | None,
    *,
    warm_up_game: bool = True,
    project_shift: bool = False,
    public_screen: bool = False,
) -> RoundValuation:
    """The round with a history: free-riders out (unless ``public_screen``), the game,
    accumulated demote-only scores (``warm_up_game`` False: no game in the warm-up, see
    :func:`value_round`)."""
    cands = _prechecked(ctx, comb)
    stats = ctx.spec.statistic_names()
    model_norm = _norm(without_statistics(ctx.global_state, stats))
    norms: dict[str, float] = {}  # the usable updates' norms, for the robust statistics
    squares: dict[str, npt.NDArray[np.float64]] = {}  # their partial sums, for the next round
    riders: dict[str, str] = {}
    if not public_screen:
        riders = _free_riders(ctx, cands, comb, history, model_norm, norms, squares)
    cands = _broken(
        ctx,
        _oversized(
            ctx,
            [
                replace(c, status=Reason.FREE_RIDER, detail=riders[c.site])
                if c.site in riders
                else c
                for c in cands
            ],
            scale=model_norm,
            known_norms=norms,
        ),
    )
    harm_utility = None  # the harm check's, which knows the global model's utility
    alone: dict[str, tuple[float, int]] = {}  # the harm check's: each update alone, evaluations
    if history.warm_up:
        cands, harm_utility = _harmful(
            ctx,
            cands,
            first_order=method == "linear_shapley",  # the linearised game's own check
            exact_below=comb.min_robust_sites,
            alone_out=alone,
            project_shift=project_shift,
        )
    checked_ctx = replace(ctx, candidates=cands)
    ok = usable(checked_ctx)
    robust = robust_statistics(
        {c.site: c.delta for c in ok if c.delta is not None},
        norm_scale_floor=comb.norm_scale_floor,
        statistics=stats,
        site_norms=norms,
    )
    screened = comb.screen(cands, robust)
    passers = [c for c in ok if screened[c.site][0] is Reason.OK]
    previous = dict(history.accumulated)
    if not passers:
        sites = comb.settle(cands, robust, {}, previous, method=None, screened=screened)
        return RoundValuation(
            sites=sites,
            method=None,
            combiner=comb,
            accumulated=previous,
            square_partials=squares,
        )
    base = None if harm_utility is None else harm_utility.global_value
    if not warm_up_game and base is not None and all(c.site in alone for c in passers):
        # the warm-up's scores do not depend on its values (nothing accumulates): no game
        values = {c.site: alone[c.site][0] - base for c in passers}
        carried = None  # as the game's path accumulates in the warm-up
        if comb.warm_up_floor < 1.0:
            carried = _standing_shares(values, cands, robust, comb)
        scoped, kept = _scoped(carried, passers, comb)
        return RoundValuation(
            sites=comb.settle(
                cands,
                robust,
                values,
                accumulate(previous, carried or {}),
                method=WARM_UP_ALONE,
                warm_up=True,
                screened=screened,
                scoped=scoped,
            ),
            method=WARM_UP_ALONE,
            evaluations=max(n for _, n in alone.values()),
            v_empty=base,
            v_full=None,
            combiner=comb,
            accumulated=_recorded(previous, carried, kept),
            normalised=carried,
            square_partials=squares,
        )
    if harm_utility is not None and harm_utility.players == tuple(c.site for c in passers):
        utility = harm_utility  # the same players: the same coalition models
    else:
        utility = CoalitionUtility(
            checked_ctx,
            passers,
            global_value=None if harm_utility is None else harm_utility.global_value,
            project_shift=project_shift,
        )
        if harm_utility is not None:  # each passer alone, as the harm check evaluated it
            known = harm_utility.alone()
            utility = utility.knowing_alone(
                {c.site: known[c.site] for c in passers if c.site in known}
            )
    game = _play(method, large_game, utility, ctx.seed)
    normalised = None
    if not history.warm_up or comb.warm_up_floor < 1.0:
        # warm_up_floor below 1: the warm-up's shares count in the standing too
        normalised = _standing_shares(game.values, cands, robust, comb)
    accumulated = accumulate(previous, normalised or {})
    scored = accumulated  # what the scores read: in the warm-up every share (floored)
    scoped, kept = _scoped(normalised, passers, comb) if history.warm_up else (None, None)
    if not history.warm_up:  # the records kept within record_floor of their references
        accumulated = comb.floor_records(cands, robust, accumulated, passed=passed_sites(screened))
        scored = accumulated
    else:
        accumulated = _recorded(previous, normalised, kept)
    return RoundValuation(
        sites=comb.settle(
            cands,
            robust,
            game.values,
            scored,
            method=game.method,
            warm_up=history.warm_up,
            screened=screened,
            scoped=scoped,
        ),
        method=game.method,
        evaluations=game.evaluations,
        permutations=game.permutations,
        v_empty=game.v_empty,
        v_full=game.v_full,
        combiner=comb,
        accumulated=accumulated,
        normalised=normalised,
        square_partials=squares,
    )


def _scoped(
    shares: Mapping[str, float] | None, passers: Sequence[Candidate], comb: Combiner
) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """The warm-up passers (scored from their shares, recorded) under ``warm_up_scope``: 1
    scores and records only the outweighing ones
    (:func:`~fedtrail.valuation.standing.outweighing`; none without shares); 2 scores every
    passer (None) and records only the outweighing ones; (None, None), every passer both (the
    rule before it), under ``warm_up_scope`` 0 or with ``warm_up_floor`` off."""
    if comb.warm_up_floor >= 1.0 or not comb.warm_up_scope:
        return None, None
    kept = outweighing(shares, {c.site: c.num_samples for c in passers}) if shares else frozenset()
    return (None if comb.warm_up_scope == 2 else kept), kept


def _recorded(
    previous: Mapping[str, float],
    shares: Mapping[str, float] | None,
    scoped: frozenset[str] | None,
) -> dict[str, float]:
    """The warm-up's record: ``previous`` plus its shares, only the ``scoped`` ones' when
    given (``warm_up_scope`` 1 and 2)."""
    kept = dict(shares or {})
    if scoped is not None:
        kept = {s: v for s, v in kept.items() if s in scoped}
    return accumulate(previous, kept)


MAX_UPDATE_TO_MODEL_NORM: Final = 100.0
"""An update whose L2 norm exceeds this many times the global model's own norm is OUTLIER_NORM
whatever the other updates look like: honest local training moves the bundled SmallCNN by about
2% of its norm (measured: 0.017-0.021 after two epochs), so only a hostile update comes near, and
a round of two updates has no median to tell which one is odd. Both norms leave the running
statistics out: `fedtrail demo --arch resnet10 --sites 4 --rounds 1` measured an honest
hospital's whole update at 149 times the initial model's norm, nearly all of it BatchNorm
running statistics."""


MIN_UPDATE_TO_MODEL_NORM: Final = 1e-3
"""With a history, a usable update whose L2 norm is below this fraction of the global model's is
FREE_RIDER whatever the other updates look like (:func:`~fedtrail.valuation.freeride.free_riders`):
with two updates the lower median cannot tell a tiny one. Measured with the bundled data
(SmallCNN, 1 local epoch, lr 0.02, sites of 50+ images, Dirichlet alpha 1 and 100, 2 and 5 sites,
8 rounds, 2 seeds): honest updates are 1.07% to 35% of the global model's norm, so 0.1% leaves a
margin of 10x below the smallest. ``scripts/bench/honest_screens.py`` (IID shards, rounds 1-5)
measured 150-image sites down to 0.26% and smaller sites far lower (20 images: 0.023%), so the
floor is lowered for a site claiming fewer samples than the round's median
(:attr:`~fedtrail.valuation.combine.Combiner.tiny_size_power`), and for every site of a round
whose median claim is below
:attr:`~fedtrail.valuation.combine.Combiner.tiny_size_reference` (under
:attr:`~fedtrail.valuation.combine.Combiner.tiny_size_own`, the default, instead by each site's
own claim against that reference alone, in every round)."""

WARM_UP_MAX_HARM: Final = 0.1
"""In the warm-up round (values are not accumulated, so the standing cannot demote anyone yet), a
passer whose model alone (the global model plus its update) has a validation utility below the
global model's by more than this fraction of the global model's is LOW_GAIN (:func:`_harmful`).
Measured with the bundled data in round 1 (28 honest updates, Dirichlet alpha 1 and 100, 2 and 5
sites, 2 seeds): honest updates at worst 2.7% below the global model's balanced loss utility
(the initial model is near chance, so an honest update rarely makes it worse); a x10 or
sign-flipped x10 update, when it hurts, 11-27% below. Not applied after the warm-up: there an
honest site's model alone was measured up to 36% worse than a trained global model under label
skew (the standing judges those rounds)."""


def _harmful(
    ctx: ValuationContext,
    cands: list[Candidate],
    *,
    first_order: bool = False,
    exact_below: int = 0,
    alone_out: dict[str, tuple[float, int]] | None = None,
    project_shift: bool = False,
) -> tuple[list[Candidate], CoalitionUtility | None]:
    """LOW_GAIN for a usable candidate whose model alone is worse than the global model by more
    than :data:`WARM_UP_MAX_HARM` of the global model's validation utility (the metric the game
    uses). Needs no majority, so it also holds in a warm-up round of two updates, where nothing
    else can tell which one is poisoned.

    Each model alone is one coalition evaluation per update. With ``first_order`` (a round
    whose game is linearised at every size: a validator's ``"linear_shapley"``) and at least
    ``exact_below`` usable updates (the combiner's ``min_robust_sites``: enough for the robust
    screens to judge norms and directions), each is instead the global model's utility plus the
    update's slope there (:meth:`~fedtrail.valuation.utility.CoalitionUtility.linearised`): one
    gradient pass for every update. The first-order value is optimistic where the utility
    curves down (an oversized update looks better than it is; the norm screen judges those),
    and catches an update that points uphill (a sign flip). When it flags enough updates to
    leave fewer than ``exact_below`` (the robust screens then judge none of the rest), the ones
    left are checked exactly too.

    Returns the candidates and the utility of the check's players that knows the global
    model's value (None when no update needed one): the game's utility when every one of them
    passes, else its empty coalition, the same model on the same split. ``project_shift``:
    each update alone is judged with its uniform logit shift removed, as the game values it."""
    ok = [c for c in cands if c.usable and c.delta is not None]
    if ctx.validation is None or not ok:
        return cands, None
    utility = CoalitionUtility(replace(ctx, candidates=cands), ok, project_shift=project_shift)
    linear = first_order and len(ok) >= exact_below
    if linear:
        base, slopes = utility.linearised(frozenset())
    else:
        base, slopes = utility(frozenset()), {}
    floor = base - WARM_UP_MAX_HARM * abs(base)
    bad: dict[str, str] = {}
    evaluations = 2 if linear else 1  # the global model (and its gradient pass)

    def check(c: Candidate, alone: float, order: str) -> None:
        if alone_out is not None:
            alone_out[c.site] = (alone, evaluations)
        if alone < floor:
            bad[c.site] = (
                f"warm-up round: the model with this update alone has validation {ctx.metric} "
                f"utility {alone:.4g}{order}, below the global model's {base:.4g} by more than "
                f"{WARM_UP_MAX_HARM:.0%} of it"
            )

    for c in ok:
        if linear:
            check(c, base + slopes[c.site], " to first order")
        else:
            evaluations += 1
            check(c, utility(frozenset({c.site})), "")
    if linear and len(ok) - len(bad) < exact_below:
        # the robust screens count the updates left, and now skip them: the first-order
        # check passes an oversized update, so the ones left are checked exactly
        for c in [c for c in ok if c.site not in bad]:
            evaluations += 1
            check(c, utility(frozenset({c.site})), "")
    return [
        replace(c, status=Reason.LOW_GAIN, detail=bad[c.site]) if c.site in bad else c
        for c in cands
    ], utility.knowing_global(base)


def model_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of ``tensors`` as the free-rider and size checks take it (the auditor
    recomputes the FREE_RIDER verdicts with it)."""
    return _norm(tensors)


def _norm(tensors: Mapping[str, torch.Tensor]) -> float:
    # pow_ in place: the same kernel as pow, one fresh tensor (the float64 copy) instead of two
    return math.sqrt(
        math.fsum(float(t.to(torch.float64, copy=True).pow_(2).sum()) for t in tensors.values())
    )


KNOWN_NORM_MARGIN: Final = 1e-6
"""Relative margin by which :func:`_oversized` trusts another exact-to-rounding computation of
an update's norm to clear :data:`MAX_UPDATE_TO_MODEL_NORM`: the free-rider screen's
:attr:`~fedtrail.valuation.rows.Rows.norms` and :func:`_norm` sum the same exactly squared
float32 values in float64 in two orders, so they differ by at most ``width * 2**-53``
relative (about 1e-11 for SmallCNN), far inside it, while no square underflows."""


def _oversized(
    ctx: ValuationContext,
    cands: list[Candidate],
    *,
    scale: float | None = None,
    known_norms: Mapping[str, float] | None = None,
) -> list[Candidate]:
    """OUTLIER_NORM for a usable update larger than :data:`MAX_UPDATE_TO_MODEL_NORM` times the
    global model (data-free; a zero global model has no scale and bounds nothing), both on
    their trainable parameters: running statistics move with the data, not with learning
    (:mod:`~fedtrail.valuation.robust`). ``scale``: that norm of the global model when the
    caller has it (:func:`_norm` of its trainable parameters). ``known_norms``: site -> the
    norm of the same tensors as the free-rider screen computed it (``free_riders``'
    ``norms_out``); an update whose known norm is below the limit by more than
    :data:`KNOWN_NORM_MARGIN` is not oversized, and :func:`_norm` is computed only for the
    others (its value decides and is quoted, as before: the same verdicts and details)."""
    stats = ctx.spec.statistic_names()
    if scale is None:
        scale = _norm(without_statistics(ctx.global_state, stats))
    if scale == 0.0:
        return cands
    # a scale below 1e-100 could leave the known norms' squares in float64's underflow range,
    # where the margin does not hold: every ratio is then computed exactly
    clear = MAX_UPDATE_TO_MODEL_NORM * scale * (1.0 - KNOWN_NORM_MARGIN) if scale > 1e-100 else 0.0
    what = "norm of its trainable parameters" if stats else "norm"
    out = []
    for c in cands:
        known = None if known_norms is None else known_norms.get(c.site)
        if known is not None and 0.0 <= known < clear:
            out.append(c)  # certainly within the limit: the exact ratio is below it too
            continue
        if c.usable and c.delta is not None:
            ratio = _norm(without_statistics(c.delta, stats)) / scale
            if ratio > MAX_UPDATE_TO_MODEL_NORM:
                c = replace(
                    c,
                    status=Reason.OUTLIER_NORM,
                    detail=f"{what} is {ratio:.3g} times the global model's (above "
                    f"{MAX_UPDATE_TO_MODEL_NORM:g})",
                )
        out.append(c)
    return out


def _broken(ctx: ValuationContext, cands: list[Candidate]) -> list[Candidate]:
    """OUTLIER_NORM for a usable candidate whose model alone (the global model plus its update)
    gives NaN or infinite outputs on the validation split: finite tensors can still overflow a
    forward pass, and such a model has no defined utility. Checked before the robust
    statistics, which it would dominate (with two updates, no median can tell it apart)."""
    if ctx.validation is None:
        return cands
    ok = [c for c in cands if c.usable and c.delta is not None]
    if not ok:
        return cands
    utility: CoalitionUtility | None = None  # built only when a forward pass is needed
    # the architecture and input normalisation only: the weights are never read
    model = scratch_model(ctx.spec)
    assert isinstance(model, Classifier)
    x_bound = _input_bound(model, ctx.validation)
    bad: dict[str, str] = {}
    global_rows: dict[str, npt.NDArray[np.float64]] = {}  # the global model's, for every update
    for c in ok:
        if c.delta is not None and _certainly_finite(
            model, ctx.global_state, c.delta, x_bound, global_rows=global_rows
        ):
            continue  # the forward pass below could only find finite outputs
        if utility is None:
            utility = CoalitionUtility(replace(ctx, candidates=cands), ok)
        rows = ~np.isfinite(utility.outputs(frozenset({c.site}))).all(axis=1)
        if rows.any():
            bad[c.site] = (
                f"the model with this update alone gives NaN or infinite outputs on "
                f"{int(rows.sum())} of {rows.size} validation images"
            )
    return [
        replace(c, status=Reason.OUTLIER_NORM, detail=bad[c.site]) if c.site in bad else c
        for c in cands
    ]


FINITE_BOUND: Final = 1e30
"""Bound on every activation below which :func:`_certainly_finite` certifies a model: far below
float32's largest value (3.4e38), so rounding in the float32 sums cannot reach it."""


def _input_bound(model: Classifier, validation: ImageDataset) -> float:
    """The largest absolute input value the network sees on ``validation`` (after its input
    normalisation); infinite when it cannot be bounded (a non-finite image)."""
    with torch.inference_mode():
        x = model.normalise(torch.tensor(validation.images))
        bound = float(x.abs().max()) if x.numel() else 0.0
    return bound if math.isfinite(bound) else math.inf


ROW_SUM_MARGIN: Final = 1.0 + 2.0**-8
"""Factor by which :func:`_certainly_finite` raises its float32 row sums of ``|delta|``
(and the float64 ones of ``|global|``) to make them upper bounds: a float32 sum of n
non-negative values is below the exact one by at most about ``n * 2**-24`` relative (8e-5 for
SmallCNN's widest rows of 1568 weights), far inside 2**-8."""


def _certainly_finite(
    model: Classifier,
    global_state: Mapping[str, torch.Tensor],
    delta: Mapping[str, torch.Tensor],
    x_bound: float,
    *,
    global_rows: dict[str, npt.NDArray[np.float64]] | None = None,
) -> bool:
    """Whether :func:`_activation_bound` is below :data:`FINITE_BOUND` (see there)."""
    bound = _activation_bound(model, global_state, delta, x_bound, global_rows=global_rows)
    return bound < FINITE_BOUND


def _activation_bound(
    model: Classifier,
    global_state: Mapping[str, torch.Tensor],
    delta: Mapping[str, torch.Tensor],
    x_bound: float,
    *,
    global_rows: dict[str, npt.NDArray[np.float64]] | None = None,
) -> float:
    """The bound on every activation :func:`_certainly_finite` compares. It certifies when
    ``model``'s architecture with the weights ``global_state + delta`` provably gives
    finite outputs on inputs bounded by ``x_bound`` (infinite where not bounded, e.g. an
    architecture without :meth:`~fedtrail.ml.models.Classifier.activation_bound`: the forward
    pass runs).

    The weights are bounded by ``|global| + |delta|`` (the coalition model rounds their sum to
    float32 once: a relative change of 6e-8, far inside the margin), so each output unit's sum
    of absolute weights by the sum over ``|global|``'s row plus that over ``|delta|``'s (the
    triangle inequality): the latter is one float32 reduction of the update's own tensor, raised
    by :data:`ROW_SUM_MARGIN` (before, a float64 copy of it with ``|global|`` added, then
    reduced: 2.6 of a 10-site validator's ~30 ms a round). A float32 sum that overflows is
    infinite: not certified. The architecture bounds its activations from the row bounds
    (SmallCNN: layer by layer). When every bound stays below :data:`FINITE_BOUND`, no float32
    sum of the forward pass can overflow, so its outputs are finite: the same verdict
    :func:`_broken`'s forward pass would reach, without running it (one forward pass per update
    was most of a 100-site round's checks). An update the bound does not certify goes through
    that forward pass, so a looser bound changes no verdict and no detail, only the time.

    ``global_rows`` (name -> the global model's row sums), when given, keeps the global model's
    part for the next update of the round: the same values, computed once."""
    if not math.isfinite(x_bound):
        return math.inf

    def row_bound(name: str) -> npt.NDArray[np.float64] | None:
        if name not in global_state or name not in delta:
            return None
        g = None if global_rows is None else global_rows.get(name)
        if g is None:
            whole = _array(global_state[name]).astype(np.float64)
            g = np.abs(whole).reshape(whole.shape[0] if whole.ndim else 1, -1).sum(axis=1)
            g *= ROW_SUM_MARGIN
            if global_rows is not None:
                global_rows[name] = g
        d = _array(delta[name])
        if d.shape != tuple(global_state[name].shape):
            return None
        wide = np.float64 if d.dtype == np.float64 else np.float32  # float16 too
        with np.errstate(over="ignore"):  # an overflowing sum is infinite: not certified
            rows = np.abs(d).reshape(d.shape[0] if d.ndim else 1, -1).sum(axis=1, dtype=wide)
        out: npt.NDArray[np.float64] = g + rows.astype(np.float64) * ROW_SUM_MARGIN
        return out

    return model.activation_bound(row_bound, x_bound)


def _array(t: torch.Tensor) -> npt.NDArray[np.floating]:
    """``t``'s values as a numpy array (its own memory when numpy can read it)."""
    if t.is_cpu and t.dtype in _NUMPY_DTYPES and not t.requires_grad:
        try:
            return t.numpy()
        except (RuntimeError, TypeError):  # a lazily negated view and the like
            pass
    return t.detach().to("cpu", torch.float64).numpy()


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
        if not _finite(t):
            return f"tensor {name!r} holds NaN or infinite values"
    return ""


_NUMPY_DTYPES: Final = (torch.float16, torch.float32, torch.float64)


def _finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: numpy's check on the tensor's own memory when it
    can read it (measured 20x faster than ``torch.isfinite`` on a SmallCNN update), else
    torch's."""
    if t.is_cpu and t.dtype in _NUMPY_DTYPES and not t.requires_grad:
        try:
            return bool(np.isfinite(t.numpy()).all())
        except (RuntimeError, TypeError):  # a lazily negated view and the like
            pass
    return bool(torch.isfinite(t).all())


def _float32(
    delta: Mapping[str, torch.Tensor], names: Sequence[str]
) -> list[npt.NDArray[np.float32]]:
    """The values :func:`_fingerprint` hashes: each tensor as contiguous float32 on the CPU."""
    return [delta[name].detach().to("cpu", torch.float32).contiguous().numpy() for name in names]


def _fingerprint(delta: Mapping[str, torch.Tensor], names: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name, values in zip(names, _float32(delta, names), strict=True):
        h.update(name.encode("utf-8") + b"\x00")
        h.update(values.tobytes())
    return h.hexdigest()


def _checksum(values: Sequence[npt.NDArray[np.float32]]) -> tuple[int, ...]:
    """A cheap function of the bytes :func:`_fingerprint` hashes (per tensor, the sum of its
    32-bit words): equal bytes have equal checksums, so only updates with the checksum of an
    earlier one need a fingerprint (a sum runs at memory speed, sha256 at 1.3 GB/s)."""
    return tuple(int(np.add.reduce(v.reshape(-1).view(np.uint32), dtype=np.uint64)) for v in values)


def _prechecked(ctx: ValuationContext, comb: Combiner) -> list[Candidate]:
    """The candidates with the round's own checks (step 2) applied to their status: layout,
    sample count, exact duplicates, then implausible sample counts (``comb.max_sample_ratio``
    times the median of the usable updates' counts, :func:`_implausible_samples`)."""
    names = list(ctx.global_state)
    seen: dict[str, str] = {}  # fingerprint -> the first site that sent it
    # checksum -> the updates kept with it whose fingerprints are not computed yet
    unhashed: dict[tuple[int, ...], list[tuple[Mapping[str, torch.Tensor], str]]] = {}
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
                key = _checksum(_float32(delta, names))
                if key not in unhashed:  # no earlier update holds these bytes
                    unhashed[key] = [(delta, c.site)]
                    out.append(c)
                    continue
                for earlier, site in unhashed[key]:
                    seen.setdefault(_fingerprint(earlier, names), site)
                unhashed[key] = []
                fp = _fingerprint(delta, names)
                if fp in seen:
                    c = replace(c, status=Reason.DUPLICATE, detail=f"same update as {seen[fp]}'s")
                else:
                    seen[fp] = c.site
        out.append(c)
    return _implausible_samples(out, comb.max_sample_ratio, with_self=bool(comb.sample_median_self))


def _implausible_samples(
    cands: list[Candidate], ratio: float, *, with_self: bool
) -> list[Candidate]:
    """IMPLAUSIBLE_SAMPLES for a usable candidate claiming more than ``ratio`` times the median
    count of the usable candidates (:func:`~fedtrail.valuation.combine.sample_reference`: its
    own count included when ``with_self``; at least two others; every candidate is judged
    against the same set, so the order of the candidates does not matter)."""
    counts = {c.site: c.num_samples for c in cands if c.usable}
    out = []
    for c in cands:
        others = [n for site, n in counts.items() if site != c.site]
        median = sample_reference(c.num_samples, others, with_self=with_self)
        if c.usable and median is not None and c.num_samples > ratio * median:
            whose = "the usable updates, its own included" if with_self else "the other updates"
            c = replace(
                c,
                status=Reason.IMPLAUSIBLE_SAMPLES,
                detail=f"claims {c.num_samples} samples, {c.num_samples / median:.1f}x the "
                f"median {median:g} of {whose} (more than {ratio:g}x)",
            )
        out.append(c)
    return out
