"""How close honest updates come to the free-rider references: a diagnosis for ``stale_cosine``.

The stale free-rider screen (:mod:`fedtrail.valuation.freeride`) flags an update whose cosine to
an earlier update (a reference: every readable update of a recent finalized round and the global
delta it applied) is above ``stale_cosine``. A copy of a reference, scaled or not, has cosine 1;
an honest update must stay below the threshold. This script trains the accuracy benchmark's
simulated federations (``_sim.run_method``: the same sites, Dirichlet splits, seeds and local
training; every site honest) and, in every round ``r``, measures each sent update's cosine to
every reference of rounds ``r - 1`` ... ``r - lags`` (updates of other sites, the site's own
update, the global delta), exactly as the screen computes it
(:class:`fedtrail.valuation.rows.Rows`, the screen's exact pair computation).

It prints the largest cosine per (sites, alpha), per lag and per kind of reference, and the
honest maximum over everything. Exit status 0 (nothing is judged).

    python scripts/bench/stale_cosine.py --sites 5,10 --alphas 1,100 --seeds 0,1 --rounds 6

``--compression topk8 --fraction F`` sends every update through ``topk8`` (what the references
and the screen then read) and also measures the *support cosine* the sparse stale test
(``stale_support_cosine``, a91) compares: the larger of the plain and the codes cosine of the
reference restricted to the update's nonzero entries and the update (``dup_cosine.support``,
-1 where the update leaves none of the reference's entries out); it exits 1 when an honest
update's support cosine is above the default ``stale_support_cosine``.

    python scripts/bench/stale_cosine.py --sites 10 --alphas 0.3,100 --seeds 1 --rounds 5 \
        --compression topk8 --fraction 0.05 --min-size 20

``--method valuation`` trains along the valuation's trajectory (``--valuation loo`` keeps it
cheap) instead of FedAvg's; the updates differ only through the weights of earlier rounds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.storage.codec import Compression
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.rows import Rows
from scripts.bench import _sim
from scripts.bench._sim import ROOT, SimConfig, parse_seeds, write_run
from scripts.bench.dup_cosine import support

Delta = Mapping[str, torch.Tensor]


def _pairs(update: Delta, refs: Sequence[Delta]) -> list[tuple[float, float]]:
    """The update's cosine to each reference and its distance relative to the reference's
    norm, as the stale screen's exact path computes them."""
    rows = Rows.of([update, *refs])
    norm = rows.norm(0)
    out = []
    for j in range(1, len(rows)):
        dot, distance2 = rows.pair(0, j)
        out.append((dot / (norm * rows.norm(j)), math.sqrt(distance2) / rows.norm(j)))
    return out


def measure(
    sites: int,
    alpha: float,
    seed: int,
    rounds: int,
    lags: int,
    splits: Any,
    method: str,
    valuation: str,
    compression: Compression | None = None,
    min_size: int | None = None,
) -> list[dict[str, Any]]:
    """One honest federation: a row per (update, reference) pair within ``lags`` rounds."""
    config = SimConfig(
        sites=sites,
        rounds=rounds,
        alpha=alpha,
        seed=seed,
        valuation=valuation,  # type: ignore[arg-type]
        compression=compression,
        **({} if min_size is None else {"min_size": min_size}),
    )
    samples = [len(d) for d in _sim.site_splits(splits.train, config)]
    history: list[tuple[list[Delta], Delta]] = []  # per aggregated round: updates, global delta
    rows: list[dict[str, Any]] = []
    real = _sim.aggregate

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        out = real(rule, deltas, weights, **kw)
        r = len(history) + 1
        if len(deltas) == sites:
            for i, d in enumerate(deltas):
                for lag in range(1, min(lags, len(history)) + 1):
                    ups, glob = history[-lag]
                    refs = [*ups, glob]
                    kinds = ["own" if j == i else "other" for j in range(len(ups))] + ["global"]
                    for kind, (cos, dist), ref in zip(kinds, _pairs(d, refs), refs, strict=True):
                        on = support(ref, d) if compression is not None else -1.0
                        rows.append(
                            {
                                "round": r,
                                "site": i,
                                "samples": samples[i],
                                "lag": lag,
                                "kind": kind,
                                "cosine": cos,
                                "distance": dist,
                                "support": on,
                            }
                        )
        history.append((list(deltas) if len(deltas) == sites else [], dict(out)))
        return out

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method(method, config, splits)  # type: ignore[arg-type]
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5,10", help="site counts, comma-separated")
    parser.add_argument("--alphas", default="1,100", help="Dirichlet alphas, comma-separated")
    parser.add_argument("--seeds", default="0,1", help="a count N or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--lags", type=int, default=3, help="reference rounds looked back")
    parser.add_argument("--method", choices=("fedavg", "valuation"), default="fedavg")
    parser.add_argument("--valuation", choices=("shapley", "mc_shapley", "loo"), default="loo")
    parser.add_argument("--compression", choices=("none", "topk8"), default="none")
    parser.add_argument("--fraction", type=float, default=0.05, help="topk8 fraction")
    parser.add_argument("--min-size", type=int, default=None, help="smallest site (images)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "stale_cosine.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_bundled()
    seeds = parse_seeds(args.seeds)
    started, cpu = time.perf_counter(), time.process_time()
    doc: dict[str, Any] = {"benchmark": "stale_cosine", "argv": list(sys.argv[1:]), "runs": {}}
    overall = -1.0
    compression = (
        None if args.compression == "none" else Compression(method="topk8", fraction=args.fraction)
    )
    limit = Combiner().stale_support_cosine
    flagged, top_support = 0, -1.0
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            rows: list[dict[str, Any]] = []
            for seed in seeds:
                got = measure(
                    n,
                    alpha,
                    seed,
                    args.rounds,
                    args.lags,
                    splits,
                    args.method,
                    args.valuation,
                    compression,
                    args.min_size,
                )
                rows += [{"seed": seed, **r} for r in got]
            label = f"{n} sites, alpha {alpha:g}"
            doc["runs"][label] = rows
            cells = []
            for lag in range(1, args.lags + 1):
                for kind in ("own", "other", "global"):
                    vals = [r["cosine"] for r in rows if r["lag"] == lag and r["kind"] == kind]
                    if vals:
                        cells.append(f"lag {lag} {kind} max {max(vals):.4f} (n={len(vals)})")
            best = max((r["cosine"] for r in rows), default=-1.0)
            overall = max(overall, best)
            top = max(rows, key=lambda r: r["cosine"]) if rows else {}
            print(f"{label}, seeds {seeds}, {args.rounds} rounds: max cosine {best:.4f} {top}")
            print("  " + "\n  ".join(cells), flush=True)
            if compression is not None:
                on = [r["support"] for r in rows]
                above = sum(v > limit for v in on)
                flagged += above
                top_support = max([top_support, *on])
                print(
                    f"  {args.compression} f={args.fraction:g}: max support cosine "
                    f"{max(on, default=-1.0):.6f} over {len(on)} pairs (above "
                    f"stale_support_cosine {limit}: {above})",
                    flush=True,
                )
    doc["honest_max_cosine"] = overall
    timing = write_run(doc, args.out, started, cpu)
    print(f"honest maximum cosine to any reference: {overall:.4f}; {timing}")
    if compression is not None:
        print(f"honest maximum support cosine {top_support:.6f}; above {limit}: {flagged}")
        return 1 if flagged else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
