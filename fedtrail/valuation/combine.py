"""From per-site components to the on-chain score (0..1e6) and reason code.

:class:`Combiner` holds the thresholds and applies them in this order; the first that applies
decides the reason, and every rejection scores 0:

1. the candidate's own status (TAMPERED, MALFORMED, DUPLICATE, LATE, EXPLANATION_SHIFT,
   IMPLAUSIBLE_SAMPLES, ... as set by whoever fetched and checked it) -> 0 with that status;
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

With a :class:`~fedtrail.valuation.standing.History` (:meth:`Combiner.settle`), steps 3-4 are
replaced: free-riders (:mod:`~fedtrail.valuation.freeride`) were rejected as FREE_RIDER before
step 2; the round's values are normalised and accumulated per site, and every update that passed
the screening scores by its accumulated value, demote-only
(:func:`~fedtrail.valuation.standing.demoted_score`): full score unless the accumulated value is
negative, 0 with LOW_QUALITY at ``-demote_scale`` or below (or once the score would fall below
1% of the full score) - measured against the median scored
site's value when that is negative (:func:`~fedtrail.valuation.standing.demotion_reference`),
except for an update whose cosine to the median is below ``relief_cosine``, measured against 0
(:func:`~fedtrail.valuation.standing.relieved_reference`);
an update pointing against the consensus (cosine to the median below ``credit_cosine``) has
its positive share withheld (:func:`~fedtrail.valuation.standing.credited`);
then, when the data-free thresholds apply, an update far above ``max_norm_ratio`` or below
``small_norm_ratio`` times the median norm keeps only part of that score
(:func:`~fedtrail.valuation.standing.norm_factor`; reason OK, the detail says so), and one
whose length along the median update is above ``1 / boost_clip`` median norms keeps the square
of the bound's share of it (:func:`~fedtrail.valuation.standing.boost_factor`; reason OK too).

:func:`fedtrail.valuation.value_round` runs the whole valuation of a round and ends here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fedtrail.errors import ConfigError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation.base import Candidate, size_factor
from fedtrail.valuation.robust import RobustStats
from fedtrail.valuation.standing import (
    boost_factor,
    demoted_score,
    demotion_reference,
    floored_records,
    floored_score,
    norm_factor,
    relieved_reference,
    scaled_score,
)

__all__ = [
    "HISTORY_COMBINER",
    "RECORD_FLOOR",
    "Combiner",
    "RoundValuation",
    "SiteValuation",
    "any_positive",
    "default_combiner",
    "sample_reference",
    "size_adjusted_z",
    "size_factor",
]


def sample_reference(own: int, others: Sequence[int], *, with_self: bool) -> float | None:
    """The count a usable update's claimed ``own`` sample count is judged against
    (IMPLAUSIBLE_SAMPLES above ``max_sample_ratio`` times it): the median of the round's other
    usable updates' counts ``others``, with ``own`` among them when ``with_self``
    (:attr:`Combiner.sample_median_self`); None with fewer than two others (nothing judged)."""
    if len(others) < 2:
        return None
    return float(statistics.median([*others, own] if with_self else list(others)))


def passed_sites(screened: Mapping[str, tuple[Reason, str]]) -> frozenset[str]:
    """The sites :meth:`Combiner.screen`'s verdicts ``screened`` pass (reason OK)."""
    return frozenset(site for site, (reason, _) in screened.items() if reason is Reason.OK)


def size_adjusted_z(stats: RobustStats, allowance: float) -> float:
    """The robust norm z the norm screen judges: that of the update's norm divided by
    ``allowance`` (>= 1: how much larger a norm its claimed count excuses, see
    :attr:`Combiner.norm_size_cap`), on the round's same median and scale; ``stats.norm_z``
    itself when ``allowance`` is 1 or the norm is not above the median. The scale is
    ``(norm - median) / norm_z``, so the auditor derives the same value from the same
    recomputed statistics."""
    excess = stats.norm - stats.median_norm
    if allowance <= 1.0 or stats.norm_z <= 0.0 or excess <= 0.0:
        return stats.norm_z
    return stats.norm_z * (stats.norm / allowance - stats.median_norm) / excess


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return v


WARM_UP_FLOOR: Final = 0.5
"""The default ``warm_up_floor`` of :class:`Combiner`: 0.5 (since session 63, with
:data:`WARM_UP_SCOPE` 1; terms without it read as 1, off: every update that passes the screens
in the warm-up round scores 1, as before the rule); below 1 the warm-up's shares are
accumulated as a later round's (the standing starts in round 1; under ``warm_up_scope`` 1 only
the outweighing updates') and its passers' scores are raised to at least this share of the full
score (:func:`~fedtrail.valuation.standing.floored_score`). See README *Scores from standing*
for what it measured."""

WARM_UP_SCOPE: Final = 1
"""The default ``warm_up_scope`` of :class:`Combiner` (it acts only under ``warm_up_floor``
below 1): 1, the warm-up scores and records only the updates that *outweigh* those the game
(:func:`~fedtrail.valuation.standing.outweighing`: a negative share and a claimed sample count
above every count the game values at zero or more), every other passer keeps the full score and
no record; 0 (what terms without it read as), the rule before it: every passer scored from its
share, floored, and every share recorded; 2 (opt-in), every passer scored from its share,
floored, as 0, and only the outweighing updates' shares recorded, as 1: a noisy site split into
Sybils that each claim no more than a vouched site, or shielded by a colluder valued at zero or
more that claims as many samples, is still floored in round 1 (only its record escapes).
README *Scores from standing*."""

RECORD_FLOOR: Final = 0.5
"""The default ``record_floor`` of :class:`Combiner`: how far below its own reference a scored
site's record may sink (the default ``demote_scale``, where the score is already 0, so no score
of the round moves, only the depth a later positive share climbs out of). Measured with
``scripts/bench/record_floor.py`` (issue 12 (a), scenario (a) at Dirichlet alpha 3, 5 seeds, 10
rounds): honest site-rounds zeroed 32/250 -> 24/250. README *Accuracy: valuation weights
against FedAvg*."""

SPAN_RESIDUAL: Final = 0.01
"""The span test's threshold (``span_residual``): an update whose residual outside the span of
the free-rider references is below 1% of its norm is a linear mixture of earlier updates. Honest
updates measured at 0.16 and more with 5 sites (18 references) but 0.060 with 10 (33): the
margin shrinks as references are added (20 sites: README; 100 not measured); ``mix2`` and
``twoago`` as they are score 3e-4 to 1.4e-3 with the test's ridge (docs/results.md *Linear
mixtures*).
0.01 sits between the two, about 7x from each at 10 sites; at 20 sites (63 references) an honest
update scored 0.0114, so the terms' default is off (``Combiner.span_residual`` 0)."""

BLOCK_NOISE_Z: Final = 8.0
"""The block-noise test's threshold (``block_noise_z``): noise whose blocks are independent
scores about N(0, 1) (a120's shapes at most 4.3), honest updates 18.1 and more (``topk8``),
30.8 and more dense (docs/results.md *Noise with a public profile*)."""

SIZE_NORM_Z: Final = 0.0
"""The default ``size_norm_z`` of :class:`Combiner`: 0, off (an opt-in; the second norm screen,
on the norm over the claimed count's uncapped allowance, :meth:`Combiner.size_screen_z`).
Measured with ``scripts/bench/size_norm_scan.py`` (100 label-skewed sites, Dirichlet alpha 1
and 3, 32 partitions): honest updates up to 5.99 (a 33-image site whose second local step is
one image), so 8 stops no honest update there and 16 of the 32 x10/x40 updates ``max_norm_z``
20 lets through, but not stop 61's x40 (a 17-image site whose honest update is 0.09x the
median: x40 is 3.5x, z 3.4). Off: it does not bring issue 12 (c) under its 5% bar either
(README *Accuracy*, h-301's paragraph)."""

SIZE_NORM_COUNT: Final = 0.0
"""The default ``size_norm_count`` of :class:`Combiner`: 0, none (``size_norm_z``'s allowance
judged against the round's median claim alone, as terms written before it)."""

BOOST_CLIP: Final = 0.0
"""The default ``boost_clip`` of :class:`Combiner`: 0, off (an opt-in; at 0.5 an update longer
along the median update than 2 median norms keeps (2 / along) ** 2 of its score,
:func:`~fedtrail.valuation.standing.boost_factor`). Measured with the accuracy benchmark (seeds
0-2, 10 rounds, ``boost_clip`` 0.5 against off): scenario (c)'s poisoned share 0.106 -> 0.080 at
Dirichlet alpha 3 (the x10 site cut to 0.03-0.25 of its score where it points with the
consensus), 0.071 -> 0.070 at alpha 1 (there the x10 site's own step is short, 1.3-3x the median
norm, or it is OUTLIER_NORM anyway), both above the 5% bar; (c)'s test AUC at alpha 3 0.916 ->
0.902 (worst seed 0.904 -> 0.864) and honest site-rounds scored 0 in (c) 7 -> 19 of 240 on the
changed trajectories; it cut honest updates too (1 of 150 in scenario (a) at alpha 1, 4-5 of 90
in (b), 9 of 240 in (c) at alpha 1, each keeping 0.31-0.99 of its score). So it stays off: on
this data it neither reaches the bar nor raised the AUC."""


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
    """The candidate's status on entry (after the round's own checks: layout, duplicates)."""
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
    ``demote_scale`` (> 0; default 0.5): the accumulated value at which a site's score reaches 0
    (with a :class:`~fedtrail.valuation.standing.History`).
    ``free_rider_norm`` (in [0, 1); default 0.01), ``stale_cosine`` (in [0, 1]; default
    0.99999), ``stale_distance`` (>= 0; default 1e6, in effect no bound: a copy of an earlier
    update scaled by any positive factor is stale; logs written before replay with their
    recorded 0.9999 and 0.01, which let a copy scaled by 1.05 through): see
    :mod:`fedtrail.valuation.freeride` (honest updates measured up to cosine 0.99982).
    ``stale_rounds`` (>= 1; default 3): with a :class:`~fedtrail.valuation.standing.History`,
    the updates and global deltas of this many latest finalized rounds are the stale screen's
    references (:mod:`fedtrail.valuation.chained`); logs recorded without it used 1 (a copy
    of an update two rounds back was paid 0.33-0.41 of the weight where an honest share is 0.25).
    ``max_sample_ratio`` (> 1; default 10): a usable update whose claimed sample count is more
    than this times the median claimed by the round's usable updates (at least two others) is
    IMPLAUSIBLE_SAMPLES, weight 0. The ledger's per-site cap (set by the coordinator at
    registration) is the hard limit; this catches a site that inflates its count within its cap
    to take the weight. A federation with a genuinely much larger hospital needs a larger ratio
    in its round terms (they are committed at open, so the auditor replays the same rule).
    ``sample_median_self`` (0 or 1; default 1): 1 takes that median over every usable update,
    the judged one's own count included (:func:`sample_reference`); 0 over the others only, as
    logs recorded before it did. With the others only, sites claiming 1 sample drag the median
    down at no cost: two colluders beside two honest 300-image sites zeroed both and took all
    the weight, one colluder zeroed a 500-image site beside sites of 100 and 40
    (``scripts/attacks/a3_tiny_count_sabotage.py``); with its own count in, the median falls to
    a colluder's claim only when colluders hold more than half the round's usable updates.
    ``credit_cosine`` (in [-1, 1]; default -0.7; -1: off): with a
    :class:`~fedtrail.valuation.standing.History`, an update whose cosine to the median update
    is below it gets no positive share of the round's value, only its negative ones
    (:func:`~fedtrail.valuation.standing.credited`): it points against the consensus, so a
    positive value is the game paying it for shortening or offsetting the others' step (the
    sign-flipped hospital of the default demo: cosine -0.81 to -0.95). Not a rejection, since
    honest minority-class sites reach cosine -0.8 under strong label skew; below -0.7 it
    spares the honest sites of the default demo (at worst -0.59). A recorded set of thresholds
    without it (a log written before it existed) means -1: off.
    ``relief_cosine`` (in [-1, 1]; default -0.7; -1: off): with a
    :class:`~fedtrail.valuation.standing.History`, an update whose cosine to the median update
    is below it is scored against 0, not against the median scored site's negative accumulated
    value (:func:`~fedtrail.valuation.standing.relieved_reference`): the median's relief is
    for sites the game values like the typical one, not for one pointing against the
    consensus (the sign-flipped hospital of the default demo took the largest weight in rounds
    2-3 through it). A recorded set of thresholds without it means -1: off.
    ``max_norm_ratio`` (0: off, else >= 1) and ``small_norm_ratio`` (in [0, 1)): with a
    :class:`~fedtrail.valuation.standing.History`, an accepted update above ``max_norm_ratio``
    or below ``small_norm_ratio`` times the median norm keeps only part of its score
    (:func:`~fedtrail.valuation.standing.norm_factor`). A recorded set of thresholds without
    them (a log written before they existed) means 0: off
    (:func:`~fedtrail.valuation.chained.combiner_from`).
    ``boost_clip`` (in [0, 1]; default 0: off, an opt-in, see :data:`BOOST_CLIP`): with a
    :class:`~fedtrail.valuation.standing.History`, an accepted update whose length along the
    median update (``cosine * norm / median_norm``) is above ``1 / boost_clip`` keeps
    ``(1 / (boost_clip * along)) ** 2`` of its score
    (:func:`~fedtrail.valuation.standing.boost_factor`): a scaled honest direction is paid by
    the validation game (a longer step helps an undertrained model), and its norm alone sits
    inside the honest spread under label skew, but its length along the consensus does not.
    A recorded set of thresholds without it means 0: off.
    ``warm_up_floor`` (in [0, 1]; default 0.5, see :data:`WARM_UP_FLOOR`): in the
    warm-up round the round's shares are accumulated as a later round's
    (:func:`~fedtrail.valuation.round.value_round`) and an accepted update's score
    (``settle(..., warm_up=True)``) is :func:`~fedtrail.valuation.standing.floored_score` of
    the demoted score its accumulated value gets. A recorded set of thresholds without it
    means 1: off.
    ``warm_up_scope`` (0, 1 or 2; default 1, see :data:`WARM_UP_SCOPE`): under
    ``warm_up_floor`` below 1, 1 limits that to the warm-up's outweighing updates
    (:func:`~fedtrail.valuation.standing.outweighing`): only their shares are accumulated and
    every other accepted update keeps the full score; 2 scores every accepted update as 0 does
    and accumulates only the outweighing updates' shares, as 1 does. A recorded set without it
    means 0.
    ``record_floor`` (>= 0; default :data:`RECORD_FLOOR`, 0.5, the default ``demote_scale``;
    0: off): after a round's shares are added (not in the warm-up), each site scored from its
    standing has its record raised to at least its own reference (the one its score is judged
    against) minus ``max(record_floor, demote_scale)``, so a raised record scores 0
    (:func:`~fedtrail.valuation.standing.floored_records`), and its score is read from the
    raised record. A recorded set of thresholds without it means 0: the unbounded record.
    ``dp_spend_check`` (0 or 1; default 1): 1 scores 0, as MALFORMED, an update whose declared
    privacy spend is not the one the DP parameters in its blob give (or that names another
    delta than the terms, one above 1 / its sample count, or a spend without parameters:
    :data:`fedtrail.storage.privacy_spend.BINDING`), before the valuation
    (:func:`~fedtrail.valuation.candidates.revealed_candidates`); otherwise a site that declares
    less than it spent is paid like anyone else and only the audit flags it afterwards
    (``scripts/attacks/a5_dp_understated_spend.py``). A recorded set of thresholds without it
    (a log written before it existed) means 0: off.
    ``dp_noise_check`` (0, 1 or 2; default 2): 1 and 2 score 0, as MALFORMED, an update
    carrying DP parameters that is not the Gaussian noise they add plus a clipped signal, or
    that is compressed (:func:`fedtrail.ml.dp_noise.noise_breach`, a public check of the update
    alone); otherwise a site that declares DP-SGD and sends a plain update is paid like anyone
    else (``scripts/attacks/a24_dp_noise_claim.py``). 1 evaluates the signal the parameters
    allow at the site's claimed sample count, which the site inflates within its cap to pass
    an update with less noise than it declares (``scripts/attacks/a97_dp_count_inflation.py``);
    2 at that count but at most :data:`fedtrail.ml.dp_noise.NOISE_COUNT` (32). A recorded set
    of thresholds without it means 0: off; terms written before 2 existed keep their 1.
    ``norm_size_cap`` (>= 1; default 1: off; an opt-in, 10 where a federation's sites consent
    under ``[accept.loosest]``): the norm screen judges an update's norm
    divided by ``min(norm_size_cap, max(1, n / m))`` (:func:`size_adjusted_z`), ``n`` its
    claimed sample count and ``m`` the median count of the round's usable updates (its own
    among them): a hospital with k times the median site's data takes about k times the local
    steps, so its honest update is about k times longer. Measured with
    ``scripts/bench/honest_screens.py`` (4 seeds x rounds 1-5): without it an honest
    1,000-image site beside sites of 90, 120 and 200 images was OUTLIER_NORM in 4 of 20 rounds
    dense and 3 of 20 topk8 (norm up to 34x the round's lower median, robust z up to 28; a
    600-image site reached z 17.9 of the 20 allowed). A
    claimed count is bounded by the ledger's per-site cap and by ``max_sample_ratio``, and the
    allowance only takes off the length the claimed count explains: an honest update boosted
    by b is judged at about b times the median whatever its size, so x10 and x30 stay outliers
    (with the 0.25 scale floor and ``max_norm_z`` 20, anything above about 6x). But a site
    that inflates its count by f within its cap may boost f times more, and its weight grows f
    times too: ``scripts/attacks/a10_inflate_boost.py 10 30 3 optin`` (claims 1,500 beside
    three 150-image sites, update x30) was paid 0.769 in round 1 and made 0.989 of a global step
    20x an honest one, where without the allowance it is OUTLIER_NORM. So it is off by default:
    only a federation whose coordinator caps every site's count near its real cohort should
    turn it on. A recorded set of thresholds without it (a log written before it) means 1.
    ``tiny_size_power`` (>= 0; default 2; 0: off): with a
    :class:`~fedtrail.valuation.standing.History`, the free-rider screen's floor against the
    global model's norm (:data:`~fedtrail.valuation.round.MIN_UPDATE_TO_MODEL_NORM`) is lowered
    by ``min(1, n / m) ** tiny_size_power`` for an update claiming fewer samples than the
    median (:func:`~fedtrail.valuation.freeride.free_riders`): a site of 20 images takes one
    local step where a 150-image site takes five, and momentum makes that a 13x shorter update,
    not 7.5x (measured beside four 150-image sites: a 20-image site down to 0.023% of the
    model's norm, zeroed FREE_RIDER in 7 of 20 rounds dense and topk8; 40 images 3 and 2 of
    20, 60 images 8 and 1 of 20, 100 images none). Its weight shrinks with the same claimed
    count, and a zero update is FREE_RIDER whatever it claims. A recorded set without it means
    0: off.
    ``tiny_size_reference`` (>= 0; default 150; 0: off): the same floor is lowered further by
    ``min(1, m / tiny_size_reference) ** tiny_size_power`` (``m`` the median claimed count), so
    a federation whose sites are all small gets the allowance its median site's few local
    steps need: the floor of 0.1% was set from sites of 150 images and more, and with every
    site at 20-23 images the median-relative allowance above gave none (measured with
    ``scripts/bench/small_sites.py``: 5 sites of 20 images had 75% of their site-rounds
    zeroed, 100 sites of 20-30 images 94%, nearly all by this floor). A round whose median claim
    is at least ``tiny_size_reference`` is judged exactly as without it. A recorded set without
    it means 0: off.
    ``tiny_size_own`` (0 or 1; default 1): 1 takes, in every round (with ``tiny_size_power``
    and ``tiny_size_reference`` above 0), each site's own claim alone: the floor is lowered by
    ``min(1, n / tiny_size_reference) ** tiny_size_power``, whatever the median; 0 (the rules
    above, terms written in stop 55) by the median's ``min(n, m) / tiny_size_reference`` below
    150 and ``n / m`` above, under which colluders that hold half a round's usable updates
    lower every other site's floor: claiming a few samples each (a data-less rider claiming
    150 with a weight-decay step at 0.01% of the model's norm was paid 0.333 of the round
    beside five white-noise Sybils claiming 20: ``scripts/attacks/a123_median_claim_floor.py``)
    or claiming many (600: a rider claiming 150 faces ``(150 / 600) ** 2`` of the floor,
    0.00625% of the model's norm). A recorded set without it means 0.
    ``white_noise_z`` (>= 0; default 1000; 0: off): with a
    :class:`~fedtrail.valuation.standing.History`, an update that does not declare DP-SGD whose
    structure statistic (:func:`~fedtrail.valuation.freeride.structure_z`), or that of its
    residual from the free-rider reference it is closest to, is below it is FREE_RIDER: white
    noise, or a copy plus white noise (scenario (h) of ``scripts/bench/accuracy.py``). Honest
    updates measured at 1e4 and more, copies plus white noise below 5 (README, *Noisy
    copies*). A recorded set without it means 0: off.
    ``shaped_noise_z`` (>= 0; default 1000; 0: off): the same, for noise shaped like the copy:
    an update that does not declare DP-SGD whose residual from the free-rider reference it is
    closest to, divided coordinate by coordinate by that reference's magnitude, has a
    structure statistic below it is FREE_RIDER
    (:func:`~fedtrail.valuation.freeride.shaped_residual_z`; scenario (i) of
    ``scripts/bench/accuracy.py``); sparse updates (more than half exact zeros) are left out.
    A recorded set without it means 0: off.
    ``block_noise_z`` (>= 0; default 8; 0: off): with a
    :class:`~fedtrail.valuation.standing.History`, an update that does not declare DP-SGD whose
    block statistic (:func:`~fedtrail.valuation.freeride.block_z_of`) is below it is
    FREE_RIDER: noise whose blocks (a convolution's kernels, runs of 8 values of a 2-D tensor's
    rows) are independent, whatever its variance profile (Gaussian noise scaled per tensor,
    row, column or value to a public update's magnitudes passes ``white_noise_z``: attack
    a120). Such noise scores about N(0, 1) (a120's shapes at most 4.3); honest updates measured
    at 30.8 and more dense, 18.1 and more ``topk8`` (docs/results.md *Noise with a public profile*).
    A recorded set without it means 0: off.
    ``dp_copy_z`` (>= 0; default 0, off; 60 measured): with a
    :class:`~fedtrail.valuation.standing.History`, an update that declares DP-SGD (exempt from
    the white-noise and shaped-noise tests) is FREE_RIDER when it lies along the free-rider
    references: its :func:`~fedtrail.valuation.freeride.dp_copy_statistic` (``|cosine|
    sqrt(P)``, matching pursuit over up to 8 references) is at least it: a copy plus the
    declared noise (attack a60). Off by default: at epsilon 8 honest DP-SGD updates scored
    up to 48.8 and copies of the last global delta down to 69.1 (README, *DP-declared
    copies*), no margin to default on. A recorded set without it means 0: off.
    ``stale_support_cosine`` (in [0, 1]; default 0.999995; 1: off): with a
    :class:`~fedtrail.valuation.standing.History`, an update that leaves out some of a
    free-rider reference's nonzero entries is FREE_RIDER (stale) when that reference restricted
    to the update's nonzero entries, or its int8 codes, has cosine above it to the update, or
    to its codes (:func:`~fedtrail.protocol.duplicates.support_copy`, the duplicate rule's
    ``support_cosine`` test): an earlier update resent through ``topk8`` at a fraction below 1
    was 0.995-0.9995 from it on the whole update, under ``stale_cosine`` (attack a91). A
    recorded set without it means 1: off.
    ``stale_support_overlap`` (in [0, 1]; default 0.99; 1: off): with a
    :class:`~fedtrail.valuation.standing.History`, a sparse update (more than half of its values
    0 outside its all-zero rows and columns) is FREE_RIDER (stale) when more than this share of
    its nonzero entries are a free-rider reference's largest of their tensor
    (:func:`~fedtrail.protocol.duplicates.support_overlap`, the duplicate rule's
    ``support_overlap`` test): an earlier update resent through ``topk8`` with noise added to the
    entries it keeps passes ``stale_support_cosine`` (attack a93 ``stale``); honest ``topk8``
    updates came to 0.8953 at most against their references (40 sites of at least 10 images;
    ``scripts/bench/support_overlap.py``; docs/results.md *Sparse noisy copies*).
    A recorded set without it means 1: off.
    ``span_residual`` (in [0, 1); default 0, off; 0.01 measured, :data:`SPAN_RESIDUAL`): with a
    :class:`~fedtrail.valuation.standing.History`, an update the other tests leave whose
    residual outside the span of every free-rider reference, over its norm
    (:func:`~fedtrail.valuation.freeride.span_residuals`, with a ridge of 1e-6), is below it is
    FREE_RIDER: a linear mixture of earlier public updates (the mean of two sites' previous
    updates, the sum of the last two global deltas: ``scripts/attacks/a2_stale_mix.py`` ``mix2``,
    ``twoago``, paid an honest share before). Honest updates measured at 0.060 and more (10
    sites; 0.16 with 5), exact mixtures at 1.4e-3 and less (docs/results.md *Linear mixtures*).
    Noise
    added to a mixture raises its residual at no cost to the copier: this stops mixtures as
    they are only. Off by default: the
    honest margin shrinks with the sites (20 sites, 63 references: an honest update at 0.0114,
    1.14x the threshold), so a larger federation would zero honest sites; turning it on takes
    the sites' consent (``span_residual = 0.01`` under ``[accept]``). A recorded set without it
    means 0: off.
    ``size_norm_z`` (>= 0; default :data:`SIZE_NORM_Z`, 0: off): a second, tighter norm screen
    beside ``max_norm_z``: an update whose robust norm z, after the uncapped allowance of its
    claimed count (``max(1, n / m)``, :meth:`size_screen_z`), is above it is OUTLIER_NORM too.
    It only adds rejections (the allowance is at most what ``max_norm_z`` on the raw norm
    already tolerates), so a site that inflates its count gains back at most today's screen.
    A recorded set without it means 0: off.
    ``size_norm_count`` (>= 0; default :data:`SIZE_NORM_COUNT`, 0: none): the largest median
    count ``size_norm_z``'s allowance is judged against: ``max(1, n / min(m, size_norm_count))``
    (:meth:`size_screen_allowance`). ``m`` is the sites' own claims, so colluders claiming more
    (each within ``max_sample_ratio``) raise it and take an honest large site's allowance away
    (h-309; ``scripts/bench/size_norm_collusion.py``: 19-45 of 100 sites); under the count the
    terms record (the coordinator's typical site, as it knows the cohorts it registers caps
    for) they raise it to that count at most. It only lowers the reference, so it only takes
    rejections of ``size_norm_z`` back (never past the raw screen). A recorded set without it
    means 0: the round's median claim alone (session 62's rule).
    """

    min_cosine: float = -0.5
    max_norm_z: float = 10.0
    norm_scale_floor: float = 0.25
    min_gain: float = 0.0
    min_robust_sites: int = 3
    demote_scale: float = 0.5
    free_rider_norm: float = 0.01
    stale_cosine: float = 0.99999
    stale_distance: float = 1e6
    stale_rounds: int = 3
    max_sample_ratio: float = 10.0
    max_norm_ratio: float = 0.0
    small_norm_ratio: float = 0.0
    credit_cosine: float = -0.7
    sample_median_self: int = 1
    dp_spend_check: int = 1
    norm_size_cap: float = 1.0
    tiny_size_power: float = 2.0
    tiny_size_reference: float = 150.0
    tiny_size_own: int = 1
    dp_noise_check: int = 2
    relief_cosine: float = -0.7
    boost_clip: float = BOOST_CLIP
    warm_up_floor: float = WARM_UP_FLOOR
    warm_up_scope: int = WARM_UP_SCOPE
    record_floor: float = RECORD_FLOOR
    white_noise_z: float = 1000.0
    shaped_noise_z: float = 1000.0
    block_noise_z: float = BLOCK_NOISE_Z
    dp_copy_z: float = 0.0
    stale_support_cosine: float = 0.999995
    stale_support_overlap: float = 0.99
    span_residual: float = 0.0
    size_norm_z: float = SIZE_NORM_Z
    size_norm_count: float = SIZE_NORM_COUNT

    def __post_init__(self) -> None:
        if not 0.0 <= _number("size_norm_z", self.size_norm_z) < math.inf:
            raise ConfigError(f"size_norm_z must be finite and >= 0, got {self.size_norm_z}")
        if not 0.0 <= _number("size_norm_count", self.size_norm_count) < math.inf:
            raise ConfigError(
                f"size_norm_count must be finite and >= 0 (0: none), got {self.size_norm_count}"
            )
        if not 0.0 <= _number("span_residual", self.span_residual) < 1.0:
            raise ConfigError(f"span_residual must lie in [0, 1), got {self.span_residual}")
        if not 0.0 <= _number("stale_support_overlap", self.stale_support_overlap) <= 1.0:
            raise ConfigError(
                f"stale_support_overlap must lie in [0, 1], got {self.stale_support_overlap}"
            )
        if not 0.0 <= _number("stale_support_cosine", self.stale_support_cosine) <= 1.0:
            raise ConfigError(
                f"stale_support_cosine must lie in [0, 1], got {self.stale_support_cosine}"
            )
        if not 0.0 <= _number("shaped_noise_z", self.shaped_noise_z) < math.inf:
            raise ConfigError(f"shaped_noise_z must be finite and >= 0, got {self.shaped_noise_z}")
        if not 0.0 <= _number("block_noise_z", self.block_noise_z) < math.inf:
            raise ConfigError(f"block_noise_z must be finite and >= 0, got {self.block_noise_z}")
        if not 0.0 <= _number("dp_copy_z", self.dp_copy_z) < math.inf:
            raise ConfigError(f"dp_copy_z must be finite and >= 0, got {self.dp_copy_z}")
        if not 0.0 <= _number("white_noise_z", self.white_noise_z) < math.inf:
            raise ConfigError(f"white_noise_z must be finite and >= 0, got {self.white_noise_z}")
        if not -1.0 <= _number("min_cosine", self.min_cosine) <= 1.0:
            raise ConfigError(f"min_cosine must lie in [-1, 1], got {self.min_cosine}")
        if not -1.0 <= _number("credit_cosine", self.credit_cosine) <= 1.0:
            raise ConfigError(f"credit_cosine must lie in [-1, 1], got {self.credit_cosine}")
        if not -1.0 <= _number("relief_cosine", self.relief_cosine) <= 1.0:
            raise ConfigError(f"relief_cosine must lie in [-1, 1], got {self.relief_cosine}")
        if _number("max_norm_z", self.max_norm_z) <= 0:
            raise ConfigError(f"max_norm_z must be positive, got {self.max_norm_z}")
        if _number("norm_scale_floor", self.norm_scale_floor) <= 0:
            raise ConfigError(f"norm_scale_floor must be positive, got {self.norm_scale_floor}")
        _number("min_gain", self.min_gain)
        m = self.min_robust_sites
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ConfigError(f"min_robust_sites must be a positive integer, got {m!r}")
        if _number("demote_scale", self.demote_scale) <= 0:
            raise ConfigError(f"demote_scale must be positive, got {self.demote_scale}")
        if not 0.0 <= _number("free_rider_norm", self.free_rider_norm) < 1.0:
            raise ConfigError(f"free_rider_norm must lie in [0, 1), got {self.free_rider_norm}")
        if not 0.0 <= _number("stale_cosine", self.stale_cosine) <= 1.0:
            raise ConfigError(f"stale_cosine must lie in [0, 1], got {self.stale_cosine}")
        if _number("stale_distance", self.stale_distance) < 0:
            raise ConfigError(f"stale_distance must be non-negative, got {self.stale_distance}")
        lag = self.stale_rounds
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
            raise ConfigError(f"stale_rounds must be a positive integer, got {lag!r}")
        if _number("max_sample_ratio", self.max_sample_ratio) <= 1.0:
            raise ConfigError(f"max_sample_ratio must be above 1, got {self.max_sample_ratio}")
        m = self.sample_median_self
        if isinstance(m, bool) or m not in (0, 1):
            raise ConfigError(f"sample_median_self must be 0 or 1, got {m!r}")
        d = self.dp_spend_check
        if isinstance(d, bool) or d not in (0, 1):
            raise ConfigError(f"dp_spend_check must be 0 or 1, got {d!r}")
        d = self.dp_noise_check
        if isinstance(d, bool) or d not in (0, 1, 2):
            raise ConfigError(f"dp_noise_check must be 0, 1 or 2, got {d!r}")
        k = _number("max_norm_ratio", self.max_norm_ratio)
        if k != 0 and k < 1:
            raise ConfigError(f"max_norm_ratio must be 0 (off) or at least 1, got {k}")
        if not 0.0 <= _number("small_norm_ratio", self.small_norm_ratio) < 1.0:
            raise ConfigError(f"small_norm_ratio must lie in [0, 1), got {self.small_norm_ratio}")
        if not 0.0 <= _number("boost_clip", self.boost_clip) <= 1.0:
            raise ConfigError(f"boost_clip must lie in [0, 1], got {self.boost_clip}")
        if not 0.0 <= _number("warm_up_floor", self.warm_up_floor) <= 1.0:
            raise ConfigError(f"warm_up_floor must lie in [0, 1], got {self.warm_up_floor}")
        w = self.warm_up_scope
        if isinstance(w, bool) or w not in (0, 1, 2):
            raise ConfigError(f"warm_up_scope must be 0, 1 or 2, got {w!r}")
        if _number("record_floor", self.record_floor) < 0.0:
            raise ConfigError(
                f"record_floor must be a finite number >= 0 (0: off), got {self.record_floor}"
            )
        if _number("norm_size_cap", self.norm_size_cap) < 1.0:
            raise ConfigError(f"norm_size_cap must be at least 1, got {self.norm_size_cap}")
        if _number("tiny_size_power", self.tiny_size_power) < 0.0:
            raise ConfigError(f"tiny_size_power must be non-negative, got {self.tiny_size_power}")
        if isinstance(self.tiny_size_own, bool) or self.tiny_size_own not in (0, 1):
            raise ConfigError(f"tiny_size_own must be 0 or 1, got {self.tiny_size_own!r}")
        if _number("tiny_size_reference", self.tiny_size_reference) < 0.0:
            raise ConfigError(
                f"tiny_size_reference must be non-negative, got {self.tiny_size_reference}"
            )

    def norm_allowance(self, own: int, counts: Sequence[int]) -> float:
        """How many times the median norm an update claiming ``own`` samples may reach before
        the norm screen judges it longer than the median (``counts``: the round's usable
        updates' claimed counts, ``own`` among them): ``min(norm_size_cap, max(1, size))``."""
        return min(self.norm_size_cap, max(1.0, size_factor(own, counts)))

    def size_screen_allowance(self, own: int, counts: Sequence[int]) -> float:
        """The allowance :meth:`size_screen_z` divides the norm by: ``max(1, n / r)``, ``n`` =
        ``own`` (the update's claimed count) and ``r`` the median ``m`` of ``counts`` (the
        round's usable updates' claimed counts, ``own`` among them), or ``size_norm_count``
        where that is positive and below ``m`` (colluders' claims raise ``m``, not the terms'
        count); 1 when ``r`` is not positive. Uncapped: honest updates grow with a site's local
        steps, and the boosted updates the raw screen lets through under label skew come from
        small sites (README *Accuracy*, h-301)."""
        median = float(statistics.median(counts)) if counts else 0.0
        if self.size_norm_count > 0.0:
            median = min(median, float(self.size_norm_count))
        return max(1.0, own / median) if median > 0 else 1.0

    def size_screen_z(self, stats: RobustStats, own: int, counts: Sequence[int]) -> float | None:
        """The robust norm z ``size_norm_z`` judges (None when it is off): the update's norm
        divided by :meth:`size_screen_allowance`, on the round's same median and scale
        (:func:`size_adjusted_z`)."""
        if self.size_norm_z <= 0.0:
            return None
        return size_adjusted_z(stats, self.size_screen_allowance(own, counts))

    def norm_outlier(
        self, stats: RobustStats, own: int, counts: Sequence[int]
    ) -> tuple[float, float, float | None, bool]:
        """The norm screen's verdict on one update (the thresholds applied): ``(z, allowance,
        size_z, outlier)``: the z ``max_norm_z`` judges after :meth:`norm_allowance`, that
        allowance, :meth:`size_screen_z` (None when ``size_norm_z`` is off), and whether either
        is above its threshold. The service's :meth:`screen` and ``audit verify`` both read it."""
        allowance = self.norm_allowance(own, counts)
        z = size_adjusted_z(stats, allowance)
        size_z = self.size_screen_z(stats, own, counts)
        outlier = z > self.max_norm_z or (size_z is not None and size_z > self.size_norm_z)
        return z, allowance, size_z, outlier

    def screen(
        self, candidates: Sequence[Candidate], robust: Mapping[str, RobustStats]
    ) -> dict[str, tuple[Reason, str]]:
        """Steps 1-2: the reason (OK for updates that pass) and its detail per site."""
        checked = sum(1 for c in candidates if c.usable) >= self.min_robust_sites
        counts = [c.num_samples for c in candidates if c.usable]
        out: dict[str, tuple[Reason, str]] = {}
        for c in candidates:
            if not c.usable:
                status = c.status if c.status is not Reason.OK else Reason.MALFORMED
                out[c.site] = (status, c.detail or status.description)
                continue
            r = robust.get(c.site)
            if r is None:
                raise ConfigError(f"no robust statistics for usable candidate {c.site}")
            z, allowance, size_z, outlier = self.norm_outlier(r, c.num_samples, counts)
            if checked and r.cosine < self.min_cosine:
                out[c.site] = (
                    Reason.OUTLIER_DIRECTION,
                    f"cosine {r.cosine:.3f} to the median update is below {self.min_cosine}",
                )
            elif checked and outlier and z <= self.max_norm_z:
                assert size_z is not None
                size = self.size_screen_allowance(c.num_samples, counts)
                out[c.site] = (
                    Reason.OUTLIER_NORM,
                    f"norm {r.norm:.4g} is {r.norm / r.median_norm:.1f}x the median "
                    f"{r.median_norm:.4g} (robust z {r.norm_z:.1f}, {size_z:.1f} after the "
                    f"{size:.3g}x its {c.num_samples} claimed samples excuse > size_norm_z "
                    f"{self.size_norm_z:g})"
                    if r.median_norm > 0
                    else f"norm {r.norm:.4g}, robust z {size_z:.1f} > size_norm_z "
                    f"{self.size_norm_z:g}",
                )
            elif checked and z > self.max_norm_z:
                excused = (
                    f", {z:.1f} after the {allowance:.3g}x its {c.num_samples} claimed samples "
                    "excuse"
                    if allowance > 1.0
                    else ""
                )
                out[c.site] = (
                    Reason.OUTLIER_NORM,
                    f"norm {r.norm:.4g} is {r.norm / r.median_norm:.1f}x the median "
                    f"{r.median_norm:.4g} (robust z {r.norm_z:.1f}{excused} > {self.max_norm_z})"
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
            scorer = None
            if value is not None:
                scorer = method if values is not None else "cosine"
            out.append(
                _site_valuation(
                    c,
                    robust.get(c.site),
                    checked=checked,
                    value=value if values is not None else None,
                    method=scorer,
                    score=score,
                    reason=reason,
                    detail=detail,
                )
            )
        return out

    def passed(
        self, candidates: Sequence[Candidate], robust: Mapping[str, RobustStats]
    ) -> frozenset[str]:
        """The sites whose updates pass :meth:`screen` (reason OK)."""
        return passed_sites(self.screen(candidates, robust))

    def floor_records(
        self,
        candidates: Sequence[Candidate],
        robust: Mapping[str, RobustStats],
        accumulated: Mapping[str, float],
        *,
        passed: Collection[str],
    ) -> dict[str, float]:
        """``accumulated`` (the records after this round's shares) with ``record_floor``
        applied (:func:`~fedtrail.valuation.standing.floored_records`) to the sites
        :meth:`settle` scores from them, ``passed`` (those that passed :meth:`screen`: the
        caller has screened the round already, and screened it again here before session 58),
        each with its cosine to the median update when the data-free thresholds applied, as
        :meth:`settle` reads it."""
        if self.record_floor <= 0.0:
            return dict(accumulated)
        checked = sum(1 for c in candidates if c.usable) >= self.min_robust_sites
        scored: dict[str, float | None] = {}
        for c in candidates:
            if c.site in passed:
                r = robust.get(c.site)
                scored[c.site] = r.cosine if checked and r is not None else None
        return floored_records(
            accumulated,
            scored,
            record_floor=self.record_floor,
            demote_scale=self.demote_scale,
            relief_cosine=self.relief_cosine,
        )

    def settle(
        self,
        candidates: Sequence[Candidate],
        robust: Mapping[str, RobustStats],
        values: Mapping[str, float],
        accumulated: Mapping[str, float],
        *,
        method: str | None,
        warm_up: bool = False,
        screened: Mapping[str, tuple[Reason, str]] | None = None,
        scoped: frozenset[str] | None = None,
    ) -> list[SiteValuation]:
        """Scores and reasons for every candidate from the accumulated values (see the module
        docstring): ``values`` holds this round's validation value of every update that passed
        :meth:`screen`, ``accumulated`` every site's value after this round (0 when absent).
        ``warm_up`` with ``warm_up_floor`` below 1: ``accumulated`` holds the warm-up's own
        shares (the caller accumulates them, :func:`~fedtrail.valuation.round.value_round`)
        and each score below the full one is raised to at least ``warm_up_floor`` of it
        (:func:`~fedtrail.valuation.standing.floored_score`); with ``scoped`` (``warm_up_scope``
        1: :func:`~fedtrail.valuation.standing.outweighing`; None under 0 and 2) only those
        sites are, every other passer keeps the full score. ``screened``: :meth:`screen`'s
        verdicts on the same inputs when the caller has them (screened again otherwise)."""
        checked = sum(1 for c in candidates if c.usable) >= self.min_robust_sites
        if screened is None:
            screened = self.screen(candidates, robust)
        provisional = warm_up and self.warm_up_floor < 1.0
        reference = demotion_reference(
            float(accumulated.get(c.site, 0.0))
            for c in candidates
            if screened[c.site][0] is Reason.OK
        )
        against = "" if reference == 0 else f" against the median site's {reference:.4g}"
        out = []
        for c in candidates:
            reason, detail = screened[c.site]
            value = values.get(c.site)
            score = 0
            if reason is Reason.OK:
                if value is None or not math.isfinite(value):
                    raise ConfigError(f"no finite validation value for {c.site}")
                total = float(accumulated.get(c.site, 0.0))
                r = robust.get(c.site)
                own = relieved_reference(
                    reference,
                    r.cosine if checked and r is not None else None,
                    relief_cosine=self.relief_cosine,
                )
                score = demoted_score(total - own, demote_scale=self.demote_scale)
                if provisional:
                    score = floored_score(score, self.warm_up_floor)
                    if scoped is not None and c.site not in scoped:
                        score = SCORE_SCALE  # warm_up_scope 1: it outweighs no vouched site
                unrelieved = (
                    ""
                    if own == reference
                    else f" (not against the median site's {reference:.4g}: cosine "
                    f"{r.cosine if r is not None else math.nan:.3f} to the median update is "
                    f"below {self.relief_cosine:g})"
                )
                what = (
                    f"{method or 'validation'} value {value:.4g}, accumulated {total:.4g}"
                    f"{against if own == reference else ''}{unrelieved}"
                )
                if score == 0:
                    reason = Reason.LOW_QUALITY
                    detail = f"{what}: {self.demote_scale:g} or more below, consistently harmful"
                elif score < SCORE_SCALE:
                    detail = f"{what}: below, demoted to {score / SCORE_SCALE:.1%}"
                    if provisional:
                        detail += f" (warm-up: floor {self.warm_up_floor:g})"
                else:
                    detail = f"{what}: not below, full score"
                if checked and r is not None and value > 0 and r.cosine < self.credit_cosine:
                    detail = (
                        f"{detail}; this round's positive value not credited: cosine "
                        f"{r.cosine:.3f} to the median update is below {self.credit_cosine:g}"
                    )
                if score > 0 and checked and r is not None:
                    factor = norm_factor(
                        r.norm,
                        r.median_norm,
                        max_norm_ratio=self.max_norm_ratio,
                        small_norm_ratio=self.small_norm_ratio,
                    )
                    if factor < 1.0:
                        score = scaled_score(score, factor)
                        bound = (
                            f"above {self.max_norm_ratio:g}x"
                            if r.norm > r.median_norm
                            else f"below {self.small_norm_ratio:g}x"
                        )
                        detail = (
                            f"{detail}; norm {r.norm / r.median_norm:.3g}x the median "
                            f"{r.median_norm:.4g} ({bound}), keeps {factor:.1%} of it: "
                            f"score {score / SCORE_SCALE:.1%}"
                        )
                    boost = boost_factor(
                        r.norm, r.median_norm, r.cosine, boost_clip=self.boost_clip
                    )
                    if boost < 1.0:
                        score = scaled_score(score, boost)
                        detail = (
                            f"{detail}; length along the median update "
                            f"{r.cosine * r.norm / r.median_norm:.3g}x the median norm (above "
                            f"1/boost_clip = {1 / self.boost_clip:.3g}x), keeps {boost:.1%} of "
                            f"it: score {score / SCORE_SCALE:.1%}"
                        )
            out.append(
                _site_valuation(
                    c,
                    robust.get(c.site),
                    checked=checked,
                    value=value,
                    method=method if value is not None else None,
                    score=score,
                    reason=reason,
                    detail=detail,
                )
            )
        return out


def _site_valuation(
    c: Candidate,
    r: RobustStats | None,
    *,
    checked: bool,
    value: float | None,
    method: str | None,
    score: int,
    reason: Reason,
    detail: str,
) -> SiteValuation:
    """One site's verdict with its robust statistics (both combiners build it the same way)."""
    return SiteValuation(
        site=c.site,
        num_samples=c.num_samples,
        status=c.status,
        cosine=None if r is None else r.cosine,
        norm=None if r is None else r.norm,
        norm_z=None if r is None else r.norm_z,
        median_norm=None if r is None else r.median_norm,
        robust_checked=checked and r is not None,
        value=value,
        method=method,
        score=score,
        reason=reason,
        detail=detail,
    )


HISTORY_COMBINER: Final = Combiner(min_cosine=-1.0, max_norm_z=20.0)
"""The thresholds measured for valuation with a :class:`~fedtrail.valuation.standing.History`
(metric ``"balanced_loss"``): the direction screen off (``min_cosine`` -1: under label skew the
-0.5 screen rejected honest minority-class sites and, with them, the history path failed at
Dirichlet alpha 1; sign-flipped updates are left to the validation game and the accumulated
value) and the norm screen loosened to a robust z of 20 (honest updates measured up to 5.7x the
median norm under strong skew). Everything else as :class:`Combiner`'s defaults, so the
magnitude weighting (:func:`~fedtrail.valuation.standing.norm_factor`) is off. Measured with the
accuracy benchmark (5 sites, Dirichlet alpha 1, 10 rounds): ``small_norm_ratio`` 0.05 cut only
faulty sites (the 0.5% noise free-rider in 3 rounds of 50, 40%-noisy sites with updates at
0.02-0.09x the median in 4) but moved scenario (b)'s seed 3 onto another trajectory whose
final model has test AUC 0.876 against 0.908 without it (per-round AUC swings 0.84-0.91 on both),
which misses issue 12's per-seed AUC bar, while scenario (e)'s free-rider bar holds without it
(worst seed 0.13x FedAvg's share). ``max_norm_ratio`` 1 (clipping at the median norm) raised
the noisy sites' share in (b) (seed 1, first 5 rounds: 0.197 against 0.162): their updates are
small, the honest ones were clipped; and under skew honest updates reach a x10 poisoner's
norms (x10 site 3.4-4.3x the median at alpha 3, honest sites up to 7.6x at alpha 1). With
sites of similar data (IID norms within 1.12x the median) a bound of 2 costs honest sites
nothing and caps a scaled update's pull."""


def default_combiner(standing: bool) -> Combiner:
    """The thresholds a round uses unless its terms name others: :data:`HISTORY_COMBINER` for
    valuation with standing, :class:`Combiner`'s defaults for per-round valuation."""
    return HISTORY_COMBINER if standing else Combiner()


@dataclass(frozen=True, kw_only=True)
class RoundValuation:
    """One round's valuation: per-site results and the round-level facts of the game."""

    sites: list[SiteValuation]
    method: str | None
    """What the scores come from: the validation game actually played (``"shapley"`` may have
    switched to ``"mc_shapley"``), or ``"cosine"`` without a validation split and in the
    data-free fallback; None when no update passed the screening."""
    evaluations: int = 0
    """Coalition models evaluated on the validation split."""
    permutations: int = 0
    """Monte-Carlo permutations sampled (0 otherwise)."""
    v_empty: float | None = None
    """Validation metric of the round's global model (None when no game was played)."""
    v_full: float | None = None
    """Validation metric of the coalition of every update that passed the screening."""
    combiner: Combiner = field(default_factory=Combiner)
    fallback: bool = False
    """No update improved the validation metric, so the scores come from the data-free
    screening (``method`` ``"cosine"``); ``evaluations`` and the game's values still describe
    the validation game that was played."""
    accumulated: dict[str, float] | None = None
    """With a :class:`~fedtrail.valuation.standing.History`: every site's accumulated value after
    this round (the previous ones plus this round's normalised values), for the next round's
    history and the round log; None without one."""
    square_partials: dict[str, npt.NDArray[np.float64]] | None = field(
        default=None, repr=False, compare=False
    )
    """With a history: site -> the free-rider screen's partial sums of the squares of its
    update's trainable values (:meth:`~fedtrail.valuation.rows.Rows.square_partials`), for the
    screen of a later round that holds the update as a reference; None without one."""
    normalised: dict[str, float] | None = None
    """This round's normalised values as accumulated (None: not accumulated — the warm-up round,
    no history, or a round whose values are all zero)."""


def any_positive(valuations: Sequence[SiteValuation]) -> bool:
    """Whether at least one site has a positive score (then the on-chain total weight
    ``sum n_i * s_i`` is positive too: the round's checks give no positive score to a site with
    zero samples)."""
    return any(v.score > 0 for v in valuations)
