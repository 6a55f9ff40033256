#!/usr/bin/env python3
"""Weighted aggregation against Flower's ``aggregate``, at 10 and 100 clients (issue 18).

    .venv/bin/python scripts/bench/aggregation_bench.py [--clients 10,100] [--repeats 30]
        [--threads N] [--bar 1.5] [--json]

Inputs: one seeded delta per client with the node's CNN layout (``ModelSpec()``, SmallCNN,
105,346 float32 values), on-chain weights from seeded sample counts and scores. Timed per call:

* fedtrail: ``aggregate(AggregationRule(), deltas, weights)`` — the rule users run and
  ``audit verify`` replays (float64 accumulation in address order, one cast to float32);
* Flower: Flower's own ``flwr.server.strategy.aggregate.aggregate`` (flwr 1.42, the
  ``flower`` extra; without flwr, the same formula reimplemented below, and the run says so):
  per layer, ``reduce(np.add, [layer * num_examples ...]) / total`` over float32 arrays
  (the tensors' own memory, as Flower gets NDArrays after deserialisation).

Both see the same updates; calls alternate (fedtrail, Flower, ...) so machine noise hits both.
Each call is timed twice: wall clock and the process's CPU time (all threads); the figures are
medians over ``--repeats``. The bar is checked on ``--clock`` (default ``cpu``: on a shared
machine, time spent descheduled lands on whichever call was running, mostly the longer one).
Exit 1 when fedtrail / Flower exceeds ``--bar`` (the issue's 1.5) at any client count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import reduce
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.ml.aggregation import AggregationRule, Delta, aggregate  # noqa: E402
from fedtrail.ml.models import ModelSpec  # noqa: E402
from fedtrail.protocol.weights import onchain_weights  # noqa: E402

NDArrays = list[npt.NDArray[np.float32]]

try:
    from flwr.server.strategy.aggregate import aggregate as _flwr_aggregate

    FLOWER = "flwr.server.strategy.aggregate.aggregate (flwr installed)"
except ImportError:  # the optional 'flower' extra is not installed
    _flwr_aggregate = None
    FLOWER = "Flower's formula reimplemented in numpy (flwr not installed)"


def reimplemented_aggregate(results: list[tuple[NDArrays, int]]) -> NDArrays:
    """Flower's aggregate formula, reimplemented in numpy (flwr.server.strategy.aggregate)."""
    num_examples_total = sum(num_examples for (_, num_examples) in results)
    weighted_weights = [
        [layer * num_examples for layer in weights] for weights, num_examples in results
    ]
    return [
        reduce(np.add, layer_updates) / num_examples_total
        for layer_updates in zip(*weighted_weights, strict=True)
    ]


def flower_aggregate(results: list[tuple[NDArrays, int]]) -> NDArrays:
    """Flower's own ``aggregate`` when flwr is installed, else the reimplementation."""
    if _flwr_aggregate is not None:
        out: NDArrays = _flwr_aggregate(results)
        return out
    return reimplemented_aggregate(results)


@dataclass(frozen=True)
class Row:
    clients: int
    fedtrail_ms: float
    flower_ms: float
    ratio: float
    fedtrail_cpu_ms: float
    flower_cpu_ms: float
    cpu_ratio: float


def inputs(n: int, seed: int) -> tuple[list[Delta], list[int], list[tuple[NDArrays, int]]]:
    gen = torch.Generator().manual_seed(seed)
    layout = ModelSpec().tensor_layout()
    deltas = [
        {k: torch.randn(shape, generator=gen) * 0.01 for k, (shape, _) in layout.items()}
        for _ in range(n)
    ]
    rng = np.random.default_rng(seed)
    samples = [int(x) for x in rng.integers(100, 3000, n)]
    scores = [int(x) for x in rng.integers(1, 1_000_000, n)]
    weights = onchain_weights(samples, scores)
    flower = [([t.numpy() for t in d.values()], s) for d, s in zip(deltas, samples, strict=True)]
    return deltas, weights, flower


def measure(n: int, repeats: int, order: str = "alternate") -> Row:
    deltas, weights, flower = inputs(n, seed=n)
    rule = AggregationRule()
    calls: dict[str, Callable[[], object]] = {
        "fedtrail": lambda: aggregate(rule, deltas, weights),
        "flower": lambda: flower_aggregate(flower),
    }
    for call in calls.values():  # warm-up: allocator, caches, lazy imports
        call()
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    # alternate: both sides share the machine's load of the moment, and each other's heap
    # (a call can leave the allocator's trimmed heap for the next one to fault back in);
    # blocks: each side's calls in a row, after its own warm-up, as a process doing only that
    schedule = (
        [name for _ in range(repeats) for name in calls]
        if order == "alternate"
        else [name for name in calls for _ in range(repeats)]
    )
    for i, name in enumerate(schedule):
        call = calls[name]
        if order == "blocks" and i % repeats == 0:
            call()
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        wall[name].append(time.perf_counter() - t0)
        cpu[name].append(time.process_time() - c0)

    def ms(xs: list[float]) -> float:
        return statistics.median(xs) * 1e3

    ours, theirs = ms(wall["fedtrail"]), ms(wall["flower"])
    ours_cpu, theirs_cpu = ms(cpu["fedtrail"]), ms(cpu["flower"])
    return Row(
        n,
        round(ours, 3),
        round(theirs, 3),
        round(ours / theirs, 2),
        round(ours_cpu, 3),
        round(theirs_cpu, 3),
        round(ours_cpu / theirs_cpu, 2),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="10,100", help="comma-separated client counts")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--bar", type=float, default=1.5, help="largest fedtrail/Flower ratio")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="clock of the bar")
    ap.add_argument(
        "--order",
        choices=("alternate", "blocks"),
        default="alternate",
        help="calls alternated between the two sides, or each side's calls in one block",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(int(n), args.repeats, args.order) for n in args.clients.split(",")]
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
    else:
        print(f"Flower side: {FLOWER}")
        print(
            f"torch threads {torch.get_num_threads()}, median of {args.repeats} calls "
            f"({args.order}), in ms"
        )
        head = ("clients", "wall fedtrail", "Flower", "ratio", "cpu fedtrail", "Flower", "ratio")
        print("  ".join(f"{h:>13}" for h in head))
        for r in rows:
            cells = (r.fedtrail_ms, r.flower_ms, r.ratio, r.fedtrail_cpu_ms, r.flower_cpu_ms)
            print(
                f"{r.clients:>13}  "
                + "  ".join(f"{c:>13.2f}" for c in cells)
                + f"  {r.cpu_ratio:>13.2f}"
            )
    failed = [r for r in rows if (r.cpu_ratio if args.clock == "cpu" else r.ratio) > args.bar]
    if failed:
        print(
            f"FAIL: {args.clock} ratio above {args.bar} at "
            + ", ".join(
                f"{r.clients} clients ({r.cpu_ratio if args.clock == 'cpu' else r.ratio})"
                for r in failed
            ),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
