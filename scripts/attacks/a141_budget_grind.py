#!/usr/bin/env python3
"""Attack a141 (h-303, session 62): grinding ``budget_shapley``'s public sample (the game alone).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/attacks/a141_budget_grind.py [--sites 13]
        [--seeds 1-5] [--noise 0.4] [--sybils 2]

The budget game's sample is public before any update exists: the round terms (sha256 in
``openRound``) carry ``valuation.seed`` (the aggregator's base seed plus the round), the players
are the updates that pass the screens in address order, and the circles are
``numpy.random.default_rng(seed).permutation(n)``. A site that reveals last has seen every other
revealed update (public CIDs, public store) and knows the seed, so the only unknown is the
aggregator's validation split. With ``k`` registered Sybils (data-less or not) it can choose, in
the reveal window, which of them to reveal (an unrevealed commitment is only "withheld"): each
choice is another player set, so another circle and another sample of its coalitions.

Here: ``--sites`` honest updates (``valuation_bench.py``'s synthetic sites, the site builder
every valuation bench uses), one attacker whose update is real but trained on a fifth of the pool
with ``--noise`` of its labels flipped (a site the standing should demote), and ``--sybils``
cheap Sybils (more synthetic variants) it may reveal or not. For each round seed the script plays
``budget_shapley`` (``fedtrail.valuation.LARGE_GAMES``, the product's game, the same
``CoalitionUtility`` as ``value_round``) for every subset of the Sybils, twice: on the
aggregator's validation split (the values the round would record) and on a proxy split the
attacker holds (270 training images outside the sites' pool). It prints the attacker's value
with no Sybil revealed (its honest baseline), under the subset the proxy ranks best (what the
attack gets), and under the best subset by the real values (the oracle bound), plus the spread
(max - min) of its value over the subsets.

Exits 0 always: a measurement (README, *Trust model*, the a141 entry).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.simulation.faults import label_noise  # noqa: E402
from fedtrail.valuation import (  # noqa: E402
    LARGE_GAMES,
    Candidate,
    CoalitionUtility,
    ValuationContext,
)
from scripts.bench.valuation_bench import _synthetic_sites, real_updates  # noqa: E402


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=13, help="honest sites")
    parser.add_argument("--seeds", default="1-5", help="round seeds (valuation.seed)")
    parser.add_argument("--noise", type=float, default=0.4, help="attacker's label-noise rate")
    parser.add_argument("--sybils", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    splits = load_bundled()
    spec = ModelSpec()
    state = federated_state(initial_model(spec, seed=0))
    real = real_updates(splits, spec, state)
    synth = _synthetic_sites(real, args.sites + args.sybils)
    # the attacker: real data outside the sites' pool, labels partly flipped
    rng = np.random.default_rng(0)
    pool = set(rng.choice(len(splits.train), 1500, False).tolist())
    outside = np.array([i for i in range(len(splits.train)) if i not in pool])
    own = splits.train.subset(outside[:300])
    proxy = splits.train.subset(outside[300:570])
    noisy = label_noise(own, args.noise, seed=7)
    bad = train_local(state, noisy, spec=spec, config=TrainConfig(epochs=1, seed=99)).delta
    # names sort as addresses would: the attacker somewhere in the middle
    honest = [Candidate(f"h{i:02d}", ns, d) for i, (ns, d) in enumerate(synth[: args.sites])]
    attacker = Candidate("h06x", len(noisy), bad)
    sybils = [Candidate(f"s{j}", ns, d) for j, (ns, d) in enumerate(synth[args.sites :])]
    game = LARGE_GAMES["budget_shapley"]
    subsets = [list(c) for r in range(len(sybils) + 1) for c in itertools.combinations(sybils, r)]
    print(
        f"{args.sites} honest synthetic sites + attacker ({args.noise:.0%} noisy labels, "
        f"{len(noisy)} images) + {len(sybils)} Sybils it may reveal ({len(subsets)} choices); "
        "budget_shapley, metric balanced_loss"
    )
    print("| seed | baseline (no Sybil) | proxy's pick | oracle best | spread | evals |")
    print("|---:|---:|---:|---:|---:|---:|")
    rows = []
    start = time.perf_counter()
    for seed in _seeds(args.seeds):
        real_v: list[float] = []
        proxy_v: list[float] = []
        evals = 0
        for subset in subsets:
            cands = sorted([*honest, attacker, *subset], key=lambda c: c.site)
            for split, out in ((splits.val, real_v), (proxy, proxy_v)):
                ctx = ValuationContext(
                    global_state=state,
                    spec=spec,
                    candidates=cands,
                    validation=split,
                    metric="balanced_loss",
                )
                g = game(CoalitionUtility(ctx), seed)
                out.append(g.values["h06x"])
                evals += g.evaluations
        pick = int(np.argmax(proxy_v))
        best = int(np.argmax(real_v))
        rows.append((real_v[0], real_v[pick], real_v[best]))
        names = ["+".join(c.site for c in s) or "none" for s in subsets]
        print(
            f"| {seed} | {real_v[0]:+.6f} | {real_v[pick]:+.6f} ({names[pick]}) | "
            f"{real_v[best]:+.6f} ({names[best]}) | {max(real_v) - min(real_v):.6f} | {evals} |"
        )
    base, picked, oracle = (np.array(x) for x in zip(*rows, strict=True))
    print(
        f"\nattacker's value, mean over {len(rows)} seeds: baseline {base.mean():+.6f} "
        f"(> 0 in {int((base > 0).sum())}), proxy's pick {picked.mean():+.6f} "
        f"(> 0 in {int((picked > 0).sum())}), oracle {oracle.mean():+.6f} "
        f"(> 0 in {int((oracle > 0).sum())}); {time.perf_counter() - start:.0f} s"
    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
