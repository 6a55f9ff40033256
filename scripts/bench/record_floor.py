"""A floor under every site's accumulated value (issue 12 (a)): ``accuracy.py`` at
``--record-floor F``.

The standing accumulated each round's share without bound, so a site the game values below zero
for a few rounds sank far under the point where its score is already 0 (``-demote_scale``
against its reference) and could not come back when its shares turned positive: in the accuracy
bench's scenario (a) at Dirichlet alpha 3 the honest sites zeroed from round 3-4 reached -1.5 to
-2.6 by round 10, while three of the five had positive shares in their last rounds. This
experiment, first a wrapper around the product's ``value_round``, is now the product's round
term ``record_floor`` (h-256; :func:`fedtrail.valuation.standing.floored_records`): after each
round every scored site's record is kept at or above its reference minus ``max(F,
demote_scale)``, a CUSUM's reflecting barrier. Terms written now carry 0.5, so ``accuracy.py``
runs it by default; ``--floor 0`` runs the rule before it (the unbounded record). Every other
argument is passed to ``accuracy.py``:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/record_floor.py --floor 0.5 --seeds 5 \\
        --rounds 10 --alpha 3 --scenarios a --methods valuation --threads 1 --out /tmp/floor.json

``scripts/bench/valuation_trace.py RUN.json --what-if`` replays the same rule first order on a
saved run (``record floor F``). See docs/results.md *Accuracy: valuation weights against FedAvg*.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

from scripts.bench import accuracy


def accuracy_args(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--floor F`` (default 0.5) turned into ``accuracy.py``'s
    ``--record-floor F``; ValueError for a floor that is not a finite number >= 0."""
    args = list(argv)
    floor = 0.5
    if "--floor" in args:
        i = args.index("--floor")
        floor = float(args[i + 1])
        del args[i : i + 2]
    if not (math.isfinite(floor) and floor >= 0):
        raise ValueError("--floor must be a finite number >= 0 (0: off)")
    return [*args, "--record-floor", repr(floor)]


def main(argv: Sequence[str]) -> int:
    try:
        args = accuracy_args(argv)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return int(accuracy.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
