#!/usr/bin/env python3
"""How the large games value poisoned updates next to honest ones (issue 18): the game alone.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/large_game_poison.py [--sites 100]
        [--games budget_shapley,linear_shapley] [--seed 1]

``--sites - 3`` honest updates (``valuation_bench.py``'s sites: five real one-epoch SmallCNN
updates from the initial model and seeded noisy variations), one sign-flipped, one x10 and one x40
of real ones (300 samples each), valued by each game of ``--games``
(``fedtrail.valuation.LARGE_GAMES``, or ``mc_shapley``: the Monte-Carlo game the default played
before) on the same coalition utility (metric ``balanced_loss``), without the screens that would
stop the x40 first: what the game itself makes of an oversized update that points well, which may
wreck the small coalitions it joins. Prints each poisoner's value and rank, the honest updates with
a value <= 0, the evaluations and seconds, and, when both ``budget_shapley`` and ``mc_shapley`` are
played, exits 1 where the budget game gives a poisoner a value of the other sign than Monte-Carlo's
(the property it is to keep).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedtrail.simulation.faults import scale_update, sign_flip  # noqa: E402
from fedtrail.valuation import (  # noqa: E402
    LARGE_GAMES,
    Candidate,
    CoalitionUtility,
    GameValues,
    mc_shapley,
)
from scripts.bench._sim import Delta, bench_game  # noqa: E402

POISONERS = ("flip", "x10", "x40")


def _poisoners(real: list[Delta]) -> list[Candidate]:
    """The poisoners made of the real updates: sign-flipped, x10 and x40, 300 samples each."""
    return [
        Candidate("flip", 300, sign_flip(real[0])),
        Candidate("x10", 300, scale_update(real[1], 10.0)),
        Candidate("x40", 300, scale_update(real[2], 40.0)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--games", default="budget_shapley,linear_shapley")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    ctx = bench_game(args.sites - 3, _poisoners)
    print(f"\n{args.sites} sites, seed {args.seed}, the game alone (no screens)")
    print("| game | evaluations | seconds | flip | x10 | x40 | honest <= 0 |")
    print("|---|---:|---:|---|---|---|---:|")
    played: dict[str, dict[str, float]] = {}
    for name in args.games.split(","):
        utility = CoalitionUtility(ctx)
        start = time.perf_counter()
        game: GameValues
        if name == "mc_shapley":
            game = mc_shapley(utility.players, utility, seed=args.seed)
        else:
            game = LARGE_GAMES[name](utility, args.seed)
        seconds = time.perf_counter() - start
        v = game.values
        order = sorted(v, key=lambda p: v[p], reverse=True)
        cells = " | ".join(f"{v[p]:+.6f} (rank {order.index(p) + 1})" for p in POISONERS)
        honest = [x for p, x in v.items() if p not in POISONERS]
        low = sum(x <= 0 for x in honest)
        print(f"| {name} | {game.evaluations} | {seconds:.1f} | {cells} | {low} of {len(honest)} |")
        played[name] = v
    print(f"load average after: {os.getloadavg()}")
    if "budget_shapley" in played and "mc_shapley" in played:
        budget, mc = played["budget_shapley"], played["mc_shapley"]
        missed = [p for p in POISONERS if (budget[p] > 0) != (mc[p] > 0)]
        print(
            "budget_shapley vs mc_shapley, the poisoners' signs: "
            + (f"DIFFER for {', '.join(missed)}" if missed else "the same")
        )
        return 1 if missed else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
