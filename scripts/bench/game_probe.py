"""An experiment, not the product's rule (issue 12 (c)): what the validation utility says about
each valued update *on its own*, recorded beside the round's game.

For every update the round's game valued, on the same validation split, metric and global
model as :func:`fedtrail.valuation.value_round`:

* ``u0``: the utility of the global model (the empty coalition);
* ``slope``: the utility's gradient at the global model dotted with the update
  (:meth:`~fedtrail.valuation.utility.CoalitionUtility.slopes` at the empty coalition): the
  update's first-order effect alone, linear in it (a sign-flipped update has minus its honest
  slope; a x10 one ten times it); None under the metric ``"auc"``, which has no gradient;
* ``u1``, ``uh``, ``um``: the utility of the global model plus the update, plus half of it,
  minus it (``global + t * delta`` for ``t`` 1, 0.5, -1: singletons of the mean game);
* ``loo``: the update's leave-one-out gain at the grand coalition of the valued updates,
  ``v(N) - v(N minus it)`` on the mean game (negative: the round's aggregate of the valued
  updates is better on the validation split without it), and ``u_all``, ``v(N)``.

``u1 - um`` is twice the odd part of the step's gain (the first-order effect plus its odd
corrections): positive when the update helps more than its reverse. ``u1 - uh`` says whether
the second half of the step still helps (negative: the update overshoots on its own).

:func:`install` taps the accuracy bench's :func:`fedtrail.valuation.value_round` (``_sim``'s
name for it, aggregator mode; :func:`_sim.tap_value_round`) in this process only; nothing it
computes reaches a score. :func:`records` gives one dict per valued site-round, with the tap's
run counter (from 0, advancing at every warm-up round: the bench's valuation runs in order).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import torch

from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.combine import RoundValuation
from fedtrail.valuation.utility import CoalitionUtility
from scripts.bench import _sim

STEPS = (("u1", 1.0), ("uh", 0.5), ("um", -1.0))
"""The singleton steps recorded: name, multiple of the update."""

_records: list[dict[str, Any]] = []


def _scaled(c: Candidate, t: float, suffix: str) -> Candidate:
    assert c.delta is not None
    delta: Mapping[str, torch.Tensor] = {k: v * t for k, v in c.delta.items()}
    return replace(c, site=c.site + suffix, delta=delta)


def probe(run: int, round_id: int, kwargs: Mapping[str, Any], report: RoundValuation) -> None:
    """Record the probes of every update ``report`` valued (see the module docstring): a
    :func:`_sim.tap_value_round` tap."""
    valued = {v.site: v for v in report.sites if v.value is not None}
    players = [c for c in kwargs["candidates"] if c.site in valued and c.delta is not None]
    if not players or kwargs.get("validation") is None:
        return
    variants = [_scaled(c, t, f"~{name}") for c in players for name, t in STEPS]
    ctx = ValuationContext(
        global_state=kwargs["global_state"],
        spec=kwargs["spec"],
        candidates=[*players, *variants],
        validation=kwargs["validation"],
        metric=kwargs["metric"],
        seed=kwargs["seed"],
    )
    utility = CoalitionUtility(ctx, [*players, *variants])
    u0 = utility(frozenset())
    everyone = frozenset(c.site for c in players)
    u_all = utility(everyone)
    # the AUC has no gradient: no slope under that metric
    slopes = utility.slopes(frozenset()) if kwargs["metric"] != "auc" else {}
    for c in players:
        v = valued[c.site]
        row: dict[str, Any] = {
            "run": run,
            "round": round_id,
            "site": c.site,
            "samples": c.num_samples,
            "value": v.value,
            "cosine": v.cosine,
            "norm_ratio": (v.norm / v.median_norm) if v.norm and v.median_norm else None,
            "score": v.score,
            "u0": u0,
            "slope": slopes.get(c.site),
            "u_all": u_all,
            "loo": u_all - utility(everyone - {c.site}) if len(players) > 1 else None,
        }
        for name, _ in STEPS:
            row[name] = utility(frozenset({f"{c.site}~{name}"}))
        _records.append(row)


def install() -> None:
    """Record the probes of every aggregator-mode valuation round of this process."""
    _sim.tap_value_round(probe)


def records() -> list[dict[str, Any]]:
    """Every probe recorded so far (see the module docstring)."""
    return list(_records)
