"""What the validation game sees, decomposed: per round and site, the value under several
utilities and semivalues on the same coalition models (issue 12's diagnosis tool).

Usage: .venv/bin/python scripts/bench/value_decomposition.py [--scenario a] [--alpha 3]
       [--seed 0] [--rounds 8] [--out .run/bench/value_decomposition.json]

It runs the accuracy benchmark's in-process federation (``scripts/bench/_sim.py``, the
``valuation`` method: the product's ``value_round`` with its history, weights by the contract's
rule) for one scenario, alpha and seed, and after every round's valuation re-evaluates every
coalition of the round's scored updates (exact, so at most 8 of them) on the validation split.
Per site it prints the share of the round's total absolute value (``phi_i / sum |phi_j|``, the
standing's normalisation) of:

``shapley``   the product's utility (class-balanced log loss after fitting the intercept), exact
              Shapley: what the standing accumulates;
``class c``   Shapley of the mean log-likelihood of class c's images alone under the same fitted
              intercept (the product's utility is their mean): the class-conditional values;
``loo``       leave-one-out at the grand coalition, same utility: the marginal effect where the
              update is really used (with everyone else);
``large``     the mean marginal over coalitions of at least n - 2 other players (a semivalue
              that ignores the small coalitions that never exist in deployment);
``auc``       Shapley of the validation ROC AUC (ranking only: calibration and scale do not
              count).

and each site's label mix. It checks no bar (exit 0); it answers whether another utility or
semivalue would separate an honest skewed site from a noisy one (see the README's *Results*).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.metrics import classification_metrics, fit_intercept
from fedtrail.protocol.codes import Reason
from fedtrail.valuation import CoalitionUtility, RoundValuation
from fedtrail.valuation.base import ValuationContext
from fedtrail.valuation.utility import uninformative_where_broken
from scripts.bench import _sim, accuracy
from scripts.bench._sim import ROOT, SimConfig

MAX_PLAYERS = 8
"""Exact games only: 2^8 coalition models a round."""


def coalition_measures(utility: CoalitionUtility, labels: np.ndarray) -> dict[frozenset[str], Any]:
    """Per coalition: [balanced utility, per-class log-likelihoods..., AUC]."""
    out: dict[frozenset[str], Any] = {}
    players = utility.players
    for k in range(len(players) + 1):
        for members in itertools.combinations(players, k):
            key = frozenset(members)
            logits = uninformative_where_broken(utility.outputs(key))
            fit = fit_intercept(logits, labels)
            z = logits + np.asarray(fit.bias)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            per_class = [float(logp[labels == c, c].mean()) for c in range(z.shape[1])]
            auc = classification_metrics(logits, labels).auc
            out[key] = np.array([-fit.loss, *per_class, auc])
    return out


def values(players: Sequence[str], v: Mapping[frozenset[str], Any]) -> dict[str, dict[str, Any]]:
    """Shapley, leave-one-out and the large-coalition semivalue of every measure."""
    n = len(players)
    grand = frozenset(players)
    out: dict[str, dict[str, Any]] = {}
    for p in players:
        others = [q for q in players if q != p]
        shapley = np.zeros_like(v[frozenset()])
        large = []
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for members in itertools.combinations(others, k):
                s = frozenset(members)
                marginal = v[s | {p}] - v[s]
                shapley += weight * marginal
                if k >= n - 2:
                    large.append(marginal)
        out[p] = {
            "shapley": shapley,
            "loo": v[grand] - v[grand - {p}],
            "large": np.mean(large, axis=0),
        }
    return out


def shares(raw: Mapping[str, float]) -> dict[str, float]:
    total = math.fsum(abs(x) for x in raw.values())
    return {k: (x / total if total > 0 else 0.0) for k, x in raw.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", default="a", choices=sorted(accuracy.SCENARIOS))
    parser.add_argument("--alpha", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".run" / "bench" / "value_decomposition.json"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sc = accuracy.SCENARIOS[args.scenario]
    if sc.sites > MAX_PLAYERS:
        parser.error(f"scenario {args.scenario} has {sc.sites} sites; exact games need <= 8")
    splits = load_bundled()
    labels = np.asarray(splits.val.labels)
    config = SimConfig(
        sites=sc.sites,
        rounds=args.rounds,
        alpha=args.alpha,
        seed=args.seed,
        faults=sc.faults(args.seed),
        stale=sc.stale,
    )
    rounds: list[dict[str, Any]] = []
    real = _sim.value_round

    def decomposed(**kw: Any) -> RoundValuation:
        report: RoundValuation = real(**kw)
        scored = {v.site for v in report.sites if v.value is not None}  # the game's players
        players = [c for c in kw["candidates"] if c.site in scored and c.delta is not None]
        row: dict[str, Any] = {"sites": {}}
        if 1 <= len(players) <= MAX_PLAYERS:
            ctx = ValuationContext(
                global_state=kw["global_state"],
                spec=kw["spec"],
                candidates=list(players),
                validation=kw["validation"],
                metric="balanced_loss",
            )
            utility = CoalitionUtility(ctx, [replace(c, status=Reason.OK) for c in players])
            vals = values(utility.players, coalition_measures(utility, labels))
            k = len(next(iter(vals.values()))["shapley"])
            columns = {
                "shapley": ("shapley", 0),
                **{f"class {c}": ("shapley", 1 + c) for c in range(k - 2)},
                "loo": ("loo", 0),
                "large": ("large", 0),
                "auc": ("shapley", k - 1),
            }
            for name, (kind, idx) in columns.items():
                col = shares({p: float(vals[p][kind][idx]) for p in utility.players})
                for p, x in col.items():
                    row["sites"].setdefault(p, {})[name] = x
        for v in report.sites:
            row["sites"].setdefault(v.site, {}).update(
                {"score": v.score, "reason": v.reason.name, "value": v.value, "accumulated": None}
            )
        for site, acc in (report.accumulated or {}).items():
            if site in row["sites"]:
                row["sites"][site]["accumulated"] = acc
        rounds.append(row)
        return report

    _sim.value_round = decomposed
    res = _sim.run_method("valuation", config, splits)
    mix = {
        res.site_names[i]: float(np.mean(np.asarray(d.labels)))
        for i, d in enumerate(_sim.site_splits(splits.train, config))
    }
    print(
        f"{sc.title}, alpha {args.alpha:g}, seed {args.seed}, {args.rounds} rounds: share of each "
        "round's total |value| (shapley = the product's; class c, loo, large, auc: see --help)"
    )
    for r, row in enumerate(rounds, 1):
        print(f"round {r}")
        for i, name in enumerate(res.site_names):
            cell = row["sites"].get(name)
            if cell is None:
                continue
            parts = " ".join(
                f"{key} {cell[key]:+.2f}"
                for key in cell
                if key not in ("score", "reason", "value", "accumulated")
            )
            acc = cell.get("accumulated")
            print(
                f"  {name} {res.site_faults[i]:>12} n={res.site_samples[i]:4d} "
                f"positive {mix[name]:.2f} score {cell['score'] / 1e6:.3f} {cell['reason']:<12} "
                f"acc {'-' if acc is None else f'{acc:+.2f}'}  {parts}"
            )
    print(f"test AUC {res.test['auc']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "value_decomposition",
                "argv": list(sys.argv[1:] if argv is None else argv),
                "sites": res.site_names,
                "faults": res.site_faults,
                "samples": res.site_samples,
                "positive_rate": mix,
                "rounds": rounds,
                "test": res.test,
            },
            indent=1,
            default=float,
        ),
        encoding="utf-8",
    )
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
