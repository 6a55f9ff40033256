"""Free-riders: updates that carry no new training, recognised without data.

A free-rider wants the weight (and the reputation) of a participant without training. Measured
through the old valuation: a zero delta, tiny Gaussian noise or a resent earlier update each got
more weight than FedAvg gives them, because anything that shortens an overshooting averaged step
lowers the validation loss, and a zero update's cosine 0 passed the direction screen. So they
are caught before the validation game:

* **zero or tiny**: L2 norm below ``min_norm_ratio`` (default 1%) of the lower median norm of
  the round's usable updates (the lower of the two middle ones for an even count, so with two
  updates a huge one cannot make the other look tiny; honest updates measured at 0.3-5.7x the
  median under label skew);
* **tiny without a majority**: with two updates the lower median is the smaller one itself, so
  the rule above cannot see a tiny one. Two scales that do not depend on the round's other
  updates catch it too: the global model's own norm (below ``min_model_ratio`` of it; honest
  updates of the bundled SmallCNN measured at 1.07-35% of it, so the default 0.1% of
  :func:`fedtrail.valuation.value_round` leaves a margin of 10x; but IID 150-image sites of
  the attack harness went down to 0.26% in rounds 1-5, a margin of 2.6x) and the site's own
  previous update, when the references hold one (below ``min_norm_ratio`` of it; an honest
  update was measured at 31% of its previous one or more, a margin of 31x). The floor against
  the model is lowered to ``min(1, n / m) ** size_power`` of itself for an update claiming
  ``n`` samples where the round's usable updates claim a median ``m`` (its own among them;
  :attr:`~fedtrail.valuation.combine.Combiner.tiny_size_power`): a small site takes few local
  steps, so its honest update is short (measured with ``scripts/bench/honest_screens.py``:
  beside four 150-image sites, 4 seeds x 5 rounds, a 20-image site fell to 0.023% of the
  model's norm and was zeroed in 7 of 20 rounds, a 60-image one to 0.057% and 8 of 20, dense
  or topk8 alike), and a free-rider that claims few samples to pass the lower floor is
  weighted by that small count (noise at the full floor, which costs nothing, passed it
  before as now). When the round's median claim ``m`` is itself below ``size_reference``
  (:attr:`~fedtrail.valuation.combine.Combiner.tiny_size_reference`, 150: the sites the 0.1%
  was set from), the factor is ``min(1, n / m) * m / size_reference`` before the power: with
  every site small the median-relative factor is 1 for all, and 58-94% of honest site-rounds
  were zeroed (``scripts/bench/small_sites.py``: 10 sites of 23 images, 100 of 20-30). But the
  claims are the sites' own: colluders holding half a round's usable updates (white-noise
  Sybils, FREE_RIDER themselves, count) that claim 20 each lowered a data-less rider's floor
  56x, and its weight-decay step at 0.01% of the model's norm, claiming 150, was paid 0.333 of
  the round (``scripts/attacks/a123_median_claim_floor.py``). So in terms with
  :attr:`~fedtrail.valuation.combine.Combiner.tiny_size_own` (1, the default) every round
  reads each site's own claim alone, ``min(1, n / size_reference)`` (a site of ``n`` images
  takes ``n / size_reference`` of the local steps whatever the others claim): colluders
  claiming *more* (600, within ``max_sample_ratio``) would otherwise raise the median and lower
  a rider claiming 150 to ``(150 / 600) ** 2`` of the floor, 16x; with it the median decides
  nothing;
* **stale**: cosine above ``stale_cosine`` (0.99999) *and* distance below ``stale_distance`` of
  the norm of an earlier update it may copy — any site's update of the latest ``stale_rounds``
  finalized rounds or a global delta they applied (the references of
  :class:`~fedtrail.valuation.standing.History`). The distance condition is off in effect by
  default (1e6 times the reference's norm): a copy scaled by any positive factor is stale (with
  the 0.9999 and 1% of earlier logs, a copy of another site's update scaled by 1.05 was paid
  above an honest share). Honest updates come close, closest when small sites of mostly one
  class keep pushing one way: measured with ``scripts/bench/stale_cosine.py`` (FedAvg
  trajectories of the bundled data, 2 seeds, cosine to every reference up to 3 rounds back), the
  largest honest cosine was 0.976 with 5 sites (alpha 1 and 100, 8 rounds), 0.993 with 10 and
  0.99982 with 20 sites at alpha 1 (12 rounds; sites of about 60 images, 85-90% of one label,
  against their own previous update; distance 2.4%, so the 1% bound had kept them apart).
  0.99999 leaves a margin of 18x in ``1 - cosine`` over that. A copy plus Gaussian noise escapes
  once the noise reaches ``sqrt(1 / stale_cosine**2 - 1)`` of the copy's norm (0.45%; 1.41% at
  0.9999, 1% under the old distance bound): noise costs a copier nothing, so this screen stops
  plain and scaled resends only; a copy plus white noise is the next check's.
  With ``stale_support_cosine`` below 1 (0.999995 in terms written now), an update that leaves
  out some of a reference's nonzero entries is stale too when that reference restricted to
  its nonzero entries, or its codes, has cosine above it to the update
  (:func:`~fedtrail.protocol.duplicates.support_copy`, a90's duplicate test, through
  :func:`~fedtrail.protocol.duplicates.support_copy_of`): an earlier update resent through
  ``topk8`` at a fraction below 1 was 0.995-0.9995 from it on the whole update and paid
  (attack a91); honest ``topk8`` updates came to 0.992 at most (fractions 0.05, 0.5 and 1,
  ``scripts/bench/stale_cosine.py --compression topk8``). Only updates with an exact zero are
  compared, on the pairs the support screen leaves (+0.13-0.18 s per 10-site round,
  ``scripts/bench/freeride_cost.py --sparse``).

* **white noise**: with ``white_z`` above 0, an update whose own structure statistic
  (:func:`structure_z`), or that of its residual from the reference it is closest to (the update
  minus the reference scaled to fit it best), is below ``white_z`` is white noise or a copy plus
  white noise: the stale screen's cosine misses a copy plus Gaussian noise of more than 0.45% of
  its norm, and noise costs a copier nothing (scenario (h) of ``scripts/bench/accuracy.py``:
  a copy of the last global delta plus 2% or 20% noise was paid above its sample share in every
  seed). Fresh Gaussian noise has the same variance in every coordinate, no per-tensor, per-row
  or per-column profile and no correlation between neighbouring kernel taps; an honest
  update's residual from any earlier update has all of them. Measured with
  ``scripts/bench/noisy_copy.py`` (honest FedAvg trajectories of the bundled data, the
  statistic against each update's closest reference up to 3 rounds back): honest updates
  scored far above any white copy (see docs/results.md *Noisy copies*), copies plus white noise of
  2% to
  100% of their norm below 5. Updates that declare DP-SGD (``declared_noise``) are exempt:
  their Gaussian noise is declared, and :func:`fedtrail.ml.dp_noise.noise_breach` judges it
  (an honest DP-SGD update at epsilon 1 scored below 10).

* **shaped noise**: with ``shaped_z`` above 0, the same residual (from the closest reference,
  best-scaled) divided coordinate by coordinate by that reference's magnitude (where it is not
  0; :func:`shaped_residual_z`) has a structure statistic below ``shaped_z``: a copy plus
  Gaussian noise scaled to the copy's magnitude there (the adaptive copier of scenario (i),
  whose noise has the copy's per-tensor, per-row and per-column profile and passes the white
  test) leaves i.i.d. values, an honest update's residual does not (measured with
  ``scripts/bench/noisy_copy.py``; docs/results.md *Noisy copies*). DP-declared updates are exempt
  as above, and so are sparse updates (more than half exact zeros, ``topk8``: honest ones
  score like copies on it). Not a defence against a sparse copier, noise of another shape (a
  smoothed magnitude, a copy of other rows), a copy of a linear mixture of references (the
  closest single reference leaves the mixture's other part, structured), or noise so large
  that another reference is the closest.

* **DP-declared copies**: with ``dp_copy_z`` above 0, an update that declares DP-SGD (exempt
  from the two tests above) whose :func:`dp_copy_statistic` against the references is at least
  ``dp_copy_z`` is a copy plus its declared noise (attack a60). Off by default: measured with
  ``scripts/bench/dp_copy.py``, honest DP-SGD updates at epsilon 8 reached 64.5 (their own
  previous update, small skewed sites, 3 rounds) while copies of the last global delta plus
  one update's noise fell to 69 at 20 sites (docs/results.md *DP-declared copies*).

* **linear mixtures**: with ``span_residual`` above 0, an update the tests above leave whose
  distance from the span of every reference, over its norm (with a ridge of 1e-6 on the
  coefficients: :func:`span_residuals`), is below it: the mean of two sites' previous updates
  or the sum of the last two global deltas (``scripts/attacks/a2_stale_mix.py`` ``mix2``,
  ``twoago``) leave about 1e-3 (the ridge's part), honest updates 0.16 and more
  (``scripts/bench/noisy_copy.py``; docs/results.md *Linear mixtures*). The residual from the
  closest
  single reference, which the noise tests read, is the mixture's other part, structured, so
  those tests pay a mixture. Noise added to a mixture raises its residual at no cost to the
  copier: this stops mixtures as they are, not plus noise. Cost: the references' Gram matrix
  (each entry once) and a solve of their count, per round (``scripts/bench/freeride_cost.py
  --span``).

Copies of another site's update in the same round are the DUPLICATE check's job (exact bytes).

Cost: a round of n sites with a history has about n + 1 references per round looked back
(``stale_rounds``), so n(n + 1) stale pairs per such round (10,100 at 100 sites). Every norm,
cosine and distance that decides or is quoted is computed as always, exactly as
:func:`~fedtrail.ml.aggregation.deterministic_dot` gives it (on rows read from the tensors one
at a time, :class:`~fedtrail.valuation.rows.Rows`), but the pairs are first screened with one
Gram matrix (torch's matrix products of the flattened updates and references, a block of columns
at a time, on torch's threads; its last bits depend on the BLAS build, the blocks and the thread
count): a pair is skipped only when its cosine or its distance is certainly on the non-stale
side of its threshold, by a margin of ``1024 (width + 2) 2**-53`` (relative to the norms) that
is about 1000 times the worst-case rounding error of any summation order of the products
(Higham's ``gamma_width``); pairs whose norms lie outside ``[1e-100, 1e100]`` (where underflow
or overflow could break that bound) are always computed exactly. So the decisions and the
reasons are those of the pair-by-pair loop, bit for bit, whatever the thread count. Before the
Gram matrix, a cheaper upper bound on every dot product screens the pairs the same way: the
norms' own partial sums of squares split each row into 1024 groups (values ``j``, ``j + 1024``,
...), and by Cauchy-Schwarz within each group ``u . r <= sum_j |u_j| |r_j|``, a product of two
small matrices. Unrelated updates are far from parallel in most groups (measured at 10 sites,
the bundled SmallCNN: at most 0.994 against the threshold 0.99999), so the Gram matrix is
computed only when a pair is left (a copy; saved ~2 ms of a 10-site validator round); the
white-noise screen's closest reference reads the same Gram matrix (computed then if the bound
settled every pair). The structure statistics stop at the first of their four scores that
reaches the screen's threshold (:func:`_structure`'s ``stop``): a statistic at or above it is
neither quoted nor used, one below it is computed in full, so the reasons are the same bit for
bit (``tests/fedtrail/valuation/test_freeride_reference.py``; measured x0.70 the time of the
screen before at 10 and 100 sites, ``scripts/bench/freeride_cost.py --against``). Before
any fixed-order sum, a lower bound on the tensors' and the rows' scores from sums in any order
(:func:`_bound`: torch's, with room for their error and the exact score's rounding) is
compared with the threshold; honest updates scored 10**4 to 10**7 against 1000, so their
fixed-order statistics are not computed at all. A reference is widened, and its magnitude taken,
once per screen for every update it is closest to (:class:`_Widened`) (measured x0.80 the
screen's CPU time of main at 10 sites, in one process, load 8-9: the README, *Peer scoring time
per site*). The sparse test is the duplicate rule's (:func:`fedtrail.protocol.duplicates.sparse`,
on the update as sent: widening keeps its zeros), computed once per update for both tests that
read it (the kept-entries test and the shaped test); the shaped test's ``!= 0`` masks are taken
only for the updates it judges.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationError, deterministic_dot, deterministic_sum
from fedtrail.protocol.duplicates import kept_largest_of, sparse, support_copy_of
from fedtrail.valuation.base import size_factor
from fedtrail.valuation.rows import Rows

__all__ = [
    "BLOCK_CEILING",
    "BLOCK_RUN",
    "DP_COPY_STEP",
    "SPAN_RIDGE",
    "block_ceiling",
    "block_z_of",
    "dp_copy_statistic",
    "duplicate_residual_z",
    "free_riders",
    "own_reference",
    "shaped_residual_z",
    "span_residuals",
    "structure_z",
]

_SLACK: Final = 1024.0
"""The screen's margin, in units of the worst-case relative rounding error of a dot product."""

_SAFE_NORMS: Final = (1e-100, 1e100)
"""Norms (of an update and a reference) for which the screen's error bound holds: their products
and squares neither overflow nor lose relative accuracy to underflow."""


def free_riders(
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    references: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    min_norm_ratio: float,
    stale_cosine: float,
    stale_distance: float,
    model_norm: float = 0.0,
    min_model_ratio: float = 0.0,
    norms_out: dict[str, float] | None = None,
    samples: Mapping[str, int] | None = None,
    size_power: float = 0.0,
    size_reference: float = 0.0,
    size_own: bool = False,
    reference_squares: Mapping[str, npt.NDArray[np.float64]] | None = None,
    squares_out: dict[str, npt.NDArray[np.float64]] | None = None,
    white_z: float = 0.0,
    declared_noise: Collection[str] = frozenset(),
    dp_copy_z: float = 0.0,
    shaped_z: float = 0.0,
    stale_support_cosine: float = 1.0,
    stale_support_overlap: float = 1.0,
    block_z: float = 0.0,
    span_residual: float = 0.0,
) -> dict[str, str]:
    """The free-riders among ``deltas`` (site -> update, address order), each with why, in the
    sites' order; ``references`` are earlier updates by label (a label starting with
    ``"<site>'s update"`` is that site's own previous update: :func:`own_reference`).
    ``model_norm`` is the global model's L2 norm (0: no such scale). ``norms_out``, when given,
    receives each site's norm (:attr:`~fedtrail.valuation.rows.Rows.norms`), for
    :func:`~fedtrail.valuation.robust.robust_statistics` of the same updates. ``samples``: each
    site's claimed count; with ``size_power`` above 0 the floor against ``model_norm`` is
    ``min(1, n / median) ** size_power`` of itself for a site claiming ``n`` (the median of
    ``samples`` over ``deltas``' sites); with ``size_reference`` above 0 too, that factor is
    multiplied by ``min(1, median / size_reference)`` before the power (a round of small sites:
    their median site takes few local steps); with ``size_own`` too, every round reads each
    site's own claim only: the factor is ``min(1, n / size_reference)``, whatever the median,
    so claims others choose, small or large, cannot lower a site's floor (attack a123).
    ``reference_squares``: label -> a reference's partial sums of squares as this screen
    computed them in an earlier round
    (:attr:`~fedtrail.valuation.standing.History.reference_squares`), taken instead of reading
    the reference again; ``squares_out``, when given, receives each site's. ``white_z`` above
    0 turns on the white-noise screen (see the module docstring) for every site not in
    ``declared_noise`` (the sites whose updates declare DP-SGD); ``shaped_z`` above 0 the
    shaped-noise screen for the same sites (:func:`shaped_residual_z` of the update and the
    reference it is closest to, below ``shaped_z``). ``dp_copy_z`` above 0 turns on the DP
    copy test for the sites in ``declared_noise``: an update whose :func:`dp_copy_statistic`
    against the references is at least ``dp_copy_z`` is a copy plus its declared noise.
    ``stale_support_cosine`` below 1 adds the stale screen's sparse test: an update that
    leaves out some of a reference's nonzero entries and repeats it on the ones it carries
    (:func:`~fedtrail.protocol.duplicates.support_copy` under it, against every reference) is
    stale. ``stale_support_overlap`` below 1 adds its kept-entries test: a sparse update more
    than that share of whose nonzero entries are a reference's largest of their tensor
    (:func:`~fedtrail.protocol.duplicates.support_overlap`, against every reference) is stale.
    ``block_z`` above 0 turns on the block-noise test for the sites not in ``declared_noise``
    (:func:`block_z_of` of the update below it: noise whose blocks are independent, whatever
    its variance profile). ``span_residual`` above 0 turns on the span test for every update
    the others leave: one whose :func:`span_residuals` statistic against all the references is
    below it is a linear mixture of earlier public updates (``a2_stale_mix.py`` ``mix2``,
    ``twoago``). Raises ConfigError when the layouts differ."""
    if not deltas:
        return {}
    sites = list(deltas)
    labels = list(references)
    known = {} if reference_squares is None else reference_squares
    try:
        rows = Rows.of(
            [*(deltas[s] for s in sites), *(references[r] for r in labels)],
            squares=[*(None for _ in sites), *(known.get(r) for r in labels)],
        )
    except AggregationError as exc:
        raise ConfigError(f"cannot compare the updates with the earlier ones: {exc}") from exc
    norms = [rows.norm(i) for i in range(len(rows))]
    if norms_out is not None:
        norms_out.update(zip(sites, norms, strict=False))
    if squares_out is not None:
        squares_out.update((s, rows.square_partials(i)) for i, s in enumerate(sites))
    # the lower median: with two updates, a huge one must not make the other look tiny
    own = sorted(norms[: len(sites)])
    median = own[(len(own) - 1) // 2]
    claimed: Mapping[str, int] = {} if samples is None or size_power <= 0 else samples
    counts = [claimed[s] for s in sites] if claimed else []
    median_count = float(statistics.median(counts)) if counts else 0.0
    # the verdicts the norms alone give, first: the pair tests below read only the updates
    # they leave (each update's answer in those tests is its own, whatever the others are)
    by_norm: dict[int, str] = {}
    for i, site in enumerate(sites):
        norm = norms[i]
        if norm == 0.0:
            by_norm[i] = "the update is zero"
            continue
        if norm < min_norm_ratio * median:
            by_norm[i] = (
                f"norm {norm:.3g} is {norm / median:.2%} of the median {median:.3g} "
                f"(below {min_norm_ratio:.0%})"
            )
            continue
        ratio, scaled = min_model_ratio, ""
        factor = size_factor(claimed[site], counts) if counts else 1.0
        expected = 1.0  # the median claim against the floor's reference count
        if counts and size_reference > 0.0 and 0.0 < median_count < size_reference:
            expected = median_count / size_reference
        if size_own and counts and size_reference > 0.0:  # its own claim, every round (a123)
            ratio = min_model_ratio * min(1.0, claimed[site] / size_reference) ** size_power
            scaled = (
                f" x (min({claimed[site]} claimed, {size_reference:g}) / {size_reference:g}) "
                f"** {size_power:g} = {ratio:.3g}; median claim {median_count:g}"
            )
        elif expected < 1.0:
            ratio = min_model_ratio * (min(1.0, factor) * expected) ** size_power
            scaled = (
                f" x (min({claimed[site]} claimed, median {median_count:g}) / "
                f"{size_reference:g}) ** {size_power:g} = {ratio:.3g}"
            )
        elif factor < 1.0:
            ratio = min_model_ratio * factor**size_power
            scaled = (
                f" x ({claimed[site]} claimed / median {median_count:g}) ** {size_power:g} = "
                f"{ratio:.3g}"
            )
        if norm < ratio * model_norm:
            by_norm[i] = (
                f"norm {norm:.3g} is {norm / model_norm:.3%} of the global model's "
                f"{model_norm:.3g} (below {min_model_ratio:.1%}{scaled})"
            )
            continue
        mine = [j for j, label in enumerate(labels, start=len(sites)) if own_reference(label, site)]
        tiny_own = [j for j in mine if norm < min_norm_ratio * norms[j]]
        if tiny_own:
            j = tiny_own[0]
            by_norm[i] = (
                f"norm {norm:.3g} is {norm / norms[j]:.2%} of its own earlier update's "
                f"{norms[j]:.3g} ({labels[j - len(sites)]}; below {min_norm_ratio:.0%})"
            )
    left = [i for i in range(len(sites)) if i not in by_norm]
    at = {i: k for k, i in enumerate(left)}  # an update's row in ``maybe`` and ``approx``
    maybe, approx = _maybe_stale(rows, left, len(sites), norms, stale_cosine, stale_distance)
    # the sparse stale test (a91): a reference restricted to an update's nonzero entries
    sparse_copies: dict[int, int] = {}
    if stale_support_cosine < 1.0 and labels and left:
        found = support_copy_of(
            [references[r] for r in labels],
            [deltas[sites[i]] for i in left],
            stale_support_cosine,
        )
        sparse_copies = {left[k]: r for k, r in found.items()}
    # the kept-entries stale test (a93): a sparse update keeping a reference's largest entries
    # each update's sparse test (:func:`sparse`), computed once for the two tests that read it
    sparse_of: dict[int, bool] = {}

    def is_sparse(i: int) -> bool:
        if i not in sparse_of:
            sparse_of[i] = sparse(deltas[sites[i]])
        return sparse_of[i]

    kept_copies: dict[int, int] = {}
    if stale_support_overlap < 1.0 and labels and left:
        found = kept_largest_of(
            [references[r] for r in labels],
            [deltas[sites[i]] for i in left],
            stale_support_overlap,
            [is_sparse(i) for i in left],
        )
        kept_copies = {left[k]: r for k, r in found.items()}
    kept = _Widened(rows, {len(sites) + k: references[r] for k, r in enumerate(labels)})
    # approx: the Gram matrix, when the stale screen computed it; else once the white screen
    # needs it
    flat_refs: list[npt.NDArray[np.float64]] | None = None  # once the DP copy test needs them
    out: dict[str, str] = {}
    for i, site in enumerate(sites):
        if i in by_norm:
            out[site] = by_norm[i]
            continue
        norm = norms[i]
        # the references the Gram screen left, in order (the others cannot be stale)
        for k in np.flatnonzero(maybe[at[i]]).tolist():
            j = len(sites) + int(k)
            label = labels[k]
            ref_norm = norms[j]
            if ref_norm == 0.0:
                continue
            dot, distance2 = rows.pair(i, j)
            cosine = dot / (norm * ref_norm)
            distance = math.sqrt(distance2) / ref_norm
            if cosine > stale_cosine and distance < stale_distance:
                out[site] = (
                    f"a stale copy of {label} (cosine {cosine:.6f}, distance "
                    f"{distance:.2%} of its norm)"
                )
                break
        if site not in out and i in sparse_copies:
            out[site] = (
                f"a stale copy of {labels[sparse_copies[i]]} on the entries it carries (that "
                f"update restricted to them, or its codes, has cosine above "
                f"{stale_support_cosine:g} to it)"
            )
        if site not in out and i in kept_copies:
            out[site] = (
                f"a stale copy of {labels[kept_copies[i]]} by the entries it keeps (more than "
                f"{stale_support_overlap:g} of them are that update's largest of their tensor)"
            )
        if site in out:
            continue
        if site in declared_noise:
            if dp_copy_z <= 0 or not labels:
                continue
            if flat_refs is None:
                flat_refs = [_flat(references[r]) for r in labels]
            z, steps = dp_copy_statistic(_flat(deltas[site]), flat_refs)
            if z >= dp_copy_z:
                out[site] = (
                    f"a copy of earlier updates plus its declared DP noise (it lies along "
                    f"{steps} of the references: {z:.3g} noise deviations, at least "
                    f"{dp_copy_z:g})"
                )
            continue
        if white_z <= 0 and shaped_z <= 0 and block_z <= 0:
            continue
        # widened once: the update's own statistic, its residual and the shaped test read it
        # (and the closest reference's exact dot product: ``flat``, the row they view)
        values, flat = _widened(rows, i, deltas[site])
        if white_z > 0:
            # stop=white_z: a statistic that reaches the threshold is not computed to the end
            # (its value is neither quoted nor used), one below it is the exact one
            own_z = _structure(values, stop=white_z)
            if own_z < white_z:
                out[site] = f"white noise (structure {own_z:.3g}, below {white_z:g})"
                continue
        if block_z > 0 and block_ceiling(v.shape for v in values.values()) >= (
            BLOCK_CEILING * block_z
        ):
            own_b = _block_z(values, stop=block_z)
            if own_b < block_z:
                out[site] = (
                    f"noise independent between blocks (block statistic {own_b:.3g}, below "
                    f"{block_z:g})"
                )
                continue
        if white_z <= 0 and shaped_z <= 0:
            continue
        if not labels:
            continue
        if approx is None:
            approx = rows.gram(left, range(len(sites), len(rows)))
        j, cosine, scale = _closest(rows, i, len(sites), norms, approx[at[i]], flat, kept.wide)
        if j < 0:
            continue
        label = labels[j - len(sites)]
        reference = kept.wide(j)[0]
        residual = {k: _minus_scaled(v, scale, reference[k]) for k, v in values.items()}
        if white_z > 0:
            z = _structure(residual, stop=white_z)
            if z < white_z:
                out[site] = (
                    f"a copy of {label} plus white noise (cosine {cosine:.6f}; the rest's "
                    f"structure {z:.3g}, below {white_z:g})"
                )
                continue
        if shaped_z <= 0:
            continue
        if not is_sparse(i):  # widening keeps every 0 and every nonzero value
            nonzero = {k: v != 0 for k, v in values.items()}  # the shaped test's masks
            size, positive = kept.magnitude(j)
            z = _shaped(residual, size, nonzero, stop=shaped_z, positive=positive)
            if z < shaped_z:
                out[site] = (
                    f"a copy of {label} plus noise shaped like it (cosine {cosine:.6f}; the "
                    f"rest over its magnitude has structure {z:.3g}, below {shaped_z:g})"
                )
    if span_residual > 0.0 and labels:
        spans = span_residuals(
            rows,
            [i for i in range(len(sites)) if sites[i] not in out],
            len(sites),
            norms,
            span_residual,
            approx,
            left,
        )
        for i, r in spans.items():
            out[sites[i]] = (
                f"a linear mixture of earlier public updates (residual {r:.2g} of its norm "
                f"outside the span of the {len(labels)} references, below {span_residual:g})"
            )
        out = {s: out[s] for s in sites if s in out}
    return out


def duplicate_residual_z(
    later: Mapping[str, torch.Tensor],
    earlier: Mapping[str, torch.Tensor],
    stop: float = math.inf,
    *,
    flats: tuple[torch.Tensor, torch.Tensor] | None = None,
    exact: bool = True,
    earlier_squares: float | None = None,
) -> float:
    """How far ``later``'s residual from ``earlier`` is from white noise within each tensor:
    the duplicate rule's white-noise test (:attr:`~fedtrail.protocol.terms.DuplicateRule.\
white_noise_z`). Both updates widened to float64, flattened in sorted name order (as the
    duplicate rule reads them); ``s = dot(x, r) / dot(r, r)`` (:func:`deterministic_dot`),
    ``e = x - s * r`` element by element; each tensor of ``e`` divided, element by element, by
    ``sqrt(deterministic_sum(e_t * e_t) / size)`` where that is positive; then
    :func:`_structure` of the quotients (with its ``stop``). ``inf`` when the layouts differ,
    ``r`` is zero or ``s`` is not positive (pointing away: not a copy). Each tensor scaled to
    one mean square: a copy plus noise of a share of each tensor's own standard deviation
    (``a1``'s ``noise`` mode) leaves i.i.d. values within each tensor but different variances
    across them, which the statistic of the raw residual (the free-rider screen's) calls
    structure. ``flats``: those two flat float64 vectors (``later``'s, ``earlier``'s) when the
    caller already holds them (the duplicate rule's exact flats: the same values, widened
    exactly, in the same order), so they are not built again. ``exact=False`` (with a finite
    ``stop``): a value below ``stop`` may be an upper bound of the statistic (:func:`_bound_above`,
    below ``stop`` too) instead of the statistic itself: the same verdict, for a caller that
    reads only whether it is below ``stop`` (the duplicate rule; 99 copies of one update at 100
    sites spent ~40% of ``audit verify`` computing each one's statistic exactly).
    ``earlier_squares``: ``dot(r, r)`` (:func:`deterministic_dot` of ``earlier``'s flat with
    itself, the same bits as :func:`deterministic_sum` of its squares) when the caller holds
    it: one original's, taken once for all of its copies (99 at 100 sites) instead of once
    each."""
    names = sorted(later)
    if names != sorted(earlier) or any(later[n].shape != earlier[n].shape for n in names):
        return math.inf
    shapes = [tuple(later[n].shape) for n in names]
    if flats is None:
        x = np.concatenate([_wide(later[n]).ravel() for n in names]) if names else np.zeros(0)
        r = np.concatenate([_wide(earlier[n]).ravel() for n in names]) if names else np.zeros(0)
    else:
        x, r = (np.asarray(f.detach().cpu().numpy(), dtype=np.float64) for f in flats)
        width = sum(math.prod(s) for s in shapes)
        if x.shape != (width,) or r.shape != (width,):
            raise ConfigError("the flats given do not match the updates' layout")
    rr = deterministic_dot(r, r) if earlier_squares is None else earlier_squares
    if not rr > 0 or not math.isfinite(rr):
        return math.inf
    scale = deterministic_dot(x, r) / rr
    if not scale > 0 or not math.isfinite(scale):
        return math.inf
    residual = _minus_scaled(x, scale, r)
    pieces: list[npt.NDArray[np.float64]] = []
    offset = 0
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(residual[offset : offset + size].reshape(shape))
        offset += size
    if not exact and stop < math.inf:
        above = _bound_above(pieces, stop, unit=True)
        if above < stop:
            return above
    parts: dict[str, npt.NDArray[np.float64]] = {}
    for n, e in zip(names, pieces, strict=True):
        mean = deterministic_sum(np.multiply(e, e).ravel()) / e.size if e.size else 0.0
        parts[n] = np.divide(e, math.sqrt(mean)) if 0 < mean < math.inf else e
    return _structure(parts, stop=stop)


def _minus_scaled(
    v: npt.NDArray[np.float64], scale: float, r: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``v - scale * r`` in one fresh array (the same products and differences)."""
    out = np.multiply(r, scale)
    return np.subtract(v, out, out=out)


def shaped_residual_z(
    update: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> float:
    """How far ``update``'s residual from ``reference`` (the update minus the reference scaled
    to fit it best, ``dot / |reference|**2`` with the screen's exact dot product) is from noise
    shaped like the reference: :func:`structure_z` of the residual divided, coordinate by
    coordinate, by the reference's magnitude there, over the coordinates where the reference
    is not 0. A copy plus Gaussian noise scaled to the copy's magnitude (the adaptive copier of
    scenario (i) of ``scripts/bench/accuracy.py``) leaves i.i.d. values; an honest update's
    residual does not. ``inf`` when the reference is zero, the layouts differ in keys, or more
    than half of the update's values are exactly 0 (a sparse, ``topk8``, update:
    ``fedtrail.protocol.duplicates.sparse``; left out, as honest sparse updates score like
    copies on it)."""
    if set(update) != set(reference):
        return math.inf
    rows = Rows.of([update, reference])
    norm = rows.norm(1)
    if norm == 0.0:
        return math.inf
    dot, _ = rows.pair(0, 1)
    scale = dot / (norm * norm)
    if sparse(update):  # widening keeps every 0 and every nonzero value
        return math.inf
    wide = {k: _wide(v) for k, v in reference.items()}
    mine = {k: _wide(v) for k, v in update.items()}
    nonzero = {k: v != 0 for k, v in mine.items()}
    residual = {k: v - scale * wide[k] for k, v in mine.items()}
    return _shaped(residual, {k: np.abs(r) for k, r in wide.items()}, nonzero)


def _shaped(
    residual: Mapping[str, npt.NDArray[np.float64]],
    magnitude: Mapping[str, npt.NDArray[np.float64]],
    nonzero: Mapping[str, npt.NDArray[np.bool_]],
    *,
    stop: float = math.inf,
    positive: Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> float:
    """:func:`_structure` of ``residual / |reference|`` (``magnitude``: the reference's
    ``np.abs``) where neither the reference nor the update is 0 (``nonzero``: the update's
    ``!= 0`` masks; ``positive``, when given: ``magnitude > 0``), element by element, IEEE
    division: the same bits on every machine, with its ``stop``. Where
    a sparse (``topk8``) update is 0 and its reference is not, the quotient is minus the scale
    times the reference's sign, the same magnitude everywhere, which would look white; a copy
    plus shaped noise is non-zero wherever its reference is."""
    ratios: dict[str, npt.NDArray[np.float64]] = {}
    present: dict[str, npt.NDArray[np.bool_]] = {}
    for k, r in residual.items():
        size = magnitude[k]
        mask = np.logical_and(size > 0 if positive is None else positive[k], nonzero[k])
        ratios[k] = np.divide(r, size, out=np.zeros_like(r), where=mask)
        present[k] = mask
    return _structure(ratios, present, stop=stop)


_WIDENED_KEPT: Final = 16
"""At most this many references :class:`_Widened` keeps widened (0.84 MB each for the bundled
SmallCNN), the latest used."""


class _Widened:
    """The references of one screen widened to float64 (:func:`_widened`) and their magnitudes
    (``np.abs`` and where it is positive), each computed once and kept for the next update
    whose closest reference it is (up to :data:`_WIDENED_KEPT` of them, the latest used): the
    same values every time, so the same bits as computing them again."""

    def __init__(self, rows: Rows, references: Mapping[int, Mapping[str, torch.Tensor]]):
        self._rows = rows
        self._references = references
        self._wide: dict[
            int, tuple[dict[str, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None]
        ] = {}
        self._magnitude: dict[
            int, tuple[dict[str, npt.NDArray[np.float64]], dict[str, npt.NDArray[np.bool_]]]
        ] = {}

    def wide(
        self, j: int
    ) -> tuple[dict[str, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None]:
        """Row ``j``'s reference widened (:func:`_widened`)."""
        got = self._wide.pop(j, None)
        if got is None:
            got = _widened(self._rows, j, self._references[j])
            if len(self._wide) >= _WIDENED_KEPT:
                oldest = next(iter(self._wide))
                del self._wide[oldest]
                self._magnitude.pop(oldest, None)
        self._wide[j] = got  # the latest used last
        return got

    def magnitude(
        self, j: int
    ) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, npt.NDArray[np.bool_]]]:
        """Row ``j``'s reference's ``np.abs`` and where it is above 0, by tensor name."""
        values = self.wide(j)[0]
        got = self._magnitude.get(j)
        if got is None:
            size = {k: np.abs(v) for k, v in values.items()}
            got = self._magnitude[j] = (size, {k: a > 0 for k, a in size.items()})
        return got


_TIE: Final = 1e-9
"""References whose approximate cosine (the Gram matrix's) is within this of the best one's are
compared exactly: the Gram matrix's error is about 1e-12 relative, so the exact closest one is
always among them, and the choice is the same on every machine."""


def _closest(
    rows: Rows,
    i: int,
    count: int,
    norms: Sequence[float],
    approx: npt.NDArray[np.float64],
    flat: npt.NDArray[np.float64] | None = None,
    wide: Callable[[int], tuple[object, npt.NDArray[np.float64] | None]] | None = None,
) -> tuple[int, float, float]:
    """The reference row closest to row ``i`` by exact cosine (the first in order on a tie),
    that cosine and the scale fitting it best to row ``i`` (dot / its squared norm); ``(-1, 0,
    0)`` when no reference is at a positive cosine. ``flat``: row ``i`` already widened (its
    exact dot products are then taken from it: the same bits); ``wide``: row ``j`` widened
    (:meth:`_Widened.wide`), read instead of widening it again when both are flat rows."""
    theirs = np.asarray(norms[count:], dtype=np.float64)
    with np.errstate(all="ignore"):
        cos = np.where(theirs > 0, approx / (norms[i] * theirs), -np.inf)
    cos = np.nan_to_num(cos, nan=-np.inf)
    top = float(cos.max()) if cos.size else -math.inf
    if not top > 0:
        return -1, 0.0, 0.0
    best = (-1, 0.0, 0.0)
    for k in np.flatnonzero(cos >= top - _TIE).tolist():
        j = count + int(k)
        theirs_flat = None if flat is None or wide is None else wide(j)[1]
        if theirs_flat is not None and flat is not None:
            # the same products in the same order as dot_with's: the same bits
            dot = deterministic_sum(np.multiply(flat, theirs_flat))
        else:
            dot = rows.pair_dot(i, j) if flat is None else rows.dot_with(flat, j)
        cosine = dot / (norms[i] * norms[j])
        if cosine > best[1]:
            best = (j, cosine, dot / (norms[j] * norms[j]))
    return best


DP_COPY_STEP: Final = 10.0
"""A reference is taken out of an update that declares DP-SGD (:func:`dp_copy_statistic`) while
the residual lies along one at least this far, in standard deviations of the cosine of
independent Gaussian noise (``|cosine| * sqrt(P)``): fresh DP noise is independent of every
earlier update, so against each of k references it scores about ``|N(0, 1)|`` (the largest of
300 about 4)."""
_DP_COPY_STEPS: Final = 8
"""At most this many references are taken out (matching pursuit), so a copier that mixes a few
of them is a copy too."""


def dp_copy_statistic(
    update: npt.NDArray[np.float64], references: Sequence[npt.NDArray[np.float64]]
) -> tuple[float, int]:
    """How far a flattened update lies in the span of the flattened ``references``: ``(z,
    steps)``, ``z`` in standard deviations of the cosine of independent Gaussian noise.

    While the residual's largest ``|cosine| * sqrt(P)`` to a reference (``P`` the width) is at
    least :data:`DP_COPY_STEP` (at most :data:`_DP_COPY_STEPS` times), that reference, scaled
    to fit best, is taken out of it (matching pursuit; ``steps`` counts them). ``z`` is the
    larger of the update's own largest ``|cosine| * sqrt(P)`` to one reference and the cosine of
    the update to the part taken out, times ``sqrt(P)``. An honest DP-SGD update is its clipped
    gradients plus fresh Gaussian noise, independent of every earlier update, so only its
    signal lies along them (measured below 30: docs/results.md *DP-declared copies*); a copy of an
    earlier update plus the declared noise lies along it by its share of the norm times
    ``sqrt(P)`` (half the norm: about 160 for the bundled SmallCNN). Every dot product is
    :func:`~fedtrail.ml.aggregation.deterministic_dot` (the same bits on every machine)."""
    root = math.sqrt(update.size)
    ref_norms = [math.sqrt(deterministic_dot(r, r)) for r in references]
    total = math.sqrt(deterministic_dot(update, update))
    if not total > 0:
        return 0.0, 0
    residual = np.array(update, dtype=np.float64, copy=True)
    first, steps = 0.0, 0
    for _ in range(_DP_COPY_STEPS):
        norm = math.sqrt(deterministic_dot(residual, residual))
        if not norm > 0:
            break
        best, best_j, best_dot = -1.0, -1, 0.0
        for j, r in enumerate(references):
            if not ref_norms[j] > 0:
                continue
            dot = deterministic_dot(residual, r)
            z = abs(dot) / (norm * ref_norms[j]) * root
            if z > best:
                best, best_j, best_dot = z, j, dot
        if steps == 0:
            first = max(best, 0.0)
        if best < DP_COPY_STEP:
            break
        residual -= (best_dot / (ref_norms[best_j] * ref_norms[best_j])) * references[best_j]
        steps += 1
    left = math.sqrt(deterministic_dot(residual, residual)) / total
    return max(first, math.sqrt(max(0.0, 1.0 - left * left)) * root), steps


def _flat(update: Mapping[str, torch.Tensor]) -> npt.NDArray[np.float64]:
    """The update's values widened to float64, in its key order, as one vector."""
    return np.concatenate([_wide(v).ravel() for v in update.values()])


def _widened(
    rows: Rows, i: int, update: Mapping[str, torch.Tensor]
) -> tuple[dict[str, npt.NDArray[np.float64]], npt.NDArray[np.float64] | None]:
    """Row ``i`` of ``rows`` (``update``'s values) widened to float64 once, as ``update``'s
    tensors by name in its own order (the values :func:`_wide` gives each), and the flat row
    they view (None when ``rows`` stacked the updates: then each tensor is widened alone)."""
    if not rows.names or set(rows.names) != set(update):
        return {k: _wide(v) for k, v in update.items()}, None
    flat, views = rows.widened(i)
    by_name = dict(zip(rows.names, views, strict=True))
    return {k: by_name[k] for k in update}, flat


def _wide(t: torch.Tensor) -> npt.NDArray[np.float64]:
    """The tensor's values widened exactly to float64 (numpy's cast, as :class:`Rows`)."""
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float64)


BLOCK_RUN: Final = 8
"""The block test's blocks in a 2-D tensor: runs of this many consecutive values of a row (the
last run of a row shorter; :func:`block_z_of`)."""

_BLOCK_ROOM: Final = 1e-6
"""The room :func:`_block_bound` leaves for rounding, relative (as :data:`_BOUND_ROOM`)."""


def block_z_of(update: Mapping[str, torch.Tensor]) -> float:
    """How far ``update`` is from noise whose blocks are independent, in standard deviations of
    the statistic under that noise (the block-noise test, ``block_noise_z``).

    Each tensor of two or more dimensions with at least two rows (its first index) is cut into
    blocks: in a tensor of three or more dimensions, one block per pair of its first two indices
    (a convolution's kernel); in a 2-D tensor, runs of :data:`BLOCK_RUN` consecutive values of
    a row (zero-padded to a multiple of it). For two rows ``i < j`` and block ``b``, ``c_b`` is
    the dot product of the two rows' values in block ``b``, ``G = sum_b c_b``, ``w = sum_b
    c_b**2``, ``q = sum_b c_b**4``. If every block's signs were flipped at random,
    independently (noise whose blocks are independent and symmetric, whatever the variance of
    each value and however the values within a block depend on each other), ``G**2 - w`` would
    have mean 0 and variance ``2 (w**2 - q)``, uncorrelated between pairs. The statistic is
    ``sum (G**2 - w) / sqrt(sum 2 (w**2 - q))`` over every pair of rows of every such tensor.
    An honest update's rows share directions (the same inputs move every output's weights), so
    its statistic is large; Gaussian noise scaled per tensor, row, column or value to a public
    update's profile scores about N(0, 1). Every sum is in a fixed order (products of a pair of
    rows, each block's values added in order, then the blocks in order, then one
    :func:`math.fsum` of every pair's terms): the same bits on every machine. ``inf`` when no
    tensor has two rows of two blocks (or the variances' sum is not finite); 0 when some tensor
    has but every such variance is 0 (those tensors left zero: an update cannot pass by putting
    its noise only where the test does not read). The screen judges only layouts whose
    :func:`block_ceiling` is at least :data:`BLOCK_CEILING` times the threshold."""
    return _block_z({k: _wide(v) for k, v in update.items()})


def _blocks(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """``a`` as (rows, blocks, values per block) for the block test, or None when it has fewer
    than two dimensions, two rows or two blocks a row (rows of one block add exactly 0 to both
    of the statistic's sums: ``G**2 - w`` and ``w**2 - q`` are then ``c*c - c*c``; left out,
    so the bound does not carry their loose ``W``)."""
    if a.ndim < 2 or a.shape[0] < 2 or a.size == 0:
        return None
    if a.ndim >= 3:
        if a.shape[1] < 2:
            return None
        return np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], -1))
    rows, cols = a.shape
    runs = -(-cols // BLOCK_RUN)
    if runs < 2:
        return None
    padded = np.zeros((rows, runs * BLOCK_RUN), dtype=np.float64)
    padded[:, :cols] = a
    return padded.reshape(rows, runs, BLOCK_RUN)


def _block_z(parts: Mapping[str, npt.NDArray[np.float64]], *, stop: float = math.inf) -> float:
    """:func:`block_z_of` of float64 arrays; with a finite ``stop``, a lower bound from sums in
    any order (:func:`_block_bound`) that reaches ``stop`` is returned instead (the screen then
    neither quotes nor uses it)."""
    blocks = [b for b in (_blocks(a) for a in parts.values()) if b is not None]
    if not blocks:
        return math.inf
    if stop < math.inf:
        bound = _block_bound(blocks)
        if bound >= stop:
            return bound
    num: list[float] = []
    var: list[float] = []
    for x in blocks:
        _block_terms(x, num, var)
    total = math.fsum(var)
    if not math.isfinite(total):
        return math.inf
    if not total > 0:  # readable tensors, nothing in them that noise could be told from
        return 0.0
    return math.fsum(num) / math.sqrt(total)


BLOCK_CEILING: Final = 32
"""The block test judges an update only when :func:`block_ceiling` of its layout is at least
this many times ``block_noise_z`` (narrower layouts pass it: their honest updates were measured
at 0.06-0.24 of the ceiling, so a ceiling near the threshold would mark them)."""


def block_ceiling(shapes: Iterable[Sequence[int]]) -> float:
    """The largest :func:`block_z_of` a layout allows: ``sqrt(sum n (n - 1) / 2)`` over every
    pair of rows of every tensor the test reads, ``n`` its blocks a row (per pair,
    ``G**2 - w <= sqrt(n (n - 1) / 2) sqrt(2 (w**2 - q))``; then Cauchy-Schwarz over the pairs).
    Exact integer sums: the same on every machine."""
    total = 0
    for shape in shapes:
        if len(shape) < 2 or shape[0] < 2 or math.prod(shape) == 0:
            continue
        n = shape[1] if len(shape) >= 3 else -(-shape[1] // BLOCK_RUN)
        total += shape[0] * (shape[0] - 1) // 2 * (n * (n - 1) // 2)
    return math.sqrt(total)


_BLOCK_CHUNK: Final = 1 << 20
_BLOCK_ROWS: Final = 32
"""Row pairs :func:`_block_terms` holds at once (about ``_BLOCK_CHUNK`` values per array, at most
``_BLOCK_ROWS`` rows ``i``, so few pairs ``j <= i`` are computed and dropped): time and memory
only, the sums' bits do not depend on them."""


def _block_terms(x: npt.NDArray[np.float64], num: list[float], var: list[float]) -> None:
    """Appends ``G**2 - w`` and ``2 (w**2 - q)`` of every pair of rows ``i < j`` of ``x`` (rows,
    blocks, values per block) to ``num`` and ``var`` (any order: both are summed by
    :func:`math.fsum`). Vectorised over pairs, a chunk of rows ``i`` against every later row at a
    time, every sum in the fixed order of :func:`block_z_of`: each block's ``c`` its values'
    products added in order, then ``G``, ``w``, ``q`` the blocks added in order."""
    rows, nblocks, size = x.shape
    t = np.ascontiguousarray(x.transpose(1, 2, 0))  # (blocks, values, rows)
    start = 0
    while start < rows - 1:
        later_rows = rows - start - 1
        step = max(1, min(later_rows, _BLOCK_ROWS, _BLOCK_CHUNK // later_rows))
        stop = start + step
        left = t[:, :, start:stop, None]  # rows i of the chunk
        right = t[:, :, None, start + 1 :]  # every later row
        g = np.zeros((step, later_rows))
        w = np.zeros_like(g)
        q = np.zeros_like(g)
        c = np.empty_like(g)
        tmp = np.empty_like(g)
        for b in range(nblocks):
            np.multiply(left[b, 0], right[b, 0], out=c)
            for k in range(1, size):
                np.multiply(left[b, k], right[b, k], out=tmp)
                c += tmp
            g += c
            np.multiply(c, c, out=c)
            w += c
            np.multiply(c, c, out=c)
            q += c
        later = np.arange(start + 1, rows)[None, :] > np.arange(start, stop)[:, None]
        num.extend((g * g - w)[later].tolist())
        var.extend((2.0 * (w * w - q))[later].tolist())
        start = stop


def _block_bound(blocks: Sequence[npt.NDArray[np.float64]]) -> float:
    """A lower bound on :func:`_block_z` of ``blocks`` from matrix products in any order (torch's,
    on torch's threads), or ``-inf``. Per tensor: ``G`` within ``4 (width + 2) 2**-53 |x_i|
    |x_j|`` of the exact one (``gamma_width`` four times over); ``w <= W = sum_b |x_ib|**2
    |x_jb|**2`` (Cauchy-Schwarz) and ``w**2 - q <= W**2``, sums of positive terms (relative error
    within ``gamma_width``); :data:`_BLOCK_ROOM` covers those and the exact sums' rounding. So
    ``sum (max(|G| - error, 0)**2 - W) / sqrt(sum 2 W**2)``, each side widened by the room, is at
    most the exact statistic."""
    low: list[float] = []
    high: list[float] = []
    for x in blocks:
        rows = x.shape[0]
        width = x.shape[1] * x.shape[2]
        error = 4.0 * (width + 2) * 2.0**-53
        if error >= _BLOCK_ROOM / 10:
            return -math.inf
        flat = torch.from_numpy(x.reshape(rows, -1))
        gram = (flat @ flat.T).numpy()
        norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
        squares = torch.from_numpy(np.ascontiguousarray(np.square(x).sum(axis=2)))
        big_w = (squares @ squares.T).numpy()
        upper = np.triu_indices(rows, 1)
        g = np.maximum(np.abs(gram[upper]) - error * np.outer(norms, norms)[upper], 0.0)
        wu = big_w[upper] * (1.0 + _BLOCK_ROOM)
        low.append(float(np.sum(g * g * (1.0 - _BLOCK_ROOM) - wu)))
        high.append(float(np.sum(2.0 * wu * wu)))
    num, var = math.fsum(low) * (1.0 - _BLOCK_ROOM), math.fsum(high) * (1.0 + _BLOCK_ROOM)
    if not num > 0 or not var > 0 or not math.isfinite(num) or not math.isfinite(var):
        return -math.inf
    return num / math.sqrt(var)


def structure_z(update: Mapping[str, torch.Tensor]) -> float:
    """How far ``update``'s values are from white noise (i.i.d. with one variance), in standard
    deviations of the statistic under white Gaussian noise: the largest of four z-scores.
    Three compare the sums of squares of groups of values with what one variance gives them
    (the dispersion ``sum (G - n v)^2 / (2 n v^2)`` over the groups, ``v`` the mean square of
    all values, against its mean and standard deviation for Gaussian values): each tensor, each
    row of a tensor of two or more dimensions (its first index), each column (the rest); the
    fourth is the correlation of horizontally and vertically neighbouring taps of 4-D
    (convolution) tensors, times the square root of the pairs. Every sum is in a fixed order
    (the same bits on every machine). ``inf`` for a zero update or a layout with no group to
    compare (a single 1-D tensor: nothing would tell its noise from a signal)."""
    return _structure({k: _wide(v) for k, v in update.items()})


def _structure(
    parts: Mapping[str, npt.NDArray[np.float64]],
    present: Mapping[str, npt.NDArray[np.bool_]] | None = None,
    *,
    stop: float = math.inf,
) -> float:
    """:func:`structure_z` of float64 arrays; with ``present`` (key -> a mask of the array's
    shape), only the values where the mask is True count (the others are set to 0 by the
    caller): every group's size is its count of such values, and neighbouring taps pair only
    where both are present.

    ``stop`` (finite): the four scores are computed in order (tensors, rows, columns,
    neighbours) and the first that reaches ``stop`` is returned without the rest, so the value
    is the statistic itself when it is below ``stop`` and some value at least ``stop``
    otherwise (the screen compares it with its threshold and quotes it only below). A mask
    that is True everywhere counts as no mask (the same groups, sizes and products)."""
    keys = [k for k, a in parts.items() if a.size]
    arrays = [parts[k] for k in keys]
    # each tensor's count of present values, once (a mask True everywhere counts as none)
    present_counts = [
        a.size if present is None else int(np.count_nonzero(present[k]))
        for k, a in zip(keys, arrays, strict=True)
    ]
    masks = [
        None if present is None or c == a.size else present[k]
        for k, a, c in zip(keys, arrays, present_counts, strict=True)
    ]
    count = sum(present_counts)
    if stop < math.inf:
        bound = _bound(arrays, masks, present_counts, count, stop)
        if bound >= stop:  # the statistic reaches ``stop`` too: it is neither quoted nor used
            return bound
    squares = [np.multiply(a, a) for a in arrays]
    sums = [deterministic_sum(s.ravel()) for s in squares]  # each tensor's, once
    total = math.fsum(sums)
    if count == 0 or not total > 0 or not math.isfinite(total):
        return math.inf
    mean = total / count
    finite_stop = stop < math.inf
    # without masks the groups' sizes, and so their spreads, are the layout's: computed once
    layout = (
        _layout_sizes(tuple(a.shape for a in arrays)) if all(m is None for m in masks) else None
    )
    scores: list[float] = []
    for family in range(3):
        if layout is not None:
            known = layout[family]
            if known is None:
                continue
            sizes, spread = known
            groups = _groups(family, squares, sums)
        else:
            groups = _groups(family, squares, sums)
            sizes = (
                np.asarray(present_counts, dtype=np.float64)
                if family == 0
                else _sizes(family, arrays, masks)
            )
            keep = sizes > 0
            groups, sizes = groups[keep], sizes[keep]
            if groups.size < 2:
                continue
            spread = _spread(sizes)
        dispersion = math.fsum(
            ((groups - sizes * mean) ** 2 / (2.0 * sizes * mean * mean)).tolist()
        )
        scores.append((dispersion - groups.size) / spread)
        if finite_stop and scores[-1] >= stop:
            return scores[-1]
    if not scores:
        return math.inf
    num, left, right, pairs = [], [], [], 0
    for a, sq, o in zip(arrays, squares, masks, strict=True):
        if a.ndim != 4:
            continue
        if o is None:
            for x, y in (
                (np.s_[..., :-1], np.s_[..., 1:]),
                (np.s_[..., :-1, :], np.s_[..., 1:, :]),
            ):
                if a[x].size == 0:
                    continue
                # the neighbours' products in C order (a fresh array of the view's shape), and
                # the squares of each side read from ``squares``: the same products, in the
                # same order, as those of contiguous copies of the two sides
                num.append(deterministic_sum(np.multiply(a[x], a[y]).ravel()))
                left.append(deterministic_sum(sq[x]))
                right.append(deterministic_sum(sq[y]))
                pairs += a[x].size
            continue
        for xs, ys, pair in (
            (a[..., :-1], a[..., 1:], o[..., :-1] & o[..., 1:]),
            (a[..., :-1, :], a[..., 1:, :], o[..., :-1, :] & o[..., 1:, :]),
        ):
            if xs.size == 0:
                continue
            # 1.0 where both are present, 0.0 elsewhere, in C order
            both = pair.astype(np.float64).ravel()
            xs = np.ascontiguousarray(xs).ravel() * both
            ys = np.ascontiguousarray(ys).ravel() * both
            num.append(deterministic_sum(xs * ys))
            left.append(deterministic_sum(xs * xs))
            right.append(deterministic_sum(ys * ys))
            pairs += int(np.count_nonzero(pair))
    if pairs:
        den = math.sqrt(math.fsum(left) * math.fsum(right))
        if den > 0:
            scores.append(abs(math.fsum(num) / den) * math.sqrt(pairs))
    return max(scores)


_BOUND_ROOM: Final = 1e-6
"""The room the lower bound of :func:`_bound` leaves each group, relative to its scaled sum of
squares plus its size: far above the error of the sums it takes (at most ``gamma_width``
relative; the bound is used only while four times that is below a tenth of this room, up to
about 2 10**8 values) and of the exact statistic's own arithmetic."""

_SAFE_MEAN: Final = (1e-140, 1e140)
"""Mean squares for which :func:`_bound` is used: the exact score's arithmetic neither
overflows nor underflows (its squared mean, its squared differences up to a width of 10**10
values), and the squares' underflow is negligible against the total."""


def _bound(
    arrays: Sequence[npt.NDArray[np.float64]],
    masks: Sequence[npt.NDArray[np.bool_] | None],
    present_counts: Sequence[int],
    count: int,
    stop: float,
) -> float:
    """A lower bound on the first of the first two scores (tensors, rows) :func:`_structure`
    computes for ``arrays`` (``masks``, ``present_counts`` and ``count`` as it derives them)
    whose bound reaches ``stop``; ``-inf`` when neither does.

    Each group's sum of squares is taken in any summation order (torch's dot product and sum,
    on torch's threads): within ``gamma_width`` of the exact one, relative, since squares are
    positive. Each group's term of the dispersion is then bounded below with
    :data:`_BOUND_ROOM` of room, far more than those errors and the exact score's own rounding,
    so the score :func:`_structure` computes from the same groups, sizes and spread in the
    fixed order is at least the bound. When the bound reaches ``stop``, that score does too,
    and :func:`_structure` returns a value at least ``stop`` (this family's or an earlier
    one's), neither quoted nor used: the bound is returned instead, the same verdict and
    reason. The honest updates of the bundled SmallCNN score 10**4 to 10**7 against the
    default threshold of 1000, so the fixed-order sums are taken only for updates near it."""
    width = sum(a.size for a in arrays)
    error = 4.0 * (width + 2) * 2.0**-53  # four times gamma_width
    if count == 0 or error >= _BOUND_ROOM / 10 or not all(a.flags.c_contiguous for a in arrays):
        return -math.inf
    flats = [torch.from_numpy(a.reshape(-1)) for a in arrays]
    sums = [float(torch.dot(f, f)) for f in flats]
    total = math.fsum(sums)
    low, high = _SAFE_MEAN
    if not low < total / count < high:  # NaN included
        return -math.inf
    scale = count / total  # a group's sum of squares over the mean square
    no_masks = all(m is None for m in masks)
    layout = _layout_sizes(tuple(a.shape for a in arrays)) if no_masks else None
    for family in range(2):
        if layout is not None:
            known = layout[family]
            if known is None:
                continue
            sizes, spread = known
            groups = np.asarray(sums, dtype=np.float64) if family == 0 else _row_squares(arrays)
        else:
            sizes = (
                np.asarray(present_counts, dtype=np.float64)
                if family == 0
                else _sizes(family, arrays, masks)
            )
            groups = np.asarray(sums, dtype=np.float64) if family == 0 else _row_squares(arrays)
            keep = sizes > 0
            groups, sizes = groups[keep], sizes[keep]
            if groups.size < 2:
                continue
            spread = _spread(sizes)
        ratios = groups * scale
        gap = np.abs(ratios - sizes) - _BOUND_ROOM * (ratios + sizes)
        terms = np.maximum(gap, 0.0) ** 2 / (2.0 * sizes)
        dispersion = math.fsum(terms.tolist()) * (1.0 - _BOUND_ROOM)
        score = (dispersion - groups.size) / spread * (1.0 - _BOUND_ROOM)
        if not math.isfinite(score):
            return -math.inf
        if score >= stop:
            return score
    return -math.inf


_TINY_SQUARES: Final = 1e-280
"""The least sum of squares of either side of the neighbours' family for which
:func:`_bound_above` bounds that family: values whose squares or products fall below the normal
range change such a sum by at most their count times 2**-1074, negligible against it."""


def _bound_above(
    arrays: Sequence[npt.NDArray[np.float64]], stop: float, *, unit: bool = False
) -> float:
    """An upper bound on the value :func:`_structure` computes for ``arrays`` without masks
    (every score, so also the largest), when that bound is below ``stop``; ``inf`` otherwise
    (not settled: the caller computes the statistic). ``unit``: of ``arrays`` each divided by
    the square root of its mean square, as :func:`duplicate_residual_z` scales its residual's
    tensors (then ``inf`` also when a tensor's mean square is outside :data:`_SAFE_MEAN`).

    The mirror of :func:`_bound`: each group's sum of squares is taken in any summation order
    (numpy's), within ``gamma_width`` of the exact one, relative (squares
    are positive), as is the fixed-order sum :func:`_structure` takes; a tensor's mean square
    for ``unit`` is within the same, so the sums of squares of the divided values are the fast
    ones over the fast mean within a few times it. Each group's term of the dispersion is then
    bounded above with :data:`_BOUND_ROOM` of room (``|ratio - size| + room (ratio + size)``,
    squared), far more than those errors and the exact score's own rounding, and so is each
    score. The neighbours' family: each side's sum of products is within ``gamma_width`` times
    the sum of their magnitudes of the exact one, at most ``sqrt(left right)``
    (Cauchy-Schwarz), so its correlation is within about twice that of the fast one, bounded
    with the same room. Used only while four times ``gamma_width`` is below a tenth of the room
    (up to about 2 10**8 values), for mean squares in :data:`_SAFE_MEAN` and neighbour sums of
    squares above :data:`_TINY_SQUARES`. Any statistic below ``stop`` gives the same verdict:
    the duplicate rule's white-noise test reads the verdict alone
    (:func:`duplicate_residual_z`'s ``exact``); ``tests/valuation/test_bound_above.py`` checks
    the bound against the exact statistic on inputs built to sit at its edges."""
    arrays = [a for a in arrays if a.size]  # as :func:`_structure` drops empty tensors
    width = sum(a.size for a in arrays)
    error = 4.0 * (width + 2) * 2.0**-53  # four times gamma_width
    if not width or error >= _BOUND_ROOM / 10 or not all(a.flags.c_contiguous for a in arrays):
        return math.inf
    low, high = _SAFE_MEAN
    # numpy's sums (pairwise, any order the bound allows): torch's cost ~10 us a call on
    # these small arrays, 28 calls an update
    squares = [np.square(a) for a in arrays]
    # the rows' sums of squares (family 1), and each tensor's as the sum of its rows'
    rows = [q.reshape(q.shape[0], -1).sum(axis=1) if q.ndim >= 2 else q for q in squares]
    sums = [float(r.sum()) for r in rows]
    weights = [1.0] * len(arrays)
    if unit:
        for k, (tensor_sum, a) in enumerate(zip(sums, arrays, strict=True)):
            if not low < tensor_sum / a.size < high:  # NaN included
                return math.inf
            weights[k] = a.size / tensor_sum  # one over the tensor's mean square
    total = math.fsum(g * w for g, w in zip(sums, weights, strict=True))
    if not low < total / width < high:  # NaN included
        return math.inf
    scale = width / total  # a group's sum of squares over the mean square
    layout = _layout_sizes(tuple(a.shape for a in arrays))
    best = -math.inf
    for family in range(3):
        known = layout[family]
        if known is None:
            continue
        sizes, spread = known
        if family == 0:
            groups = np.asarray(sums, dtype=np.float64) * np.asarray(weights)
        else:
            groups = np.concatenate(
                [
                    (r if family == 1 else q.reshape(q.shape[0], -1).sum(axis=0)) * w
                    for q, r, w in zip(squares, rows, weights, strict=True)
                    if q.ndim >= 2
                ]
            )
        ratios = groups * scale
        gap = np.abs(ratios - sizes) + _BOUND_ROOM * (ratios + sizes)
        terms = gap**2 / (2.0 * sizes)
        # positive terms, summed in any order: within gamma_groups of their sum, relative
        dispersion = float(terms.sum()) * (1.0 + _BOUND_ROOM)
        score = (dispersion - groups.size) / spread
        score += _BOUND_ROOM * (abs(score) + groups.size / spread + 1.0)
        if not score < stop:  # NaN included
            return math.inf
        best = max(best, score)
    num, left, right, pairs = 0.0, 0.0, 0.0, 0
    for a, q, w in zip(arrays, squares, weights, strict=True):
        if a.ndim != 4:
            continue
        for x, y in ((np.s_[..., :-1], np.s_[..., 1:]), (np.s_[..., :-1, :], np.s_[..., 1:, :])):
            if a[x].size == 0:
                continue
            num += float(np.multiply(a[x], a[y]).sum()) * w
            left += float(q[x].sum()) * w
            right += float(q[y].sum()) * w
            pairs += a[x].size
    if pairs:
        if not (left > _TINY_SQUARES and right > _TINY_SQUARES):
            return math.inf
        correlation = abs(num) / math.sqrt(left * right)
        score = (correlation + _BOUND_ROOM) * math.sqrt(pairs) * (1.0 + _BOUND_ROOM)
        if not score < stop:
            return math.inf
        best = max(best, score)
    return best if best > -math.inf else math.inf


def _row_squares(arrays: Sequence[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """Each row's sum of squares (any summation order) of the tensors of two or more
    dimensions, concatenated in the tensors' order (:func:`_groups`' family 1)."""
    out = [
        torch.from_numpy(m).square().sum(dim=1).numpy()
        for m in (_matrix(a) for a in arrays if a.ndim >= 2)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def _matrix(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A tensor of two or more dimensions as a C-ordered matrix: its first index by the rest."""
    return np.ascontiguousarray(a.reshape(a.shape[0], -1))


def _groups(
    family: int, squares: Sequence[npt.NDArray[np.float64]], sums: Sequence[float]
) -> npt.NDArray[np.float64]:
    """The sums of squares of one family's groups: each tensor's (0), each row's (1: each
    in order along the row) or each column's (2: row after row) of the tensors of two or more
    dimensions, concatenated in the tensors' order."""
    if family == 0:
        return np.asarray(sums, dtype=np.float64)
    out: list[npt.NDArray[np.float64]] = []
    for s in squares:
        if s.ndim < 2:
            continue
        m = _matrix(s)
        # np.add.reduce over axis 0 of a C-ordered matrix adds row after row: a fixed order
        out.append(np.add.reduce(np.ascontiguousarray(m.T) if family == 1 else m, axis=0))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def _sizes(
    family: int,
    arrays: Sequence[npt.NDArray[np.float64]],
    masks: Sequence[npt.NDArray[np.bool_] | None],
) -> npt.NDArray[np.float64]:
    """The groups' sizes of :func:`_groups`' family: their counts of values (of present ones
    under a mask; integers, exact in float64)."""
    if family == 0:
        return np.asarray(
            [
                a.size if m is None else int(np.count_nonzero(m))
                for a, m in zip(arrays, masks, strict=True)
            ],
            dtype=np.float64,
        )
    out: list[npt.NDArray[np.float64]] = []
    for a, m in zip(arrays, masks, strict=True):
        if a.ndim < 2:
            continue
        rows, cols = a.shape[0], a.size // a.shape[0]
        if m is None:
            out.append(
                np.full(
                    rows if family == 1 else cols, cols if family == 1 else rows, dtype=np.float64
                )
            )
        else:
            # the mask's bytes (0 or 1) added as integers: np.count_nonzero's counts, exactly
            # (measured, the bundled SmallCNN's masks: twice as fast as it along an axis)
            c = m.reshape(rows, -1).view(np.uint8)
            out.append(np.add.reduce(c, axis=2 - family, dtype=np.int64).astype(np.float64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def _spread(sizes: npt.NDArray[np.float64]) -> float:
    """The standard deviation of a family's dispersion under white Gaussian noise."""
    return math.sqrt(math.fsum((2.0 + 12.0 / sizes).tolist()))


@functools.lru_cache(maxsize=16)
def _layout_sizes(
    shapes: tuple[tuple[int, ...], ...],
) -> tuple[tuple[npt.NDArray[np.float64], float] | None, ...]:
    """Per family, the groups' sizes and :func:`_spread` of a layout of non-empty tensors
    without masks (None for a family of fewer than 2 groups): read-only, shared by calls."""
    arrays = [np.zeros(shape, dtype=np.float64) for shape in shapes]
    masks: list[npt.NDArray[np.bool_] | None] = [None] * len(arrays)
    out: list[tuple[npt.NDArray[np.float64], float] | None] = []
    for family in range(3):
        sizes = _sizes(family, arrays, masks)
        sizes = sizes[sizes > 0]
        if sizes.size < 2:
            out.append(None)
            continue
        sizes.flags.writeable = False
        out.append((sizes, _spread(sizes)))
    return tuple(out)


def _maybe_stale(
    rows: Rows,
    left: Sequence[int],
    count: int,
    norms: Sequence[float],
    stale_cosine: float,
    stale_distance: float,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64] | None]:
    """``(len(left), references)``: False where update ``left[i]`` is certainly not a stale
    copy of reference ``j`` (its exact cosine at most ``stale_cosine`` or its exact distance
    at least ``stale_distance``), True where the exact pair computation must decide. ``rows``
    holds the ``count`` updates, then the references; ``left`` the updates to screen (rows
    below ``count``); ``norms`` the rows' exact norms.

    One Gram matrix ``G = U R^T`` (torch's BLAS, any summation order) approximates every exact dot
    product within ``gamma |u| |r|``, ``gamma = width 2**-53 / (1 - width 2**-53)``; the exact
    cosine and distance carry errors of the same order. The margin ``slack`` is ``_SLACK`` times
    larger, so a pair ruled out here is ruled out by the exact computation too.

    Also the Gram matrix when it was computed (None when the groups' bound settled every
    pair): the white-noise screen's closest reference reads the same matrix."""
    refs = len(rows) - count
    width = rows.width
    slack = _SLACK * (width + 2) * 2.0**-53
    if refs == 0 or not left or slack >= 1e-3:
        return np.ones((len(left), refs), dtype=np.bool_), None
    mine = np.asarray([norms[i] for i in left], dtype=np.float64)[:, None]
    theirs = np.asarray(norms[count:], dtype=np.float64)[None, :]
    low, high = _SAFE_NORMS
    safe = (mine > low) & (mine < high) & (theirs > low) & (theirs < high)
    squares = mine * mine + theirs * theirs
    bound = (stale_distance * theirs) ** 2 * (1.0 + slack)

    def ruled_out(dot_high: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        with np.errstate(all="ignore"):  # a non-finite entry compares False: computed exactly
            cosine_high = dot_high / (mine * theirs) + slack
            distance2_low = squares - 2.0 * dot_high - slack * squares
            out: npt.NDArray[np.bool_] = (cosine_high <= stale_cosine) | (distance2_low >= bound)
        return out

    # First the groups' bound: the partial sums of squares the norms came from split each row
    # into 1024 groups (values j, j + 1024, ...), and by Cauchy-Schwarz in each group every
    # dot product is at most sum_j |u_j| |r_j| (positive terms: its rounding is far inside
    # ``slack``). Honest pairs are far from a copy in most groups (measured, 10 sites: at most
    # 0.994 against 0.99999), so the Gram matrix is needed only when a pair is left.
    with np.errstate(all="ignore"):
        groups_u = torch.from_numpy(np.sqrt(np.stack([rows.square_partials(i) for i in left])))
        groups_r = torch.from_numpy(
            np.sqrt(np.stack([rows.square_partials(j) for j in range(count, len(rows))]))
        )
        group_high = (groups_u @ groups_r.T).numpy()
    settled = safe & ruled_out(group_high)
    if (settled | ~safe).all():  # the unsafe pairs are computed exactly, Gram or not
        return ~settled, None
    # torch's BLAS on torch's (pinned) threads: numpy's OpenBLAS starts its own pool,
    # which on a busy 2-core machine spun for 3 CPU-s on a product torch does in 0.09
    gram = rows.gram(left, range(count, len(rows)))
    maybe: npt.NDArray[np.bool_] = ~(settled | (safe & ruled_out(gram)))
    return maybe, gram


def own_reference(label: str, site: str) -> bool:
    """Whether the reference ``label`` names ``site``'s own earlier update (the labels of
    :func:`fedtrail.valuation.standing.reference_label`: ``"<site>'s update of round r"``)."""
    return label.startswith(f"{site}'s update")


SPAN_RIDGE: Final = 1e-6
"""The span test's ridge ``lambda``: the statistic is ``min_c |u/|u| - sum_j c_j r_j/|r_j||**2 +
lambda |c|**2`` (:func:`span_residuals`). Without it the minimum is ill-conditioned (a round's
global delta is close to a combination of its updates, so the references are nearly dependent)
and no float computation bounds it; with it every minimiser has ``|c|**2 <= 1 / lambda`` and the
error of the Gram entries moves the minimum by a computable amount. A mixture with coefficients
of order 1 (``mix2``, ``twoago``) scores about ``sqrt(lambda |c|**2)``, 1e-3: about ten times under
the default threshold 0.01."""


def _span_solve(h: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``h^-1 b`` (any float solve: its accuracy is checked afterwards by the gradient)."""
    try:
        out = np.linalg.solve(h, b)
    except np.linalg.LinAlgError:
        out = np.linalg.lstsq(h, b, rcond=None)[0]
    return np.asarray(out, dtype=np.float64)


def _span_bounds(
    g: npt.NDArray[np.float64], b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], e: float
) -> tuple[float, float, float]:
    """``(value, low, high)``: the ridge objective ``f(c) = 1 - 2 b.c + c.(G + lambda I)c`` at
    ``c`` as computed from ``g`` and ``b``, and bounds on the exact minimum ``m`` of the
    objective whose normalised Gram entries are within ``e`` of ``g``'s and ``b``'s.

    For any ``c``, the exact ``f(c)`` is within ``E = e (1 + |c|_1)**2`` of the computed one,
    so ``m <= f(c) <= value + E``. ``f`` is a quadratic with Hessian ``2 (G + lambda I) >= 2
    lambda I``, so ``f(c) - m = grad . (G + lambda I)^-1 grad / 4 <= |grad|**2 / (4 lambda)``,
    and the exact gradient is within ``2 sqrt(k) e (1 + |c|_1)`` of the computed one: ``m >=
    value - E - (|grad| + 2 sqrt(k) e (1 + |c|_1))**2 / (4 lambda)``."""
    k = len(b)
    h = g + SPAN_RIDGE * np.eye(k)
    hc = h @ c
    value = 1.0 - 2.0 * float(b @ c) + float(c @ hc)
    spread = 1.0 + float(np.abs(c).sum())
    err = e * spread * spread
    grad = float(np.linalg.norm(2.0 * (hc - b))) + 2.0 * math.sqrt(k) * e * spread
    # 1.01: room for the rounding of these bounds themselves
    return value, value - 1.01 * (err + grad * grad / (4.0 * SPAN_RIDGE)), value + 1.01 * err


def _fixed_order_minimum(g: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """The ridge objective's minimum from ``g`` and ``b`` with every operation in a fixed order
    (a right-looking Cholesky by element-wise numpy operations, sums by :func:`math.fsum`):
    the same bits on every machine for the same inputs."""
    k = len(b)
    a = g + SPAN_RIDGE * np.eye(k)
    low = np.zeros((k, k))
    for j in range(k):
        pivot = a[j, j]
        if not pivot > 0.0:
            pivot = SPAN_RIDGE  # the exact matrix is >= lambda I; rounding cannot do more
        d = math.sqrt(pivot)
        col = a[j + 1 :, j] / d
        low[j, j] = d
        low[j + 1 :, j] = col
        a[j + 1 :, j + 1 :] -= np.multiply.outer(col, col)
    y = np.zeros(k)
    for j in range(k):
        y[j] = (b[j] - math.fsum((low[j, :j] * y[:j]).tolist())) / low[j, j]
    c = np.zeros(k)
    for j in reversed(range(k)):
        c[j] = (y[j] - math.fsum((low[j + 1 :, j] * c[j + 1 :]).tolist())) / low[j, j]
    h = g + SPAN_RIDGE * np.eye(k)
    quad = math.fsum((np.multiply.outer(c, c) * h).ravel().tolist())
    return 1.0 - 2.0 * math.fsum((b * c).tolist()) + quad


_GRAM_BAND: Final = 64
"""References per band of :func:`_symmetric_gram` (each band against itself and the later
ones: about half the products of the whole matrix)."""


def _symmetric_gram(rows: Rows, refs: Sequence[int]) -> npt.NDArray[np.float64]:
    """The references' Gram matrix from :meth:`Rows.gram`, one band of rows at a time against
    itself and the later references only, mirrored (each entry computed once)."""
    k = len(refs)
    out = np.empty((k, k), dtype=np.float64)
    for lo in range(0, k, _GRAM_BAND):
        hi = min(lo + _GRAM_BAND, k)
        block = rows.gram(refs[lo:hi], refs[lo:])
        out[lo:hi, lo:] = block
        out[lo:, lo:hi] = block.T
    return out


def span_residuals(
    rows: Rows,
    tested: Sequence[int],
    count: int,
    norms: Sequence[float],
    threshold: float,
    approx: npt.NDArray[np.float64] | None = None,
    approx_rows: Sequence[int] = (),
) -> dict[int, float]:
    """The updates among ``tested`` (rows below ``count``; the references are the rows from
    ``count`` on) that are linear mixtures of the references: row -> their span residual
    ``sqrt(m)``, ``m`` the minimum over ``c`` of ``|u/|u| - sum_j c_j r_j/|r_j||**2 + lambda
    |c|**2`` (:data:`SPAN_RIDGE`; norms are ``norms``, the exact ones), below ``threshold``.
    References of norm 0 or outside ``[1e-100, 1e100]`` are left out of the span, and updates
    of such a norm are not tested.

    A bounded screen: the Gram matrices come from torch's BLAS (any summation order, within
    ``e = 1024 (width + 2) 2**-53`` of the exact normalised entries, as :func:`_maybe_stale`'s
    margin), :func:`_span_bounds` brackets the exact ``m`` from them, and an update is decided
    there only when the bracket, widened by three times its width, lies on one side of
    ``threshold**2``; otherwise its Gram entries are taken with ``deterministic_dot``
    (:meth:`Rows.pair_dot`) and :func:`_fixed_order_minimum` decides, the same bits on every
    machine. ``approx``: the updates' Gram matrix against every reference when the caller has
    it, its rows being ``approx_rows``."""
    low_norm, high_norm = _SAFE_NORMS
    refs = [j for j in range(count, len(rows)) if low_norm < norms[j] < high_norm]
    todo = [i for i in tested if low_norm < norms[i] < high_norm]
    if not refs or not todo or threshold <= 0.0:
        return {}
    width = rows.width
    e = _SLACK * (width + 2) * 2.0**-53 + 4.0 * (len(refs) + 2) ** 2 * 2.0**-53
    scale_r = np.asarray([norms[j] for j in refs], dtype=np.float64)
    g = _symmetric_gram(rows, refs) / np.multiply.outer(scale_r, scale_r)
    at = {i: k for k, i in enumerate(approx_rows)}
    cols = [j - count for j in refs]
    if approx is not None and all(i in at for i in todo):
        ub = approx[[at[i] for i in todo]][:, cols]
    else:
        ub = rows.gram(todo, refs)
    ub = ub / np.multiply.outer(np.asarray([norms[i] for i in todo]), scale_r)
    coef = _span_solve(g + SPAN_RIDGE * np.eye(len(refs)), ub.T)
    limit = threshold * threshold
    out: dict[int, float] = {}
    exact_g: npt.NDArray[np.float64] | None = None
    for k, i in enumerate(todo):
        value, low, high = _span_bounds(g, ub[k], coef[:, k], e)
        margin = 3.0 * (high - low)
        if high + margin < limit:
            out[i] = math.sqrt(max(value, 0.0))
            continue
        if low - margin >= limit:
            continue
        if exact_g is None:  # near the threshold: the fixed-order computation decides
            exact_g = np.empty((len(refs), len(refs)))
            for p, jp in enumerate(refs):
                for q in range(p, len(refs)):
                    exact_g[p, q] = exact_g[q, p] = rows.pair_dot(jp, refs[q]) / (
                        norms[jp] * norms[refs[q]]
                    )
        b = np.asarray([rows.pair_dot(i, j) / (norms[i] * norms[j]) for j in refs])
        m = _fixed_order_minimum(exact_g, b)
        if m < limit:
            out[i] = math.sqrt(max(m, 0.0))
    return out
