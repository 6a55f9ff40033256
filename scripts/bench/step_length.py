"""An experiment, not the product's rule (issue 12 (c)): a step-length (line-search) signature of
each update on the validation utility, and a weight factor built on it.

For every usable update of an aggregator-mode round, on the same validation split, metric and
global model as :func:`fedtrail.valuation.value_round`, the utility of ``global + t * delta``
for every ``t`` in :data:`GRID` (singletons of the mean game: the coalition model of one player
is the global model plus its delta). ``t_grid`` is the best grid step (ties: the shortest);
``t_star`` refines it with the parabola through the best step and its two neighbours (its
vertex, clamped between them; ``t_grid`` itself at either end of the grid). The idea under test:
an honest update's best step is near or above 1 on an undertrained model, a x10 boost's near
0.1, a sign-flipped update's 0 (the utility falls along it), so ``min(1, t_star / T)`` would
demote both poisoners without looking at norms; the question is where honest skewed sites'
``t_star`` lies.

:func:`install` taps the accuracy bench's :func:`fedtrail.valuation.value_round` (``_sim``'s
name for it, aggregator mode; :func:`_sim.tap_value_round`) in this process only. With
``threshold`` None it only records (no score changes); with ``T`` every paid (score above 0),
robust-checked update's score is multiplied by ``min(1, t_star / T)`` (weights, not evidence:
the accumulated values are left as they are, as ``weight_factors.py`` does). :func:`records`
gives one dict per probed
site-round, with the tap's run counter (from 0, advancing at every warm-up round: the bench's
valuation runs in order), as ``game_probe.py``'s.

Report: ``.venv/bin/python scripts/bench/step_length.py RUN.json [...] [--rows]`` prints the
``t_star`` distribution per scenario and fault kind (quantiles, and the counts of site-rounds
below 0.125 / 0.25 / 0.5 / 1), and of the reach ``t_star`` times the update's norm over the
round's median norm (the best step in median-norm units: a boost divides ``t_star``, not it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

GRID = (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""The steps probed, multiples of the update (0: the global model)."""

_records: list[dict[str, Any]] = []
_live = os.environ.get("STEP_LENGTH_LIVE", "")
"""A file each row is also appended to as a JSON line when it is recorded (for long runs)."""


def best_step(utilities: Sequence[float]) -> tuple[float, float]:
    """``(t_grid, t_star)`` of the utilities along :data:`GRID` (see the module docstring)."""
    i = max(range(len(GRID)), key=lambda k: (utilities[k], -k))
    t = GRID[i]
    if i == 0 or i == len(GRID) - 1:
        return t, t
    (a, ua), (b, ub), (c, uc) = (
        (GRID[i - 1], utilities[i - 1]),
        (GRID[i], utilities[i]),
        (GRID[i + 1], utilities[i + 1]),
    )
    # vertex of the parabola through three points (non-uniform spacing)
    num = (b - a) ** 2 * (ub - uc) - (b - c) ** 2 * (ub - ua)
    den = (b - a) * (ub - uc) - (b - c) * (ub - ua)
    if den == 0 or not math.isfinite(num / den):
        return t, t
    return t, min(max(b - 0.5 * num / den, a), c)


def probe(kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The step-length rows of every usable update of the round (site -> row)."""
    import torch

    from fedtrail.valuation.base import Candidate, ValuationContext
    from fedtrail.valuation.utility import CoalitionUtility

    players = [c for c in kwargs["candidates"] if c.usable and c.delta is not None]
    if not players or kwargs.get("validation") is None:
        return {}

    def scaled(c: Candidate, k: int) -> Candidate:
        assert c.delta is not None
        delta: Mapping[str, torch.Tensor] = {n: v * GRID[k] for n, v in c.delta.items()}
        return replace(c, site=f"{c.site}~{k}", delta=delta)

    variants = [scaled(c, k) for c in players for k in range(1, len(GRID))]
    ctx = ValuationContext(
        global_state=kwargs["global_state"],
        spec=kwargs["spec"],
        candidates=variants,
        validation=kwargs["validation"],
        metric=kwargs["metric"],
        seed=kwargs["seed"],
    )
    utility = CoalitionUtility(ctx, variants)
    u0 = utility(frozenset())
    out = {}
    for c in players:
        us = [u0, *(utility(frozenset({f"{c.site}~{k}"})) for k in range(1, len(GRID)))]
        t_grid, t_star = best_step(us)
        out[c.site] = {"samples": c.num_samples, "u": us, "t_grid": t_grid, "t_star": t_star}
    return out


def install(threshold: float | None) -> None:
    """Record the step lengths of every aggregator-mode valuation round of this process; with
    ``threshold`` T, scale each paid, robust-checked update's score by ``min(1, t_star / T)``."""
    from fedtrail.valuation.combine import RoundValuation
    from fedtrail.valuation.standing import scaled_score
    from scripts.bench import _sim

    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be positive, got {threshold!r}")

    def on_round(
        run: int, round_id: int, kwargs: Mapping[str, Any], report: RoundValuation
    ) -> RoundValuation | None:
        rows = probe(kwargs)
        sites = []
        for v in report.sites:
            row = rows.get(v.site)
            if row is not None:
                f = 1.0 if threshold is None else min(1.0, row["t_star"] / threshold)
                _records.append(
                    rec := {
                        "run": run,
                        "round": round_id,
                        "site": v.site,
                        **row,
                        "value": v.value,
                        "cosine": v.cosine,
                        "norm_ratio": (v.norm / v.median_norm)
                        if v.norm and v.median_norm
                        else None,
                        "score": v.score,
                        "reason": str(v.reason),
                        "factor": f,
                    }
                )
                if _live:
                    with open(_live, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(rec) + "\n")
                if v.score > 0 and v.robust_checked and f < 1.0:
                    score = scaled_score(v.score, f)
                    v = replace(
                        v,
                        score=score,
                        detail=f"{v.detail}; keeps {f:.1%} (step_length experiment): "
                        f"score {score / 1e6:.1%}",
                    )
            sites.append(v)
        return replace(report, sites=sites) if threshold is not None else None

    _sim.tap_value_round(on_round)


def records() -> list[dict[str, Any]]:
    """Every step-length row recorded so far (see the module docstring)."""
    return list(_records)


def _quantiles(xs: list[float]) -> str:
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]

    return (
        f"min {s[0]:.3f} q10 {q(0.1):.3f} q25 {q(0.25):.3f} median {q(0.5):.3f} "
        f"q75 {q(0.75):.3f} max {s[-1]:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="t_star per scenario and fault kind")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--rows", action="store_true", help="print every faulty site-round")
    parser.add_argument("--from-round", type=int, default=1)
    args = parser.parse_args(argv)
    for path in args.runs:
        doc = json.loads(path.read_text())
        recs = doc.get("step_length")
        if not recs:
            print(f"{path}: no step_length", file=sys.stderr)
            return 2
        runs = [
            (key, run)
            for key, sc in doc["scenarios"].items()
            for run in sc["runs"]
            if run["method"] == "valuation"
        ]
        groups: dict[tuple[str, str], list[float]] = {}
        reach: dict[tuple[str, str], list[float]] = {}
        for r in recs:
            if r["round"] < args.from_round:
                continue
            key, run = runs[r["run"]]
            samples = dict(zip(run["site_names"], run["site_samples"], strict=True))
            if samples.get(r["site"]) != r["samples"]:
                raise SystemExit(f"record run {r['run']} does not match valuation run")
            fault = dict(zip(run["site_names"], run["site_faults"], strict=True))[r["site"]]
            groups.setdefault((key, fault), []).append(r["t_star"])
            if r["norm_ratio"]:
                reach.setdefault((key, fault), []).append(r["t_star"] * r["norm_ratio"])
            if args.rows and (fault != "none" or r["t_star"] < 0.5):
                us = r["u"]
                print(
                    f"  ({key}) seed {run['seed']} round {r['round']} {r['site']} {fault} "
                    f"n {r['samples']} norm {r['norm_ratio'] or 0:.2f} cos {r['cosine'] or 0:+.2f} "
                    f"score {r['score'] / 1e6:.2f} t* {r['t_star']:.3f} f {r['factor']:.2f} "
                    f"u-u0 {' '.join(f'{u - us[0]:+.4f}' for u in us[1:])}"
                )
        print(f"{path} (alpha {doc['settings']['alpha']:g}, from round {args.from_round}):")
        for (key, fault), ts in sorted(groups.items()):
            below = ", ".join(f"<{b:g} {sum(t < b for t in ts)}" for b in (0.125, 0.25, 0.5, 1.0))
            print(f"  ({key}) {fault:10} n {len(ts):3}  t* {_quantiles(ts)}  [{below}]")
            if reach.get((key, fault)):
                print(f"  {'':15} reach (t* x norm / median) {_quantiles(reach[(key, fault)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
