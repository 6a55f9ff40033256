"""What would catch a noisy copy that keeps most of its original's entries, or that was
noised before ``topk8`` chose them (a measurement for a rule not built: README, *Partial
copies*).

Trains the accuracy benchmark's honest FedAvg federations (``_sim.run_method``; every site's
update through ``topk8`` at ``--fraction`` when ``--compression topk8``) and in every round,
for every ordered pair (earlier ``a``, later ``b``) of the round's sent updates, measures

* ``overlap``: :func:`fedtrail.protocol.duplicates.support_overlap` (the kept-entries share
  the rule reads only for *sparse* ``b``), here for every ``b``;
* ``support white``: the white-noise statistic of ``b``'s residual from ``a`` on ``b``'s
  nonzero entries only (``a'`` = ``a`` there, ``s = dot(b, a') / dot(a', a')``, ``e = b - s a'``
  on those entries, each tensor divided by its root mean square over them, then the free-rider
  screen's :func:`~fedtrail.valuation.freeride._structure` with those entries present), the
  duplicate rule's white-noise test restricted to what ``b`` carries;

and the same for copies of site 0's update: ``after F L`` (``topk8`` at F, Gaussian noise of L
times each tensor's std of the kept values on the kept entries, ``topk8`` at F again: the
entries stay), ``before F L`` (the noise on every entry, then ``topk8`` at F: noise moves
the kept set at its edge). Prints the honest and copy ranges per configuration. Exit 0 always
(a measurement).

    python scripts/bench/dup_support_white.py --sites 5 --alphas 1 --seeds 1 --rounds 2
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
from fedtrail.protocol.duplicates import sparse, support_overlap
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.freeride import _structure
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = Mapping[str, torch.Tensor]
COPIES = (
    ("after", 0.6, 0.005),
    ("after", 0.6, 0.01),
    ("before", 0.6, 0.005),
    ("before", 0.6, 0.01),
    ("before", 0.05, 0.01),
    ("before", 0.05, 0.05),
    ("before", 0.05, 0.2),
)


def topk(d: Delta, fraction: float) -> dict[str, torch.Tensor]:
    spec = ModelSpec()
    comp = Compression(method="topk8", fraction=fraction)
    blob = encode_update(d, spec=spec, round=1, compression=comp)
    return decode_update(blob.blob, spec=spec, expected_round=1)[0]


def copy(d: Delta, kind: str, fraction: float, level: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "before":
        return topk(
            {k: v + level * v.std() * torch.randn(v.shape, generator=g) for k, v in d.items()},
            fraction,
        )
    kept = topk(d, fraction)
    noisy = {}
    for k, v in kept.items():
        on = v != 0
        sd = float(v[on].std()) if int(on.sum()) > 1 else 0.0
        noisy[k] = torch.where(on, v + level * sd * torch.randn(v.shape, generator=g), v)
    return topk(noisy, fraction)


def support_white(b: Delta, a: Delta) -> float:
    names = sorted(b)
    wb = {n: b[n].detach().double().numpy().reshape(b[n].shape) for n in names}
    wa = {n: a[n].detach().double().numpy().reshape(a[n].shape) for n in names}
    on = {n: wb[n] != 0 for n in names}
    ar = {n: np.where(on[n], wa[n], 0.0) for n in names}
    rr = math.fsum(float(np.dot(ar[n].ravel(), ar[n].ravel())) for n in names)
    if not rr > 0:
        return math.inf
    s = math.fsum(float(np.dot(wb[n].ravel(), ar[n].ravel())) for n in names) / rr
    if not s > 0:
        return math.inf
    parts: dict[str, npt.NDArray[np.float64]] = {}
    present: dict[str, npt.NDArray[np.bool_]] = {}
    for n in names:
        e = np.where(on[n], wb[n] - s * ar[n], 0.0)
        count = int(on[n].sum())
        m = float(np.sum(e * e)) / count if count else 0.0
        parts[n] = e / math.sqrt(m) if 0 < m < math.inf else e
        present[n] = on[n]
    return _structure(parts, present)


def measure(
    config: SimConfig, splits: Any, rows: dict[str, list[tuple[float, float]]], sparse_b: list[int]
) -> None:
    real = _sim.aggregate
    count = [0]

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        count[0] += 1
        for i in range(len(deltas)):
            for j in range(len(deltas)):
                if i != j:
                    b = deltas[j]
                    sparse_b[0] += int(sparse(b))
                    rows.setdefault("honest", []).append(
                        (support_overlap(deltas[i], b), support_white(b, deltas[i]))
                    )
        for kind, fraction, level in COPIES:
            c = copy(deltas[0], kind, fraction, level, count[0])
            rows.setdefault(
                f"{kind} {fraction:g} {level:g}" + (" sparse" if sparse(c) else ""), []
            ).append((support_overlap(deltas[0], c), support_white(c, deltas[0])))
        return real(rule, deltas, weights, **kw)

    _sim.aggregate = spy
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sites", default="5")
    p.add_argument("--alphas", default="1")
    p.add_argument("--seeds", default="1", help="a count N or a list 0,3,7-9")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--compression", choices=("none", "topk8"), default="none")
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--min-size", type=int, default=50, help="smallest site (images)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_bundled()
    compression = (
        None if args.compression == "none" else Compression(method="topk8", fraction=args.fraction)
    )
    started = time.perf_counter()
    for n in (int(x) for x in args.sites.split(",")):
        for alpha in (float(x) for x in args.alphas.split(",")):
            rows: dict[str, list[tuple[float, float]]] = {}
            sparse_b = [0]
            for seed in parse_seeds(args.seeds):
                config = SimConfig(
                    sites=n,
                    rounds=args.rounds,
                    alpha=alpha,
                    seed=seed,
                    compression=compression,
                    min_size=args.min_size,
                )
                measure(config, splits, rows, sparse_b)
            codec = args.compression + (f" {args.fraction:g}" if compression else "")
            print(f"{n} sites alpha {alpha:g} {codec} (honest later updates sparse: {sparse_b[0]})")
            for name, got in rows.items():
                o = [g[0] for g in got]
                w = [g[1] for g in got]
                print(
                    f"  {name:<20} {len(got):>5}: overlap {min(o):.4f}-{max(o):.4f}, "
                    f"support white {min(w):.4g}-{max(w):.4g}",
                    flush=True,
                )
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
