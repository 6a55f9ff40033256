"""Issue 12 (b), per round: where the valuation's calibrated-F1 gain over FedAvg comes from.

Usage: .venv/bin/python scripts/bench/f1cal_rounds.py RUN.json [RUN.json ...] [--scenario b]
       [--summary-only]

Reads the JSON that ``scripts/bench/accuracy.py --out RUN.json`` writes (both ``fedavg`` and
``valuation`` runs of the same seeds) and prints, per seed and round, paired by round: the
faulty sites' weight share under each method, the valuation's faulty-site scores, and each
method's test AUC, calibrated F1 (F1 at the decision threshold fitted on the validation split)
and that threshold (runs recorded before ``RoundRecord.test_threshold`` show ``-``); then, per
round over the seeds, the mean paired calibrated F1 and AUC and the mean faulty share, so the
final round's gap (the one issue 12's bar reads) can be set against the earlier rounds': is the
gain made in the rounds where the faulty share differs most, and does it hold to the end?

No bar: a diagnostic (it reads the runs, the product's code is not run).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _share(rnd: dict[str, Any], faulty: set[str]) -> float:
    if rnd["skipped"] or not rnd["weights"]:
        return math.nan
    return (
        sum(w for s, w in zip(rnd["submitted"], rnd["weights"], strict=True) if s in faulty) / 1e18
    )


def _fmt(v: float | None, spec: str) -> str:
    return "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _runs(paths: Sequence[Path], scenario: str) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for p in paths:
        doc = json.loads(p.read_text(encoding="utf-8"))
        for key, sc in doc["scenarios"].items():
            if not key.startswith(scenario):
                continue
            for r in sc["runs"]:
                out.setdefault(r["method"], {})[int(r["seed"])] = r
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--scenario", default="b")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)
    runs = _runs(args.runs, args.scenario)
    fed, val = runs.get("fedavg", {}), runs.get("valuation", {})
    seeds = sorted(set(fed) & set(val))
    if not seeds:
        print("no seed with both a fedavg and a valuation run", file=sys.stderr)
        return 1
    per_round: dict[int, list[tuple[float, float, float, float]]] = {}
    for seed in seeds:
        f, v = fed[seed], val[seed]
        faulty = {n for n, k in zip(v["site_names"], v["site_faults"], strict=True) if k != "none"}
        if not args.summary_only:
            print(
                f"\nseed {seed}: final F1cal v/F {v['test']['f1_calibrated']:.4f}/"
                f"{f['test']['f1_calibrated']:.4f} "
                f"(paired {v['test']['f1_calibrated'] - f['test']['f1_calibrated']:+.4f}), "
                f"threshold v/F {v['test']['threshold']:.3f}/{f['test']['threshold']:.3f}, "
                f"AUC v/F {v['test']['auc']:.4f}/{f['test']['auc']:.4f}; faulty "
                + ", ".join(
                    f"{n} ({s} samples)"
                    for n, s in zip(v["site_names"], v["site_samples"], strict=True)
                    if n in faulty
                )
            )
            print(
                f"{'round':>5} {'share v':>7} {'share F':>7} {'faulty scores v':>18} "
                f"{'AUC v':>6} {'AUC F':>6} {'F1c v':>6} {'F1c F':>6} {'dF1c':>7} "
                f"{'thr v':>6} {'thr F':>6}"
            )
        for rv, rf in zip(v["rounds"], f["rounds"], strict=True):
            sv, sf = _share(rv, faulty), _share(rf, faulty)
            scores = " ".join(
                f"{s / 1e6:.2f}"
                for n, s in zip(rv["submitted"], rv["scores"], strict=True)
                if n in faulty
            )
            d = rv["test_f1_calibrated"] - rf["test_f1_calibrated"]
            da = rv["test_auc"] - rf["test_auc"]
            per_round.setdefault(rv["round"], []).append((d, da, sv, sf))
            if not args.summary_only:
                print(
                    f"{rv['round']:>5} {_fmt(sv, '7.3f')} {_fmt(sf, '7.3f')} {scores:>18} "
                    f"{rv['test_auc']:6.3f} {rf['test_auc']:6.3f} "
                    f"{rv['test_f1_calibrated']:6.3f} {rf['test_f1_calibrated']:6.3f} {d:+7.3f} "
                    f"{_fmt(rv.get('test_threshold'), '6.3f')} "
                    f"{_fmt(rf.get('test_threshold'), '6.3f')}"
                )
    print(f"\nper round over seeds {seeds} (paired valuation - FedAvg):")
    print(
        f"{'round':>5} {'dF1cal mean':>11} {'worst':>7} {'dAUC mean':>9} "
        f"{'share v':>7} {'share F':>7}"
    )
    for rid in sorted(per_round):
        rows = per_round[rid]
        d = [x[0] for x in rows]
        print(
            f"{rid:>5} {statistics.fmean(d):+11.4f} {min(d):+7.3f} "
            f"{statistics.fmean(x[1] for x in rows):+9.4f} "
            f"{statistics.fmean(x[2] for x in rows):7.3f} "
            f"{statistics.fmean(x[3] for x in rows):7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
