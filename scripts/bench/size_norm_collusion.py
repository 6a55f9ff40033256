#!/usr/bin/env python3
"""Colluders' claimed counts against an honest site under ``size_norm_z`` (h-309, reviewing
h-301): how many sites must inflate their claims to get an honest update rejected.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/size_norm_collusion.py
        [--rounds 3:11,1:1,3:7,1:6] [--warm-rounds 2] [--threshold 8] [--min-share 0.1]
        [--count-factors 0,1,1.5,2]

For each ``alpha:seed`` the round of ``size_norm_scan.py`` (100 label-skewed sites, the
product's robust statistics): every honest update the raw screen passes whose raw robust z is
above the threshold (it passes ``size_norm_z`` only through its claimed count's allowance
``max(1, n / m)``) is a target. Colluders, the honest sites with the fewest images (their
updates unchanged), claim ``max(target's count, 2 m)`` each (within ``max_sample_ratio`` of the
median: no IMPLAUSIBLE_SAMPLES); the median ``m`` rises and the target's allowance falls. Prints
the fewest colluders that get a target rejected (:meth:`Combiner.norm_outlier`, the service's
and ``audit verify``'s verdict). Exit 1 when a coalition below ``--min-share`` of the sites does.

``--count-factors``: the terms' ``size_norm_count`` (h-312) as multiples of the round's honest
median count (0: none, session 62's rule, the median of the claims alone), each judged on the
same round: the count a coordinator writes from the cohorts it knows, exactly or too high.
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
from fedtrail.valuation import HISTORY_COMBINER, Candidate  # noqa: E402
from fedtrail.valuation.combine import Combiner  # noqa: E402
from fedtrail.valuation.robust import RobustStats, robust_statistics  # noqa: E402
from scripts.bench.large_game_poison import SKEWED_POISONERS, _skewed_candidates  # noqa: E402

SITES = 100


def _rejected(comb: Combiner, stats: RobustStats, site: str, claimed: dict[str, int]) -> bool:
    """The norm screens' verdict on ``site``'s update under the claimed counts ``claimed``."""
    return comb.norm_outlier(stats, claimed[site], list(claimed.values()))[3]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", default="3:11,1:1,3:7,1:6")
    ap.add_argument("--warm-rounds", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=8.0)
    ap.add_argument("--min-share", type=float, default=0.1)
    ap.add_argument("--count-factors", default="0")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}")
    base = replace(HISTORY_COMBINER, size_norm_z=args.threshold)
    factors = [float(f) for f in args.count_factors.split(",")]
    splits, spec = load_bundled(), ModelSpec()
    fewest: dict[float, int | None] = dict.fromkeys(factors)
    for cell in args.rounds.split(","):
        alpha, seed = float(cell.split(":")[0]), int(cell.split(":")[1])
        start = federated_state(initial_model(spec, seed=0))
        _, cands = _skewed_candidates(splits, spec, start, SITES, alpha, seed, args.warm_rounds)
        stats = robust_statistics({c.site: c.delta for c in cands if c.delta is not None})
        honest = [c for c in cands if c.site not in SKEWED_POISONERS]
        counts = {c.site: c.num_samples for c in cands}
        m0 = statistics.median(counts.values())
        for factor in factors:
            comb = replace(base, size_norm_count=factor * m0)
            fewest[factor] = _fewest(comb, args, stats, honest, counts, m0, fewest[factor], cell)
    for factor in factors:
        print(
            f"count factor {factor:g}: fewest colluders: {fewest[factor]} of {SITES} (target: "
            f"none below {args.min_share:.0%}); load average {os.getloadavg()}"
        )
    return 1 if any(f is not None and f < args.min_share * SITES for f in fewest.values()) else 0


def _fewest(
    comb: Combiner,
    args: argparse.Namespace,
    stats: dict[str, RobustStats],
    honest: list[Candidate],
    counts: dict[str, int],
    m0: float,
    fewest: int | None,
    cell: str,
) -> int | None:
    """One round's fewest colluders under ``comb`` (printed), folded into ``fewest``."""
    alpha, seed = float(cell.split(":")[0]), int(cell.split(":")[1])
    assert not any(_rejected(comb, stats[c.site], c.site, counts) for c in honest), (
        "honest rejected unattacked"
    )
    targets = [c for c in honest if args.threshold < stats[c.site].norm_z <= comb.max_norm_z]
    best: tuple[int, str, int, float, int, float] | None = None
    for target in targets:
        order = sorted((c for c in honest if c.site != target.site), key=lambda c: c.num_samples)
        claim = max(target.num_samples, int(2 * m0))
        for k in range(1, len(order) + 1):
            claimed = dict(counts) | {c.site: claim for c in order[:k]}
            m = statistics.median(claimed.values())
            if claim > comb.max_sample_ratio * m:
                continue
            if _rejected(comb, stats[target.site], target.site, claimed):
                if best is None or k < best[0]:
                    best = (
                        k,
                        target.site,
                        target.num_samples,
                        stats[target.site].norm_z,
                        claim,
                        m,
                    )
                break
    line = (
        f"alpha {alpha:g} seed {seed}, size_norm_count {comb.size_norm_count:g}: median "
        f"count {m0:g}; {len(targets)} target(s)"
    )
    if best is not None:
        k, site, n, z, claim, m = best
        fewest = k if fewest is None else min(fewest, k)
        line += (
            f"; {k} colluders claiming {claim} (median -> {m:g}) get {site} ({n} images, "
            f"raw z {z:.1f}) rejected"
        )
    print(line, flush=True)
    return fewest


if __name__ == "__main__":
    raise SystemExit(main())
