"""``log.components``: the data-free part of each site's valuation components, recomputed.

The aggregator logs, for every site of a round it scored, the robust statistics of
:mod:`fedtrail.valuation.robust` (``cosine``, ``norm``, ``norm_z``, ``median_norm``) and
whether the data-free thresholds applied (``robust_checked``). None of them needs private data:
they are functions of the round's usable updates, which ``audit verify`` decodes anyway. This
module recomputes them with the product's own :func:`~fedtrail.valuation.robust.robust_statistics`
(under the round's ``norm_scale_floor``, on the trainable parameters only: the model's running
statistics left out) and requires them **bit for bit**: the sums are deterministic float64
(:func:`~fedtrail.ml.aggregation.deterministic_dot`, fixed order, no BLAS), so any machine and
thread count gives the same bits, and the JSON of the log round-trips every float exactly; a
tolerance would only leave room to lie.

Which updates count toward the median is the log's ``components.status`` (the candidate's status
when the screen saw it: ``"OK"`` for the usable ones), held against what the chain and the
decoded blobs fix:

* a site scored OK, LOW_QUALITY or OUTLIER_DIRECTION on chain passed through the screen, so it
  counted; a site whose update the audit found tampered, malformed or a duplicate, or whose
  reason is one only a check before the screen gives (FREE_RIDER, IMPLAUSIBLE_SAMPLES,
  EXPLANATION_SHIFT, CONTRADICTED, ...), did not;
* a site that did not count has its reason as its status (the screen passes a candidate's own
  status through), and no statistics;
* LOW_GAIN before the screen comes only from the warm-up harm check of a round valued with
  standing (:func:`fedtrail.valuation.round._harmful`); elsewhere a LOW_GAIN site counted;
* a site shows no component the valuation does not give (:data:`KNOWN_FIELDS`): an extra figure
  beside the checked ones would read as part of them.

What stays the aggregator's word without the validation split: an OUTLIER_NORM before the
screen for an update within the 100x-the-model bound (its model alone may give non-finite
outputs on the split; the bound itself needs no data and is re-checked by
:func:`check_oversized`, ``reasons.oversized``); in a warm-up round, whether a LOW_GAIN
site failed the harm check; ``components.value`` and ``components.method`` (the validation
game's) and the explanation text. ``audit verify --validation`` re-runs the whole valuation:
``scores.recomputed`` compares the reasons and scores, ``components.recomputed`` each site's
value, method and status.

:func:`check_components` returns the recomputed statistics too: ``standing.scores`` weighs each
score for its update's magnitude with them, never with the log's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from fedtrail.errors import ConfigError
from fedtrail.ledger import Submission
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import RoundLog, ValuationSettings
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import sample_reference
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.robust import RobustStats, robust_statistics, without_statistics
from fedtrail.valuation.round import (
    KNOWN_NORM_MARGIN,
    MAX_UPDATE_TO_MODEL_NORM,
    MIN_UPDATE_TO_MODEL_NORM,
    model_norm,
)

__all__ = [
    "COUNTED",
    "KNOWN_FIELDS",
    "ROBUST_FIELDS",
    "Recomputed",
    "check_components",
    "check_free_riders",
    "check_oversized",
    "check_public_reasons",
    "check_screen",
    "text_gap",
]

Check = tuple[str, bool, str]

ROBUST_FIELDS = ("cosine", "norm", "norm_z", "median_norm")
"""The components :func:`~fedtrail.valuation.robust.robust_statistics` gives."""

KNOWN_FIELDS = frozenset({"status", *ROBUST_FIELDS, "robust_checked", "value", "method"})
"""Every component an aggregator round's log gives a site
(:attr:`~fedtrail.valuation.combine.SiteValuation.components`): any other would be an unchecked
figure beside the checked ones."""

COUNTED = frozenset({Reason.OK, Reason.LOW_QUALITY, Reason.OUTLIER_DIRECTION})
"""On-chain reasons only an update that reached the screen (so counted) can have."""

EITHER = frozenset({Reason.OUTLIER_NORM, Reason.LOW_GAIN})
"""On-chain reasons a check before the screen or the screen (or the game) can give."""

_UNUSABLE_BEFORE_COUNTS = frozenset(
    {
        Reason.TAMPERED,
        Reason.MALFORMED,
        Reason.DUPLICATE,
        Reason.EXPLANATION_SHIFT,
        Reason.CONTRADICTED,
    }
)
"""On-chain reasons that take an update out before sample counts are judged (a false one fails
log.status, the duplicate or the evidence checks)."""


@dataclass(frozen=True)
class Recomputed:
    """The robust statistics of the updates that counted (site -> stats), and whether the
    data-free thresholds applied (at least ``min_robust_sites`` of them)."""

    stats: Mapping[str, RobustStats]
    checked: bool


def _same(logged: object, expected: float | bool | None) -> bool:
    """Equal with the JSON type: a bool only equals a bool, a number only a number (exactly)."""
    if expected is None or isinstance(expected, bool):
        return logged is expected
    return isinstance(logged, int | float) and not isinstance(logged, bool) and logged == expected


def check_components(
    log: RoundLog,
    subs: Sequence[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    spec: ModelSpec,
    settings: ValuationSettings,
) -> tuple[Check, Recomputed | None]:
    """``log.components`` of an aggregator-scored round (see the module docstring), and the
    recomputed statistics (None when they cannot be recomputed: the check then fails).
    ``deltas``: the decoded updates; ``unusable``: the sites the audit found unusable
    (tampered, malformed, duplicate)."""
    name = "log.components"
    try:
        comb = combiner_from(settings)
    except ConfigError as exc:
        return (name, False, f"the round's thresholds are unusable: {exc}"), None
    warm_up = bool(settings.standing) and (log.standing is None or log.standing.valued_rounds == 0)
    problems: list[str] = []
    members: list[str] = []
    for s in subs:
        entry = log.site(s.site)
        who = s.site[:10]
        if entry is None:  # log.agrees fails on it
            problems.append(f"{who} has no log entry")
            continue
        comp = entry.components
        extra = sorted(str(k) for k in comp if k not in KNOWN_FIELDS)
        if extra:
            problems.append(
                f"{who} shows component(s) {', '.join(extra)[:200]} that no valuation gives "
                "and no check recomputes"
            )
        status = comp.get("status")
        counted = status == Reason.OK.name
        try:
            reason = Reason(s.reason)
        except ValueError:
            problems.append(f"{who} has no known reason code ({s.reason})")
            continue
        if counted:
            if s.site in unusable:
                problems.append(
                    f"{who}'s update counted toward the statistics, but it is "
                    f"{unusable[s.site].name.lower()}"
                )
            elif reason not in COUNTED | EITHER:
                problems.append(
                    f"{who}'s update counted toward the statistics, but reason {reason.name} "
                    "is given only before the screen"
                )
            members.append(s.site)
            continue
        if reason in COUNTED:
            problems.append(
                f"{who} is scored {reason.name}, so its update reached the screen, but its "
                f"status is {status!r}"
            )
        elif reason is Reason.LOW_GAIN and not warm_up:
            problems.append(
                f"{who} is LOW_GAIN before the screen, which only a warm-up round's harm "
                "check gives"
            )
        elif status != reason.name:
            problems.append(f"{who}'s status {status!r} is not its reason {reason.name}")
        shown = {k: comp.get(k) for k in (*ROBUST_FIELDS, "robust_checked")}
        if any(shown[k] is not None for k in ROBUST_FIELDS) or shown["robust_checked"] is not False:
            problems.append(f"{who} did not count, yet shows statistics {shown}")
    unreadable = [site[:10] for site in members if site not in deltas]
    if unreadable:
        problems.append(f"cannot recompute: unreadable update(s) of {', '.join(unreadable)}")
        return (name, False, "; ".join(problems)), None
    try:
        stats = robust_statistics(
            {site: deltas[site] for site in members},
            norm_scale_floor=comb.norm_scale_floor,
            statistics=spec.statistic_names(),
        )
    except ConfigError as exc:
        problems.append(f"cannot recompute: {exc}")
        return (name, False, "; ".join(problems)), None
    checked = len(members) >= comb.min_robust_sites
    for site in members:
        entry = log.site(site)
        assert entry is not None
        want = {k: getattr(stats[site], k) for k in ROBUST_FIELDS}
        want_checked = checked
        wrong = [
            f"{k} {entry.components.get(k)!r}, recomputed {v!r}"
            for k, v in (*want.items(), ("robust_checked", want_checked))
            if not _same(entry.components.get(k), v)
        ]
        if wrong:
            problems.append(f"{site[:10]}: " + ", ".join(wrong))
    return (
        name,
        not problems,
        "; ".join(problems)
        or f"cosine, norm, norm_z and median_norm of the {len(members)} update(s) that counted "
        f"recomputed bit for bit (robust thresholds {'applied' if checked else 'not applied'}: "
        f"{len(members)} of at least {comb.min_robust_sites}); every other site's status is its "
        "reason",
    ), Recomputed(stats, checked)


def check_screen(
    subs: Sequence[Submission],
    robust: Recomputed,
    settings: ValuationSettings,
) -> Check:
    """``reasons.screen``: the reasons of an aggregator round that follow from the data-free
    screen (:meth:`~fedtrail.valuation.combine.Combiner.screen`) and from the terms alone, held
    against the statistics ``log.components`` recomputed (``robust``). For an update that
    counted toward the statistics, with the thresholds applied (``robust.checked``):
    ``cosine < min_cosine`` is OUTLIER_DIRECTION, else a ``norm_z`` above ``max_norm_z`` after
    the allowance of the update's claimed count (:func:`~fedtrail.valuation.combine.
    size_adjusted_z`, up to the terms' ``norm_size_cap``; 1 in logs before it), or one above
    ``size_norm_z`` after the uncapped allowance (:meth:`~fedtrail.valuation.combine.Combiner.
    size_screen_z`; 0, off, in terms without it) is OUTLIER_NORM,
    and neither otherwise (the one exception: in a round valued per round, the data-free
    fallback scores an update whose cosine is at most 0 OUTLIER_DIRECTION); without the
    thresholds applied, the screen rejects nothing. LOW_GAIN comes after the screen only in a
    round valued per round (with standing every passer is scored from its accumulated value),
    LOW_QUALITY and FREE_RIDER only with standing, EXPLANATION_SHIFT only under terms with the
    explanation check. Without this an aggregator could pay an update the screen rejects (an
    ally's x30 update, norm z ~100) or zero an honest one with a verdict its own statistics
    contradict, and every public check would pass."""
    name = "reasons.screen"
    try:
        comb = combiner_from(settings)
    except ConfigError as exc:
        return (name, False, f"the round's thresholds are unusable: {exc}")
    standing = bool(settings.standing)
    problems: list[str] = []
    counts = [s.num_samples for s in subs if s.site in robust.stats]
    for s in subs:
        who = s.site[:10]
        try:
            reason = Reason(s.reason)
        except ValueError:
            continue  # log.components names it
        if reason in (Reason.FREE_RIDER, Reason.LOW_QUALITY) and not standing:
            problems.append(
                f"{who} is {reason.name}, which only a round valued with standing gives"
            )
        if reason is Reason.EXPLANATION_SHIFT and settings.explanation_check is False:
            problems.append(f"{who} is EXPLANATION_SHIFT, but the terms run no explanation check")
        stats = robust.stats.get(s.site)
        if stats is None:
            continue  # did not count: log.components and the reasons.* checks judge it
        direction = robust.checked and stats.cosine < comb.min_cosine
        z, allowance, size_z, outlier = comb.norm_outlier(stats, s.num_samples, counts)
        size = robust.checked and not direction and outlier
        if direction and reason is not Reason.OUTLIER_DIRECTION:
            problems.append(
                f"{who}'s cosine {stats.cosine!r} to the median update is below min_cosine "
                f"{comb.min_cosine:g}, yet it is {reason.name}, not OUTLIER_DIRECTION"
            )
        elif size and reason is not Reason.OUTLIER_NORM:
            problems.append(
                (
                    f"{who}'s robust norm z {z!r}"
                    + (f" (its {allowance:.3g}x size allowance applied)" if allowance > 1.0 else "")
                    + f" is above max_norm_z {comb.max_norm_z:g}, "
                    if z > comb.max_norm_z
                    else f"{who}'s robust norm z after its claimed count's allowance {size_z!r} "
                    f"is above size_norm_z {comb.size_norm_z:g}, "
                )
                + f"yet it is {reason.name}, not OUTLIER_NORM"
            )
        elif not direction and not size:
            fallback = not standing and stats.cosine <= 0.0
            applied = "applied" if robust.checked else "not applied"
            if reason is Reason.OUTLIER_NORM or (
                reason is Reason.OUTLIER_DIRECTION and not fallback
            ):
                problems.append(
                    f"{who} passed the screen (cosine {stats.cosine:.4g}, norm z "
                    f"{stats.norm_z:.4g}; thresholds {applied}), "
                    f"yet it is {reason.name}"
                )
            elif reason is Reason.LOW_GAIN and standing:
                problems.append(
                    f"{who} passed the screen, yet it is LOW_GAIN, which a round valued with "
                    "standing never gives a passer"
                )
    return (
        name,
        not problems,
        "; ".join(problems)
        or f"every screen verdict follows from the recomputed statistics (min_cosine "
        f"{comb.min_cosine:g}, max_norm_z {comb.max_norm_z:g}"
        + (f", size_norm_z {comb.size_norm_z:g}" if comb.size_norm_z > 0 else "")
        + f", {'applied' if robust.checked else 'not applied'}) and no reason is one the terms "
        "cannot give",
    )


def check_public_reasons(
    subs: Sequence[Submission],
    unusable: Mapping[str, Reason],
    settings: ValuationSettings,
) -> Check:
    """``reasons.public``: the reasons of an aggregator round that the chain alone decides, as
    the valuation gives them (:func:`fedtrail.valuation.round._implausible_samples`): a usable
    update (read here, and not scored TAMPERED, MALFORMED, DUPLICATE, EXPLANATION_SHIFT or
    CONTRADICTED on chain) is
    IMPLAUSIBLE_SAMPLES exactly when its on-chain sample count is above the terms'
    ``max_sample_ratio`` times the median count of the usable updates (its own included under
    the terms' ``sample_median_self``, the others' only in logs recorded before it; at least two
    others: :func:`~fedtrail.valuation.combine.sample_reference`), and
    no update is LATE (no check gives it: the contract refuses a reveal after the deadline).
    Without it an aggregator could zero an honest site for "implausible" samples, call it late,
    or pay an ally its inflated count, with every public check passing. ``unusable``: the sites
    this audit found tampered, malformed or duplicate."""
    name = "reasons.public"
    try:
        comb = combiner_from(settings)
    except ConfigError as exc:
        return (name, False, f"the round's thresholds are unusable: {exc}")
    ratio, with_self = comb.max_sample_ratio, bool(comb.sample_median_self)
    whose = (
        "the usable updates, each one's own count included"
        if with_self
        else "the other usable updates"
    )
    # unusable before the count is judged, by the chain's word (a false one fails log.status,
    # duplicates or the evidence checks) or by this audit's reading
    usable = {
        s.site: s.num_samples
        for s in subs
        if s.site not in unusable and s.reason not in _UNUSABLE_BEFORE_COUNTS
    }
    problems: list[str] = []
    for s in subs:
        who = s.site[:10]
        if s.reason == Reason.LATE:
            problems.append(f"{who} is LATE, which no check gives (its reveal is on chain)")
            continue
        if s.site not in usable:
            if s.reason == Reason.IMPLAUSIBLE_SAMPLES:
                problems.append(f"{who} is IMPLAUSIBLE_SAMPLES, but its update is not usable")
            continue
        others = [n for site, n in usable.items() if site != s.site]
        median = sample_reference(s.num_samples, others, with_self=with_self)
        implausible = median is not None and s.num_samples > ratio * median
        if implausible != (s.reason == Reason.IMPLAUSIBLE_SAMPLES):
            problems.append(
                f"{who} claims {s.num_samples} samples against the median {median} of "
                f"{whose} (limit {ratio:g}x), yet is {_reason_name(s.reason)}"
            )
    return (
        name,
        not problems,
        "; ".join(problems)
        or f"sample counts against the median of {whose} (limit {ratio:g}x): "
        "every IMPLAUSIBLE_SAMPLES and no other; no LATE",
    )


def _reason_name(code: int) -> str:
    try:
        return Reason(code).name
    except ValueError:
        return str(code)


def check_free_riders(
    subs: Sequence[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    spec: ModelSpec,
    settings: ValuationSettings,
    start: Mapping[str, torch.Tensor],
    references: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    declared_noise: Collection[str] = frozenset(),
    log: RoundLog | None = None,
) -> Check:
    """``reasons.free_rider`` (a round valued with standing): the FREE_RIDER verdicts are the
    valuation's own (:func:`~fedtrail.valuation.freeride.free_riders` over the usable updates
    and the history's references, under the terms' thresholds, as
    :func:`fedtrail.valuation.round._settle` calls it): data-free, so without it an aggregator
    could zero an honest site as a free-rider, or pass an ally's resend, with every public check
    passing. ``start``: the round's start model; ``references``: the history's
    (:func:`~fedtrail.valuation.chained.carried_history`); ``declared_noise``: the sites whose
    updates carry DP parameters (exempt from the white-noise test, as the valuation's).
    ``log``: the round's log; where the terms name an explanation wording
    (``valuation.explanation_wording``, session 57), each FREE_RIDER site's text must be the
    one the valuation renders from the recomputed verdict, ``"free rider: <its detail>"``
    (numbers within one unit of their last printed digit, :func:`text_gap`): the figures it
    states are data-free, so public verify holds them (attack a125 ``detail`` told of a
    paid site; a rider's text could tell of another norm or noise statistic)."""
    name = "reasons.free_rider"
    try:
        comb = combiner_from(settings)
    except ConfigError as exc:
        return (name, False, f"the round's thresholds are unusable: {exc}")
    before = _UNUSABLE_BEFORE_COUNTS | {Reason.IMPLAUSIBLE_SAMPLES}
    stats = spec.statistic_names()
    usable = [
        s.site
        for s in subs
        if s.site not in unusable and s.reason not in before and s.site in deltas
    ]
    try:
        riders = free_riders(
            {site: without_statistics(deltas[site], stats) for site in usable},
            {label: without_statistics(t, stats) for label, t in references.items()},
            min_norm_ratio=comb.free_rider_norm,
            stale_cosine=comb.stale_cosine,
            stale_distance=comb.stale_distance,
            model_norm=model_norm(without_statistics(dict(start), stats)),
            min_model_ratio=MIN_UPDATE_TO_MODEL_NORM,
            samples={s.site: s.num_samples for s in subs},
            size_power=comb.tiny_size_power,
            size_reference=comb.tiny_size_reference,
            size_own=bool(comb.tiny_size_own),
            white_z=comb.white_noise_z,
            shaped_z=comb.shaped_noise_z,
            block_z=comb.block_noise_z,
            span_residual=comb.span_residual,
            declared_noise=declared_noise,
            dp_copy_z=comb.dp_copy_z,
            stale_support_cosine=comb.stale_support_cosine,
            stale_support_overlap=comb.stale_support_overlap,
        )
    except ConfigError as exc:
        return (name, False, f"cannot recompute: {exc}")
    marked = {s.site for s in subs if s.reason == Reason.FREE_RIDER}
    texts = []
    if log is not None and settings.explanation_wording is not None:
        for site in sorted(marked & set(riders)):
            entry = log.site(site)
            if entry is None:
                continue  # log.agrees fails on a missing entry
            rendered = f"{Reason.FREE_RIDER.label}: {riders[site]}"
            gap = text_gap(entry.explanation, rendered)
            if gap is not None:
                texts.append(f"{site[:10]}'s explanation {gap}")
    wrong = texts + sorted(
        [
            f"{site[:10]} is FREE_RIDER, but its update is no free-rider"
            for site in marked - set(riders)
        ]
        + [
            f"{site[:10]} is a free-rider ({riders[site]}), yet not FREE_RIDER"
            for site in set(riders) - marked
        ]
    )
    return (
        name,
        not wrong,
        "; ".join(wrong)
        or f"{len(riders)} free-rider(s) among {len(usable)} usable update(s) against "
        f"{len(references)} reference(s), as the chain marks them"
        + (
            f"; their explanation texts the recomputed ones (wording "
            f"{settings.explanation_wording})"
            if log is not None and settings.explanation_wording is not None and riders
            else ""
        ),
    )


def check_oversized(
    log: RoundLog,
    subs: Sequence[Submission],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    unusable: Mapping[str, Reason],
    spec: ModelSpec,
    start: Mapping[str, torch.Tensor],
    known_norms: Mapping[str, float] | None = None,
) -> Check:
    """``reasons.oversized``: an update over :data:`~fedtrail.valuation.round.
    MAX_UPDATE_TO_MODEL_NORM` times the round's start model (both on their trainable
    parameters, as the valuation's size check takes them) is OUTLIER_NORM on chain and did not
    count toward the statistics. The bound needs no data, so without this an aggregator could
    pass an ally's oversized update (paid in a round too small for the robust screen, or
    counted, moving every other site's norm statistics) with every public check passing. The
    other direction, an OUTLIER_NORM before the screen for an update within the bound, can
    come from its model's non-finite outputs on the validation split: that stays the
    aggregator's word here (``audit verify --validation`` re-runs it). Usable: not found
    unusable by this audit, and not zeroed by a reason given before the size check (those are
    checked by ``log.status``, ``reasons.public`` and ``reasons.free_rider``).
    ``known_norms``: site -> the norm of the same tensors as :class:`~fedtrail.valuation.rows.
    Rows` computed it (the recomputed :attr:`RobustStats.norm`); as the valuation's own size
    check (:data:`~fedtrail.valuation.round.KNOWN_NORM_MARGIN`), an update whose known norm is
    below the bound by more than that margin is within it, and ``model_norm`` is computed only
    for the others: the same verdicts and details."""
    name = "reasons.oversized"
    stats = spec.statistic_names()
    scale = model_norm(without_statistics(dict(start), stats))
    if not math.isfinite(scale):
        return (name, False, f"the start model's norm is {scale}: no size bound can be taken")
    if scale == 0.0:
        return (name, True, "the start model is zero: it bounds no update's size")
    # below 1e-100 the known norms' squares may underflow, where the margin does not hold
    clear = MAX_UPDATE_TO_MODEL_NORM * scale * (1.0 - KNOWN_NORM_MARGIN) if scale > 1e-100 else 0.0
    before = _UNUSABLE_BEFORE_COUNTS | {Reason.IMPLAUSIBLE_SAMPLES, Reason.FREE_RIDER}
    problems: list[str] = []
    over = 0
    checked = 0
    for s in subs:
        if s.site in unusable or s.reason in before:
            continue
        delta = deltas.get(s.site)
        if delta is None:  # unreadable: log.status and the evidence checks judge it
            continue
        checked += 1
        known = None if known_norms is None else known_norms.get(s.site)
        if known is not None and 0.0 <= known < clear:
            continue  # certainly within the bound: its exact ratio is below it too
        ratio = model_norm(without_statistics(dict(delta), stats)) / scale
        if not ratio > MAX_UPDATE_TO_MODEL_NORM:
            continue
        over += 1
        entry = log.site(s.site)
        status = None if entry is None else entry.components.get("status")
        who = s.site[:10]
        if s.reason != Reason.OUTLIER_NORM:
            problems.append(
                f"{who}'s update is {ratio:.3g} times the start model's norm (above "
                f"{MAX_UPDATE_TO_MODEL_NORM:g}), yet is {_reason_name(s.reason)}, not OUTLIER_NORM"
            )
        elif status == Reason.OK.name:
            problems.append(
                f"{who}'s update is {ratio:.3g} times the start model's norm (above "
                f"{MAX_UPDATE_TO_MODEL_NORM:g}), so it is rejected before the screen, yet it "
                "counted toward the statistics"
            )
    return (
        name,
        not problems,
        "; ".join(problems)
        or f"{over} of {checked} usable update(s) above {MAX_UPDATE_TO_MODEL_NORM:g} times the "
        "start model's norm, each OUTLIER_NORM before the screen",
    )


_NUMBER = re.compile(r"(?<!\w)[-+]?\d+(?:\.(\d+))?(?:[eE]([-+]?\d+))?(?![xX][0-9a-fA-F])")
"""A printed figure: not digits inside a word or an address (``0xAb12``'s ``12``, ``0x``'s
``0``), which are compared as words, exactly (review of session 57: an address one digit group
off, or another round, passed as a number one unit apart)."""

_EXACT_BEFORE = ("round ",)
_EXACT_AFTER = (" samples", " claimed samples", "'s update")
"""Integers a text prints from counts, never from a float's rounding: compared exactly."""

_FIGURE = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NEAR_ZERO_CLAUSES = (
    # combine.py: the median reference clause, written only when the reference is not 0
    re.compile(rf" against the median site's ({_FIGURE})"),
    re.compile(rf" \(not against the median site's ({_FIGURE}): cosine [^)]*\)"),
)
_CREDIT_CLAUSE = re.compile(
    r"; this round's positive value not credited: cosine \S+ to the median update is below "
    r"[0-9.eE+-]+"
)
_VALUE = re.compile(rf" value ({_FIGURE}), accumulated ")


def _without_near_zero_clauses(text: str, slack: float) -> str:
    """``text`` without the clauses the valuation writes or not on a figure's side of 0 (the
    median site's reference, this round's positive value), where that figure is within
    ``slack`` of 0: an auditor on another thread count re-derives it ~1e-5 apart, so the
    clause can be in one text and not the other (review of session 57)."""
    for clause in _NEAR_ZERO_CLAUSES:
        text = clause.sub(lambda m: "" if abs(float(m[1])) <= slack else m[0], text)
    value = _VALUE.search(text)
    if value is not None and abs(float(value[1])) <= slack:
        text = _CREDIT_CLAUSE.sub("", text)
    return text


def text_gap(logged: str, rerun: str, slack: float = 0.0) -> str | None:
    """Why ``logged`` is not the re-run's text ``rerun``, or None: equal but for the numbers
    in them, each pair within one unit of the last digit the re-run's prints (``0.4455`` and
    ``0.4456``; ``3e-05`` and ``4e-05``) plus ``slack`` (the figures' own tolerance): last-bit
    differences of the float evaluations across thread counts can move a printed digit, never
    a word. The numbers are compared parsed, not as strings: a figure on a rounding boundary
    prints one unit apart on two machines, or in another number of digits (``0.001`` and
    ``0.0009999`` under ``%.4g``). The unit is the re-run's, never the log's: a log that
    printed ``1`` for ``0.3164`` would otherwise have widened its own tolerance to 1 (session
    57: under the union of both units it passed)."""
    shown = f"{logged[:120]!r}, re-run {rerun[:120]!r}"
    if slack > 0:
        logged, rerun = (_without_near_zero_clauses(t, slack) for t in (logged, rerun))
    words, want = _NUMBER.split(logged), _NUMBER.split(rerun)
    a, b = list(_NUMBER.finditer(logged)), list(_NUMBER.finditer(rerun))
    if len(a) != len(b) or words[::3] != want[::3]:
        return shown
    for x, y in zip(a, b, strict=True):
        if x[0] == y[0]:
            continue
        if rerun[: y.start()].endswith(_EXACT_BEFORE) or rerun[y.end() :].startswith(_EXACT_AFTER):
            return shown
        if not abs(float(x[0]) - float(y[0])) <= _last_unit(y) * (1 + 1e-9) + slack:
            return shown
    return None


def _last_unit(m: re.Match[str]) -> float:
    """One unit of the last digit a number prints (``0.4455``: 1e-4; ``3e-05``: 1e-5)."""
    decimals = len(m[1]) if m[1] else 0
    return 10.0 ** (int(m[2] or 0) - decimals)
