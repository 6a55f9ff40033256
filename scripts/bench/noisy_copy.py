"""Noisy copies against the free-rider screen's white-noise test (issue 12, scenario (h)).

A free-rider that resends an earlier update (the last global delta, its own or another site's
earlier update) plus fresh Gaussian noise of more than 0.45% of its norm passes the stale
screen's cosine. The white-noise test of :func:`fedtrail.valuation.freeride.free_riders`
(``white_z``, the terms' ``white_noise_z``) flags an update whose own values, or whose residual
from the reference it is closest to, look like white noise (:func:`~fedtrail.valuation.
freeride.structure_z` below the threshold). This script measures both sides:

* **honest**: the accuracy benchmark's simulated federations (``_sim.run_method``, FedAvg, every
  site honest, the bundled data) for every (sites, alpha, seed); in each round from the second
  on, every update goes through the product's screen (:func:`free_riders` with the default
  thresholds) against the references the service would give it (every update and the global
  delta of the latest 3 rounds), and the smallest structure statistic of each update (its own,
  its residual from its closest reference) is recorded;
* **copies**: in the same rounds, the last global delta and site 0's previous update, each plus
  noise of each ``--levels`` fraction of its norm, go through the same screen beside the honest
  updates: ``white`` (i.i.d. Gaussian, scenario (h)), and the adaptive ``shaped`` (each
  coordinate's Gaussian scaled by the copy's own magnitude there, so the noise has the copy's
  per-tensor, per-row and per-column profile).

Prints, per (sites, alpha): honest updates flagged, the smallest honest statistic, and per
copy kind the copies flagged and their largest statistic. Exit status 1 when an honest update is
flagged or a white copy passes (the stated target); shaped copies are reported, not judged.

    python scripts/bench/noisy_copy.py --sites 5,10,20 --alphas 1,3,100 --seeds 0,1 --rounds 6

``--dp-epsilon E``: every site trains with DP-SGD (``_sim``'s, epsilon ``E / rounds`` per round's
update) and the honest updates go through the screen *without* the exemption updates that
declare DP-SGD get (``declared_noise``): the count flagged is what the exemption spares (not
judged; the exit status then only checks the white copies). ``--compression topk8``: every
honest update goes through the product's codec (sparse, int8) before the screen.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _sim
from _sim import ROOT, SimConfig, parse_seeds, write_run

from fedtrail.ml.catalog import load_source
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import Compression
from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import free_riders, structure_z
from fedtrail.valuation.rows import Rows

Delta = Mapping[str, torch.Tensor]
KINDS = ("white", "shaped")


def noisy(copy: Delta, level: float, kind: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``copy`` plus noise of ``level`` times its norm: ``white`` i.i.d. Gaussian, ``shaped``
    Gaussian scaled coordinate by coordinate by the copy's magnitude."""
    wide = {k: v.to(torch.float64) for k, v in copy.items()}
    noise = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in wide.items()}
    if kind == "shaped":
        noise = {k: n * wide[k].abs() for k, n in noise.items()}
    norm = math.sqrt(sum(float((v**2).sum()) for v in wide.values()))
    scale = level * norm / math.sqrt(sum(float((n**2).sum()) for n in noise.values()))
    return {k: (v + scale * noise[k]).to(copy[k].dtype) for k, v in wide.items()}


def smallest_structure(update: Delta, refs: Mapping[str, Delta]) -> float:
    """The smaller of the update's own structure statistic and its residual's from the
    reference of largest cosine (best-scaled), as the screen computes them."""
    labels = list(refs)
    rows = Rows.of([update, *(refs[r] for r in labels)])
    best, scale, label = -math.inf, 0.0, ""
    for j, r in enumerate(labels, start=1):
        dot, _ = rows.pair(0, j)
        cosine = dot / (rows.norm(0) * rows.norm(j))
        if cosine > best:
            best, scale, label = cosine, dot / rows.norm(j) ** 2, r
    residual = {k: update[k].to(torch.float64) - scale * refs[label][k].double() for k in update}
    return min(structure_z(update), structure_z(residual))


def measure(
    sites: int,
    alpha: float,
    seed: int,
    rounds: int,
    levels: Sequence[float],
    splits: Any,
    dp_epsilon: float | None = None,
    compression: str = "",
    spec: ModelSpec | None = None,
) -> dict[str, Any]:
    config = SimConfig(
        sites=sites,
        rounds=rounds,
        alpha=alpha,
        seed=seed,
        valuation="loo",
        dp_epsilon=dp_epsilon,
        compression=Compression(method=compression) if compression else None,  # type: ignore[arg-type]
    )
    comb = Combiner()
    history: list[tuple[list[Delta], Delta]] = []
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"honest": [], "flagged": [], "copies": []}
    real = _sim.aggregate

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        agg = real(rule, deltas, weights, **kw)
        if history and len(deltas) == sites:
            refs: dict[str, Delta] = {}
            for lag, (ups, glob) in enumerate(reversed(history[-comb.stale_rounds :]), start=1):
                for j, d in enumerate(ups):
                    refs[f"site{j}'s update of round -{lag}"] = d
                refs[f"global delta of round -{lag}"] = glob
            sent: dict[str, Delta] = {f"site{i}": d for i, d in enumerate(deltas)}
            for source in ("global delta of round -1", "site0's update of round -1"):
                for kind in KINDS:
                    for level in levels:
                        copy = noisy(refs[source], level, kind, gen)
                        sent[f"copy|{source}|{kind}|{level:g}"] = copy
            found = free_riders(
                sent,
                refs,
                min_norm_ratio=comb.free_rider_norm,
                stale_cosine=comb.stale_cosine,
                stale_distance=comb.stale_distance,
                white_z=comb.white_noise_z,
            )
            r = len(history) + 1
            for name, d in sent.items():
                stat = smallest_structure(d, refs)
                row = {"round": r, "name": name, "structure": stat, "reason": found.get(name)}
                if name.startswith("copy|"):
                    _, source, kind, level = name.split("|")
                    out["copies"].append({**row, "kind": kind, "level": float(level)})
                else:
                    out["honest"].append(row)
                    if name in found:
                        out["flagged"].append(row)
        history.append((list(deltas) if len(deltas) == sites else [], dict(agg)))
        return agg

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method("fedavg", config, splits, spec=spec)
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5,10", help="site counts, comma-separated")
    parser.add_argument("--alphas", default="1,100", help="Dirichlet alphas, comma-separated")
    parser.add_argument("--seeds", default="0,1", help="a count N or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--levels", default="0.02,0.2,1", help="noise / copy norm, comma-separated")
    parser.add_argument("--dp-epsilon", type=float, default=None, help="DP-SGD for every site")
    parser.add_argument(
        "--compression", default="", help="every update through this codec (topk8; default none)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data",
        default="pneumonia",
        help="a shipped dataset (pneumonia, retina) or a MedMNIST .npz",
    )
    parser.add_argument(
        "--arch", default="smallcnn", help="the model's architecture (smallcnn, resnet10, ...)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "noisy_copy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = load_source(args.data)
    splits = source.splits()
    spec = ModelSpec(
        arch=args.arch,
        in_channels=splits.train.images.shape[1],
        num_classes=len(source.class_names),
    )
    seeds = parse_seeds(args.seeds)
    levels = [float(x) for x in args.levels.split(",") if x]
    started, cpu = time.perf_counter(), time.process_time()
    doc: dict[str, Any] = {"benchmark": "noisy_copy", "argv": list(sys.argv[1:]), "runs": {}}
    failed = False
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            runs = [
                measure(
                    n,
                    alpha,
                    s,
                    args.rounds,
                    levels,
                    splits,
                    args.dp_epsilon,
                    args.compression,
                    spec,
                )
                for s in seeds
            ]
            label = f"{n} sites, alpha {alpha:g}"
            doc["runs"][label] = runs
            honest = [h for r in runs for h in r["honest"]]
            flagged = [h for r in runs for h in r["flagged"]]
            low = min(h["structure"] for h in honest)
            print(
                f"{label}, seeds {seeds}, rounds 2-{args.rounds}: honest flagged "
                f"{len(flagged)}/{len(honest)}, smallest honest structure {low:.3g}"
            )
            if args.dp_epsilon is None:
                for f in flagged:
                    print(f"  HONEST FLAGGED {f}")
                failed |= bool(flagged)
            else:
                print(f"  (DP-SGD at epsilon {args.dp_epsilon:g}: flagged without the exemption)")
            copies = [c for r in runs for c in r["copies"]]
            for kind in KINDS:
                for level in levels:
                    mine = [c for c in copies if c["kind"] == kind and c["level"] == level]
                    caught = sum(1 for c in mine if c["reason"])
                    top = max(c["structure"] for c in mine)
                    print(
                        f"  copy + {kind} noise {level:g}: flagged {caught}/{len(mine)}, "
                        f"largest structure {top:.3g}"
                    )
                    if kind == "white" and caught < len(mine):
                        failed = True
            sys.stdout.flush()
    timing = write_run(doc, args.out, started, cpu)
    target = "white copies all flagged" + (
        " (honest updates not judged under DP-SGD)"
        if args.dp_epsilon is not None
        else ", honest none"
    )
    print(("MISS" if failed else "met") + f": {target}; {timing}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
