"""Whether the duplicate rule's white-noise test may look at updates that declare DP-SGD: honest
DP-SGD federations against DP-declared noisy copies (``duplicates.white_noise_dp_cosine``,
attack a100).

Trains the accuracy benchmark's honest FedAvg federations with every site on DP-SGD
(``_sim.run_method``, ``--dp-epsilon`` over the run, ``--dp-accounting``) and in every round
passes the round's sent updates, each declaring DP-SGD, in site order as commit order, through
the product's :func:`fedtrail.protocol.duplicates.find_duplicates` under the default rule with
``white_noise_dp_cosine`` 0.5 (opt-in: a DP-declared later update whose closest original is at
cosine above it takes the white-noise test) with the product's statistic
(:func:`fedtrail.valuation.freeride.duplicate_residual_z`): every honest site it marks is a
false positive. Printed beside: the largest cosine of any ordered honest pair (the rule tests
none below ``white_noise_dp_cosine``) and, for pairs above it, the smallest statistic. Copies:
site 0's update plus white Gaussian noise whose norm is ``k`` times the update's (``--levels``),
appended last and declaring DP-SGD; caught when :func:`find_duplicates` names it (a copy plus
noise of norm ``k`` lies at cosine about ``1 / sqrt(1 + k**2)``: 0.5 at ``k`` 1.73).

Exit 1 when an honest site is marked.

    python scripts/bench/dup_white_dp.py --sites 5,10 --alphas 1 --seeds 0,1 --rounds 3 \
        --epsilons 1,3,8
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DUPLICATE_WHITE_NOISE_DP_COSINE, DuplicateRule
from fedtrail.valuation.freeride import duplicate_residual_z
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = Mapping[str, torch.Tensor]


def flat(d: Delta) -> torch.Tensor:
    return torch.cat([d[k].detach().to(torch.float64).flatten() for k in sorted(d)])


def cosine(a: Delta, b: Delta) -> float:
    x, y = flat(a), flat(b)
    return float(x @ y) / (float(x.norm()) * float(y.norm()))


def noisy(d: Delta, k: float, seed: int) -> Delta:
    """``d`` plus white Gaussian noise of norm about ``k |d|`` spread evenly."""
    g = torch.Generator().manual_seed(seed)
    x = flat(d)
    sd = k * float(x.norm()) / math.sqrt(x.numel())
    return {
        n: v + (sd * torch.randn(v.shape, generator=g, dtype=torch.float64)).to(v.dtype)
        for n, v in d.items()
    }


def entries(deltas: Sequence[Delta]) -> list[Entry]:
    return [
        Entry(f"s{i:02d}", i + 1, f"{i:064x}", d, noise_declared=True) for i, d in enumerate(deltas)
    ]


class Tally:
    def __init__(self) -> None:
        self.pairs = 0
        self.marked = 0
        self.max_cos = -1.0
        self.tested_min_s = math.inf
        self.tested = 0
        self.copies: dict[float, list[tuple[float, bool]]] = {}


def measure(config: SimConfig, splits: Any, levels: Sequence[float], tally: Tally) -> None:
    rule = DuplicateRule(white_noise_dp_cosine=DUPLICATE_WHITE_NOISE_DP_COSINE)
    assert rule.white_noise_dp_cosine is not None and rule.white_noise_z is not None
    floor = max(0.5, rule.white_noise_dp_cosine)
    real = _sim.aggregate
    count = [0]

    def spy(agg: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        count[0] += 1
        got = find_duplicates(entries(deltas), rule, whiteness=duplicate_residual_z)
        tally.marked += len(got)
        for site, source in got.items():
            print(f"    honest {site} marked a copy of {source}", flush=True)
        for j in range(len(deltas)):
            for i in range(len(deltas)):
                if i == j:
                    continue
                tally.pairs += 1
                c = cosine(deltas[i], deltas[j])
                tally.max_cos = max(tally.max_cos, c)
                if c > floor:
                    tally.tested += 1
                    s = duplicate_residual_z(deltas[j], deltas[i], rule.white_noise_z)
                    tally.tested_min_s = min(tally.tested_min_s, s)
        for k in levels:
            copy = noisy(deltas[0], k, 1000 * config.seed + count[0])
            es = entries([*deltas, copy])
            caught = es[-1].site in find_duplicates(es, rule, whiteness=duplicate_residual_z)
            tally.copies.setdefault(k, []).append((cosine(copy, deltas[0]), caught))
        return real(agg, deltas, weights, **kw)

    _sim.aggregate = spy
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sites", default="5,10")
    p.add_argument("--alphas", default="1")
    p.add_argument("--seeds", default="2", help="a count N or a list 0,3,7-9")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epsilons", default="1,3,8")
    p.add_argument("--dp-accounting", choices=("summed", "composed"), default="composed")
    p.add_argument("--levels", default="0.5,1,1.5,2")
    p.add_argument("--min-size", type=int, default=50, help="smallest site (images)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_bundled()
    levels = [float(x) for x in args.levels.split(",")]
    accounting: Literal["summed", "composed"] = args.dp_accounting
    started = time.perf_counter()
    marked = 0
    print("eps sites alpha  pairs  max honest cos  tested  smallest tested S  marked | copies")
    for eps in (float(x) for x in args.epsilons.split(",")):
        for n in (int(x) for x in args.sites.split(",")):
            for alpha in (float(x) for x in args.alphas.split(",")):
                tally = Tally()
                for seed in parse_seeds(args.seeds):
                    config = SimConfig(
                        sites=n,
                        rounds=args.rounds,
                        alpha=alpha,
                        seed=seed,
                        dp_epsilon=eps,
                        dp_accounting=accounting,
                        min_size=args.min_size,
                    )
                    measure(config, splits, levels, tally)
                copies = "; ".join(
                    f"k {k:g}: cos {min(c for c, _ in rows):.3f}-{max(c for c, _ in rows):.3f} "
                    f"caught {sum(h for _, h in rows)}/{len(rows)}"
                    for k, rows in tally.copies.items()
                )
                print(
                    f"{eps:>3g} {n:>5} {alpha:>5g} {tally.pairs:>6} {tally.max_cos:>14.4f} "
                    f"{tally.tested:>7} {tally.tested_min_s:>18.4g} {tally.marked:>7} | {copies}",
                    flush=True,
                )
                marked += tally.marked
    print(f"{time.perf_counter() - started:.0f} s; honest sites marked: {marked}")
    return 1 if marked else 0


if __name__ == "__main__":
    raise SystemExit(main())
