"""How close honest same-round updates come tensor by tensor (the duplicate rule's
``shared_tensor`` test), and what the test and the white-noise test say about partial copies.

Trains the accuracy benchmark's honest FedAvg federations (``_sim.run_method``; ``topk8`` and
DP-SGD as the options say) and in every round, for every pair of the round's sent updates:

* the sizes of the nonzero tensors the two carry with exactly equal values, at any size
  (``--`` when none), and whether the product's
  :func:`~fedtrail.protocol.duplicates.shared_tensor` (at least
  :data:`~fedtrail.protocol.terms.SHARED_TENSOR_MIN_SIZE` nonzero entries in both, relative L2
  distance below :data:`~fedtrail.protocol.terms.SHARED_TENSOR_RELATIVE_L2`) names one, either
  update taken as the earlier (an honest pair marked);
* the test's own statistic: the smallest ``sqrt(d2 / n2)`` of the product's
  :func:`~fedtrail.protocol.duplicates.tensor_distance` over the tensors it looks at, either
  update as the earlier (the honest margin; exit 1 when within 10x of the threshold);
* the largest cosine of one tensor of at least the floor's size to the same tensor of the other,
  and the smallest relative distance ``|t_b - t_a| / |t_a|`` of such a tensor (how close a copy
  with a little noise on its one "clean" tensor would have to stay);
* the round through the product's :func:`~fedtrail.protocol.duplicates.find_duplicates` under
  the default rule (every honest update marked is counted).

Beside them, copies of site 0's update: ``a101 noise``, noise of ``--level`` times each
tensor's std on every tensor but ``fc1.weight`` (``a1_sybil_scaled_copy.py noise`` that leaves
one tensor alone); ``a101 mix``, site 0's ``fc1.weight`` with site 1's other tensors; and
``a101 nudged``, the ``noise`` copy with one float32 step (``nextafter``) added to every value
of the tensor it kept; and ``a101 kept L``, the ``noise`` copy with noise of L (1e-6 to 1e-3)
times that tensor's std on the kept tensor too, with that tensor's relative distance to the
original's. Each is judged by
``find_duplicates`` under the default rule and under the rule without ``shared_tensor`` (both
after site 0's original), and its white-noise statistic printed.

Exit 1 when an honest update is marked (by the shared test, or the whole default rule), when an
honest pair's statistic is below 10x the threshold (0.01), or (without DP) a ``noise``, ``mix``,
``nudged``, ``kept`` 1e-6 to 5e-4 copy is not caught by the default rule.

    python scripts/bench/dup_tensor.py --sites 5,10 --alphas 0.3,1,100 --seeds 2 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.duplicates import (
    Entry,
    _tensor_parts,
    find_duplicates,
    shared_tensor,
    tensor_distance,
)
from fedtrail.protocol.terms import (
    SHARED_TENSOR_MIN_SIZE,
    SHARED_TENSOR_RELATIVE_L2,
    DuplicateRule,
)
from fedtrail.storage.codec import Compression
from fedtrail.valuation.freeride import duplicate_residual_z
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = Mapping[str, torch.Tensor]
KEPT = "fc1.weight"
SMALL = (1e-6, 1e-5, 1e-4, 5e-4, 1e-3)
MUST_CATCH = ("noise", "mix", "nudged", "kept 1e-06", "kept 1e-05", "kept 0.0001", "kept 0.0005")
MARGIN = 10.0  # an honest pair's statistic must stay above MARGIN x the threshold
RULE = DuplicateRule()
BEFORE = replace(RULE, shared_tensor=None)


def copies(deltas: Sequence[Delta], level: float, seed: int) -> dict[str, Delta]:
    g = torch.Generator().manual_seed(seed)
    d0 = deltas[0]
    noise = {
        k: v if k == KEPT else v + level * v.std() * torch.randn(v.shape, generator=g)
        for k, v in d0.items()
    }
    out = {"noise": noise}
    if len(deltas) > 1:
        out["mix"] = {k: d0[k] if k == KEPT else deltas[1][k] for k in d0}
    out["nudged"] = {
        k: torch.nextafter(v, torch.full_like(v, math.inf)) if k == KEPT else v
        for k, v in noise.items()
    }
    for small in SMALL:
        t = d0[KEPT]
        out[f"kept {small:g}"] = {
            **noise,
            KEPT: t + small * t.std() * torch.randn(t.shape, generator=g),
        }
    return out


def entries(deltas: Sequence[Delta], dp: bool) -> list[Entry]:
    return [
        Entry(
            f"s{i}",
            i + 1,
            hashlib.sha256(str(i).encode()).hexdigest(),
            d,
            noise_declared=dp,
        )
        for i, d in enumerate(deltas)
    ]


def per_tensor(a: Delta, b: Delta) -> tuple[float, float, float]:
    """The largest cosine and the smallest relative distance (to ``a``'s) of one tensor of at
    least the floor's size, both nonzero, to the same tensor of the other; and that distance
    over the tensors with at least the floor's count of nonzero entries in both."""
    best, near, dense = -1.0, math.inf, math.inf
    for k in a:
        if a[k].numel() < SHARED_TENSOR_MIN_SIZE:
            continue
        x, y = a[k].double().reshape(-1), b[k].double().reshape(-1)
        nx, ny = float(x.norm()), float(y.norm())
        if nx > 0 and ny > 0:
            best = max(best, float(x @ y) / (nx * ny))
            dist = min(float((y - x).norm()) / nx, float((x - y).norm()) / ny)
            near = min(near, dist)
            if min(int((x != 0).sum()), int((y != 0).sum())) >= SHARED_TENSOR_MIN_SIZE:
                dense = min(dense, dist)
    return best, near, dense


def equal_sizes(a: Delta, b: Delta) -> list[int]:
    """Sizes of the nonzero tensors of the same name, shape and values in both."""
    return [
        b[n].numel()
        for n in a
        if n in b
        and a[n].shape == b[n].shape
        and bool((b[n] != 0).any())
        and torch.equal(a[n].double(), b[n].double())
    ]


def statistic(a: Delta, b: Delta) -> float:
    """The smallest ``sqrt(d2 / n2)`` of the product's shared-tensor test, ``a`` the earlier
    (inf when it looks at no tensor)."""
    pa, pb = _tensor_parts(a, SHARED_TENSOR_MIN_SIZE), _tensor_parts(b, SHARED_TENSOR_MIN_SIZE)
    best = math.inf
    for n, part in pb.items():
        if n in pa and pa[n].shape == part.shape:
            d2, n2 = tensor_distance(pa[n], part)
            best = min(best, math.sqrt(d2 / n2))
    return best


class Tally:
    def __init__(self) -> None:
        self.pairs = 0
        self.marked = 0  # honest pairs shared_tensor names a tensor of
        self.any_size: list[int] = []  # sizes of equal nonzero tensors at any size
        self.cosine = -1.0
        self.distance = math.inf
        self.dense_distance = math.inf
        self.statistic = math.inf  # the shared-tensor test's, either order
        self.rule_marked = 0  # honest updates the default rule marks
        self.updates = 0
        self.copy: dict[str, list[tuple[bool, bool, float, float]]] = {}


def measure(config: SimConfig, splits: Any, level: float, tally: Tally) -> None:
    real = _sim.aggregate
    count = [0]
    dp = config.dp_epsilon is not None

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        count[0] += 1
        for i in range(len(deltas)):
            for j in range(i + 1, len(deltas)):
                tally.pairs += 1
                tally.any_size += equal_sizes(deltas[i], deltas[j])
                if (
                    shared_tensor(deltas[i], deltas[j]) is not None
                    or shared_tensor(deltas[j], deltas[i]) is not None
                ):
                    tally.marked += 1
                tally.statistic = min(
                    tally.statistic,
                    statistic(deltas[i], deltas[j]),
                    statistic(deltas[j], deltas[i]),
                )
                cos, dist, dense = per_tensor(deltas[i], deltas[j])
                tally.dense_distance = min(tally.dense_distance, dense)
                tally.cosine = max(tally.cosine, cos)
                tally.distance = min(tally.distance, dist)
        found = find_duplicates(entries(deltas, dp), RULE, whiteness=duplicate_residual_z)
        tally.rule_marked += len(found)
        tally.updates += len(deltas)
        for name, c in copies(deltas, level, count[0]).items():
            pair = [deltas[0], c]
            now = bool(find_duplicates(entries(pair, False), RULE, whiteness=duplicate_residual_z))
            old = bool(
                find_duplicates(entries(pair, False), BEFORE, whiteness=duplicate_residual_z)
            )
            t = deltas[0][KEPT].double()
            dist = float((c[KEPT].double() - t).norm()) / float(t.norm())
            white = duplicate_residual_z(c, deltas[0])
            tally.copy.setdefault(name, []).append((now, old, white, dist))
        return real(rule, deltas, weights, **kw)

    _sim.aggregate = spy
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real


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
    p.add_argument("--level", type=float, default=0.01, help="the copies' noise, times std")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_bundled()
    compression = (
        None if args.compression == "none" else Compression(method="topk8", fraction=args.fraction)
    )
    started = time.perf_counter()
    missed = 0
    for n in (int(x) for x in args.sites.split(",")):
        for alpha in (float(x) for x in args.alphas.split(",")):
            tally = Tally()
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
                measure(config, splits, args.level, tally)
            sizes = sorted(set(tally.any_size))
            print(
                f"{n} sites alpha {alpha:g} {args.compression}"
                + (f" {args.fraction:g}" if compression else "")
                + (f" dp {args.dp_epsilon:g}" if args.dp_epsilon else "")
                + f": {tally.pairs} honest pairs; equal nonzero tensors at any size "
                f"{len(tally.any_size)} (sizes {sizes or '--'}); marked by shared_tensor "
                f"{tally.marked}; shared_tensor statistic at least {tally.statistic:.4g} "
                f"({tally.statistic / SHARED_TENSOR_RELATIVE_L2:.3g}x the threshold); largest "
                "per-tensor "
                f"cosine {tally.cosine:.6f}, smallest relative distance {tally.distance:.3g} "
                f"({tally.dense_distance:.3g} with >= {SHARED_TENSOR_MIN_SIZE} nonzero); "
                f"default rule marked {tally.rule_marked} of "
                f"{tally.updates} honest updates",
                flush=True,
            )
            missed += tally.marked + tally.rule_marked
            missed += tally.statistic < MARGIN * SHARED_TENSOR_RELATIVE_L2
            for name, rows in tally.copy.items():
                now = sum(r[0] for r in rows)
                old = sum(r[1] for r in rows)
                white = min(r[2] for r in rows)
                dist = max(r[3] for r in rows)
                print(
                    f"  copy {name:<10} caught {now}/{len(rows)} (without shared_tensor "
                    f"{old}/{len(rows)}); smallest white-noise statistic {white:.4g}; "
                    f"{KEPT} relative distance at most {dist:.3g}",
                    flush=True,
                )
                if name in MUST_CATCH and args.dp_epsilon is None:
                    missed += len(rows) - now
    print(f"{time.perf_counter() - started:.0f} s; misses (honest marked, copies paid): {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
