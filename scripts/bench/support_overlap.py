"""Which entries a sparse update keeps, as a fingerprint of a copy: honest ``topk8`` pairs
against noisy sparse copies (attack a93, ``scripts/attacks/a93_sparse_noisy_copy.py``).

A copy sent through ``topk8`` and then perturbed on the entries it keeps (or perturbed first)
escapes ``support_cosine`` (the cosine on the kept entries falls below 0.999995 at 0.3% noise),
but the entries it keeps are its original's largest. For a later update ``b`` and an earlier
``a`` of one layout this script measures :func:`fedtrail.protocol.duplicates.support_overlap`
(the share of ``b``'s nonzero entries at which ``a`` is nonzero and among the ``k`` largest
magnitudes of its tensor, ``k`` the number of ``b``'s nonzero entries there), on

* every same-round pair of honest sent updates (both orders), and every honest update against
  the stale screen's references of the round before (each site's update and the global delta);
* copies of site 0's sent update: through ``topk8`` at fraction F then Gaussian noise of L of
  the copy's norm on the kept entries (``after``), or the noise on every entry first and then
  ``topk8`` (``before``), for F in ``--copy-fractions`` and L in ``--levels``;

and prints, per configuration, the honest maximum (same round and stale), how many honest
pairs exceed ``--threshold`` and the copies' minimum. Exit status 1 when an honest pair reaches
the threshold or an ``after`` copy stays below it.

    python scripts/bench/support_overlap.py --sites 5,10 --alphas 1,3,100 --seeds 0,1 --rounds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.duplicates import sparse, support_overlap, zero_share
from fedtrail.storage.codec import Compression, decode_update, encode_update
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, parse_seeds

Delta = Mapping[str, torch.Tensor]


def sparse_copy(
    delta: Delta, r: int, fraction: float, level: float, when: str, spec: ModelSpec
) -> Delta:
    """``delta`` through ``topk8`` at ``fraction`` with Gaussian noise of ``level`` times the
    copy's norm: on the kept entries after (``when="after"``) or on every entry before."""
    g = torch.Generator().manual_seed(1000 + r)
    norm = float(torch.cat([v.reshape(-1) for v in delta.values()]).norm())

    def code(d: Delta) -> Delta:
        blob = encode_update(
            d, spec=spec, round=r, compression=Compression(method="topk8", fraction=fraction)
        ).blob
        return decode_update(blob, spec=spec, expected_round=r)[0]

    if when == "before":
        n = sum(v.numel() for v in delta.values())
        sd = level * norm / n**0.5
        return code({k: v + sd * torch.randn(v.shape, generator=g) for k, v in delta.items()})
    copy = code(delta)
    kept = sum(int((v != 0).sum()) for v in copy.values())
    cnorm = float(torch.cat([v.reshape(-1) for v in copy.values()]).norm())
    sd = level * cnorm / max(kept, 1) ** 0.5
    return {
        k: torch.where(v != 0, v + sd * torch.randn(v.shape, generator=g), v)
        for k, v in copy.items()
    }


def measure(config: SimConfig, splits: Any, fractions: Sequence[float], levels: Sequence[float]):
    spec = ModelSpec()
    same: list[float] = []
    stale: list[float] = []
    dense_share: list[float] = []
    copies: dict[tuple[str, float, float], list[float]] = {}
    history: list[list[Delta]] = []
    real = _sim.aggregate

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        out = real(rule, deltas, weights, **kw)
        r = len(history) + 1
        for d in deltas:
            dense_share.append(zero_share(d))
        for i in range(len(deltas)):
            for j in range(len(deltas)):
                if i != j:  # -1: the later one is not sparse, the rule does not apply
                    ok = sparse(deltas[j])
                    same.append(support_overlap(deltas[i], deltas[j]) if ok else -1.0)
        if history:
            for d in deltas:
                for ref in history[-1]:
                    stale.append(support_overlap(ref, d) if sparse(d) else -1.0)
        for f in fractions:
            for level in levels:
                for when in ("after", "before"):
                    c = sparse_copy(deltas[0], r, f, level, when, spec)
                    on = support_overlap(deltas[0], c) if sparse(c) else -1.0
                    copies.setdefault((when, f, level), []).append(on)
        history.append([*deltas, dict(out)])
        return out

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return same, stale, copies, dense_share


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5,10")
    parser.add_argument("--alphas", default="1,3,100")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compression", choices=("none", "topk8"), default="topk8")
    parser.add_argument("--fraction", type=float, default=0.05, help="honest topk8 fraction")
    parser.add_argument("--copy-fractions", default="0.05,0.5")
    parser.add_argument("--levels", default="0.01,0.05,0.2")
    parser.add_argument("--min-size", type=int, default=50, help="smallest site (images)")
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_bundled()
    fractions = [float(x) for x in args.copy_fractions.split(",") if x]
    levels = [float(x) for x in args.levels.split(",") if x]
    compression = (
        None if args.compression == "none" else Compression(method="topk8", fraction=args.fraction)
    )
    started = time.perf_counter()
    bad = 0
    print(
        "sites alpha  honest same-round max (>= thr)   stale max (>= thr)   "
        "zero share min..max   copies' min (after / before) by fraction, level"
    )
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            same: list[float] = []
            stale: list[float] = []
            share: list[float] = []
            copies: dict[tuple[str, float, float], list[float]] = {}
            for seed in parse_seeds(args.seeds):
                config = SimConfig(
                    sites=n,
                    rounds=args.rounds,
                    alpha=alpha,
                    seed=seed,
                    compression=compression,
                    min_size=args.min_size,
                )
                s, st, c, sh = measure(config, splits, fractions, levels)
                same += s
                stale += st
                share += sh
                for k, v in c.items():
                    copies.setdefault(k, []).extend(v)
            hs = sum(x > args.threshold for x in same)
            hst = sum(x > args.threshold for x in stale)
            bad += hs + hst
            cells = []
            for f in fractions:
                for level in levels:
                    a = min(copies[("after", f, level)])
                    b = min(copies[("before", f, level)])
                    bad += a <= args.threshold
                    cells.append(f"f{f:g} {level:.0%}: {a:.4f}/{b:.4f}")
            print(
                f"{n:5d} {alpha:5g}  {max(same):.4f} ({hs}/{len(same)})"
                f"   {max(stale) if stale else float('nan'):.4f} ({hst}/{len(stale)})"
                f"   {min(share):.3f}..{max(share):.3f}   " + "; ".join(cells),
                flush=True,
            )
    print(f"{time.perf_counter() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
