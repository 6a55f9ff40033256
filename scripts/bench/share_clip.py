"""An experiment, not the product's rule: the standing's round shares with a denominator no
single update can dominate (attack a19, ``scripts/attacks/README.md``).

Today a round's share is ``phi_i / fsum(|phi_j|)`` (:func:`fedtrail.valuation.normalised_values`).
Here each ``|phi_j|`` is clipped at ``c`` times the median ``|phi|`` of the round before summing,
and the numerator too (so the shares still sum to at most 1 in magnitude, as ``audit verify``'s
``standing.accumulated`` requires): ``clip(phi_i) / fsum(min(|phi_j|, c * median))``. A median of
0 clips nothing. :func:`install` swaps it in for :mod:`fedtrail.valuation.round`'s (the
aggregator's and ``audit verify``'s re-run, one home), in this process only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

import fedtrail.valuation.round as _round


def clipped_normalised_values(values: Mapping[str, float], c: float) -> dict[str, float] | None:
    """The shares with each ``|phi|`` clipped at ``c`` x the round's median ``|phi|``; None when
    every value is zero."""
    if not values:
        return None
    bound = c * statistics.median(abs(v) for v in values.values())
    if not bound > 0:
        bound = math.inf
    clipped = {s: math.copysign(min(abs(v), bound), v) for s, v in values.items()}
    total = math.fsum(abs(v) for v in clipped.values())
    if not total > 0:
        return None
    return {s: v / total for s, v in clipped.items()}


def install(c: float) -> None:
    """Make :func:`fedtrail.valuation.value_round` use :func:`clipped_normalised_values`
    at ``c``."""
    if not (math.isfinite(c) and c >= 1):
        raise ValueError(f"the clip must be a finite multiple >= 1 of the median, got {c!r}")
    _round.normalised_values = lambda values: clipped_normalised_values(values, c)  # type: ignore[assignment]
