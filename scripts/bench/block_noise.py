"""The block-noise test (``block_noise_z``, attack a120) against honest updates and noise with a
public profile.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/block_noise.py [--sites 5,10,20]
        [--alphas 1,100] [--seeds 1] [--rounds 4] [--compression topk8] [--threads 1]

**honest**: the benchmarks' simulated FedAvg federations (``_sim.run_method``, every site
honest, the bundled data) for every (sites, alpha, seed); every update of every round, round 1
included, through :func:`fedtrail.valuation.freeride.block_z_of`. **riders**: in each round
after the first, the last global delta (public) gives the profile of six kinds of data-less
Gaussian noise: ``tensor`` (a120 ``profiled``: each tensor scaled to that tensor's RMS),
``rows`` (a120 ``rows``: a row profile U(0.2, 2) and neighbours summed in threes along the
flat tensor), ``value`` (each value's noise times the delta's magnitude there), ``rowcol`` (each
row's RMS times each column's), ``kernel`` (neighbouring taps summed within each conv kernel)
and ``rank1`` (a random rank-1 matrix per tensor at the tensor's RMS: the next move, which the
test does not catch). Prints the smallest honest statistic and each rider kind's largest
(``rank1``'s smallest); exit 1 when an honest update is below the threshold (the product's
default, 8) or a rider of the first five kinds reaches it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.catalog import load_source
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import Compression
from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import block_z_of
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = dict[str, torch.Tensor]
CAUGHT = ("tensor", "rows", "value", "rowcol", "kernel")


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def riders(public: Delta, gen: torch.Generator) -> dict[str, Delta]:
    """The six noise kinds of the module docstring, profiled on ``public``."""
    out: dict[str, Delta] = {k: {} for k in (*CAUGHT, "rank1")}
    for k, s in public.items():
        z = torch.randn(s.shape, generator=gen)
        out["tensor"][k] = z * (_rms(s) / max(_rms(z), 1e-30))
        r = torch.randn(s.shape, generator=gen)
        if r.dim() > 1:
            flat = r.reshape(-1)
            r = (flat + torch.roll(flat, 1) + torch.roll(flat, 2)).reshape(s.shape)
            r = r * torch.empty(r.shape[0], *[1] * (r.dim() - 1)).uniform_(0.2, 2.0, generator=gen)
        out["rows"][k] = r * (_rms(s) / max(_rms(r), 1e-30))
        out["value"][k] = torch.randn(s.shape, generator=gen) * s.abs()
        if s.dim() >= 2:
            m = s.reshape(s.shape[0], -1).double()
            row = m.pow(2).mean(1, keepdim=True).sqrt()
            col = m.pow(2).mean(0, keepdim=True).sqrt()
            noise = torch.randn(m.shape, generator=gen, dtype=torch.float64) * row * col
            out["rowcol"][k] = noise.reshape(s.shape).float()
            u = torch.randn(s.shape[0], 1, generator=gen)
            v = torch.randn(1, m.shape[1], generator=gen)
            one = (u @ v).reshape(s.shape)
            out["rank1"][k] = one * (_rms(s) / max(_rms(one), 1e-30))
        else:
            out["rowcol"][k] = torch.randn(s.shape, generator=gen) * s.abs()
            out["rank1"][k] = torch.randn(s.shape, generator=gen) * s.abs()
        q = torch.randn(s.shape, generator=gen)
        if q.dim() == 4:
            q = q + torch.roll(q, 1, dims=-1) + torch.roll(q, 1, dims=-2)
        out["kernel"][k] = q * (_rms(s) / max(_rms(q), 1e-30))
    return out


def measure(config: SimConfig, splits: Any, spec: ModelSpec) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"honest": []}
    gen = torch.Generator().manual_seed(config.seed)
    real = _sim.aggregate
    last: list[Delta] = []

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        agg = real(rule, deltas, weights, **kw)
        if len(deltas) == config.sites:
            found["honest"] += [block_z_of(d) for d in deltas]
            if last:
                for name, d in riders(last[-1], gen).items():
                    found.setdefault(name, []).append(block_z_of(d))
            last.append(dict(agg))
        return agg

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method("fedavg", config, splits, spec=spec)
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5,10,20")
    parser.add_argument("--alphas", default="1,100")
    parser.add_argument("--seeds", default="1", help="a count N (seeds 0..N-1) or a list")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--compression", default="", help="every update through this codec")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = load_source("pneumonia")
    splits = source.splits()
    spec = ModelSpec(
        arch="smallcnn",
        in_channels=splits.train.images.shape[1],
        num_classes=len(source.class_names),
    )
    threshold = Combiner().block_noise_z
    failed = False
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            for seed in parse_seeds(args.seeds):
                config = SimConfig(
                    sites=n,
                    rounds=args.rounds,
                    alpha=alpha,
                    seed=seed,
                    valuation="loo",
                    compression=(
                        Compression(method=args.compression)  # type: ignore[arg-type]
                        if args.compression
                        else None
                    ),
                )
                got = measure(config, splits, spec)
                honest = got.pop("honest")
                low = min(honest)
                codec = f" {args.compression}" if args.compression else ""
                line = (
                    f"{n} sites, alpha {alpha:g}, seed {seed}{codec}: "
                    f"honest {len(honest)} updates, smallest {low:.1f}, median "
                    f"{float(np.median(honest)):.1f}"
                )
                for name, values in got.items():
                    value = min(values) if name == "rank1" else max(values)
                    line += f"; {name} {'min' if name == 'rank1' else 'max'} {value:.1f}"
                    failed |= name in CAUGHT and value >= threshold
                print(line, flush=True)
                failed |= low < threshold
    print(f"threshold {threshold:g}: {'MISSED' if failed else 'met'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
