"""An experiment, not the product's rule (issue 12 (c)): weight factors for an update's length
and direction, applied to the scores the valuation settled.

Two factors, each multiplying a paid (score above 0), robust-checked update's score, as the
combiner's ``max_norm_ratio`` does (:func:`~fedtrail.valuation.standing.norm_factor`), never
touching the accumulated values (they are weights, not evidence):

* ``max_norm_ratio`` K with ``power`` p: an update above K median norms keeps ``(K / ratio) **
  p`` of its score (p 1 is the product's ``max_norm_ratio``; p 2 makes a longer update cost its
  sender, as ``boost_clip`` does along the median update): its say is bounded by that of the
  same update clipped to K median norms;
* ``against`` f: an update whose cosine to the median update is below ``credit_cosine`` (the
  combiner's, -0.7 in ``HISTORY_COMBINER``), whose positive value the standing already
  withholds, keeps f of its score: its record cannot fall while its value is withheld, so
  without this a sign-flipped update is paid its full sample share for as long as the game
  values it positively.

:func:`install` wraps the accuracy bench's :func:`fedtrail.valuation.value_round` (``_sim``'s
name for it, aggregator mode), in this process only; reason and detail stay, the detail says
what the experiment did.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

from fedtrail.valuation.combine import RoundValuation, SiteValuation
from fedtrail.valuation.standing import scaled_score
from scripts.bench import _sim


def factor(
    v: SiteValuation,
    *,
    max_norm_ratio: float,
    power: float,
    against: float,
    credit_cosine: float,
) -> float:
    """The share of its score ``v`` keeps under the two factors (see the module docstring)."""
    out = 1.0
    if v.norm is not None and v.median_norm:
        ratio = v.norm / v.median_norm
        if max_norm_ratio > 0 and ratio > max_norm_ratio:
            out *= (max_norm_ratio / ratio) ** power
    if against < 1.0 and v.cosine is not None and v.cosine < credit_cosine:
        out *= against
    return out


def weighted(
    sites: Sequence[SiteValuation],
    *,
    max_norm_ratio: float,
    power: float,
    against: float,
    credit_cosine: float,
) -> list[SiteValuation]:
    """``sites`` with every paid, robust-checked update's score times its :func:`factor`."""
    out = []
    for v in sites:
        f = factor(
            v,
            max_norm_ratio=max_norm_ratio,
            power=power,
            against=against,
            credit_cosine=credit_cosine,
        )
        if v.score > 0 and v.robust_checked and f < 1.0:
            score = scaled_score(v.score, f)
            v = replace(
                v,
                score=score,
                detail=f"{v.detail}; keeps {f:.1%} (weight_factors experiment): "
                f"score {score / 1e6:.1%}",
            )
        out.append(v)
    return out


def install(*, max_norm_ratio: float, power: float, against: float) -> None:
    """Apply the factors to every aggregator-mode valuation round of this process."""
    if not (math.isfinite(max_norm_ratio) and max_norm_ratio >= 0):
        raise ValueError(f"max_norm_ratio must be >= 0, got {max_norm_ratio!r}")
    if not (math.isfinite(power) and power > 0):
        raise ValueError(f"power must be positive, got {power!r}")
    if not 0.0 < against <= 1.0:
        raise ValueError(f"against must lie in (0, 1], got {against!r}")
    original = _sim.value_round

    def wrapped(**kwargs: Any) -> RoundValuation:
        report: RoundValuation = original(**kwargs)
        return replace(
            report,
            sites=weighted(
                report.sites,
                max_norm_ratio=max_norm_ratio,
                power=power,
                against=against,
                credit_cosine=report.combiner.credit_cosine,
            ),
        )

    _sim.value_round = wrapped
