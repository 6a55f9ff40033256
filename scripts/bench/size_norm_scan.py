#!/usr/bin/env python3
"""The norm screens against boosted updates at 100 label-skewed sites (stop 61, h-301).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/size_norm_scan.py [--sites 100]
        [--alphas 1,3] [--seeds 1-12] [--warm-rounds 2] [--threshold 8] [--count-factors 0]

For each Dirichlet alpha and partition seed: ``large_game_poison.py --label-skew``'s round
(``--sites`` shards of the bundled training split, each trained one local epoch at the global
model after ``--warm-rounds`` FedAvg rounds of the honest shards; the last five shards bad:
40%-noisy labels, sign-flip, x10, x40, zero) and, from the product's robust statistics
(:func:`fedtrail.valuation.robust.robust_statistics`), each update's raw robust norm z (what
``max_norm_z`` 20 judges) and its z after the claimed count's uncapped allowance
(:meth:`fedtrail.valuation.combine.Combiner.size_screen_z`, what ``size_norm_z`` judges).
Prints per partition the honest updates' largest z2 and the x10 and x40 updates' z and z2, then
how many boosted updates the raw screen lets through (z <= 20) and how many of those the second
screen at ``--threshold`` stops, and how many honest updates it would stop. Exit 1 when an
honest update's z2 is above the threshold (a false positive at that setting).

``--count-factors``: the terms' ``size_norm_count`` (h-312), as multiples of each round's median
count (0: none, the median claim alone; 1 or more: the same verdicts, ``min(m, count)`` being
``m``; below 1: a coordinator's count under the round's median, which raises every allowance),
a summary line each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.valuation import HISTORY_COMBINER  # noqa: E402
from fedtrail.valuation.robust import robust_statistics  # noqa: E402
from scripts.bench.large_game_poison import SKEWED_POISONERS, _skewed_candidates  # noqa: E402

BOOSTED = ("x10", "x40")


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--alphas", default="1,3")
    ap.add_argument("--seeds", default="1-12")
    ap.add_argument("--warm-rounds", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=8.0)
    ap.add_argument("--count-factors", default="0")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}")
    base = replace(HISTORY_COMBINER, size_norm_z=args.threshold)
    factors = [float(f) for f in args.count_factors.split(",")]
    splits, spec = load_bundled(), ModelSpec()
    missed = honest_total = 0
    stopped = dict.fromkeys(factors, 0)
    honest_flagged = dict.fromkeys(factors, 0)
    honest_max = dict.fromkeys(factors, 0.0)
    for alpha in (float(a) for a in args.alphas.split(",")):
        for seed in _seeds(args.seeds):
            start = federated_state(initial_model(spec, seed=0))
            _, cands = _skewed_candidates(
                splits, spec, start, args.sites, alpha, seed, args.warm_rounds
            )
            stats = robust_statistics({c.site: c.delta for c in cands})
            counts = [c.num_samples for c in cands]
            median = statistics.median(counts)
            honest_total += sum(c.site not in SKEWED_POISONERS for c in cands)
            missed += sum(stats[b].norm_z <= base.max_norm_z for b in BOOSTED)
            for factor in factors:
                comb = replace(base, size_norm_count=factor * median)
                z2 = {}
                for c in cands:
                    value = comb.size_screen_z(stats[c.site], c.num_samples, counts)
                    assert value is not None
                    z2[c.site] = value
                honest = [z2[c.site] for c in cands if c.site not in SKEWED_POISONERS]
                honest_flagged[factor] += sum(z > args.threshold for z in honest)
                honest_max[factor] = max(honest_max[factor], *honest)
                cells = []
                for b in BOOSTED:
                    z = stats[b].norm_z
                    if z <= comb.max_norm_z:
                        stopped[factor] += z2[b] > args.threshold
                    cells.append(f"{b} z {z:.1f} z2 {z2[b]:.1f}")
                print(
                    f"alpha {alpha:g} seed {seed}, size_norm_count {comb.size_norm_count:g}: "
                    f"honest z2 max {max(honest):.2f} | " + " | ".join(cells),
                    flush=True,
                )
    for factor in factors:
        print(
            f"count factor {factor:g}: boosted updates under max_norm_z "
            f"{HISTORY_COMBINER.max_norm_z:g}: {missed}; stopped by size_norm_z "
            f"{args.threshold:g}: {stopped[factor]}; honest updates above it: "
            f"{honest_flagged[factor]} of {honest_total} (largest honest z2 "
            f"{honest_max[factor]:.2f}); load average {os.getloadavg()}"
        )
    return 1 if any(honest_flagged.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
