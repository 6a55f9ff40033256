"""Benchmark of the model architectures through the demo's own path: a clean federation of
simulated sites (``fedtrail.simulation.demo.run_demo``: site nodes, Shapley valuation, heatmaps,
audit) per architecture and image size, on the bundled chest X-rays resized.

Usage: .venv/bin/python scripts/bench/arch_bench.py [--runs smallcnn@28,resnet10@64,densenet121@64]
       [--sites 3] [--rounds 2] [--epochs 1] [--data pneumonia] [--out RUN.json]

Prints for each run: seconds per round (wall clock, whole round: training of every site,
valuation, aggregation, heatmaps, chain and store; one torch thread), the update's bytes dense
and with topk8 (the final global model minus the initial one, through the product's codec), the
final global model's test AUC and balanced accuracy at the calibrated decision (fitted on the
validation split), and whether ``audit verify --all`` passed. Exits 1 when a run's audit fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedtrail.ml.catalog import load_source
from fedtrail.ml.metrics import evaluate, evaluate_calibrated
from fedtrail.ml.models import ModelSpec, federated_state, initial_model, load_federated
from fedtrail.simulation.demo import Scenario, run_demo
from fedtrail.storage.codec import Compression, decode_model, encode_update
from fedtrail.storage.store import LocalStore


def _run(arch: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    scenario = Scenario(
        sites=args.sites,
        rounds=args.rounds,
        noisy_sites=0,
        poison_sites=0,
        epochs=args.epochs,
        data=args.data,
        arch=arch,
        image_size=size,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="fedtrail-arch-") as tmp:
        started = time.perf_counter()
        result = run_demo(scenario, Path(tmp), echo=lambda *a, **k: None)
        seconds = time.perf_counter() - started
        spec = ModelSpec(**result["task"]["model_spec"])
        final = result["final_global"]
        blob = LocalStore(Path(tmp) / "store").get(final["cid"], final["sha256"])
        state, _ = decode_model(blob, spec=spec)
    start = federated_state(initial_model(spec, args.seed))
    delta = {k: state[k] - start[k] for k in start}
    dense = encode_update(delta, spec=spec, round=1).blob
    topk8 = encode_update(delta, spec=spec, round=1, compression=Compression(method="topk8")).blob
    splits = load_source(args.data).splits()
    if splits.train.image_size != (size, size):
        splits = splits.resized(size)
    model = spec.build()
    load_federated(model, state)
    bias = evaluate_calibrated(model, splits.val).bias
    test = evaluate(model, splits.test, bias=bias)
    return {
        "arch": arch,
        "image_size": size,
        "parameters": sum(t.numel() for t in start.values()),
        "seconds_per_round": seconds / args.rounds,
        "bytes_dense": len(dense),
        "bytes_topk8": len(topk8),
        "test_auc": test.auc,
        "test_balanced_accuracy_calibrated": test.balanced_accuracy_calibrated,
        "verified": result["verified"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="smallcnn@28,resnet10@64,densenet121@64")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="pneumonia")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in args.runs.split(","):
        arch, _, size = run.partition("@")
        row = _run(arch, int(size), args)
        rows.append(row)
        print(
            f"{arch:<12} {row['image_size']:>4} px  {row['parameters']:>9,} params  "
            f"{row['seconds_per_round']:7.1f} s/round  dense {row['bytes_dense']:>11,} B  "
            f"topk8 {row['bytes_topk8']:>10,} B  test AUC {row['test_auc']:.3f}  "
            f"bal.acc {row['test_balanced_accuracy_calibrated']:.3f}  "
            f"verify {'PASS' if row['verified'] else 'FAIL'}",
            flush=True,
        )
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": rows}))
    sys.exit(0 if all(r["verified"] for r in rows) else 1)


if __name__ == "__main__":
    main()
