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
  :func:`fedtrail.valuation.value_round` leaves a margin of 10x) and the site's own previous
  update, when the references hold one (below ``min_norm_ratio`` of it; an honest update was
  measured at 31% of its previous one or more, a margin of 31x);
* **stale**: cosine above ``stale_cosine`` (0.9999) *and* distance below ``stale_distance``
  (1%) of the norm of an earlier update it may copy — the site's own previous update or the last
  global delta (the references of :class:`~fedtrail.valuation.standing.History`). Two honest
  rounds of SGD from different global models are far from that (measured cosine < 0.95).

Copies of another site's update in the same round are the DUPLICATE check's job (exact bytes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationError, deterministic_dot, stack

__all__ = ["free_riders", "own_reference"]


def free_riders(
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    references: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    min_norm_ratio: float,
    stale_cosine: float,
    stale_distance: float,
    model_norm: float = 0.0,
    min_model_ratio: float = 0.0,
) -> dict[str, str]:
    """The free-riders among ``deltas`` (site -> update, address order), each with why, in the
    sites' order; ``references`` are earlier updates by label (a label starting with
    ``"<site>'s update"`` is that site's own previous update: :func:`own_reference`).
    ``model_norm`` is the global model's L2 norm (0: no such scale). Raises ConfigError when the
    layouts differ."""
    if not deltas:
        return {}
    sites = list(deltas)
    labels = list(references)
    try:
        st = stack([*(deltas[s] for s in sites), *(references[r] for r in labels)])
    except AggregationError as exc:
        raise ConfigError(f"cannot compare the updates with the earlier ones: {exc}") from exc
    rows = st.matrix
    norms = [math.sqrt(deterministic_dot(row, row)) for row in rows]
    own = sorted(norms[: len(sites)])
    # the lower median: with two updates, a huge one must not make the other look tiny
    median = own[(len(own) - 1) // 2]
    out: dict[str, str] = {}
    for i, site in enumerate(sites):
        norm = norms[i]
        if norm == 0.0:
            out[site] = "the update is zero"
            continue
        if norm < min_norm_ratio * median:
            out[site] = (
                f"norm {norm:.3g} is {norm / median:.2%} of the median {median:.3g} "
                f"(below {min_norm_ratio:.0%})"
            )
            continue
        if norm < min_model_ratio * model_norm:
            out[site] = (
                f"norm {norm:.3g} is {norm / model_norm:.3%} of the global model's "
                f"{model_norm:.3g} (below {min_model_ratio:.1%})"
            )
            continue
        mine = [j for j, label in enumerate(labels, start=len(sites)) if own_reference(label, site)]
        tiny_own = [j for j in mine if norm < min_norm_ratio * norms[j]]
        if tiny_own:
            j = tiny_own[0]
            out[site] = (
                f"norm {norm:.3g} is {norm / norms[j]:.2%} of its own earlier update's "
                f"{norms[j]:.3g} ({labels[j - len(sites)]}; below {min_norm_ratio:.0%})"
            )
            continue
        for j, label in enumerate(labels, start=len(sites)):
            ref_norm = norms[j]
            if ref_norm == 0.0:
                continue
            cosine = deterministic_dot(rows[i], rows[j]) / (norm * ref_norm)
            diff = rows[i] - rows[j]
            distance = math.sqrt(deterministic_dot(diff, diff)) / ref_norm
            if cosine > stale_cosine and distance < stale_distance:
                out[site] = (
                    f"a stale copy of {label} (cosine {cosine:.6f}, distance "
                    f"{distance:.2%} of its norm)"
                )
                break
    return out


def own_reference(label: str, site: str) -> bool:
    """Whether the reference ``label`` names ``site``'s own earlier update (the labels of
    :func:`fedtrail.valuation.standing.reference_label`: ``"<site>'s update of round r"``)."""
    return label.startswith(f"{site}'s update")
