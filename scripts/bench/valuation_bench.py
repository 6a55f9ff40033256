"""Benchmark of the valuation and the aggregation rules.

Usage: .venv/bin/python scripts/bench/valuation_bench.py [--sites 5,10,20,50] [--threads 1]
       [--repeats 5] [--exact-limit 10]

Valuation: wall-clock seconds of exact Shapley (up to ``--exact-limit`` sites) and Monte-Carlo
Shapley (default settings) for 5, 10, 20 and 50 sites on the bundled validation split (270
images, SmallCNN). The deltas are synthetic but realistic: five real sites (IID, 300 training
images each, one local epoch) and, for the others, one of those five deltas plus Gaussian noise
of 0.5x its per-tensor RMS, with sample counts from 100 to 400; every site's delta differs.
The game is the one :func:`fedtrail.valuation.combine.value_round` plays after screening.
For each size the table shows utility evaluations, Monte-Carlo permutations, seconds, seconds
per evaluation, and — where both ran — Spearman's rank correlation of MC against exact.

Aggregation: median seconds (over ``--repeats``) per rule for 10 updates of the CNN
(105,346 float32 values each), plus apply_delta.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.protocol.weights import onchain_weights
from fedtrail.simulation.faults import gaussian_update
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.shapley import MonteCarloShapleyScorer, ShapleyScorer


def _spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v)
        r = np.empty(len(a))
        order = np.argsort(a, kind="stable")
        i = 0
        while i < len(a):
            j = i
            while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
                j += 1
            r[order[i : j + 1]] = (i + j) / 2
            i = j + 1
        centred: np.ndarray = r - r.mean()
        return centred

    rx, ry = ranks(x), ranks(y)
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


def _synthetic_sites(
    real: list[dict[str, torch.Tensor]], count: int
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        base = real[i % len(real)]
        if i < len(real):
            delta = base
        else:
            noise = gaussian_update(base, 1.0, seed=1000 + i)
            delta = {
                k: v + noise[k] * (0.5 * float(v.double().square().mean().sqrt()))
                for k, v in base.items()
            }
        out.append((int(rng.integers(100, 401)), delta))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="5,10,20,50")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exact-limit", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sites.split(",")]

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    splits = load_bundled()
    spec = ModelSpec()
    global_state = initial_model(spec, seed=0).state_dict()
    pool = splits.train.subset(np.random.default_rng(0).choice(len(splits.train), 1500, False))
    real = [
        train_local(
            global_state, pool.subset(p), spec=spec, config=TrainConfig(epochs=1, seed=i)
        ).delta
        for i, p in enumerate(partition_iid(pool.labels, 5, seed=0))
    ]
    sites = _synthetic_sites(real, max(sizes))

    print(f"\nvaluation, validation split of {len(splits.val)} images, metric AUC")
    print("| sites | method | evaluations | permutations | seconds | ms/eval | Spearman vs exact |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in sizes:
        cands = [Candidate(f"site{i:02d}", ns, d) for i, (ns, d) in enumerate(sites[:n])]
        ctx = ValuationContext(
            global_state=global_state, spec=spec, candidates=cands, validation=splits.val
        )
        exact_values = None
        runs: list[tuple[str, ShapleyScorer | MonteCarloShapleyScorer]] = []
        if n <= args.exact_limit:
            runs.append(("exact", ShapleyScorer()))
        runs.append(("mc", MonteCarloShapleyScorer()))
        for label, scorer in runs:
            start = time.perf_counter()
            res = scorer.run(ctx)
            seconds = time.perf_counter() - start
            values = [res.values[c.site] for c in cands]
            rho = ""
            if label == "exact":
                exact_values = values
            elif exact_values is not None:
                rho = f"{_spearman(exact_values, values):.2f}"
            print(
                f"| {n} | {res.method} | {res.evaluations} | {res.permutations} | "
                f"{seconds:.1f} | {1000 * seconds / res.evaluations:.0f} | {rho} |",
                flush=True,
            )

    print("\naggregation of 10 CNN updates (median of repeats)")
    gen = torch.Generator().manual_seed(0)
    deltas = [
        {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in global_state.items()}
        for _ in range(10)
    ]
    size = sum(v.numel() for v in global_state.values())
    weights = onchain_weights(list(range(100, 1100, 100)), [1_000_000] * 10)
    print(f"({size} float32 values per update)")
    print("| rule | ms |")
    print("|---|---:|")
    for rule in (
        AggregationRule(),
        AggregationRule(name="median"),
        AggregationRule(name="trimmed_mean"),
        AggregationRule(name="krum"),
        AggregationRule(name="norm_clip"),
    ):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = aggregate(rule, deltas, weights)
            times.append(time.perf_counter() - start)
        print(f"| {rule.name} | {1000 * statistics.median(times):.1f} |")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        apply_delta(global_state, out)
        times.append(time.perf_counter() - start)
    print(f"| apply_delta | {1000 * statistics.median(times):.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
