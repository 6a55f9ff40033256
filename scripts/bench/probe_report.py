"""Reads the ``game_probe`` list of accuracy runs (``accuracy.py --game-probe --out RUN.json``)
and prints, per scenario and fault kind, how often each single-update test fires (issue 12 (c)):

* ``reverse``: ``u1 < um``: the update helps the validation utility less than its reverse;
* ``slope<0``: its first-order effect at the global model is negative;
* ``overshoot``: ``u1 < uh``: half of the update alone does better than all of it;
* ``alone<0``: ``u1 < u0``: the update alone makes the global model worse.

Then per faulty site-round the probes themselves. No bar: a description of the signal.

Usage: .venv/bin/python scripts/bench/probe_report.py RUN.json [RUN.json ...] [--rows]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TESTS = {
    "reverse": lambda r: r["u1"] < r["um"],
    "slope<0": lambda r: r["slope"] is not None and r["slope"] < 0,
    "overshoot": lambda r: r["u1"] < r["uh"],
    "alone<0": lambda r: r["u1"] < r["u0"],
}


def _runs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (key, run)
        for key, sc in doc["scenarios"].items()
        for run in sc["runs"]
        if run["method"] == "valuation"
    ]


def _match(records: list[dict[str, Any]], runs: list[tuple[str, dict[str, Any]]]) -> dict[int, int]:
    """Probe run counter -> index in ``runs``: the k-th valuation run in the JSON's order (the
    bench's order of execution), checked against the sites' claimed counts."""
    out = {}
    for r in records:
        k = r["run"]
        _, run = runs[k]
        if (
            dict(zip(run["site_names"], run["site_samples"], strict=True)).get(r["site"])
            != r["samples"]
        ):
            raise SystemExit(f"probe run {k} does not match valuation run {k}")
        out[k] = k
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--rows", action="store_true", help="print every faulty site-round")
    parser.add_argument("--from-round", type=int, default=1)
    args = parser.parse_args(argv)
    for path in args.runs:
        doc = json.loads(path.read_text())
        records = doc.get("game_probe")
        if not records:
            print(f"{path}: no game_probe", file=sys.stderr)
            return 2
        runs = _runs(doc)
        match = _match(records, runs)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for r in records:
            if r["round"] < args.from_round:
                continue
            key, run = runs[match[r["run"]]]
            fault = dict(zip(run["site_names"], run["site_faults"], strict=True))[r["site"]]
            c = counts.setdefault((key, fault), {"n": 0, **dict.fromkeys(TESTS, 0)})
            c["n"] += 1
            for name, test in TESTS.items():
                c[name] += bool(test(r))
            if args.rows and fault != "none":
                print(
                    f"alpha {doc['settings']['alpha']:g} ({key}) seed {run['seed']} round "
                    f"{r['round']} {r['site']} {fault}: norm {r['norm_ratio'] or 0:.2f} cos "
                    f"{r['cosine'] or 0:+.2f} value {r['value']:+.4f} slope {r['slope'] or 0:+.4f} "
                    f"u1-u0 {r['u1'] - r['u0']:+.4f} uh-u0 {r['uh'] - r['u0']:+.4f} "
                    f"um-u0 {r['um'] - r['u0']:+.4f}"
                )
        print(f"{path} (alpha {doc['settings']['alpha']:g}, from round {args.from_round}):")
        for (key, fault), c in sorted(counts.items()):
            cells = ", ".join(f"{name} {c[name]}/{c['n']}" for name in TESTS)
            print(f"  ({key}) {fault:10} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
