"""Issue 16 experiment (bench only, not the product): valuation ideas under DP-SGD.

Usage: .venv/bin/python scripts/bench/dp_value_ideas.py --idea IDEA [accuracy.py's arguments]

Runs ``scripts/bench/accuracy.py`` with the product's valuation path patched in this process
only (README "Valuation under DP": under DP-SGD an update carries little ranking signal but a
large shift of the logits toward its labels' majority, which Shapley over small coalitions
charges to skewed honest sites):

* ``top2``: the game is Shapley truncated to the two largest coalition layers: each site's
  value is the mean over ``|S| = n-1`` and ``|S| = n-2`` (``S`` not holding it) of the mean
  marginal gain ``v(S + i) - v(S)`` at that size (``top1`` is leave-one-out; below 3 players,
  exact Shapley). Only coalitions near the grand one, where the honest sites' shifts cancel.
* ``project``: built into the product since, as the round terms' ``valuation.project_shift``
  (``aggregator run --project-shift``, ``accuracy.py --project-shift``); this idea now only
  adds ``--project-shift`` to accuracy.py's arguments (no patch: the product's code).
* ``platt``: the balanced-loss utility fitted with a logit scale as well as the intercept
  (binary: ``sigmoid(a * (z1 - z0) + b)``, class-balanced log loss minimised over ``a, b``),
  so a label-unrelated spread of the logits costs only through the ranking.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import numpy as np

import fedtrail.valuation.round as round_mod
from fedtrail.valuation.base import Utility
from fedtrail.valuation.shapley import exact_shapley
from fedtrail.valuation.utility import CachedUtility, CoalitionUtility, GameValues
from scripts.bench import accuracy

IDEAS = ("top1", "top2", "top3", "project", "platt")


def truncated(layers: int) -> round_mod.Game:
    def game(players: Sequence[str], utility: Utility, seed: int) -> GameValues:
        ps = list(players)
        n = len(ps)
        if n < 3:
            return exact_shapley(ps, utility)
        u = CachedUtility(utility)
        v0 = u(frozenset())
        full = frozenset(ps)
        v_full = u(full)
        values: dict[str, float] = {}
        for p in ps:
            others = [q for q in ps if q != p]
            means = []
            for k in range(n - 1, max(n - 1 - layers, -1), -1):
                gains = [
                    u(frozenset(s) | {p}) - u(frozenset(s))
                    for s in itertools.combinations(others, k)
                ]
                means.append(sum(gains) / len(gains))
            values[p] = sum(means) / len(means)
        return GameValues(
            values=values,
            method=f"top{layers}_shapley",
            evaluations=u.evaluations,
            v_empty=v0,
            v_full=v_full,
        )

    return game


def _platt_loss(self: CoalitionUtility, logits: np.ndarray) -> tuple[float, np.ndarray | None]:
    y = np.asarray(self._validation.labels, dtype=np.int64)  # type: ignore[union-attr]
    d = logits[:, 1] - logits[:, 0]
    counts = np.bincount(y, minlength=2).astype(np.float64)
    w = 1.0 / (2.0 * counts[y])
    t = y.astype(np.float64)

    def loss(a: float, b: float) -> float:
        s = a * d + b
        return float((w * (np.logaddexp(0.0, s) - t * s)).sum())

    a, b = 1.0, 0.0
    cur = loss(a, b)
    for _ in range(30):
        s = a * d + b
        p = 1.0 / (1.0 + np.exp(-s))
        r = w * (p - t)
        grad = np.array([(r * d).sum(), r.sum()])
        h = w * p * (1 - p)
        hess = np.array([[(h * d * d).sum(), (h * d).sum()], [(h * d).sum(), h.sum()]])
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        except np.linalg.LinAlgError:
            break
        lr = 1.0
        for _ in range(40):
            na, nb = a - lr * step[0], b - lr * step[1]
            nl = loss(na, nb)
            if nl <= cur:
                break
            lr /= 2
        else:
            break
        if abs(cur - nl) < 1e-15:
            a, b, cur = na, nb, nl
            break
        a, b, cur = na, nb, nl
    assert math.isfinite(cur)
    return -cur, np.array([0.0, b])


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if "--idea" not in args:
        raise SystemExit(f"--idea one of {IDEAS} is required")
    i = args.index("--idea")
    idea = args[i + 1]
    del args[i : i + 2]
    if idea not in IDEAS:
        raise SystemExit(f"--idea one of {IDEAS}")
    if idea.startswith("top"):
        games = dict(round_mod.GAMES)
        games["shapley"] = truncated(int(idea[3:]))
        round_mod.GAMES = games  # type: ignore[misc]
    elif idea == "project":
        args.append("--project-shift")  # the product's option (valuation.project_shift)
    elif idea == "platt":
        CoalitionUtility._loss_utility = _platt_loss  # type: ignore[method-assign]
    how = "the product's --project-shift" if idea == "project" else "patched in this process"
    print(f"dp_value_ideas: idea {idea} ({how})", flush=True)
    return accuracy.main(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
