"""How often the data-free screens zero an honest site for the size of its cohort.

Two false positives of the attack review: a site of 40-50 images among 150-image sites was
FREE_RIDER (its norm under the free-rider screen's floor, ``MIN_UPDATE_TO_MODEL_NORM`` of the
global model's norm), and a site of 1,000 images beside sites of 90-300 was OUTLIER_NORM (robust
norm z above ``max_norm_z``). This runs the production path, as ``scripts/attacks/harness.py``
does (the embedded chain, a ``LocalStore``, ``AggregatorService`` with its defaults: standing,
exact Shapley, balanced loss), with every site honest: one local epoch from the round's start
model (batch 32, lr 0.02, momentum 0.9) on an IID shard of the bundled training split.

Grid: a probe site of each size in ``--small`` among four 150-image sites, and of each size in
``--large`` among sites of 90, 120 and 200 images (the bundled split has 2,428 images), times
``--seeds``, ``--rounds`` rounds, each sent dense and with topk8 (fraction 0.05, with the
node's error-feedback residual). Per (scenario, codec, probe size) it prints how many of the
probe's rounds were zeroed and why, and the probe's norm against the global model's, the
round's lower median and its robust norm z, so the thresholds can be read off the figures.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/honest_screens.py --seeds 0,1 --rounds 5

``--codecs dense`` or ``--small ''`` narrow the grid. ``--rule before`` values every round under
the thresholds before the size allowance (``norm_size_cap`` 1, ``tiny_size_power`` 0: what the
false positives were measured with); ``--rule clip`` turns the norm allowance on
(``norm_size_cap`` 10) and aggregates by ``norm_clip`` (every positive-weight update clipped to
the round's median norm: the allowance's count cannot buy a longer step);
``--max-sample-ratio R`` raises ``max_sample_ratio`` (a 2,000-image site beside sites of 90-200
claims 12.5x the median: IMPLAUSIBLE_SAMPLES at the default 10); ``--size-norm-z T`` turns the
second norm screen on (``z2 max``: the probe's z after its count's uncapped allowance, the z it
judges). Exit status 0 (a measurement).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "attacks"))

import harness  # noqa: E402
from harness import SPEC, Ctx, Site  # noqa: E402

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.ml.aggregation import AggregationRule  # noqa: E402
from fedtrail.storage.codec import Compression, decode_update, encode_update  # noqa: E402
from fedtrail.valuation import HISTORY_COMBINER, Combiner  # noqa: E402
from fedtrail.valuation.limits import ThresholdLimits  # noqa: E402
from fedtrail.valuation.robust import MAD_TO_SIGMA  # noqa: E402

Delta = Mapping[str, torch.Tensor]
SMALL_OTHERS = (150, 150, 150, 150)
LARGE_OTHERS = (90, 120, 200)


def _norm(d: Delta) -> float:
    return math.sqrt(math.fsum(float(t.double().pow(2).sum()) for t in d.values()))


class Sender:
    """Every site's honest update as a node sends it (dense, or topk8 with its residual), and
    the norms the screens see."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.residual: dict[str, dict[str, torch.Tensor]] = {}
        self.norms: dict[int, dict[str, float]] = defaultdict(dict)
        self.model: dict[int, float] = {}

    def strategy(self, name: str, samples: int) -> Any:
        def send(ctx: Ctx) -> tuple[bytes, int]:
            delta = ctx.now[name]
            self.model[ctx.round] = _norm(ctx.start)
            if self.codec == "dense":
                enc = encode_update(delta, spec=SPEC, round=ctx.round)
            else:
                enc = encode_update(
                    delta,
                    spec=SPEC,
                    round=ctx.round,
                    compression=Compression(method="topk8", fraction=0.05),
                    residual=self.residual.get(name),
                )
                self.residual[name] = dict(enc.residual)
            sent, _ = decode_update(enc.blob, spec=SPEC)
            self.norms[ctx.round][name] = _norm(sent)
            return enc.blob, samples

        return send


def _z(norm: float, norms: list[float], floor: float = 0.25, allowance: float = 1.0) -> float:
    med = statistics.median(norms)
    mad = statistics.median(abs(x - med) for x in norms)
    if allowance > 1.0 and norm > med:
        norm = norm / allowance
    return (norm - med) / max(MAD_TO_SIGMA * mad, floor * med)


def run_one(
    others: tuple[int, ...],
    probe: int,
    codec: str,
    seed: int,
    rounds: int,
    comb: Combiner,
    rule: AggregationRule,
) -> list[dict]:
    sender = Sender(codec)
    sizes = {"probe": probe, **{f"h{i}": n for i, n in enumerate(others)}}
    sites = [Site(nm, n, strategy=sender.strategy(nm, n)) for nm, n in sizes.items()]
    settings = AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=comb, rule=rule
    )
    accept = (
        ThresholdLimits.accepting(comb) if comb.norm_size_cap > 1 or comb.size_norm_z > 0 else None
    )
    res = harness.run(
        sites, rounds, settings=settings, seed=seed, verbose=False, verify=False, accept=accept
    )
    rows = []
    for r, row in enumerate(res["results"], start=1):
        norms = sender.norms[r]
        vals = sorted(norms.values())
        lower_median = vals[(len(vals) - 1) // 2]
        med_n = statistics.median(sizes.values())
        rows.append(
            {
                "round": r,
                "reason": row["probe"]["reason"],
                "weight": row["probe"]["weight"],
                "fedavg": probe / sum(sizes.values()),
                "to_model": norms["probe"] / sender.model[r],
                "to_median": norms["probe"] / lower_median,
                "z": _z(norms["probe"], list(norms.values())),
                # the z the second norm screen (size_norm_z) judges: the norm over the uncapped
                # allowance max(1, n / median n), on the round's same median and scale
                "z2": _z(
                    norms["probe"],
                    list(norms.values()),
                    allowance=max(1.0, probe / statistics.median(sizes.values())),
                ),
                "honest_to_model": min(
                    v / sender.model[r] for k, v in norms.items() if k != "probe"
                ),
                "n_ratio": probe / med_n,
                "others_zeroed": [
                    v["reason"] for k, v in row.items() if k != "probe" and v["reason"] != "OK"
                ],
            }
        )
    return rows


def _counted(reasons: Iterable[list[str]]) -> str:
    """``REASON:count,...`` over every round's list of reasons; ``-`` for none."""
    counts: dict[str, int] = defaultdict(int)
    for rs in reasons:
        for r in rs:
            counts[r] += 1
    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", default="20,40,60,100")
    ap.add_argument("--large", default="600,1000,2000")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--codecs", default="dense,topk8")
    ap.add_argument("--rule", choices=("now", "optin", "before", "clip"), default="now")
    ap.add_argument("--max-sample-ratio", type=float, default=HISTORY_COMBINER.max_sample_ratio)
    ap.add_argument(
        "--size-norm-z",
        type=float,
        default=HISTORY_COMBINER.size_norm_z,
        help="the combiner's size_norm_z (the second norm screen; default 0: off; the sites "
        "consent to it)",
    )
    args = ap.parse_args()
    comb = replace(
        HISTORY_COMBINER, max_sample_ratio=args.max_sample_ratio, size_norm_z=args.size_norm_z
    )
    if args.rule == "before":
        comb = replace(comb, norm_size_cap=1.0, tiny_size_power=0.0)
    elif args.rule in ("optin", "clip"):  # the allowance on (off by default since attack a10)
        comb = replace(comb, norm_size_cap=10.0)
    agg = AggregationRule(name="norm_clip") if args.rule == "clip" else AggregationRule()
    print(f"# rule {args.rule}: {comb}, {agg}")
    torch.set_num_threads(1)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    grid = [("small", SMALL_OTHERS, p) for p in ints(args.small)]
    grid += [("large", LARGE_OTHERS, p) for p in ints(args.large)]
    print(
        "scenario others codec probe rounds zeroed(FREE_RIDER/OUTLIER_NORM/other) "
        "others_zeroed probe/model min..max others_min/model probe/lower_median z max "
        "z2 max weight/FedAvg mean"
    )
    t0 = time.monotonic()
    for codec in args.codecs.split(","):
        for scen, others, probe in grid:
            rows = [
                r
                for seed in ints(args.seeds)
                for r in run_one(others, probe, codec, seed, args.rounds, comb, agg)
            ]
            why = defaultdict(int)
            for r in rows:
                if r["reason"] != "OK":
                    why[r["reason"]] += 1
            fr, on = why.pop("FREE_RIDER", 0), why.pop("OUTLIER_NORM", 0)
            rest = sum(why.values())
            tm = [r["to_model"] for r in rows]
            tmed = [r["to_median"] for r in rows]
            print(
                f"{scen:5s} {'/'.join(map(str, others)):15s} {codec:5s} {probe:5d} {len(rows):3d} "
                f"{fr + on + rest:3d} ({fr}/{on}/{rest}{' ' + str(dict(why)) if why else ''}) "
                f"{_counted(r['others_zeroed'] for r in rows)} "
                f"{min(tm):.4%}..{max(tm):.4%} {min(r['honest_to_model'] for r in rows):.4%} "
                f"{min(tmed):.3f}..{max(tmed):.3f} {max(r['z'] for r in rows):6.1f} "
                f"{max(r['z2'] for r in rows):6.1f} "
                f"{statistics.mean(r['weight'] / r['fedavg'] for r in rows):.3f}",
                flush=True,
            )
    print(f"# {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
