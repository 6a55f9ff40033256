"""A warm-up weight cap replayed on saved accuracy runs (issue 12 (j), an experiment, not a rule).

Usage: .venv/bin/python scripts/bench/warmup_cap.py RUN.json [RUN.json ...] [--caps 5,7]

Round 1 is the valuation's warm-up: every update that passes the screens takes its sample share
of the weight, whatever it is. The candidate rule: a paid round-1 update whose norm is above
``K`` x the round's median norm (the recorded ``norm_ratios``) gets weight 0. This script reads
the JSON that ``scripts/bench/accuracy.py --out RUN.json`` writes and prints

* every round-1 update's norm ratio and cosine to the median update, pooled: the honest ones'
  largest ratios, how many honest updates lie above each cap and below cosine 0 (the ``along
  < 0`` variant), and each faulty site's round-1 ratio, cosine and score;
* per valuation run, the faulty sites' mean weight share over the rounds as recorded and with
  each cap applied to round 1 (the other round-1 weights renormalised; later rounds as
  recorded), and the honest round-1 updates the cap would zero.

The replay is first order: the model a cap would have changed is not replayed, so later rounds
are as recorded. No bar: it describes where the warm-up's weight goes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _valuation_runs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (key, run)
        for key, sc in doc["scenarios"].items()
        for run in sc["runs"]
        if run["method"] == "valuation"
    ]


def capped_share(run: dict[str, Any], cap: float | None) -> tuple[float, int]:
    """The faulty sites' mean weight share over the run's rounds with weight, round 1's weights
    of updates above ``cap`` median norms set to 0 (None: as recorded), and how many honest
    round-1 updates that zeroed."""
    faulty = {n for n, f in zip(run["site_names"], run["site_faults"], strict=True) if f != "none"}
    shares: list[float] = []
    honest_zeroed = 0
    for i, record in enumerate(run["rounds"]):
        weights = dict(zip(record["submitted"], record["weights"], strict=True))
        if record["skipped"] or not sum(weights.values()):
            continue
        if i == 0 and cap is not None:
            for site, w in list(weights.items()):
                ratio = record["norm_ratios"].get(site)
                if w > 0 and ratio is not None and ratio > cap:
                    weights[site] = 0
                    honest_zeroed += site not in faulty
        total = sum(weights.values())
        shares.append(sum(w for s, w in weights.items() if s in faulty) / total if total else 0.0)
    return statistics.fmean(shares), honest_zeroed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--caps", default="5,7", help="the caps K to replay, in median norms")
    args = parser.parse_args(argv)
    caps = [float(k) for k in args.caps.split(",") if k]
    honest: list[tuple[float, float]] = []
    faulty: list[str] = []
    rows: list[str] = []
    for path in args.runs:
        doc = json.loads(path.read_text(encoding="utf-8"))
        alpha = doc["settings"]["alpha"]
        for key, run in _valuation_runs(doc):
            first = run["rounds"][0]
            scores = dict(zip(first["submitted"], first["scores"], strict=True))
            for name, fault in zip(run["site_names"], run["site_faults"], strict=True):
                ratio, cosine = first["norm_ratios"].get(name), first["cosines"].get(name)
                if ratio is None or cosine is None:
                    continue
                if fault == "none":
                    honest.append((ratio, cosine))
                else:
                    faulty.append(
                        f"alpha {alpha:g} ({key}) seed {run['seed']} {name} {fault}: norm "
                        f"{ratio:.2f}x, cosine {cosine:+.2f}, round-1 score "
                        f"{scores.get(name, 0) / 1e6:.2f}"
                    )
            cells = []
            for cap in (None, *caps):
                share, zeroed = capped_share(run, cap)
                name = "recorded" if cap is None else f"K {cap:g}"
                cells.append(
                    f"{name} {share:.3f}" + (f" ({zeroed} honest zeroed)" if zeroed else "")
                )
            rows.append(f"alpha {alpha:g} ({key}) seed {run['seed']}: " + ", ".join(cells))
    ratios = sorted(r for r, _ in honest)
    print(
        f"honest round-1 updates: {len(ratios)}; largest norm ratios "
        + ", ".join(f"{r:.2f}" for r in ratios[-5:])
        + f"; cosine below 0: {sum(1 for _, c in honest if c < 0)}"
    )
    for cap in (2.5, *caps):
        print(f"  above {cap:g}x the median: {sum(1 for r in ratios if r > cap)}")
    print("faulty round-1 updates:")
    for line in faulty:
        print(f"  {line}")
    print("faulty weight share, mean over the rounds (first order):")
    for line in rows:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
