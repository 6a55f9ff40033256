"""Measured, not built: coalition models that take the round's median running statistics.

The valuation's coalition models average every tensor by sample count, running statistics
included (:class:`fedtrail.valuation.utility.CoalitionUtility`), while the aggregate takes the
statistics' coordinate median (``AggregationRule.statistics = "median"``). This experiment gives
every non-empty coalition the coordinate median of all players' statistics deltas, so only the
weights differ between coalitions, and runs ``fedtrail demo`` with the given arguments:

    .venv/bin/python scripts/bench/median_coalitions.py --arch resnet10 --sites 4 --rounds 3 \\
        --epochs 1 --noisy-sites 0 --poison statistics

It changed little (README, *BatchNorm models*), so it is no product setting. The demo's own
``audit verify`` runs in the same process, under the same coalitions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedtrail.ml.aggregation import median_rows
from fedtrail.valuation.utility import CoalitionUtility

_init = CoalitionUtility.__init__


def _median_init(self: CoalitionUtility, ctx: Any, *args: Any, **kwargs: Any) -> None:
    _init(self, ctx, *args, **kwargs)
    names = set(ctx.spec.statistic_names())
    st = self._stacked
    layout = zip(st.names, st.shapes, strict=True)
    mask = np.concatenate([np.full(int(np.prod(shape)), name in names) for name, shape in layout])
    if not mask.any() or not self.players:
        return
    # the players' float64 rows (the utility widens them on demand, without a matrix)
    deltas = np.stack([self._delta(s).copy() for s in self.players])
    median = median_rows(deltas[:, mask]).astype(np.float32).astype(np.float64)

    def state(coalition: frozenset[str]) -> dict[str, torch.Tensor]:
        members = [s for s in self.players if s in coalition]
        if not members:
            return st.unflatten(self._global)
        total = sum(self.samples(s) for s in members)
        acc = np.zeros_like(self._global)
        for s in members:
            acc += (self.samples(s) / total) * deltas[self.players.index(s)]
        mean = acc.astype(np.float32).astype(np.float64)
        mean[mask] = median
        return st.unflatten(self._global + mean)

    self.state = state  # type: ignore[method-assign]


def main(argv: Sequence[str]) -> int:
    CoalitionUtility.__init__ = _median_init  # type: ignore[method-assign]
    from fedtrail.cli import cli

    try:
        cli(["demo", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
