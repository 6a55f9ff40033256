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

Measured (h-168, README *Accuracy*, "Clipping each update instead of zeroing it"): at C 1-3 the
mean poisoned weight share did not fall at alpha 1, 3 or 100 (2 seeds x 5 rounds), so no round
term was built; the worst seed's test AUC of (c) rose. On scenario (j) (both poisoners x -10;
h-181, README "Bounding each update's norm in the aggregate against (j)"): C 1 (the product's
``norm_clip`` rule) lifts every seed's AUC above 0.85 but raises (j)'s share at alpha 1 and
regresses (b) at alpha 1; C 2 and 1.5 leave alpha 3 seed 0 below 0.85. ``rounds``
(``--clip-rounds``) clips only a run's first valued rounds.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run directly: scripts.bench

import torch

from fedtrail.ml.aggregation import AggregationRule
from fedtrail.valuation.round import model_norm
from scripts.bench import _sim


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
            "influence_share": statistics.fmean(st.influence) if st.influence else math.nan,
            "influence_per_round": st.influence,
            "honest_ratio_max": max(st.honest_ratios, default=None),
            "faulty_ratios": st.faulty_ratios,
        }
    return out


def install(c: float, *, game: bool = False, rounds: int | None = None) -> None:
    """Clip every valuation run's updates at ``c`` x the round's median norm in the aggregate
    (and, with ``game``, in the valuation's game; see the module docstring); ``rounds``: only
    in the run's first ``rounds`` valued rounds (1: the warm-up alone), None: in every round."""
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds!r}")
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
        _context["round"] = 0
        try:
            run_federated(result, method, config, *args, **kwargs)
        finally:
            _context.clear()

    def wrapped_value_round(**kwargs: Any) -> Any:
        if _context:
            _context["round"] += 1
        if _context and rounds is not None and _context["round"] > rounds:
            _context["sent_sites"] = None
        elif _context and game:
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
        if not _context or rule.name != "weighted" or _context.get("sent_sites") is None:
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


CLIP_MULTIPLES = (1.0, 1.5, 2.0, 3.0)
"""The multiples of the median norm the summary counts honest updates above."""

SHARE_BAR = 0.05
"""Issue 12's bar (c): the poisoned sites' weight share at most this."""


def _read(paths: Sequence[str]) -> list[dict[str, Any]]:
    import json
    from pathlib import Path

    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]


def report(paths: Sequence[str]) -> int:
    """Print, per run file, scenario and seed: the faulty sites' weight share, test AUC and
    calibrated F1 (FedAvg's beside them from the same file, or from another file of the same
    alpha), honest site-rounds scored 0, honest updates above each of :data:`CLIP_MULTIPLES`
    x the median norm (the recorded ratios: for an unclipped run, what a clip at that multiple
    would have cut) and, for a ``--delta-clip`` run, the clip's own counts and the faulty
    influence share. Exit status 1 when a scenario (c) valuation run's mean poisoned share is
    above :data:`SHARE_BAR`."""
    docs = _read(paths)
    fedavg: dict[tuple[float, str, int], dict[str, Any]] = {}
    for doc in docs:
        alpha = doc["settings"]["alpha"]
        for sk, sc in doc["scenarios"].items():
            for run in sc["runs"]:
                if run["method"] == "fedavg":
                    fedavg[(alpha, sk, run["seed"])] = run
    missed = False
    for path, doc in zip(paths, docs, strict=True):
        st = doc["settings"]
        clip = st.get("delta_clip")
        label = "off" if clip is None else f"{clip:g}x" + (" game" if st.get("clip_game") else "")
        clipped = doc.get("delta_clip", {})
        for sk, sc in doc["scenarios"].items():
            shares = []
            for run in sc["runs"]:
                if run["method"] != "valuation":
                    continue
                names, faults = run["site_names"], run["site_faults"]
                faulty = {n for n, f in zip(names, faults, strict=True) if f != "none"}
                rounds = [r for r in run["rounds"] if not r["skipped"]]
                share = statistics.fmean(
                    sum(w for s, w in zip(r["submitted"], r["weights"], strict=True) if s in faulty)
                    / 1e18
                    for r in rounds
                )
                honest = [
                    (s, sc_)
                    for r in rounds
                    for s, sc_ in zip(r["submitted"], r["scores"], strict=True)
                    if s not in faulty
                ]
                ratios = [v for r in rounds for s, v in r["norm_ratios"].items() if s not in faulty]
                above = " ".join(f"{c:g}x:{sum(v > c for v in ratios)}" for c in CLIP_MULTIPLES)
                if clip is None:
                    # the unclipped aggregate's influence, from the recorded norm ratios
                    infl = []
                    for r in rounds:
                        terms = {
                            s: w * r["norm_ratios"].get(s, 0.0)
                            for s, w in zip(r["submitted"], r["weights"], strict=True)
                        }
                        total = math.fsum(terms.values())
                        if total > 0:
                            infl.append(
                                math.fsum(v for s, v in terms.items() if s in faulty) / total
                            )
                    unclipped = f" influence {statistics.fmean(infl):.3f}" if infl else ""
                else:
                    unclipped = ""
                base = fedavg.get((st["alpha"], sk, run["seed"]))
                fa = ""
                if base is not None:
                    b_rounds = [r for r in base["rounds"] if not r["skipped"]]
                    b_share = statistics.fmean(
                        sum(
                            w
                            for s, w in zip(r["submitted"], r["weights"], strict=True)
                            if s in faulty
                        )
                        / 1e18
                        for r in b_rounds
                    )
                    fa = (
                        f" | FedAvg share {b_share:.3f} AUC {base['test']['auc']:.4f} "
                        f"F1cal {base['test']['f1_calibrated']:.4f}"
                    )
                key = f"seed {run['seed']} faults {','.join(faults)}"
                own = clipped.get(key)
                extra = ""
                if own is not None:
                    extra = (
                        f" | clipped honest {own['honest_clipped']}/{own['honest_used']} "
                        f"faulty {own['faulty_clipped']}/{own['faulty_used']} influence "
                        f"{own['influence_share']:.3f}"
                    )
                print(
                    f"{path} alpha {st['alpha']:g} ({sk}) clip {label} seed {run['seed']}: "
                    f"share {share:.3f} AUC {run['test']['auc']:.4f} F1cal "
                    f"{run['test']['f1_calibrated']:.4f} honest zeroed "
                    f"{sum(1 for _, s in honest if s == 0)}/{len(honest)} honest norm ratios "
                    f"above {above} of {len(ratios)}{unclipped}{fa}{extra}"
                )
                shares.append(share)
            if sk == "c" and shares:
                mean = statistics.fmean(shares)
                print(
                    f"  ({sk}) alpha {st['alpha']:g} clip {label}: mean poisoned share {mean:.3f}"
                )
                missed |= mean > SHARE_BAR
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(report(sys.argv[1:]))
