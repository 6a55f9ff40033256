"""Data-free robust statistics of the updates: direction and norm outliers.

Computed over the usable updates of a round (status OK, delta present), without any data:

* ``cosine``: cosine similarity of the update to the coordinate-wise median of all usable
  updates (1: same direction as the consensus; -1: the opposite, as a sign-flipped update);
  0 when either vector is zero.
* ``norm``: the update's L2 norm; ``norm_z`` its robust z-score
  ``(norm - median) / scale`` with ``scale = max(1.4826 * MAD, norm_scale_floor * median)``
  (MAD = median absolute deviation of the norms; 1.4826 makes it estimate a standard deviation
  for normal data). The floor keeps the z-score sane when the honest norms are nearly equal
  (IID sites of equal size: measured MAD about 3% of the median), where any small difference
  would otherwise look extreme: with the default floor 0.25, an update twice the median norm has
  ``norm_z <= 4``, one twenty times (scaled poisoning) ``norm_z <= 76``.

Measured on the bundled PneumoniaMNIST with 7-8 sites of SmallCNN, 1-2 local epochs: IID sites
have cosines 0.81-0.99 and norms within 0.83-1.12x the median; a sign-flipped update has a cosine
of about -0.9. Under label skew (Dirichlet alpha 1 or 5) honest updates reach cosines of -0.8
and norms of 5.7x the median, so direction screening needs a loose threshold there (see
:class:`fedtrail.valuation.combine.Combiner`).

Both are computed on the trainable parameters only: the tensors named in ``statistics``
(BatchNorm's ``running_mean``/``running_var``, :meth:`fedtrail.ml.models.ModelSpec.statistic_names`)
are left out. Running statistics move with a site's data distribution, not with learning, and
dominate a BatchNorm model's update (measured, MONAI resnet10 on the bundled data, 4 Dirichlet
alpha-3 sites, 3 local epochs: statistics norms 72-1857, parameter norms 8.4-34; a 45%-noisy site
of 258 images had a robust norm z of 44.7 on the whole update, 2.5 on its parameters), so
on the whole update an honest skewed site became a norm outlier. A poisoner cannot hide there:
sign flips and scaling change the parameters too, and an update with hostile statistics alone
is bounded by the absolute checks of :func:`fedtrail.valuation.value_round` (norm against the
global model, non-finite outputs, the warm-up own-model check) and valued on validation (a
negative running variance is also clamped at load). Without running statistics (SmallCNN) the
result is the same as on the whole update, bit for bit.

All sums are deterministic (:func:`fedtrail.ml.aggregation.deterministic_dot`), read from the
tensors a row at a time (:class:`~fedtrail.valuation.rows.Rows`: the values of
:func:`~fedtrail.ml.aggregation.stack`'s matrix without building it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationError, deterministic_dot
from fedtrail.valuation.rows import Rows

__all__ = [
    "MAD_TO_SIGMA",
    "RobustStats",
    "robust_statistics",
    "without_statistics",
]

MAD_TO_SIGMA = 1.4826
"""MAD x 1.4826 estimates the standard deviation of normally distributed values."""


@dataclass(frozen=True)
class RobustStats:
    """The data-free statistics of one update (see the module docstring)."""

    cosine: float
    norm: float
    """L2 norm of the update's trainable parameters (running statistics left out)."""
    norm_z: float
    median_norm: float
    """Median L2 norm of the round's usable updates (the same for every site)."""


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def _check_floor(floor: float) -> float:
    if isinstance(floor, bool) or not isinstance(floor, int | float):
        raise ConfigError(f"norm_scale_floor must be a number, got {floor!r}")
    if not (math.isfinite(floor) and floor > 0):
        raise ConfigError(f"norm_scale_floor must be a positive number, got {floor}")
    return float(floor)


def without_statistics(
    tensors: Mapping[str, torch.Tensor], statistics: Collection[str]
) -> Mapping[str, torch.Tensor]:
    """``tensors`` without those named in ``statistics`` (the model's running statistics), in
    their order; ``tensors`` itself when it holds none of them or nothing else."""
    names = frozenset(statistics)
    if not names.intersection(tensors):
        return tensors
    kept = {name: t for name, t in tensors.items() if name not in names}
    return kept if kept else tensors


def robust_statistics(
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    norm_scale_floor: float = 0.25,
    statistics: Collection[str] = (),
    site_norms: Mapping[str, float] | None = None,
) -> dict[str, RobustStats]:
    """Cosine to the coordinate-wise median, norm and robust norm z-score of every update
    (site -> delta, address order), on its tensors not named in ``statistics`` (the model's
    running statistics: see the module docstring). ``site_norms``: the sites' norms of the same
    tensors as :func:`~fedtrail.valuation.freeride.free_riders` computed them (its
    ``norms_out``), used when every site has one. Raises ConfigError when the layouts
    differ."""
    floor = _check_floor(norm_scale_floor)
    if not deltas:
        return {}
    sites = list(deltas)
    left_out = frozenset(statistics)
    try:
        known = site_norms
        if known is not None and any(s not in known for s in sites):
            known = None
        rows = Rows.of(
            [without_statistics(deltas[s], left_out) for s in sites],
            norms=None if known is None else [known[s] for s in sites],
        )
    except AggregationError as exc:
        raise ConfigError(f"cannot compare the updates: {exc}") from exc
    median = rows.median(range(len(sites)))
    median_norm_vec = math.sqrt(deterministic_dot(median, median))
    norms = [rows.norm(i) for i in range(len(sites))]
    med = _median(norms)
    mad = _median([abs(x - med) for x in norms])
    scale = max(MAD_TO_SIGMA * mad, floor * med)
    out: dict[str, RobustStats] = {}
    for i, site in enumerate(sites):
        denom = norms[i] * median_norm_vec
        cosine = rows.dot(i, median) / denom if denom > 0 else 0.0
        cosine = max(-1.0, min(1.0, cosine))
        z = (norms[i] - med) / scale if scale > 0 else 0.0
        out[site] = RobustStats(cosine=cosine, norm=norms[i], norm_z=z, median_norm=med)
    return out
