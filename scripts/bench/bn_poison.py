"""Poisoned running statistics (BatchNorm): the product's valuation path (``_sim``'s
``valuation``, the service's ``value_round``) on a BatchNorm model, clean and with one site that
adds ``--shift`` to every ``running_mean`` of its update (the ``statistics`` fault of
:mod:`fedtrail.simulation.faults`; its weights are as trained, so no weight screen sees it),
with the aggregate's statistics combined by their coordinate median (the default,
``AggregationRule.statistics = "median"``) and by the on-chain weights (``"weighted"``, the rule
before it).

Prints per round the global model's test AUC and the poisoner's score, reason and weight share.
Targets (exit 1 when missed), per seed, under ``median``: the poisoned federation's final test
AUC within ``--tolerance`` (0.05; the gap includes the poisoner's own data, lost once it is
demoted) of the clean one, and the poisoner's weight 0 in the final
round. ``weighted`` is printed for comparison (no target: it is what the median replaced).

    nice -n 10 .venv/bin/python scripts/bench/bn_poison.py            # ~5 min on 2 cores
    .venv/bin/python scripts/bench/bn_poison.py --seeds 0,1 --out /tmp/bn.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.aggregation import STATISTICS_RULES
from fedtrail.ml.catalog import load_source
from fedtrail.ml.task import task_for
from fedtrail.protocol.weights import WEIGHT_SCALE
from fedtrail.simulation.faults import SiteFault
from scripts.bench._sim import SimConfig, SimResult, parse_seeds, provenance, run_method


def _row(result: SimResult, poisoner: str | None) -> list[dict[str, Any]]:
    rows = []
    for rec in result.rounds:
        row: dict[str, Any] = {"round": rec.round, "test_auc": rec.test_auc}
        if poisoner is not None and poisoner in rec.submitted:
            i = rec.submitted.index(poisoner)
            row["poisoner_score"] = rec.scores[i]
            row["poisoner_reason"] = rec.reasons[i]
            row["poisoner_weight"] = rec.weights[i] / WEIGHT_SCALE if rec.weights else 0.0
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="pneumonia")
    parser.add_argument("--arch", default="resnet10")
    parser.add_argument("--seeds", default="1", help="a count N (seeds 0..N-1) or a list: 0,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=3.0)
    parser.add_argument("--shift", type=float, default=1e3)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    if not seeds:
        parser.error("--seeds names no seed")
    if args.shift == 0 or args.rounds < 2 or args.sites < 3:
        parser.error("--shift must be non-zero, --rounds at least 2, --sites at least 3")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    source = load_source(args.data)
    splits = source.splits()
    spec = task_for(source, arch=args.arch).spec
    if not spec.statistic_names():
        parser.error(f"{args.arch} has no running statistics to poison")
    poisoner = f"site-{args.sites - 1:02d}"
    faults = tuple(
        [SiteFault()] * (args.sites - 1) + [SiteFault(kind="statistics", shift=args.shift)]
    )
    runs: list[dict[str, Any]] = []
    missed: list[str] = []
    for seed in seeds:
        finals: dict[tuple[str, str], float] = {}
        for stats in STATISTICS_RULES:
            for case, case_faults in (("clean", ()), ("poisoned", faults)):
                config = SimConfig(
                    sites=args.sites,
                    rounds=args.rounds,
                    alpha=args.alpha,
                    seed=seed,
                    faults=case_faults,
                    statistics=stats,
                )
                result = run_method("valuation", config, splits, spec=spec)
                rows = _row(result, poisoner if case == "poisoned" else None)
                finals[stats, case] = rows[-1]["test_auc"]
                runs.append({"seed": seed, "statistics": stats, "case": case, "rounds": rows})
                for row in rows:
                    extra = (
                        f"  poisoner score {row['poisoner_score']:>7} "
                        f"{row['poisoner_reason']:<12} weight {row['poisoner_weight']:.3f}"
                        if "poisoner_score" in row
                        else ""
                    )
                    print(
                        f"seed {seed} {stats:<8} {case:<8} round {row['round']}: "
                        f"test AUC {row['test_auc']:.3f}{extra}",
                        flush=True,
                    )
                if stats == "median" and case == "poisoned" and rows[-1]["poisoner_weight"] != 0:
                    missed.append(
                        f"seed {seed}: the poisoner kept weight {rows[-1]['poisoner_weight']:.3f} "
                        "in the final round"
                    )
        gap = finals["median", "clean"] - finals["median", "poisoned"]
        print(
            f"seed {seed}: final test AUC median clean {finals['median', 'clean']:.3f} "
            f"poisoned {finals['median', 'poisoned']:.3f} (gap {gap:+.3f}); weighted clean "
            f"{finals['weighted', 'clean']:.3f} poisoned {finals['weighted', 'poisoned']:.3f}"
        )
        if gap > args.tolerance:
            missed.append(
                f"seed {seed}: poisoned final AUC {gap:.3f} below clean (> {args.tolerance})"
            )
    print(f"{time.perf_counter() - started:.0f} s")
    if args.out is not None:
        doc = {
            "args": vars(args) | {"out": str(args.out)},
            "runs": runs,
            "provenance": provenance(),
        }
        args.out.write_text(json.dumps(doc, indent=1, default=str))
    for line in missed:
        print(f"TARGET MISSED: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
