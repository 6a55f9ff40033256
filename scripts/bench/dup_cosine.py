"""How close two honest updates of the same round come, and how close a Sybil's copy stays:
a diagnosis for the duplicate rule (:class:`fedtrail.protocol.terms.DuplicateRule`).

The duplicate rule marks a later update (in commit order) that repeats an earlier one of the
same round DUPLICATE. A Sybil pair (``scripts/attacks/a1_sybil_scaled_copy.py``) commits a
copy of its partner's update scaled, recoded through ``topk8`` or with a little noise; the
rule must catch those copies and must never catch two honest updates. This script trains the
accuracy benchmark's simulated federations (``_sim.run_method``, FedAvg: the same sites,
Dirichlet splits, seeds and local training; every site honest) and in every round measures

* every pair of the round's sent (decoded) updates: cosine, relative L2 distance, and the
  cosine on the coordinates both updates carry (the same as the plain cosine for dense
  updates; for ``topk8`` updates the pair's common support);
* copies of site 0's sent update: scaled by 1.01 and 0.5, recoded through ``topk8`` at
  fraction 1 (int8 only) and at the run's fraction, and with Gaussian noise of 0.2%, 1%, 5%
  and 10% of each tensor's standard deviation (``a1``'s ``noise`` mode at 0.2%);

and prints the largest honest cosine per configuration, each copy's smallest cosine, and
which of them the default rule (``DuplicateRule()``) and the rule of terms that lack
``scaled_cosine`` (the rule before it) mark DUPLICATE. Exit status 0 (nothing is judged).

    python scripts/bench/dup_cosine.py --sites 5,10,20 --alphas 0.3,100 --seeds 0,1 --rounds 5

``--compression topk8`` sends every update through ``topk8`` (fraction ``--fraction``, with
each site's error feedback, as a node does); ``--dp-epsilon`` trains every site with DP-SGD.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.duplicates import Entry, _flat_codes, codes, find_duplicates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import Compression, decode_update, encode_update
from fedtrail.valuation.freeride import duplicate_residual_z
from scripts.bench import _sim
from scripts.bench._sim import ROOT, SimConfig, parse_seeds, write_run

Delta = Mapping[str, torch.Tensor]

OLD_RULE = DuplicateRule(
    scaled_cosine=None, support_cosine=None, support_overlap=None, white_noise_z=None
)
"""The rule of terms that lack ``scaled_cosine`` (every round before it)."""


def flat(delta: Delta) -> torch.Tensor:
    """The update as one float64 vector in name order (as the duplicate rule reads it)."""
    return torch.cat([delta[n].detach().to(torch.float64).reshape(-1) for n in sorted(delta)])


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flat vectors (nan when one is zero)."""
    n = float(a.norm() * b.norm())
    return float(a @ b) / n if n > 0 else math.nan


def support(a: Delta, b: Delta) -> float:
    """What ``support_cosine`` compares (a90): the larger of the plain and the codes cosine of
    ``a`` restricted to ``b``'s nonzero entries (codes recomputed from it) and ``b``; -1 when
    ``b`` leaves none of ``a``'s nonzero entries out (the rule does not apply)."""
    fa, fb = flat(a), flat(b)
    kept = torch.where(fb != 0, fa, torch.zeros((), dtype=fa.dtype))
    if torch.equal(kept, fa) or not bool(kept.any()):
        return -1.0
    sizes = [b[n].numel() for n in sorted(b)]
    return max(cos(kept, fb), cos(_flat_codes(kept, sizes), _flat_codes(fb, sizes)))


def pair(a: Delta, b: Delta) -> dict[str, float]:
    """Cosine of ``a`` and ``b``, ``||b - a|| / ||a||``, the cosine on their common support
    (coordinates nonzero in both; nan when they share none), the cosine of their int8
    codes (:func:`fedtrail.protocol.duplicates.codes`, what ``scaled_cosine`` also reads) and
    the larger :func:`support` of the two orders (what ``support_cosine`` reads)."""
    fa, fb = flat(a), flat(b)
    both = (fa != 0) & (fb != 0)
    return {
        "cosine": cos(fa, fb),
        "distance": float((fb - fa).norm() / fa.norm()),
        "common": cos(fa[both], fb[both]),
        "codes": cos(codes(a), codes(b)),
        "support": max(support(a, b), support(b, a)),
    }


def copies(
    delta: Delta, r: int, fraction: float, spec: ModelSpec
) -> dict[str, Callable[[], Delta]]:
    """The attack's transformed copies of ``delta`` (lazily built), by name."""

    def recoded(f: float) -> Delta:
        blob = encode_update(
            delta, spec=spec, round=r, compression=Compression(method="topk8", fraction=f)
        ).blob
        return decode_update(blob, spec=spec, expected_round=r)[0]

    def noisy(level: float) -> Delta:
        g = torch.Generator().manual_seed(r)
        return {
            k: v + level * v.std() * torch.randn(v.shape, generator=g) for k, v in delta.items()
        }

    return {
        "x1.01": lambda: {k: v * 1.01 for k, v in delta.items()},
        "x0.5": lambda: {k: v * 0.5 for k, v in delta.items()},
        "topk8 f=1": lambda: recoded(1.0),
        f"topk8 f={fraction:g}": lambda: recoded(fraction),
        "noise 0.2%": lambda: noisy(0.002),
        "noise 1%": lambda: noisy(0.01),
        "noise 5%": lambda: noisy(0.05),
        "noise 10%": lambda: noisy(0.10),
    }


def measure(config: SimConfig, splits: Any, fraction: float) -> dict[str, Any]:
    """One honest federation: its same-round honest pairs and the copies of site 0's update."""
    spec = ModelSpec()
    honest: list[dict[str, Any]] = []
    attack: list[dict[str, Any]] = []
    real = _sim.aggregate
    rounds = [0]

    def spy(rule: Any, deltas: Sequence[Delta], weights: Any, **kw: Any) -> Any:
        rounds[0] += 1
        r = rounds[0]
        for i in range(len(deltas)):
            for j in range(i + 1, len(deltas)):
                honest.append({"round": r, "i": i, "j": j, **pair(deltas[i], deltas[j])})
        for name, make in copies(deltas[0], r, fraction, spec).items():
            copy = make()
            marks = {}
            for label, rule_ in (("new", DuplicateRule()), ("old", OLD_RULE)):
                entries = [
                    Entry("orig", 1, "a" * 64, deltas[0]),
                    Entry("copy", 2, "b" * 64, copy),
                ]
                marks[label] = "copy" in find_duplicates(
                    entries, rule_, whiteness=duplicate_residual_z
                )
            attack.append(
                {"round": r, "copy": name, **pair(deltas[0], copy)}
                | {f"caught_{k}": v for k, v in marks.items()}
            )
        return real(rule, deltas, weights, **kw)

    _sim.aggregate = spy
    try:
        _sim.run_method("fedavg", config, splits)
    finally:
        _sim.aggregate = real
    return {"honest": honest, "attack": attack}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", default="5,10,20", help="site counts, comma-separated")
    parser.add_argument("--alphas", default="0.3,100", help="Dirichlet alphas (100: IID-like)")
    parser.add_argument("--seeds", default="1", help="a count N or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compression", choices=("none", "topk8"), default="none")
    parser.add_argument("--fraction", type=float, default=0.05, help="topk8 fraction")
    parser.add_argument("--dp-epsilon", type=float, default=None)
    parser.add_argument("--min-size", type=int, default=50, help="smallest site (images)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "dup_cosine.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_bundled()
    seeds = parse_seeds(args.seeds)
    compression = (
        None if args.compression == "none" else Compression(method="topk8", fraction=args.fraction)
    )
    started, cpu = time.perf_counter(), time.process_time()
    doc: dict[str, Any] = {"benchmark": "dup_cosine", "argv": list(sys.argv[1:]), "runs": {}}
    overall, worst_copy = -1.0, dict[str, float]()
    for n in (int(x) for x in args.sites.split(",") if x):
        for alpha in (float(x) for x in args.alphas.split(",") if x):
            honest: list[dict[str, Any]] = []
            attack: list[dict[str, Any]] = []
            for seed in seeds:
                config = SimConfig(
                    sites=n,
                    rounds=args.rounds,
                    alpha=alpha,
                    seed=seed,
                    compression=compression,
                    dp_epsilon=args.dp_epsilon,
                    min_size=args.min_size,
                )
                got = measure(config, splits, args.fraction)
                honest += [{"seed": seed, **h} for h in got["honest"]]
                attack += [{"seed": seed, **a} for a in got["attack"]]
            label = f"{n} sites, alpha {alpha:g}, {args.compression}" + (
                f", dp eps {args.dp_epsilon:g}" if args.dp_epsilon else ""
            )
            doc["runs"][label] = {"honest": honest, "attack": attack}
            top = max(honest, key=lambda h: h["cosine"])
            common = max((h["common"] for h in honest if not math.isnan(h["common"])), default=-1)
            coded = max(h["codes"] for h in honest)
            on_support = max(h["support"] for h in honest)
            support_limit = DuplicateRule().support_cosine or 1.0
            overall = max(overall, top["cosine"], coded)
            limit = DuplicateRule().scaled_cosine or 1.0
            above = sum(max(h["cosine"], h["codes"]) > limit for h in honest)
            near = sum(max(h["cosine"], h["codes"]) > 0.9995 for h in honest)
            print(
                f"{label}, seeds {seeds}, {args.rounds} rounds, {len(honest)} honest pairs: "
                f"max cosine {top['cosine']:.6f} (round {top['round']}, relative L2 "
                f"{top['distance']:.3f}); max codes cosine {coded:.6f}; max common-support "
                f"cosine {common:.6f}; min relative L2 {min(h['distance'] for h in honest):.3f}; "
                f"pairs above 0.9995 (cosine or codes): {near}, above the default "
                f"scaled_cosine {limit}: {above}; max support cosine {on_support:.6f} (above "
                f"support_cosine {support_limit}: "
                f"{sum(h['support'] > support_limit for h in honest)})",
                flush=True,
            )
            for name in dict.fromkeys(a["copy"] for a in attack):
                rows = [a for a in attack if a["copy"] == name]
                low = min(a["cosine"] for a in rows)
                best = min(max(a["cosine"], a["codes"]) for a in rows)
                worst_copy[name] = min(worst_copy.get(name, 2.0), best)
                print(
                    f"  copy {name:<12} min cosine {low:.6f}, min max(cosine, codes cosine) "
                    f"{best:.6f}, max relative L2 {max(a['distance'] for a in rows):.4f}, min "
                    f"common-support cosine {min(a['common'] for a in rows):.6f}; DUPLICATE "
                    f"under the default rule "
                    f"{sum(a['caught_new'] for a in rows)}/{len(rows)}, under the old rule "
                    f"{sum(a['caught_old'] for a in rows)}/{len(rows)}",
                    flush=True,
                )
    doc["honest_max_cosine"] = overall
    doc["copy_min_cosine"] = worst_copy
    timing = write_run(doc, args.out, started, cpu)
    print(
        f"honest maximum same-round cosine (plain or codes): {overall:.6f}; copies' minimum "
        "max(cosine, codes cosine): "
        + ", ".join(f"{k} {v:.6f}" for k, v in worst_copy.items())
        + f"; {timing}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
