"""Checks of a round's standing block: values accumulated across rounds, chained through logs.

With valuation ``standing`` (the round's terms say so) every OK site's score follows from its
accumulated value, and that value from the previous round's log plus this round's normalised
values. What an auditor checks with public data alone (``standing.chain``,
``standing.accumulated``, ``standing.scores``):

* the block continues the right log: the latest round finalized before this one, by the CID
  and sha256 the chain holds for it, or, when that log has no standing block (valued per round
  or by the peers), the latest earlier one that has
  (:func:`~fedtrail.valuation.chained.standing_source`: a round valued without standing does
  not reset the records); ``before`` is that log's ``after``, ``valued_rounds`` one more than
  its own (0 and nothing before when there is no such round or block); the references are the
  readable updates and global deltas of the latest ``stale_rounds`` finalized rounds (the
  terms' threshold; 1 when they record none: :mod:`fedtrail.valuation.chained`);
* ``after`` is exactly ``before`` plus ``normalised`` (same float arithmetic, so bit-equal),
  each passed site then raised to its reference less ``max(record_floor, demote_scale)`` when
  the terms set ``record_floor`` and the round is not the warm-up
  (:func:`~fedtrail.valuation.standing.floored_records`);
  the normalised values are shares (their absolute values sum to at most 1), only sites
  that passed the screening have one, and none is positive for a site whose update's cosine
  to the median is below the terms' ``credit_cosine``
  (:func:`~fedtrail.valuation.standing.credited`; the cosine recomputed as for the scores);
* each site scored from its standing (reason OK or LOW_QUALITY) has the score
  :func:`~fedtrail.valuation.standing.demoted_score` gives its ``after`` value (less the median
  scored site's when that is negative: :func:`~fedtrail.valuation.standing.demotion_reference`,
  unless the update's cosine to the median, recomputed as above, is below the terms'
  ``relief_cosine``: :func:`~fedtrail.valuation.standing.relieved_reference`)
  under the terms' ``demote_scale``, and LOW_QUALITY exactly when that score is 0; an OK score
  is then weighted for the update's magnitude by the terms' ``max_norm_ratio`` and
  ``small_norm_ratio`` (:func:`~fedtrail.valuation.standing.norm_factor`) and for its length
  along the median update by ``boost_clip`` (:func:`~fedtrail.valuation.standing.boost_factor`,
  with the recomputed cosine), with the site's norm
  and the median norm when the data-free thresholds applied, both recomputed from the decoded
  updates by ``log.components``: :mod:`fedtrail.auditor.components`; the log's own numbers
  only when the updates cannot be read, and then ``log.components`` fails).

The normalised values themselves come from the validation game: with the validation set,
``standing.recomputed`` re-runs it (in ``audit verify --validation``); without it they are
the aggregator's claim, bounded by the checks above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedtrail.auditor.components import Recomputed
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, Submission
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import RoundLog, Standing, ValuationSettings
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.storage.store import ContentStore
from fedtrail.valuation.chained import combiner_from, reference_labels, standing_source
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.standing import (
    accumulate,
    boost_factor,
    credited,
    demoted_score,
    demotion_reference,
    floored_records,
    floored_score,
    norm_factor,
    normalised_values,
    outweighing,
    relieved_reference,
    scaled_score,
)

__all__ = ["Check", "check_standing", "compare_standing"]

Check = tuple[str, bool, str]
"""(check name, passed, detail), as :class:`~fedtrail.auditor.verify.RoundAudit` adds them."""

SCORED_FROM_STANDING = (int(Reason.OK), int(Reason.LOW_QUALITY))


def _expected_previous(
    ledger: Ledger, store: ContentStore, round_id: int, stale_rounds: int
) -> tuple[int | None, str, str, Standing | None, list[str]]:
    source = standing_source(ledger, store, round_id)
    if source is None:
        return None, "", "", None, []
    previous, standing = source
    refs = reference_labels(ledger, store, round_id, stale_rounds)
    return previous.round, previous.cid, previous.sha256, standing, refs


def check_standing(
    ledger: Ledger,
    store: ContentStore,
    log: RoundLog,
    settings: ValuationSettings,
    subs: list[Submission],
    robust: Recomputed | None = None,
) -> list[Check]:
    """The public checks of the module docstring (none for a round valued per round);
    ``robust``: the statistics ``log.components`` recomputed from the updates (None: the
    log's are used, as when the updates cannot be read)."""
    standing = log.standing
    if not settings.standing:
        if standing is None:
            return []
        return [("standing.chain", False, "the terms value per round, the log shows standing")]
    if standing is None:
        return [("standing.chain", False, "the terms value with standing; the log has none")]
    out: list[Check] = []
    try:
        combiner: Combiner | None = combiner_from(settings)
    except FedtrailError:
        combiner = None  # standing.scores says why
    stale_rounds = 1 if combiner is None else combiner.stale_rounds
    try:
        prev, cid, sha, prev_standing, refs = _expected_previous(
            ledger, store, log.round, stale_rounds
        )
    except FedtrailError as exc:
        return [("standing.chain", False, f"cannot read the previous round's log: {exc}")]
    problems = []
    got = standing.previous
    if prev is None:
        if got is not None:
            problems.append(f"names round {got.round}'s log, but no round was finalized before")
    elif got is None or (got.round, got.cid, got.sha256) != (prev, cid, sha):
        problems.append(f"does not continue round {prev}'s log {cid}")
    before = dict(prev_standing.after) if prev_standing else {}
    valued = prev_standing.valued_rounds + 1 if prev_standing else 0
    if dict(standing.before) != before:
        problems.append("'before' differs from the previous log's 'after'")
    if standing.valued_rounds != valued:
        problems.append(f"valued_rounds {standing.valued_rounds}, expected {valued}")
    if list(standing.references) != refs:
        problems.append(
            f"references are not the readable updates and deltas of the latest {stale_rounds} "
            "finalized round(s)"
        )
    out.append(
        (
            "standing.chain",
            not problems,
            "; ".join(problems)
            if problems
            else "continues "
            + (f"round {prev}'s log" if prev is not None else "nothing (first round)")
            + f", {len(before)} accumulated value(s) carried in",
        )
    )

    norm = dict(standing.normalised or {})
    passed_sites = {s.site for s in subs if s.reason in SCORED_FROM_STANDING}
    problems = []
    carries = combiner is not None and combiner.warm_up_floor < 1.0
    if standing.valued_rounds == 0 and standing.normalised is not None and not carries:
        problems.append("the warm-up round accumulates nothing, yet normalised values are shown")
    if not set(norm) <= passed_sites:
        problems.append("normalised values for sites not scored from standing")
    if math.fsum(abs(v) for v in norm.values()) > 1.0 + 1e-9:
        problems.append("normalised values are not shares (sum of |value| > 1)")
    expected_after = accumulate(standing.before, norm)
    scoped = _scoped(standing, combiner, subs)
    if scoped is not None:
        # warm_up_scope 1 and 2: the warm-up records only the outweighing updates' shares
        expected_after = accumulate(standing.before, {s: v for s, v in norm.items() if s in scoped})
    floor = 0.0 if combiner is None else combiner.record_floor
    if combiner is not None and floor > 0 and standing.valued_rounds > 0:
        # record_floor: each passed site's record kept within max(record_floor, demote_scale)
        # of its reference (README *Standing*)
        expected_after = floored_records(
            expected_after,
            {s.site: _cosine(log, s.site, robust) for s in subs if s.site in passed_sites},
            record_floor=floor,
            demote_scale=combiner.demote_scale,
            relief_cosine=combiner.relief_cosine,
        )
    if dict(standing.after) != expected_after:
        problems.append(
            "'after' is not 'before' plus 'normalised'"
            + (f", raised to record_floor {floor:g}" if floor > 0 else "")
        )
    if combiner is not None and (standing.valued_rounds > 0 or carries):
        # the shares are a function of the values the same log shows (README *Standing*):
        # without this a log could show an honest site's positive value beside a share of
        # -0.9 that demotes it, and pass (attack a95 ``shares``)
        shares = _shares(log, robust, combiner.credit_cosine)
        if standing.normalised is not None and shares != norm:
            problems.append(
                "normalised values are not the shares of the log's values: "
                + ", ".join(
                    f"{site[:10]} {norm.get(site)!r} (its share {shares.get(site)!r})"
                    for site in sorted(set(norm) | set(shares))
                    if norm.get(site) != shares.get(site)
                )
            )
        elif standing.normalised is None and shares:
            problems.append("the log's values have shares, yet no normalised values are shown")
    if combiner is not None:
        for site, v in norm.items():
            cosine = _cosine(log, site, robust)
            if v > 0 and cosine is not None and cosine < combiner.credit_cosine:
                problems.append(
                    f"{site[:10]} is credited {v:.4g}, but its update's cosine {cosine:.3f} "
                    f"to the median is below credit_cosine {combiner.credit_cosine:g}"
                )
    out.append(
        (
            "standing.accumulated",
            not problems,
            "; ".join(problems)
            or f"after = before + normalised for {len(standing.after)} site(s)"
            + (f", raised to record_floor {floor:g}" if floor > 0 else ""),
        )
    )

    try:
        combiner = combiner_from(settings)
    except FedtrailError as exc:
        out.append(("standing.scores", False, f"the terms' thresholds are unusable: {exc}"))
        return out
    wrong = []
    scored = [s for s in subs if s.reason in SCORED_FROM_STANDING]
    after: Mapping[str, float] = standing.after
    provisional = standing.valued_rounds == 0 and combiner.warm_up_floor < 1.0
    scoped = _scoped(standing, combiner, subs)
    if scoped is not None:  # scored by every share, whatever it records
        after = accumulate(standing.before, standing.normalised or {})
        if combiner.warm_up_scope == 2:  # and every passer scored from its share, as 0
            scoped = None
    reference = demotion_reference(float(after.get(s.site, 0.0)) for s in scored)
    scale = combiner.demote_scale
    for s in scored:
        total = float(after.get(s.site, 0.0))
        own = relieved_reference(
            reference, _cosine(log, s.site, robust), relief_cosine=combiner.relief_cosine
        )
        expected = demoted_score(total - own, demote_scale=scale)
        if provisional:
            expected = floored_score(expected, combiner.warm_up_floor)
            if scoped is not None and s.site not in scoped:
                expected = SCORE_SCALE  # warm_up_scope 1: it outweighs no vouched update
        size, median = _norms(log, s.site, robust)
        if expected > 0 and size is not None and median is not None:
            factor = norm_factor(
                size,
                median,
                max_norm_ratio=combiner.max_norm_ratio,
                small_norm_ratio=combiner.small_norm_ratio,
            )
            expected = scaled_score(expected, factor)
            boost = boost_factor(
                size, median, _cosine(log, s.site, robust), boost_clip=combiner.boost_clip
            )
            expected = scaled_score(expected, boost)
        low = s.reason == int(Reason.LOW_QUALITY)
        if s.score != expected or low != (expected == 0):
            wrong.append(f"{s.site[:10]} score {s.score} reason {s.reason}, expected {expected}")
    out.append(
        (
            "standing.scores",
            not wrong,
            "; ".join(wrong)
            or (
                f"every score follows from the accumulated value, floored at "
                f"{combiner.warm_up_floor:g} (warm-up, demote_scale {scale:g})"
                if provisional
                else f"every score follows from the accumulated value (demote_scale {scale:g})"
            ),
        )
    )
    return out


def _scoped(
    standing: Standing, combiner: Combiner | None, subs: list[Submission]
) -> frozenset[str] | None:
    """The warm-up's outweighing updates, the ones it records, under ``warm_up_scope`` 1 or 2
    and ``warm_up_floor`` below 1 (:func:`~fedtrail.valuation.standing.outweighing` of the
    log's shares and the claimed counts on chain; 1 scores only them from their shares, 2
    every passer); None in any other round or under other terms."""
    if combiner is None or standing.valued_rounds != 0 or combiner.warm_up_floor >= 1.0:
        return None
    if not combiner.warm_up_scope:
        return None
    norm = dict(standing.normalised or {})
    counts = {s.site: s.num_samples for s in subs}
    return outweighing(norm, {s: counts.get(s, 0) for s in norm})


def _shares(log: RoundLog, robust: Recomputed | None, credit_cosine: float) -> dict[str, float]:
    """This round's shares as the standing accumulates them, from the values the log shows
    (``components.value``, a number exactly for the updates that passed the screens):
    :func:`~fedtrail.valuation.standing.normalised_values`, then
    :func:`~fedtrail.valuation.standing.credited` with the cosines where the data-free
    thresholds applied (:func:`_cosine`); empty when every value is zero."""
    values: dict[str, float] = {}
    for entry in log.sites:
        value = entry.components.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[entry.site] = float(value)
    shares = normalised_values(values)
    if shares is None:
        return {}
    cosines = {s: c for s in shares if (c := _cosine(log, s, robust)) is not None}
    return credited(shares, cosines, credit_cosine=credit_cosine)


def _cosine(log: RoundLog, site: str, robust: Recomputed | None) -> float | None:
    """``site``'s cosine to the median update when the data-free thresholds applied to it
    (None when they did not): the recomputed one when given, else the log's (as
    :func:`_norms`)."""
    if robust is not None:
        stats = robust.stats.get(site)
        return stats.cosine if robust.checked and stats is not None else None
    entry = log.site(site)
    if entry is None or entry.components.get("robust_checked") is not True:
        return None
    cosine = entry.components.get("cosine")
    return float(cosine) if isinstance(cosine, int | float) else None


def _norms(
    log: RoundLog, site: str, robust: Recomputed | None
) -> tuple[float | None, float | None]:
    """The norm and median norm ``site``'s score is weighted with when the data-free
    thresholds applied to it (None, None when they did not): the recomputed ones
    (``log.components``) when given, else (the updates could not be read) the log's."""
    if robust is not None:
        stats = robust.stats.get(site)
        if not robust.checked or stats is None:
            return None, None
        return stats.norm, stats.median_norm
    entry = log.site(site)
    if entry is None or entry.components.get("robust_checked") is not True:
        return None, None
    size, median = entry.components.get("norm"), entry.components.get("median_norm")
    if not isinstance(size, int | float) or not isinstance(median, int | float):
        return None, None
    return float(size), float(median)


def compare_standing(claimed: Standing | None, recomputed: Standing, tolerance: float) -> Check:
    """``standing.recomputed``: the log's normalised and accumulated values against a re-run."""
    if claimed is None:
        return ("standing.recomputed", False, "the log has no standing block")

    def worst(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> float:
        if (a is None) != (b is None):
            return math.inf
        a, b = a or {}, b or {}
        if set(a) != set(b):
            return math.inf
        return max((abs(a[k] - b[k]) for k in a), default=0.0)

    diff = max(
        worst(claimed.normalised, recomputed.normalised), worst(claimed.after, recomputed.after)
    )
    return (
        "standing.recomputed",
        diff <= tolerance,
        f"normalised and accumulated values re-derived: largest difference {diff:.3g} "
        f"(tolerance {tolerance:g})",
    )
