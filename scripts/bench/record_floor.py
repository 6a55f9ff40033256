"""Measured, not built: a floor under every site's accumulated value (issue 12 (a)).

The standing accumulates each round's share without bound, so a site the game values below zero
for a few rounds sinks far under the point where its score is already 0 (``-demote_scale``
against its reference) and cannot come back when its shares turn positive: in the accuracy
bench's scenario (a) at Dirichlet alpha 3 the honest sites zeroed from round 3-4 reach -1.5 to
-2.6 by round 10, while three of the five have positive shares in their last rounds. This
experiment keeps every scored site's record at or above its reference (the median scored site's
negative record, or 0; 0 for an update below ``relief_cosine``) minus ``--floor`` after each
round, a CUSUM's reflecting barrier: with ``--floor`` at the demote scale (0.5) no score of the
round moves, only the depth of the hole a later round climbs out of. Every other argument is
passed to ``accuracy.py``:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/record_floor.py --floor 0.5 --seeds 5 \\
        --rounds 10 --alpha 3 --scenarios a --methods valuation --threads 1 --out /tmp/floor.json

``scripts/bench/valuation_trace.py RUN.json --what-if`` replays the same rule first order on a
saved run (``record floor F``). See README, *Accuracy: valuation weights against FedAvg*.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

import _sim
import accuracy

from fedtrail.protocol.codes import Reason
from fedtrail.valuation.combine import RoundValuation
from fedtrail.valuation.standing import demotion_reference


def floored(report: RoundValuation, floor: float, relief_cosine: float) -> RoundValuation:
    """``report`` with every scored site's accumulated value raised to at least its reference
    minus ``floor`` (sites the screens rejected and sites absent keep theirs)."""
    if report.accumulated is None:
        return report
    scored = [
        s
        for s in report.sites
        if s.value is not None and s.reason in (Reason.OK, Reason.LOW_QUALITY)
    ]
    acc = dict(report.accumulated)
    reference = demotion_reference(acc.get(s.site, 0.0) for s in scored)
    for s in scored:
        own = (
            0.0
            if s.robust_checked and s.cosine is not None and s.cosine < relief_cosine
            else reference
        )
        if s.site in acc:
            acc[s.site] = max(acc[s.site], own - floor)
    return dataclasses.replace(report, accumulated=acc)


def install(floor: float) -> None:
    """Make the bench's ``value_round`` floor the records it returns (not in the warm-up)."""
    original = _sim.value_round

    def value_round(**kwargs: Any) -> RoundValuation:
        report: RoundValuation = original(**kwargs)
        history = kwargs.get("history")
        if history is None or history.warm_up:
            return report
        return floored(report, floor, report.combiner.relief_cosine)

    _sim.value_round = value_round


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    floor = 0.5
    if "--floor" in args:
        i = args.index("--floor")
        floor = float(args[i + 1])
        del args[i : i + 2]
    if not (math.isfinite(floor) and floor > 0):
        print("--floor must be a positive number", file=sys.stderr)
        return 2
    install(floor)
    return int(accuracy.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
