"""Measured, not built: the coalition utility at each coalition's best step.

Early global models overshoot, so any update that shortens the averaged step lowers the
validation loss and is paid (the sign-flipper of the accuracy benchmark's scenario (c)). This
experiment removes that reward: a coalition's utility is the best value of the quadratic through
``f(0)`` (the global model), ``f'(0)`` (the slope along the coalition's mean delta, from one
gradient pass at the global model: each player's ``g . delta_i``) and ``f(1)`` (the coalition
model), over steps in ``[0, --eta-max]``. Nothing else changes; the accuracy benchmark runs
with it (every other argument is passed to ``accuracy.py``):

    .venv/bin/python scripts/bench/step_utility.py --eta-max 1 --seeds 3 --rounds 10 \\
        --alpha 1 --scenarios c --methods valuation --threads 1 --out /tmp/step.json

It did not help (README, *Could another utility ...*), so it is no product setting.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

from fedtrail.valuation.utility import CoalitionUtility
from scripts.bench import accuracy

_evaluate = CoalitionUtility.__call__


def stepped(eta_max: float) -> object:
    """``CoalitionUtility.__call__`` at the coalition's best step up to ``eta_max``."""

    def call(self: CoalitionUtility, coalition: frozenset[str]) -> float:
        coalition = frozenset(coalition)
        cache = self.__dict__.setdefault("_stepped", {})
        if "f0" not in cache:
            cache["f0"] = _evaluate(self, frozenset())
            cache["slopes"] = self.linearised(frozenset())[1]
        f0: float = cache["f0"]
        if not coalition:
            return f0
        f1 = _evaluate(self, coalition)
        members = [s for s in self.players if s in coalition]
        total = sum(self.samples(s) for s in members)
        d = sum(self.samples(s) / total * cache["slopes"][s] for s in members)
        c = f1 - f0 - d
        steps = [0.0, 1.0, eta_max]
        if c < 0:
            steps.append(min(max(-d / (2 * c), 0.0), eta_max))
        return max(f0 + d * e + c * e * e for e in steps if e <= eta_max)

    return call


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    eta_max = 1.0
    if "--eta-max" in args:
        i = args.index("--eta-max")
        eta_max = float(args[i + 1])
        del args[i : i + 2]
    if not eta_max >= 1.0:
        print("--eta-max must be at least 1", file=sys.stderr)
        return 2
    CoalitionUtility.__call__ = stepped(eta_max)  # type: ignore[method-assign]
    return accuracy.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
