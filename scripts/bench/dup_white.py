"""Whether the free-rider screen's white-noise statistic separates a Sybil's noisy same-round
copy from honest same-round pairs: a diagnosis for a duplicate-rule white-noise test.

Trains the accuracy benchmark's honest FedAvg federations (``_sim.run_method``) and in every
round, for every ordered pair (earlier ``r``, later ``x``) of the round's sent updates, takes
the residual ``e = x - s r`` (``s = dot(x, r) / |r|**2``) and its structure statistic
(:func:`fedtrail.valuation.freeride._structure`, the free-rider screen's ``S``), both as is
(``plain``) and with each tensor divided by its own root mean square (``per-tensor``: a
copier adding noise of a share of each tensor's standard deviation, as ``a1``'s ``noise``
mode, leaves a residual white within each tensor but not across them). Beside them, copies of
site 0's update plus Gaussian noise of 0.5%, 1%, 5% and 20% of each tensor's standard
deviation (``a1``), of the update's norm (``white``), and ``a1``'s copy re-encoded through
``topk8`` keeping 60% of its entries (``topk0.6``: not sparse; measured, not judged). Prints
the smallest honest and the largest copy statistic per configuration. Exit status 1 when an
honest pair's per-tensor statistic is below the default ``duplicates.white_noise_z`` or
(without DP) an ``a1`` or ``white`` copy's is not.

    python scripts/bench/dup_white.py --sites 5,10 --alphas 0.3,1,100 --seeds 2 --rounds 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.terms import DUPLICATE_WHITE_NOISE_Z
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.freeride import _structure, duplicate_residual_z
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = Mapping[str, torch.Tensor]
Copies = dict[str, list[tuple[float, float]]]
LEVELS = (0.005, 0.01, 0.05, 0.2)


def wide(d: Delta) -> dict[str, npt.NDArray[np.float64]]:
    return {k: np.asarray(d[k].detach().numpy(), dtype=np.float64) for k in sorted(d)}


def residual(x: Delta, r: Delta) -> dict[str, npt.NDArray[np.float64]]:
    wx, wr = wide(x), wide(r)
    dot = math.fsum(float(np.dot(wx[k].ravel(), wr[k].ravel())) for k in wx)
    nr = math.fsum(float(np.dot(v.ravel(), v.ravel())) for v in wr.values())
    s = dot / nr if nr > 0 else 0.0
    return {k: wx[k] - s * wr[k] for k in wx}


def stats(x: Delta, r: Delta) -> tuple[float, float]:
    """The raw residual's statistic (the free-rider screen's) and the duplicate rule's
    (:func:`~fedtrail.valuation.freeride.duplicate_residual_z`, each tensor scaled)."""
    return _structure(residual(x, r)), duplicate_residual_z(x, r)


def noisy(d: Delta, level: float, kind: str, seed: int) -> Delta:
    g = torch.Generator().manual_seed(seed)
    if kind == "a1":
        return {k: v + level * v.std() * torch.randn(v.shape, generator=g) for k, v in d.items()}
    if kind == "topk0.6":  # a1's copy re-encoded through topk8 keeping 60% (not sparse)
        comp = Compression(method="topk8", fraction=0.6)
        spec = ModelSpec()
        blob = encode_update(noisy(d, level, "a1", seed), spec=spec, round=1, compression=comp)
        return decode_update(blob.blob, spec=spec, expected_round=1)[0]
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in d.values()))
    size = sum(v.numel() for v in d.values())
    sigma = level * norm / math.sqrt(size)
    return {k: v + sigma * torch.randn(v.shape, generator=g) for k, v in d.items()}


def measure(config: SimConfig, splits: Any) -> tuple[list[tuple[float, float]], Copies]:
    """One honest federation: every ordered same-round pair's two statistics, and the copies'
    of site 0's update, by name."""
    honest: list[tuple[float, float]] = []
    copies: Copies = {}
    real = _sim.aggregate
    count = [0]

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        count[0] += 1
        for i in range(len(deltas)):
            for j in range(len(deltas)):
                if i != j:
                    honest.append(stats(deltas[j], deltas[i]))
        for kind in ("a1", "white", "topk0.6"):
            for level in LEVELS:
                c = noisy(deltas[0], level, kind, count[0])
                copies.setdefault(f"{kind} {level:g}", []).append(stats(c, deltas[0]))
        return real(rule, deltas, weights, **kw)

    _sim.aggregate = spy
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real
    return honest, copies


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sites", default="5,10")
    p.add_argument("--alphas", default="0.3,1,100")
    p.add_argument("--seeds", default="1", help="a count N or a list 0,3,7-9")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compression", choices=("none", "topk8"), default="none")
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--dp-epsilon", type=float, default=None)
    p.add_argument("--min-size", type=int, default=50, help="smallest site (images)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_bundled()
    compression = (
        None if args.compression == "none" else Compression(method="topk8", fraction=args.fraction)
    )
    limit = DUPLICATE_WHITE_NOISE_Z
    started = time.perf_counter()
    missed = 0
    for n in (int(x) for x in args.sites.split(",")):
        for alpha in (float(x) for x in args.alphas.split(",")):
            honest: list[tuple[float, float]] = []
            copies: Copies = {}
            for seed in parse_seeds(args.seeds):
                config = SimConfig(
                    sites=n,
                    rounds=args.rounds,
                    alpha=alpha,
                    seed=seed,
                    compression=compression,
                    dp_epsilon=args.dp_epsilon,
                    min_size=args.min_size,
                )
                got, made = measure(config, splits)
                honest += got
                for k, v in made.items():
                    copies.setdefault(k, []).extend(v)
            flagged = sum(h[1] < limit for h in honest)
            print(
                f"{n} sites alpha {alpha:g} {args.compression}"
                + (f" dp {args.dp_epsilon:g}" if args.dp_epsilon else "")
                + f": {len(honest)} ordered honest pairs, smallest plain "
                f"{min(h[0] for h in honest):.4g}, smallest per-tensor "
                f"{min(h[1] for h in honest):.4g} (below {limit:g}: {flagged})",
                flush=True,
            )
            missed += flagged
            for name, rows in copies.items():
                caught = sum(r[1] < limit for r in rows)
                print(
                    f"  copy {name:<11} largest plain {max(r[0] for r in rows):.4g}, largest "
                    f"per-tensor {max(r[1] for r in rows):.4g}; caught {caught}/{len(rows)}",
                    flush=True,
                )
                if args.dp_epsilon is None and not name.startswith("topk"):
                    missed += len(rows) - caught
    print(f"{time.perf_counter() - started:.0f} s; misses (honest flagged, copies paid): {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
