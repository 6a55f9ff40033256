"""DP-declared copies against the free-rider screen's DP copy test (``dp_copy_z``; attack a60).

Updates that declare DP-SGD are exempt from the white-noise test (their Gaussian noise is
declared), so a data-less free-rider that declares DP-SGD and sends a copy of an earlier update
plus Gaussian noise at an honest update's scale passes it and the noise check
(``scripts/attacks/a60_dp_declared_copy.py``). The DP copy test
(:func:`fedtrail.valuation.freeride.dp_copy_statistic`) measures how far the update lies along
the references (``|cosine| sqrt(P)``, references taken out by matching pursuit); a DP-declared
update at or above the terms' ``dp_copy_z`` is FREE_RIDER.
This script measures both sides on the accuracy benchmark's simulated federations
(``_sim.run_method``, FedAvg, every site honest and training with DP-SGD at ``--dp-epsilon``,
composed over the rounds):

* **honest**: every update of rounds 2.. against the references the service gives it (every
  update and the global delta of the latest 3 rounds); flagged when its statistic is at least
  ``--dp-copy-z`` (default 60, the lowest a site accepts; the terms' default is 0, off);
* **copies**: in the same rounds, ``gcopy`` (the last global delta), ``copy`` (site 0's previous
  update), ``mix`` (the mean of sites 0 and 1's previous updates) and ``half`` (half the last
  global delta), each plus Gaussian noise of the honest updates' median per-coordinate standard
  deviation.

Exit 1 when an honest update is flagged or a copy passes.

    python scripts/bench/dp_copy.py --sites 5 --alphas 1,100 --seeds 0,1 --rounds 5 --dp-epsilon 8
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

from fedtrail.ml.catalog import load_source
from fedtrail.ml.models import ModelSpec
from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import DP_COPY_STEP, _structure, dp_copy_statistic
from fedtrail.valuation.limits import ThresholdLimits
from scripts.bench import _sim
from scripts.bench._sim import ROOT, SimConfig, parse_seeds, write_run

Delta = Mapping[str, torch.Tensor]
F64 = npt.NDArray[np.float64]
COPIES = ("gcopy", "copy", "mix", "half")


def flat(d: Delta) -> F64:
    return np.concatenate([v.detach().to(torch.float64).numpy().ravel() for v in d.values()])


def residual_white(
    u: F64, refs: Sequence[F64], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[float, int]:
    """A candidate, measured only: the white-noise structure statistic
    (:func:`fedtrail.valuation.freeride.structure_z`) of what is left of ``u`` once the
    references it lies along are taken out (the matching pursuit of ``dp_copy_statistic``, in
    numpy's dot products). A copy plus Gaussian noise leaves white noise; an honest DP-SGD
    update leaves its own new signal plus the noise. Also the index of the reference the
    update lies along most (-1: none)."""
    root = math.sqrt(u.size)
    norms = [float(np.linalg.norm(r)) for r in refs]
    res = u.copy()
    first = -1
    for _ in range(8):
        n = float(np.linalg.norm(res))
        dots = [float(res @ r) if m > 0 else 0.0 for r, m in zip(refs, norms, strict=True)]
        zs = [abs(d) / (n * m) * root if m > 0 else -1.0 for d, m in zip(dots, norms, strict=True)]
        j = int(np.argmax(zs))
        if first < 0:
            first = j
        if zs[j] < DP_COPY_STEP:
            break
        res = res - dots[j] / norms[j] ** 2 * refs[j]
    parts: dict[str, F64] = {}
    at = 0
    for k, shape in shapes.items():
        size = math.prod(shape)
        parts[k] = res[at : at + size].reshape(shape)
        at += size
    return _structure(parts), first


def measure(
    sites: int, alpha: float, seed: int, rounds: int, eps: float, splits: Any, spec: ModelSpec
) -> dict[str, Any]:
    config = SimConfig(
        sites=sites,
        rounds=rounds,
        alpha=alpha,
        seed=seed,
        valuation="loo",
        dp_epsilon=eps,
        dp_accounting="composed",
    )
    comb = Combiner()
    history: list[tuple[list[F64], F64]] = []
    gen = np.random.default_rng(seed)
    out: dict[str, list[dict[str, Any]]] = {"honest": [], "copies": []}
    real = _sim.aggregate

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        agg = real(rule, deltas, weights, **kw)
        ups = [flat(d) for d in deltas]
        shapes = {k: tuple(v.shape) for k, v in deltas[0].items()}
        if history and len(deltas) == sites:
            refs: list[F64] = []
            for past, glob in reversed(history[-comb.stale_rounds :]):
                refs.extend(past)
                refs.append(glob)
            r = len(history) + 1
            for i, u in enumerate(ups):
                z, steps = dp_copy_statistic(u, refs)
                w, j = residual_white(u, refs, shapes)
                # a candidate, measured only: the statistic without the site's own updates
                others = [
                    ref
                    for k, ref in enumerate(refs)
                    if k % (sites + 1) != i or len(refs) % (sites + 1)
                ]
                z_others, _ = dp_copy_statistic(u, others)
                back, at = divmod(j, sites + 1)
                ref = "global" if at == sites else "own" if at == i else "other"
                out["honest"].append(
                    {
                        "round": r,
                        "site": i,
                        "z": z,
                        "steps": steps,
                        "white": w,
                        "ref": f"{ref}-{back + 1}",
                        "rms": float(np.linalg.norm(u)) / math.sqrt(u.size),
                        "z_others": z_others,
                    }
                )
            sd = float(np.median([np.linalg.norm(u) / math.sqrt(u.size) for u in ups]))
            last, glob = history[-1]
            sources = {
                "gcopy": glob,
                "copy": last[0],
                "mix": 0.5 * (last[0] + last[1]),
                "half": 0.5 * glob,
            }
            for kind, src in sources.items():
                fake = src + sd * gen.standard_normal(src.size)
                z, steps = dp_copy_statistic(fake, refs)
                w, _ = residual_white(fake, refs, shapes)
                out["copies"].append({"round": r, "kind": kind, "z": z, "steps": steps, "white": w})
        history.append((ups if len(deltas) == sites else [], flat(agg)))
        return agg

    _sim.aggregate = spy  # type: ignore[assignment]
    try:
        _sim.run_method("fedavg", config, splits, spec=spec)
    finally:
        _sim.aggregate = real  # type: ignore[assignment]
    return out


def flagged(row: Mapping[str, Any], z: float) -> bool:
    """The screen's decision (:func:`fedtrail.valuation.freeride.free_riders`)."""
    return bool(row["z"] >= z)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5", help="site counts, comma-separated")
    parser.add_argument("--alphas", default="1,100", help="Dirichlet alphas, comma-separated")
    parser.add_argument("--seeds", default="0,1", help="a count N or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dp-epsilon", type=float, default=8.0)
    parser.add_argument(
        "--dp-copy-z",
        type=float,
        default=ThresholdLimits().dp_copy_z,
        help="the threshold judged (default: the strictest a site accepts, 60; the terms' "
        "default is 0, off)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "dp_copy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = load_source("pneumonia")
    splits = source.splits()
    spec = ModelSpec()
    z = args.dp_copy_z
    seeds = parse_seeds(args.seeds)
    started, cpu = time.perf_counter(), time.process_time()
    doc: dict[str, Any] = {"benchmark": "dp_copy", "argv": list(sys.argv[1:]), "runs": {}}
    failed = False
    print(f"DP-SGD at epsilon {args.dp_epsilon:g} (composed over the rounds); dp_copy_z {z:g}")
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            runs = [measure(n, alpha, s, args.rounds, args.dp_epsilon, splits, spec) for s in seeds]
            label = f"{n} sites, alpha {alpha:g}"
            doc["runs"][label] = runs
            honest = [h for r in runs for h in r["honest"]]
            bad = [h for h in honest if flagged(h, z)]
            print(
                f"{label}, seeds {seeds}, rounds 2-{args.rounds}: honest flagged "
                f"{len(bad)}/{len(honest)}, largest honest statistic "
                f"{max(h['z'] for h in honest):.1f} (median "
                f"{float(np.median([h['z'] for h in honest])):.1f}); its residual's white "
                f"statistic smallest {min(h['white'] for h in honest):.3g}; without its own "
                f"updates, largest {max(h['z_others'] for h in honest):.1f}"
            )
            failed |= bool(bad)
            copies = [c for r in runs for c in r["copies"]]
            for kind in COPIES:
                mine = [c for c in copies if c["kind"] == kind]
                caught = sum(1 for c in mine if flagged(c, z))
                print(
                    f"  {kind}: flagged {caught}/{len(mine)}, smallest statistic "
                    f"{min(c['z'] for c in mine):.1f}, references taken out "
                    f"{min(c['steps'] for c in mine)}-{max(c['steps'] for c in mine)}; "
                    f"residual's white statistic largest {max(c['white'] for c in mine):.3g}"
                )
                failed |= caught < len(mine)
            sys.stdout.flush()
    timing = write_run(doc, args.out, started, cpu)
    print(("MISS" if failed else "met") + f": honest none flagged, copies all; {timing}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
