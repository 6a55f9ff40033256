#!/usr/bin/env python3
"""Where one coalition evaluation of a 100-site round's game goes (issue 18).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/coalition_eval_profile.py [--sites 100]
        [--sizes 1,5,13,50,100] [--repeats 10]

The sites of ``valuation_bench.py`` (five real one-epoch SmallCNN updates and seeded noisy
variations), metric ``balanced_loss``, torch on one thread. For each coalition size, the mean
milliseconds over ``--repeats`` seeded random coalitions of the steps
:meth:`~fedtrail.valuation.CoalitionUtility.__call__` takes: building the coalition model's
state (``state``: float64 weighted sum in address order), loading it into the scratch model,
the forward pass over the validation split (``predict_logits``), and the intercept fit and
loss (``_loss_utility``). Prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedtrail.ml.metrics import predict_logits  # noqa: E402
from fedtrail.ml.models import load_federated  # noqa: E402
from fedtrail.valuation import CoalitionUtility  # noqa: E402
from fedtrail.valuation.utility import uninformative_where_broken  # noqa: E402
from scripts.bench._sim import bench_game  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--sizes", default="1,5,13,50,100")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    ctx = bench_game(args.sites)
    validation = ctx.validation
    assert validation is not None
    util = CoalitionUtility(ctx)
    model = util._model  # the scratch model the utility evaluates in
    rng = np.random.default_rng(0)
    print(f"\n{len(validation)} validation images, ms per evaluation (mean of {args.repeats})")
    print("| coalition size | build state | load | forward pass | intercept fit + loss | total |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        parts = np.zeros(4)
        for _ in range(args.repeats):
            members = frozenset(np.array(util.players)[rng.permutation(args.sites)[:size]])
            t0 = time.perf_counter()
            state = util.state(members)
            t1 = time.perf_counter()
            load_federated(model, state)
            t2 = time.perf_counter()
            raw = predict_logits(model, validation)
            t3 = time.perf_counter()
            util._loss_utility(uninformative_where_broken(raw))
            t4 = time.perf_counter()
            parts += (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        ms = 1000 * parts / args.repeats
        cells = " | ".join(f"{x:.2f}" for x in ms)
        print(f"| {size} | {cells} | {ms.sum():.2f} |")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
