"""Per-site, per-round valuation traces of a saved accuracy run (issue 12's mechanisms).

Usage: .venv/bin/python scripts/bench/valuation_trace.py RUN.json [RUN.json ...]
       [--scenario c] [--seed 1] [--credit-cosine -0.7] [--summary-only]

Reads the JSON that ``scripts/bench/accuracy.py --out RUN.json`` writes (its ``valuation``
runs; runs saved before the diagnostics were recorded have no cosines or norms and are
skipped) and prints, for each run, every site's cosine to the round's median update, its norm
over the median norm, the share the standing credited it and its on-chain score, round by
round; then, over all runs, what separates the faulty sites from the honest ones on the
data-free statistics:

* the distribution of honest updates' norm ratios (median, 90th, 95th, 99th percentile, max)
  against each fault kind's (min and median): a norm bound that clips a scaled update must
  sit above the honest maximum;
* the longest streak of consecutive rounds each site spent below ``--credit-cosine`` (the
  combiner's ``credit_cosine``, -0.7 by default): a rule that penalised repeated opposition
  would have to spare the honest sites' longest streak.

No bar: the script describes where the valuation's signal is, it does not judge it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in [0, 1]) of an ascending list."""
    return sorted_values[round(q * (len(sorted_values) - 1))]


def _streak(cosines: Sequence[float | None], threshold: float) -> int:
    best = run = 0
    for c in cosines:
        run = run + 1 if c is not None and c < threshold else 0
        best = max(best, run)
    return best


def _fmt(v: float | None, spec: str, missing: str) -> str:
    return missing if v is None else format(v, spec)


def _print_run(label: str, run: dict[str, Any]) -> None:
    rounds = run["rounds"]
    names: list[str] = run["site_names"]
    print(
        f"\n{label} seed {run['seed']}: test AUC {run['test']['auc']:.3f}; samples "
        + " ".join(f"{n}={s}" for n, s in zip(names, run["site_samples"], strict=True))
    )
    print(f"{'site':9} {'fault':12} {'row':5} " + " ".join(f"{r['round']:>6}" for r in rounds))
    for name, fault in zip(names, run["site_faults"], strict=True):
        rows = {
            "cos": [_fmt(r["cosines"].get(name), "+6.2f", "     -") for r in rounds],
            "norm": [_fmt(r["norm_ratios"].get(name), "6.2f", "     -") for r in rounds],
            "share": [_fmt((r["shares"] or {}).get(name), "+6.2f", "     .") for r in rounds],
            "score": [_fmt(_score(r, name), "6.2f", "     -") for r in rounds],
        }
        for i, (row, cells) in enumerate(rows.items()):
            head = f"{name:9} {fault:12}" if i == 0 else " " * 22
            print(f"{head} {row:5} " + " ".join(cells))


def _score(record: dict[str, Any], site: str) -> float | None:
    if site not in record["submitted"]:
        return None
    return float(record["scores"][record["submitted"].index(site)]) / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--scenario", help="only this scenario key (a, b, c, ...)")
    parser.add_argument("--seed", type=int, help="only this seed")
    parser.add_argument("--credit-cosine", type=float, default=-0.7)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)

    honest_norms: list[float] = []
    fault_norms: dict[str, list[float]] = {}
    streaks: list[tuple[str, int, str, str, int, float]] = []
    shown = 0
    for path in args.runs:
        doc = json.loads(path.read_text())
        alpha = doc["settings"]["alpha"]
        for key, sc in doc["scenarios"].items():
            if args.scenario is not None and key != args.scenario:
                continue
            for run in sc["runs"]:
                if run["method"] != "valuation":
                    continue
                if args.seed is not None and run["seed"] != args.seed:
                    continue
                rounds = run["rounds"]
                if not rounds or "cosines" not in rounds[0]:
                    continue
                shown += 1
                label = f"alpha {alpha:g} ({key})"
                if not args.summary_only:
                    _print_run(label, run)
                for name, fault in zip(run["site_names"], run["site_faults"], strict=True):
                    ratios = [r["norm_ratios"][name] for r in rounds if name in r["norm_ratios"]]
                    (honest_norms if fault == "none" else fault_norms.setdefault(fault, [])).extend(
                        ratios
                    )
                    cos = [r["cosines"].get(name) for r in rounds]
                    seen = [c for c in cos if c is not None]
                    streaks.append(
                        (
                            label,
                            run["seed"],
                            name,
                            fault,
                            _streak(cos, args.credit_cosine),
                            min(seen) if seen else float("nan"),
                        )
                    )
    if not shown:
        print("no valuation run with recorded diagnostics", file=sys.stderr)
        return 2
    print(f"\nOver {shown} valuation run(s):")
    if honest_norms:
        h = sorted(honest_norms)
        print(
            f"  honest norm / median norm ({len(h)} updates): median {_percentile(h, 0.5):.2f}, "
            f"p90 {_percentile(h, 0.9):.2f}, p95 {_percentile(h, 0.95):.2f}, "
            f"p99 {_percentile(h, 0.99):.2f}, max {h[-1]:.2f}"
        )
    for fault, values in sorted(fault_norms.items()):
        print(
            f"  {fault} norm / median norm ({len(values)} updates): min {min(values):.2f}, "
            f"median {statistics.median(values):.2f}"
        )
    honest = [s for s in streaks if s[3] == "none"]
    longest = max(honest, key=lambda s: s[4], default=None)
    if longest is not None:
        print(
            f"  longest honest streak below cosine {args.credit_cosine:g}: {longest[4]} round(s) "
            f"({longest[0]} seed {longest[1]} {longest[2]}, lowest cosine {longest[5]:+.2f}); "
            f"honest sites with a streak of 2 or more: "
            f"{sum(1 for s in honest if s[4] >= 2)} of {len(honest)}"
        )
    for s in streaks:
        if s[3] != "none":
            print(
                f"  {s[0]} seed {s[1]} {s[2]} ({s[3]}): longest streak {s[4]}, lowest cosine "
                f"{s[5]:+.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
