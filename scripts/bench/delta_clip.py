"""An experiment, not the product's rule (issue 12 (c)): clip each update's delta to ``c`` times
the round's median norm before it counts, instead of zeroing or demoting it.

Where it acts (``--delta-clip C`` of ``accuracy.py``, valuation runs only; FedAvg stays plain):

* the aggregate: the valuation run's ``weighted`` rule becomes the product's ``norm_clip`` rule
  (:func:`fedtrail.ml.aggregation.norm_clipped_mean`, the rule the round terms already carry and
  ``audit verify`` replays) with ``max_norm`` = ``c`` x the median norm of the round's
  positive-weight updates (the median of :func:`fedtrail.valuation.round.model_norm`, exact
  sums): ``acc += (w_i / 1e18) * min(1, max_norm / ||delta_i||) * delta_i``;
* with ``--clip-game`` also the game: every candidate's delta is scaled by the same
  ``min(1, c * median / norm)`` (median over the round's candidates) before
  :func:`fedtrail.valuation.value_round` values it, so the coalition models average what the
  aggregate will (the x10 site's longer honest-direction step is no longer what is paid).

Neither changes the on-chain weights directly: issue 12's bar (c) is the poisoned sites'
*weight* share, which moves only through the standing (the game's values of the clipped
updates) and the trajectory. So each run also records, per round, the faulty sites' share of the
aggregate's *influence*, ``sum_faulty w_i f_i ||delta_i|| / sum_j w_j f_j ||delta_j||``
(``f_i`` the clip factor), and how many honest positive-weight updates were clipped.
:func:`install` wraps :mod:`_sim`'s names in this process only (single-threaded use).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import _sim
import torch

from fedtrail.ml.aggregation import AggregationRule
from fedtrail.valuation.round import model_norm


@dataclass
class RunStats:
    """What one valuation run's clipping did, per round."""

    honest_clipped: int = 0
    honest_used: int = 0
    faulty_clipped: int = 0
    faulty_used: int = 0
    influence: list[float] = field(default_factory=list)
    """Per aggregated round: the faulty sites' share of ``sum w_i f_i ||delta_i||``."""
    honest_ratios: list[float] = field(default_factory=list)
    """Honest positive-weight updates' norm over the round's median norm."""
    faulty_ratios: list[float] = field(default_factory=list)


_stats: dict[str, RunStats] = {}
_context: dict[str, Any] = {}


def clip_factors(norms: Sequence[float], c: float) -> tuple[float, list[float]]:
    """``(limit, factors)``: ``limit = c * median(norms)`` and each ``min(1, limit / norm)``
    (1 for a zero norm, or when the median is 0)."""
    limit = c * statistics.median(norms) if norms else 0.0
    if not limit > 0:
        return math.inf, [1.0] * len(norms)
    return limit, [limit / n if n > limit else 1.0 for n in norms]


def _scaled(delta: Mapping[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    if factor == 1.0:
        return dict(delta)
    return {
        k: (v.to(torch.float64) * factor).to(v.dtype) if v.is_floating_point() else v
        for k, v in delta.items()
    }


def summary() -> dict[str, dict[str, Any]]:
    """Per run key (``"seed S faults F"``): the counts, the mean influence share and the
    honest updates' norm ratios' maximum."""
    out: dict[str, dict[str, Any]] = {}
    for key, st in _stats.items():
        out[key] = {
            "honest_clipped": st.honest_clipped,
            "honest_used": st.honest_used,
            "faulty_clipped": st.faulty_clipped,
            "faulty_used": st.faulty_used,
            "influence_share": statistics.fmean(st.influence) if st.influence else None,
            "influence_per_round": st.influence,
            "honest_ratio_max": max(st.honest_ratios, default=None),
            "faulty_ratios": st.faulty_ratios,
        }
    return out


def install(c: float, *, game: bool = False) -> None:
    """Clip every valuation run's updates at ``c`` x the round's median norm in the aggregate
    (and, with ``game``, in the valuation's game; see the module docstring)."""
    if not (math.isfinite(c) and c >= 1):
        raise ValueError(f"the clip must be a finite multiple >= 1 of the median, got {c!r}")
    run_federated = _sim._run_federated
    aggregate = _sim.aggregate
    value_round = _sim.value_round

    def wrapped_run(result: Any, method: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        if method != "valuation":
            _context.clear()
            run_federated(result, method, config, *args, **kwargs)
            return
        labels = list(config.fault_labels)
        faulty = {result.site_names[i] for i, f in enumerate(labels) if f != "none"}
        key = f"seed {config.seed} faults {','.join(labels)}"
        _stats[key] = RunStats()
        _context.update(faulty=faulty, names=list(result.site_names), stats=_stats[key])
        _context["sent"] = None
        try:
            run_federated(result, method, config, *args, **kwargs)
        finally:
            _context.clear()

    def wrapped_value_round(**kwargs: Any) -> Any:
        if _context and game:
            cands = list(kwargs["candidates"])
            _, factors = clip_factors([model_norm(x.delta) for x in cands], c)
            kwargs["candidates"] = [
                replace(x, delta=_scaled(x.delta, f)) for x, f in zip(cands, factors, strict=True)
            ]
            _context["sent_sites"] = [x.site for x in cands]
        elif _context:
            _context["sent_sites"] = [x.site for x in kwargs["candidates"]]
        return value_round(**kwargs)

    def wrapped_aggregate(
        rule: AggregationRule,
        deltas: Sequence[Mapping[str, torch.Tensor] | None],
        weights: Sequence[int],
        *,
        statistics: Sequence[str] = (),
    ) -> Any:
        if not _context or rule.name != "weighted":
            return aggregate(rule, deltas, weights, statistics=statistics)
        st: RunStats = _context["stats"]
        sites: list[str] = _context.get("sent_sites") or []
        used = [i for i, w in enumerate(weights) if w > 0]
        norms = [model_norm(deltas[i]) for i in used]  # type: ignore[arg-type]
        limit, factors = clip_factors(norms, c)
        median = limit / c if math.isfinite(limit) else 0.0
        infl = {i: weights[i] * f * n for i, f, n in zip(used, factors, norms, strict=True)}
        total = math.fsum(infl.values())
        faulty: set[str] = _context["faulty"]
        if sites and len(sites) == len(deltas):
            bad = math.fsum(v for i, v in infl.items() if sites[i] in faulty)
            st.influence.append(bad / total if total > 0 else 0.0)
            for i, f, n in zip(used, factors, norms, strict=True):
                is_bad = sites[i] in faulty
                ratio = n / median if median > 0 else 0.0
                if is_bad:
                    st.faulty_used += 1
                    st.faulty_clipped += f < 1.0
                    st.faulty_ratios.append(ratio)
                else:
                    st.honest_used += 1
                    st.honest_clipped += f < 1.0
                    st.honest_ratios.append(ratio)
        clip_rule = replace(
            rule, name="norm_clip", max_norm=limit if math.isfinite(limit) else None
        )
        return aggregate(clip_rule, deltas, weights, statistics=statistics)

    _sim._run_federated = wrapped_run
    _sim.value_round = wrapped_value_round
    _sim.aggregate = wrapped_aggregate
