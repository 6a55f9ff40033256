"""A site's standing across rounds: accumulated values and demote-only scores.

One round's Shapley values are noisy (early models overshoot; under label skew an honest site's
update can hurt the validation split in one round and help in the next), so zeroing every site
whose value is not positive in a round throws honest data away (measured: ~70% of honest
site-rounds). Instead each round's values are normalised to shares of the round's total absolute
value (:func:`normalised_values`, in [-1, 1], summing to at most 1 in absolute value) and added to
a per-site running value (:func:`accumulate`); the score only *demotes*
(:func:`demoted_score`): full score while the accumulated value is not negative, falling linearly
to 0 as it reaches ``-demote_scale`` (0 already below 1% of the full score). A site that is
consistently harmful (label noise measured at -0.1 to -0.5 of the round's share per round)
reaches 0 within a few rounds; an honest site whose
value dips once keeps most of its weight.

The accumulated values are an explicit input and output of
:func:`fedtrail.valuation.value_round` (:class:`History`): the aggregator records them in each
round's log, and an auditor re-derives them from the previous round's log.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.weights import SCORE_SCALE

__all__ = [
    "MIN_DEMOTED_SCORE",
    "History",
    "accumulate",
    "boost_factor",
    "carried_back",
    "credited",
    "demoted_score",
    "demotion_reference",
    "floored_records",
    "floored_score",
    "global_label",
    "norm_factor",
    "normalised_values",
    "reference_label",
    "reference_round",
    "relieved_reference",
    "scaled_score",
]


def reference_label(site: str, round_id: int) -> str:
    """A History reference's name for ``site``'s update of ``round_id`` (named in reasons)."""
    return f"{site}'s update of round {round_id}"


def global_label(round_id: int) -> str:
    """A History reference's name for the global delta ``round_id`` applied."""
    return f"the global delta of round {round_id}"


_LABEL_ROUND: Final = re.compile(r" of round ([0-9]+)\Z")


def reference_round(label: str) -> int | None:
    """The round a reference named by :func:`reference_label` or :func:`global_label` comes
    from (None for another name)."""
    m = _LABEL_ROUND.search(label)
    return int(m.group(1)) if m else None


def _empty() -> Mapping[str, float]:
    return MappingProxyType({})


def _no_references() -> Mapping[str, Mapping[str, torch.Tensor]]:
    return MappingProxyType({})


def _no_squares() -> Mapping[str, npt.NDArray[np.float64]]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True, eq=False)
class History:
    """What a round's valuation carries over from the earlier rounds.

    ``accumulated``: site -> accumulated normalised value after the previous round (a site
    missing from it starts at 0). ``valued_rounds``: rounds valued before this one; 0 makes this
    round the warm-up (values computed and reported, not accumulated: the first round's models
    overshoot, so every update's value is mostly noise). ``references``: earlier updates a
    free-rider could resend, by a label naming them (a site's previous update, the last global
    delta); see :mod:`fedtrail.valuation.freeride`. ``reference_squares``: label -> the 1024
    partial sums of the squares of that reference's trainable values exactly as the free-rider
    screen computed them in an earlier round (:meth:`~fedtrail.valuation.rows.Rows.
    square_partials`; a peer validator chains its own from its vector's report,
    :meth:`~fedtrail.valuation.PeerVector.next_history`): the screen takes them (and the norm
    they give) instead of reading the reference again, and computes those of the others. They
    must be that computation's values for the same tensors (the screen's verdicts and details
    quote the norm); leave a label out when unsure.
    """

    accumulated: Mapping[str, float] = field(default_factory=_empty)
    valued_rounds: int = 0
    references: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=_no_references)
    reference_squares: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=_no_squares)

    def __post_init__(self) -> None:
        r = self.valued_rounds
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ConfigError(f"valued_rounds must be a non-negative integer, got {r!r}")
        for site, value in self.accumulated.items():
            if not isinstance(site, str) or not site:
                raise ConfigError("accumulated values need non-empty site names")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"accumulated value of {site} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"accumulated value of {site} must be finite, got {value!r}")

    @property
    def warm_up(self) -> bool:
        """Whether this round only reports values (the first valued round)."""
        return self.valued_rounds == 0


def normalised_values(values: Mapping[str, float]) -> dict[str, float] | None:
    """Each value as a share of the round's total absolute value (``phi_i / sum |phi_j|``);
    None when every value is zero.

    Rounds whose updates together made the model worse count too: skipping them (as a first
    version did) let a harmful site shield itself, since a site harmful enough to make the whole
    round a loss was then never demoted (measured on the default demo: the sign-flipping site,
    the most harmful by far, took the largest weight in rounds 3-5).
    """
    total = math.fsum(abs(v) for v in values.values())
    if not total > 0:
        return None
    return {s: v / total for s, v in values.items()}


def credited(
    normalised: Mapping[str, float],
    cosines: Mapping[str, float],
    *,
    credit_cosine: float,
) -> dict[str, float]:
    """``normalised`` with the positive share of every site whose update points against the
    round's consensus (its cosine to the median update, in ``cosines``, below
    ``credit_cosine``) withheld: such a site keeps its negative shares, never a positive one.

    The validation game pays an update for what it does to the coalitions' averaged step, and
    an update pointing against the others can lower the validation loss by shortening an
    overshooting step or offsetting another site's error: measured on the default demo
    (``fedtrail demo``, round 3), the sign-flipped hospital-E (cosine -0.81 to the median, norm
    2.6x the median) had Shapley value +0.007, a share of +0.17 that cancelled its round-2 share
    -0.18, so its score went back to 0.98 and it took the largest weight (0.35); the global
    AUC fell from 0.985 to 0.946 that round and to 0.874 in the next. Rejecting such updates
    outright (``min_cosine``) rejects honest minority-class sites under label skew, which reach
    cosine -0.8; withholding only the credit costs an honest one nothing while its record is not
    negative. Sites missing from
    ``cosines`` (the data-free statistics did not apply) keep their shares."""
    out = dict(normalised)
    for site, v in normalised.items():
        c = cosines.get(site)
        if v > 0 and c is not None and c < credit_cosine:
            out[site] = 0.0
    return out


def accumulate(previous: Mapping[str, float], normalised: Mapping[str, float]) -> dict[str, float]:
    """``previous`` plus this round's normalised values (sites not valued keep theirs), in the
    order of ``previous`` then the new sites."""
    out = dict(previous)
    for site, v in normalised.items():
        out[site] = out.get(site, 0.0) + v
    return out


def outweighing(shares: Mapping[str, float], counts: Mapping[str, int]) -> frozenset[str]:
    """The warm-up passers ``warm_up_scope`` 1 scores and records, and 2 records (it scores
    every passer; README *Scores from standing*): each whose share is negative and whose
    claimed sample count is above every count of a passer whose share is 0 or more (above 0
    when none is): weighted by its count alone, such an update would outweigh every update
    the game vouches for. ``shares`` the warm-up's (after ``credit_cosine``), ``counts`` the
    claimed sample counts.

    Measured (issue 12): the warm-up's values are too noisy to score every passer by (an honest
    pneumonia-heavy site's round-1 share is as negative as a noisy site's, and scoring them all,
    ``warm_up_scope`` 0, zeroed more honest site-rounds of the accuracy bench's scenario (a)),
    yet off, the default demo's 45%-noisy hospital-D, the largest site, took the largest weight
    of round 1 with the lowest value."""
    vouched = max((counts[s] for s, v in shares.items() if v >= 0), default=0)
    return frozenset(s for s, v in shares.items() if v < 0 and counts[s] > vouched)


def carried_back(
    accumulated: Mapping[str, float], before: Mapping[str, float], sites: Iterable[str]
) -> dict[str, float]:
    """``accumulated`` (a round's standing after it) with each of ``sites`` put back to its
    value in ``before`` (the standing the round was valued with; left out when ``before`` has
    none): those sites gain nothing from the round. A peer validator applies it to the sites the
    aggregator dropped as the public screen's free-riders (``UpdateScreened``), whose shares it
    accumulated since it did not screen them itself. The order of ``accumulated`` is kept."""
    gone = set(sites)
    out: dict[str, float] = {}
    for site, value in accumulated.items():
        if site not in gone:
            out[site] = value
        elif site in before:
            out[site] = before[site]
    return out


def demotion_reference(accumulated: Iterable[float]) -> float:
    """What a site's accumulated value is measured against: 0, or the median of the round's
    scored sites when that median is negative.

    Under strong label skew the validation game can value the *typical* site negatively (a
    skewed update hurts a balanced validation split even after the intercept fit): measured at
    Dirichlet alpha 1 with 2 of 5 noisy sites, 10 rounds, 5 seeds, 21% of honest site-rounds
    were zeroed against 0, and in one seed all but two sites. A site is then demoted only for
    being worse than the median site - assuming, as robust aggregation does, that most sites are
    honest. When the median is not negative nothing changes.
    """
    values = list(accumulated)
    return min(0.0, statistics.median(values)) if values else 0.0


def floored_records(
    accumulated: Mapping[str, float],
    scored: Mapping[str, float | None],
    *,
    record_floor: float,
    demote_scale: float,
    relief_cosine: float,
) -> dict[str, float]:
    """``accumulated`` (a round's records after its shares were added) with each ``scored``
    site's record raised to at least its own reference minus ``max(record_floor,
    demote_scale)`` (so a raised record always scores 0, whatever the two thresholds): the round's
    :func:`demotion_reference` over the scored sites' records (before any is raised), or 0 for
    a site whose update points against the consensus (:func:`relieved_reference`; ``scored``
    maps each site scored from its standing to its cosine to the median update, None when the
    data-free statistics did not apply). A CUSUM's reflecting barrier: the record stops
    sinking where the score is already 0 (at ``record_floor`` = ``demote_scale``), so a site
    the game valued below zero for a few rounds can come back when its shares turn positive
    (issue 12 (a): honest pneumonia-heavy sites sank to -0.77..-2.66 where -0.5 already scores
    0). ``record_floor`` 0: off, the unbounded record (terms written before it). Sites not
    scored this round (screened out, absent) keep their record. The order of ``accumulated``
    is kept."""
    out = dict(accumulated)
    if record_floor <= 0.0 or not scored:
        return out
    depth = max(record_floor, demote_scale)
    reference = demotion_reference(float(out.get(site, 0.0)) for site in scored)
    for site, cosine in scored.items():
        if site not in out:
            continue  # no record: 0, never below a reference (<= 0) minus a positive floor
        own = relieved_reference(reference, cosine, relief_cosine=relief_cosine)
        floor = own - depth
        if out[site] < floor:
            out[site] = floor
    return out


def relieved_reference(reference: float, cosine: float | None, *, relief_cosine: float) -> float:
    """The reference one site's accumulated value is measured against: the round's
    ``reference`` (:func:`demotion_reference`), or 0 when the site's update points against the
    consensus (``cosine`` to the median update, None when the data-free statistics did not
    apply, below ``relief_cosine``; -1: never).

    The median reference spares honest sites when the game values the *typical* site
    negatively, but it spares a harmful one just as much: measured on the default demo
    (``fedtrail demo``, round 3), honest hospitals A and C were valued below zero, the median
    accumulated value fell from -0.053 to -0.140, and the sign-flipping hospital-E (cosine
    -0.91 to the median update, accumulated -0.150, its positive value withheld by
    ``credit_cosine``) rose from score 0.81 to 0.98 and took the largest weight (0.329) without
    any evidence for it. An update pointing against the consensus gets no such relief in that
    round: its record is measured against 0, as when the median is not negative. Demote-only
    and per round: an honest minority-class site whose cosine dips below it loses only the
    relief, and only in that round (nothing is accumulated), so a non-negative record keeps
    its full score."""
    if cosine is not None and cosine < relief_cosine:
        return 0.0
    return reference


MIN_DEMOTED_SCORE: Final = SCORE_SCALE // 100
"""A demoted score below this (1% of the full score) is 0, so the zero is reachable in one
round. A lone site whose harm the others' gains offset has a share of
``-(P - D) / (2P - D)``, just above -0.5 (P: the sum of the positive values, D: the round's
total gain ``v(N) - v(empty)``), so with the default ``demote_scale`` 0.5 it never reached 0:
measured with resnet10 (BatchNorm), a sign-flipping site of four had the share -0.4999989 in
round 2 and kept reason OK with score 2 of 1e6 instead of LOW_QUALITY."""


def demoted_score(accumulated: float, *, demote_scale: float) -> int:
    """Full score (``SCORE_SCALE``) for a non-negative accumulated value, falling linearly to 0
    at ``-demote_scale``; a score below :data:`MIN_DEMOTED_SCORE` is 0."""
    if accumulated >= 0:
        return SCORE_SCALE
    if accumulated <= -demote_scale:
        # 0 either way; and a log's -1e308 over a 0.5 scale overflowed to -inf, whose round()
        # raised OverflowError in audit verify's standing.scores (attack review a34)
        return 0
    score = max(0, min(SCORE_SCALE, round(SCORE_SCALE * (1.0 + accumulated / demote_scale))))
    return 0 if score < MIN_DEMOTED_SCORE else score


def floored_score(score: int, floor: float) -> int:
    """A warm-up round's score under ``warm_up_floor``: ``score`` (:func:`demoted_score` of the
    site's accumulated value, the warm-up's own share, against its reference) raised to at least
    ``floor`` of the full score; ``floor`` 1 (off, the rule before it) gives every passer the
    full score.

    Off, nothing accumulates in the warm-up, so every update that passed the screens scored 1 and
    was weighted by its sample count alone: measured on the default demo (``fedtrail demo``),
    the 45%-noisy hospital-D, the largest site, took the largest weight of round 1 (0.2817)
    although its Shapley value was the lowest. Below 1 the warm-up's shares are accumulated (a
    first version scored the warm-up from them without accumulating: round 1 met the demo's bar,
    round 2 missed it, the noisy site demoted by one round's share only), and the floor bounds
    what the first, noisiest round can take from an honest skewed site in that round."""
    if score >= SCORE_SCALE or floor >= 1.0:
        return SCORE_SCALE
    return max(score, round(SCORE_SCALE * max(0.0, floor)))


def norm_factor(
    norm: float | None,
    median_norm: float | None,
    *,
    max_norm_ratio: float,
    small_norm_ratio: float,
) -> float:
    """The share of its score an update keeps for its magnitude, in (0, 1]: the median norm of
    the round's usable updates is the scale (0 or None: no scale, factor 1).

    * above ``max_norm_ratio`` times the median (0: off), ``max_norm_ratio * median / norm``:
      norm clipping moved into the weight. A site's pull on the aggregate is its weight times
      its update, so an update k times larger than allowed keeps 1/k of its weight and moves
      the model no further than one clipped to the bound would (with the other weights
      renormalised). Scaled ("boosted") updates need no data to be bounded this way, and the
      validation game cannot bound them: a scaled honest direction lengthens an undertrained
      step, which the game pays (measured: the x10 site of the accuracy benchmark's scenario
      (c), at 1.7-4.3x the median norm, accumulated +3.4 over 10 rounds at Dirichlet alpha 3);
    * below ``small_norm_ratio`` times the median (0: off), ``norm / (small_norm_ratio *
      median)``: an update this small carries little training, so it keeps that fraction of its
      weight (continuing the FREE_RIDER rule below 1% of the median,
      :mod:`~fedtrail.valuation.freeride`, without a cliff just above it: in the accuracy
      benchmark's scenario (e), noise at 0.5% of a site's update was 1.5-3.5% of the median in
      3 of 50 rounds and kept (nearly) its full score without this factor).
    """
    if norm is None or median_norm is None or not median_norm > 0:
        return 1.0
    ratio = norm / median_norm
    if max_norm_ratio > 0 and ratio > max_norm_ratio:
        return max_norm_ratio / ratio
    if small_norm_ratio > 0 and ratio < small_norm_ratio:
        return max(ratio, 0.0) / small_norm_ratio
    return 1.0


def boost_factor(
    norm: float | None,
    median_norm: float | None,
    cosine: float | None,
    *,
    boost_clip: float,
) -> float:
    """The share of its score an update keeps for its length *along the consensus*, in (0, 1]:
    ``along = cosine * norm / median_norm`` (its projection on the round's coordinate-wise
    median update, in median norms; the robust statistics of the data-free screens). Above
    ``1 / boost_clip`` (0: off) it keeps ``(1 / (boost_clip * along)) ** 2``; no scale (a
    median norm of 0 or None, no cosine) or ``along`` within the bound: 1.

    A scaled ("boosted") honest update points with the consensus and is k times longer along
    it; an honest skewed site's update is long too, but mostly sideways or against (its class
    prior drifts). How well that separates, measured: on the valuation's own runs of the
    accuracy bench honest ``along`` had a 90th percentile of 0.8-2.3 (at most 3.6), so the
    bound at 2 cut 0-9 honest updates per scenario; on FedAvg trajectories
    (``scripts/bench/poison_signals.py``) it does not separate the x10 site of scenario (c)
    (honest values up to 21, where the x10 site makes the global model swing), and a x10
    update pointing against the median is not touched at all (README, *Scores from
    standing*). The projection is linear in the update, so noise or a sideways
    component added to a boosted update does not lower it. Squared, the factor makes a boost
    cost the booster: a site k times over the bound keeps 1/k^2 of its weight, so its pull
    along the consensus (weight times length) falls as 1/k instead of staying at the bound's.
    Not a rejection (reason OK, at least score 1: :func:`scaled_score`): an honest site over
    the bound loses weight in proportion, never its place."""
    if (
        not boost_clip > 0
        or norm is None
        or median_norm is None
        or cosine is None
        or not median_norm > 0
    ):
        return 1.0
    along = cosine * norm / median_norm
    if along * boost_clip <= 1.0:
        return 1.0
    return float((1.0 / (along * boost_clip)) ** 2)


def scaled_score(score: int, factor: float) -> int:
    """``score`` times ``factor`` (:func:`norm_factor`), at least 1 when ``score`` is positive:
    the factor lowers a weight, it never rejects (a rejection has its own reason)."""
    if score <= 0 or factor >= 1.0:
        return score
    return max(1, min(score, round(score * factor)))
