"""An experiment, not the product's rule (issue 12 (c)): a site whose updates are persistently
long for its claimed data scores 0.

One round's norm does not separate a scaled update from an honest skewed one (the x10 site of
the accuracy bench's scenario (c) at 1.7-4.3x the round's median norm, honest sites up to 7.6x),
but an honest site's long update is a one-off or comes with more data. Each round, every usable
update's norm over the round's median norm, divided by ``max(1, n / m)`` (its claimed samples
over the median claimed by the round's usable updates: a larger site takes more local steps),
is added to its site's record; from its third recorded update on, a site whose median over its
latest ``window`` records (0: all of them) is above ``threshold`` scores 0 (``LOW_QUALITY``).
Its update still plays the game and its values still accumulate, as a rule in
:meth:`~fedtrail.valuation.combine.Combiner.settle` would leave them.

``measure="along"`` records the update's length along the round's median update instead,
``cosine * norm / median_norm / max(1, n / m)`` (a scaled honest direction is long along the
consensus; an honest skewed site's long update mostly points elsewhere), and ``min_records``
sets from which recorded update the rule judges (1: from the first, round 1 included).

:func:`install` wraps the accuracy bench's :func:`fedtrail.valuation.value_round` (``_sim``'s
name for it, aggregator mode), in this process only. The records restart at every run's
warm-up round (``History.warm_up``): single-threaded use only.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import size_factor
from fedtrail.valuation.combine import RoundValuation, SiteValuation
from scripts.bench import _sim

MIN_RECORDS = 3
"""A site's records needed before the rule judges it (one or two long updates are honest)."""

MEASURES = ("norm", "along")
"""What a record holds: the size-adjusted norm ratio, or the size-adjusted length along the
round's median update (see the module docstring)."""

_records: dict[str, list[float]] = {}


def persistent(
    records: Sequence[float], threshold: float, window: int, min_records: int = MIN_RECORDS
) -> float | None:
    """The median of the latest ``window`` (0: all) ``records`` when there are at least
    ``min_records`` of them and it is above ``threshold``; None otherwise."""
    recent = list(records[-window:] if window else records)
    if len(recent) < min_records:
        return None
    median = statistics.median(recent)
    return median if median > threshold else None


def record(sites: Sequence[SiteValuation], measure: str = "norm") -> None:
    """Add each usable update's size-adjusted norm ratio (``measure`` ``"norm"``) or length
    along the median update (``"along"``) of this round to its site's record."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    counts = [v.num_samples for v in sites if v.norm is not None]
    for v in sites:
        if v.norm is None or not v.median_norm:
            continue
        allowance = max(1.0, size_factor(v.num_samples, counts))
        ratio = v.norm / v.median_norm / allowance
        if measure == "along":
            if v.cosine is None:
                continue
            ratio *= v.cosine
        _records.setdefault(v.site, []).append(ratio)


def judged(
    sites: Sequence[SiteValuation],
    threshold: float,
    window: int,
    min_records: int = MIN_RECORDS,
    measure: str = "norm",
) -> list[SiteValuation]:
    """``sites`` with every positively scored, robust-checked site whose record is persistently
    above ``threshold`` scored 0."""
    what = "norm ratio" if measure == "norm" else "length along the median update"
    out = []
    for v in sites:
        median = persistent(_records.get(v.site, []), threshold, window, min_records)
        if v.score > 0 and v.robust_checked and median is not None:
            v = replace(
                v,
                score=0,
                reason=Reason.LOW_QUALITY,
                detail=f"{v.detail}; median size-adjusted {what} {median:.3g} over its "
                f"latest updates is above {threshold:g} (norm_persist experiment)",
            )
        out.append(v)
    return out


def install(
    threshold: float, window: int, *, measure: str = "norm", min_records: int = MIN_RECORDS
) -> None:
    """Make the bench's valuation score 0 a site persistently above ``threshold`` (see the
    module docstring)."""
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"the threshold must be a positive number, got {threshold!r}")
    if window < 0:
        raise ValueError(f"the window must be 0 (all) or positive, got {window!r}")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if min_records < 1:
        raise ValueError(f"min_records must be at least 1, got {min_records!r}")
    original = _sim.value_round

    def wrapped(**kwargs: Any) -> RoundValuation:
        history = kwargs.get("history")
        if history is None or history.warm_up:
            _records.clear()
        report: RoundValuation = original(**kwargs)
        record(report.sites, measure)
        return replace(report, sites=judged(report.sites, threshold, window, min_records, measure))

    _sim.value_round = wrapped
