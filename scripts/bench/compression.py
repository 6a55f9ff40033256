"""Compression benchmark: upload bytes per round and final test AUC, dense vs top-k + 8-bit
(``topk8``) at fractions 0.05 and 0.01, with per-site error feedback.

Usage: .venv/bin/python scripts/bench/compression.py [--seeds 5] [--rounds 10] [--epochs 1]
       [--alpha 1.0] [--fractions 0.05,0.01] [--out .run/bench/compression.json] [--quick]

Scenario (a) of the accuracy benchmark: clean non-IID (Dirichlet alpha) split of the bundled
training split over 5 sites, FedAvg (sample-count weights through ``onchain_weights``), same seeds.
Every update each site sends is encoded with :func:`fedtrail.storage.codec.encode_update` (dense:
``method="none"``, canonical safetensors float32; compressed: ``topk8`` with the site's residual
carried over rounds) and decoded by :func:`fedtrail.storage.codec.decode_update` before aggregation,
as the aggregator does with the blob it fetches. Bytes are the exact blob lengths (what is put on
IPFS and hashed on chain), summed over the sites per round, averaged over rounds and seeds.

Target (issue 8): >= 90% fewer bytes at <= 1 point (0.01) of test AUC lost against dense, the
loss taken as the mean over seeds of the paired per-seed difference. Downloads (the global model,
dense, to every site) are the same for every setting and are listed for context only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.storage.codec import Compression, encode_model
from scripts.bench import _sim
from scripts.bench._sim import ONCHAIN_NOTE, ROOT, SimConfig, SimResult, mean_std, parse_seeds

TARGET_REDUCTION = 0.90
TARGET_AUC_LOSS = 0.01


def _label(c: Compression) -> str:
    return "dense" if c.method == "none" else f"topk8 {c.fraction:g}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="5", help="a count N (seeds 0..N-1) or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet label-skew alpha")
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--fractions", default="0.05,0.01", help="topk8 fractions to compare")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "compression.json")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds = "1", 2
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    settings = [Compression(method="none")] + [
        Compression(method="topk8", fraction=float(f)) for f in args.fractions.split(",") if f
    ]

    started = time.perf_counter()
    splits = load_bundled()
    spec = ModelSpec()
    model_bytes = len(encode_model(federated_state(initial_model(spec, 0)), spec=spec, round=0))

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    log(ONCHAIN_NOTE)
    runs: dict[str, list[SimResult]] = {_label(c): [] for c in settings}
    for seed in seeds:
        for c in settings:
            config = SimConfig(
                sites=args.sites,
                rounds=args.rounds,
                epochs=args.epochs,
                alpha=args.alpha,
                seed=seed,
                compression=c,
            )
            res = _sim.run_method("fedavg", config, splits)
            runs[_label(c)].append(res)
            log(
                f"seed {seed} {_label(c)}: {res.bytes_per_round / 1e3:.1f} kB/round, test AUC "
                f"{res.test['auc']:.4f} F1 {res.test['f1']:.4f} ({res.seconds:.1f}s)"
            )
    wall = time.perf_counter() - started

    dense = runs["dense"]
    dense_bytes = mean_std([r.bytes_per_round for r in dense])[0]
    rows: list[dict[str, Any]] = []
    for c in settings:
        label = _label(c)
        rs = runs[label]
        b = mean_std([r.bytes_per_round for r in rs])
        auc = mean_std([r.test["auc"] for r in rs])
        f1 = mean_std([r.test["f1"] for r in rs])
        losses = [d.test["auc"] - r.test["auc"] for d, r in zip(dense, rs, strict=True)]
        loss = mean_std(losses)
        reduction = 1.0 - b[0] / dense_bytes
        row: dict[str, Any] = {
            "setting": label,
            "method": c.method,
            "fraction": None if c.method == "none" else c.fraction,
            "bytes_per_round": {"mean": b[0], "std": b[1]},
            "bytes_per_update": b[0] / args.sites,
            "reduction": reduction,
            "auc": {"mean": auc[0], "std": auc[1], "n": auc[2]},
            "f1": {"mean": f1[0], "std": f1[1], "n": f1[2]},
            "auc_loss_vs_dense": {
                "mean": loss[0],
                "std": loss[1],
                "n": loss[2],
                "worst_seed": max(losses),
                "per_seed": losses,
            },
        }
        if c.method != "none":
            row["target_met"] = bool(reduction >= TARGET_REDUCTION and loss[0] <= TARGET_AUC_LOSS)
        rows.append(row)

    def verdict(row: dict[str, Any]) -> str:
        if "target_met" not in row:
            return "(reference)"
        return "met" if row["target_met"] else "NOT met"

    print(ONCHAIN_NOTE)
    print(
        f"\nCompression, FedAvg, clean non-IID (Dirichlet alpha {args.alpha}), {args.sites} "
        f"sites, {args.rounds} rounds x {args.epochs} local epoch(s), {len(seeds)} seed(s) "
        f"{seeds}; wall {wall:.0f} s. Target: >= {TARGET_REDUCTION:.0%} fewer bytes at <= "
        f"{TARGET_AUC_LOSS} AUC lost.\n"
    )
    head = (
        f"{'setting':14}{'upload B/round':>16}{'B/update':>11}{'fewer bytes':>13}"
        f"{'test AUC':>18}{'test F1':>18}{'AUC lost':>20}{'worst seed':>12}  target"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        print(
            f"{row['setting']:14}{row['bytes_per_round']['mean']:>16,.0f}"
            f"{row['bytes_per_update']:>11,.0f}{row['reduction']:>13.1%}"
            f"{row['auc']['mean']:>11.3f} ± {row['auc']['std']:.3f}"
            f"{row['f1']['mean']:>11.3f} ± {row['f1']['std']:.3f}"
            f"{row['auc_loss_vs_dense']['mean']:>+12.4f} ± {row['auc_loss_vs_dense']['std']:.4f}"
            f"{row['auc_loss_vs_dense']['worst_seed']:>+12.4f}  {verdict(row)}"
        )
    print(f"\nDownload per site per round (dense global model, every setting): {model_bytes:,} B")

    print("\n#### Compression (Markdown)\n")
    print(
        f"FedAvg, clean non-IID (Dirichlet alpha {args.alpha}), {args.sites} sites, "
        f"{args.rounds} rounds x {args.epochs} local epoch(s), mean ± std over {len(seeds)} "
        f"seeds; upload bytes are the exact update blobs of all {args.sites} sites per round. "
        f"Target: >= 90% fewer bytes at <= 1 point AUC lost.\n"
    )
    print(
        "| setting | upload bytes / round | fewer bytes | test AUC | test F1 | AUC lost vs dense "
        "| worst seed | target |"
    )
    print("|---|---:|---:|---|---|---|---:|---|")
    for row in rows:
        print(
            f"| {row['setting']} | {row['bytes_per_round']['mean']:,.0f} | "
            f"{row['reduction']:.1%} | {row['auc']['mean']:.3f} ± {row['auc']['std']:.3f} | "
            f"{row['f1']['mean']:.3f} ± {row['f1']['std']:.3f} | "
            f"{row['auc_loss_vs_dense']['mean']:+.4f} ± {row['auc_loss_vs_dense']['std']:.4f} | "
            f"{row['auc_loss_vs_dense']['worst_seed']:+.4f} | {verdict(row)} |"
        )
    print(
        f"\nCommand: `{' '.join(['.venv/bin/python scripts/bench/compression.py', *sys.argv[1:]])}`"
        f" — wall {wall / 60:.1f} min on {os.cpu_count()} CPU cores, 1 torch thread."
    )

    doc = {
        "benchmark": "compression",
        "note": ONCHAIN_NOTE,
        "command": [sys.executable, *sys.argv],
        "settings": {
            "seeds": seeds,
            "rounds": args.rounds,
            "epochs": args.epochs,
            "alpha": args.alpha,
            "sites": args.sites,
            "threads": args.threads,
            "target_reduction": TARGET_REDUCTION,
            "target_auc_loss": TARGET_AUC_LOSS,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "provenance": _sim.provenance(),
        "wall_seconds": wall,
        "model_download_bytes": model_bytes,
        "results": rows,
        "runs": {label: [r.as_dict() for r in rs] for label, rs in runs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float), encoding="utf-8")
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
