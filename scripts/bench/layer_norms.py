"""An experiment, not the product's rule (issue 12 (c)): each valued update's norm per tensor,
and its cosine per tensor to that tensor's coordinate-wise median over the round's updates,
recorded beside an accuracy run, to ask two questions: is a scaled (x10) update long in *every*
tensor while an honest skewed site's long update is long in some tensors only; and does a
sign-flipped update point against the consensus in every weight tensor while an honest
minority-class site (whole-update cosine down to -0.9 under label skew) points against it in
the classifier only and with it in the convolutions.

Usage: .venv/bin/python scripts/bench/layer_norms.py OUT.json -- ACCURACY.PY ARGS...
       .venv/bin/python scripts/bench/layer_norms.py --report OUT.json RUN.json

The first form runs ``scripts/bench/accuracy.py`` with its arguments, the bench's
:func:`fedtrail.valuation.value_round` (``_sim``'s name for it) tapped in this process only
(:func:`_sim.tap_value_round`),
and writes one row per submitted update (run counter, round, site, its per-tensor L2 norms of
the trainable tensors); nothing it computes reaches a score. The second joins those rows with
the run's site faults (RUN.json, the accuracy run written with ``--out``) and prints, for every
fault kind, the distribution of the per-update statistics below (each update's per-tensor norm
over the round's per-tensor median norm, then over the tensors):

* ``min``: the smallest tensor ratio (an update long in every tensor has a large minimum);
* ``med``: the median tensor ratio;
* ``whole``: the whole-update norm ratio (the product's norm screen reads this one);
* ``cmax`` / ``cmed``: the largest / median of the weight tensors' cosines (``*.weight``) to
  their coordinate-wise medians (a sign flip is negative in every one).

No bar: it describes a signal.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import torch

from fedtrail.valuation.combine import RoundValuation
from scripts.bench import _sim, accuracy

_rows: list[dict[str, Any]] = []


def install() -> None:
    """Record every aggregator-mode valuation round's per-tensor norms in this process."""
    _sim.tap_value_round(_record)


def _record(run: int, round_id: int, kwargs: Mapping[str, Any], report: RoundValuation) -> None:
    """One row per submitted update of the round (a :func:`_sim.tap_value_round` tap)."""
    scores = {v.site: v.score for v in report.sites}
    cands = [c for c in kwargs["candidates"] if c.delta is not None]
    keys = [k for k, v in cands[0].delta.items() if v.is_floating_point()] if cands else []
    medians = {
        k: torch.stack([c.delta[k].to(torch.float64) for c in cands]).median(dim=0).values
        if len(cands) > 2
        else None
        for k in keys
    }
    for c in cands:
        norms: dict[str, float] = {}
        cosines: dict[str, float] = {}
        for k in keys:
            v = c.delta[k].to(torch.float64)
            norms[k] = float(v.pow(2).sum().sqrt())
            m = medians[k]
            if m is not None:
                den = norms[k] * float(m.pow(2).sum().sqrt())
                cosines[k] = float((v * m).sum()) / den if den > 0 else 0.0
        _rows.append(
            {
                "run": run,
                "round": round_id,
                "site": c.site,
                "samples": c.num_samples,
                "score": scores.get(c.site),
                "norms": norms,
                "cosines": cosines,
            }
        )


def _weight_cosines(row: dict[str, Any]) -> list[float]:
    return [v for k, v in row.get("cosines", {}).items() if k.endswith(".weight")]


def _stats(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float, float, float]]:
    """(row, min, median, whole) ratios for every row, against its round's medians."""
    out = []
    by_round: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        by_round.setdefault((r["run"], r["round"]), []).append(r)
    for group in by_round.values():
        keys = sorted(set.intersection(*(set(r["norms"]) for r in group)))
        med = {k: statistics.median(r["norms"][k] for r in group) for k in keys}
        whole = [math.sqrt(sum(r["norms"][k] ** 2 for k in keys)) for r in group]
        mwhole = statistics.median(whole)
        for r, w in zip(group, whole, strict=True):
            ratios = [r["norms"][k] / med[k] for k in keys if med[k] > 0]
            if not ratios or not mwhole > 0:
                continue
            out.append((r, min(ratios), statistics.median(ratios), w / mwhole))
    return out


def report(probe: Path, run_path: Path) -> int:
    rows = json.loads(probe.read_text())
    doc = json.loads(run_path.read_text())
    runs = [r for sc in doc["scenarios"].values() for r in sc["runs"] if r["method"] == "valuation"]
    faults: dict[int, dict[str, str]] = {}
    for i, run in enumerate(runs):
        faults[i] = dict(zip(run["site_names"], run["site_faults"], strict=True))
    groups: dict[str, list[tuple[float, ...]]] = {}
    for r, lo, md, wh in _stats(rows):
        kind = faults.get(r["run"], {}).get(r["site"], "?")
        cos = _weight_cosines(r) or [float("nan")]
        cmax, cmed = max(cos), statistics.median(cos)
        groups.setdefault(kind, []).append((lo, md, wh, cmax, cmed))
        if kind != "none":
            print(
                f"run {r['run']} round {r['round']} {r['site']} ({kind}, {r['samples']}): "
                f"min {lo:.2f} med {md:.2f} whole {wh:.2f} cmax {cmax:+.2f} cmed {cmed:+.2f} "
                f"score {r['score']}"
            )
    for kind, xs in groups.items():
        for j, name in enumerate(("min", "med", "whole", "cmax", "cmed")):
            v = sorted(x[j] for x in xs)
            q = [v[round(p * (len(v) - 1))] for p in (0.01, 0.05, 0.5, 0.95, 0.99)]
            print(
                f"{kind:11s} {name:5s} n={len(v):4d} min {v[0]:+.2f} p1 {q[0]:+.2f} "
                f"p5 {q[1]:+.2f} p50 {q[2]:+.2f} p95 {q[3]:+.2f} p99 {q[4]:+.2f} max {v[-1]:+.2f}"
            )
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--report":
        return report(Path(argv[1]), Path(argv[2]))
    out = Path(argv[0])
    rest = argv[argv.index("--") + 1 :]
    install()
    try:
        return accuracy.main(rest)
    finally:
        out.write_text(json.dumps(_rows))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
