"""Per-site, per-round valuation traces of a saved accuracy run (issue 12's mechanisms).

Usage: .venv/bin/python scripts/bench/valuation_trace.py RUN.json [RUN.json ...]
       [--scenario c] [--seed 1] [--credit-cosine -0.7] [--relief-cosine -0.7] [--summary-only]
       [--what-if] [--norm-persist 2.5]

Reads the JSON that ``scripts/bench/accuracy.py --out RUN.json`` writes (its ``valuation``
runs; runs saved before the diagnostics were recorded have no cosines or norms and are
skipped) and prints, for each run, every site's cosine to the round's median update, its norm
over the median norm, the share the standing credited it, its on-chain score and its share of
the round's weight, the game's raw value, its record (accumulated value) after the round and
its reason code (cut to 6 characters), round by round; then, over all runs, what separates
the faulty sites from the honest ones on the data-free statistics:

* the distribution of honest updates' norm ratios (median, 90th, 95th, 99th percentile, max)
  against each fault kind's (min and median): a norm bound that clips a scaled update must
  sit above the honest maximum;
* the longest streak of consecutive rounds each site spent below ``--credit-cosine`` (the
  combiner's ``credit_cosine``, -0.7 by default): a rule that penalised repeated opposition
  would have to spare the honest sites' longest streak.
* where the faulty weight share comes from: each faulty site's part of its run's mean share
  (the figure issue 12's (c) bar reads), split into round 1 (the warm-up pays every update that
  passes the screens its sample share), the later rounds it kept the full score in, and those
  it was paid at a demoted score; and how many later rounds it was paid 0 in.

With ``--what-if`` (runs that recorded the game's raw ``values``), it also replays the
standing on the recorded values under two candidate rules for issue 12's scenario (c) and
prints, per run, the faulty sites' weight share and the honest site-rounds scored 0:

* ``withheld negative``: a positive share withheld by ``credit_cosine`` counts as the same
  share negative (demote-only evidence against an update pointing away from the consensus);
* ``relief_cosine C``: a site whose cosine this round is below ``C`` is measured against 0,
  not the median site's negative accumulated value (the combiner's ``relief_cosine``; the
  recorded rule uses ``--relief-cosine``, -1 for runs saved before it);
* ``norm persist T``: a site whose running median, from its third update on, of its norm
  over the round's median norm, divided by ``max(1, n / m)`` (its claimed samples over the
  median claimed), is above ``T`` scores 0 (``--norm-window N``: the median of its latest N
  updates only, as a rule reading the stale screen's references of the latest rounds could);
* ``credit_norm K`` / ``harm_norm K``: a positive share of an update longer than ``K`` median
  norms is withheld / a negative one counts ``ratio / K`` times (its say in the averaged step);
* ``slope negative``: a positive share of an update whose slope at the global model is
  negative (runs recorded with ``accuracy.py --game-probe``) counts as the same share negative;
* ``screened harmful S``: an update the data-free screens rejected (in any round, the warm-up
  included) sets its site's record to ``min(0, record) - S``;
* ``max_norm_ratio K [power P]``: a paid update above ``K`` median norms keeps ``(K / ratio)
  ** P`` of its score (P 1: the combiner's ``max_norm_ratio``), a weight factor only;
  ``against F``: one whose cosine is below ``--credit-cosine`` keeps ``F`` of it (both:
  ``scripts/bench/weight_factors.py`` run them for real); the rows count the honest
  site-rounds a factor cut;
* ``loo withheld`` / ``loo negative (any)``: a withheld positive share (any share) of an update
  whose recorded leave-one-out gain at the grand coalition is negative (``accuracy.py
  --game-probe``) becomes that gain over the round's total absolute value;
* ``record cap C``: a record above ``C`` is cut to it after each round, so credit banked in
  early rounds cannot shield later negative shares;
* ``oracle: KINDS zeroed from round R``: the sites of those fault kinds (``scale``: scenario
  (c)'s x10 site; ``sign_flip``: its sign-flipper) score 0 from round R on, everything else as
  the recorded rule: a bound on what any rule that recognised them from round R could reach
  (round 1, the warm-up, pays every update that passes the screens).

The replay is first order: the same trajectory (the recorded updates, cosines and values), so
what a rule would have changed in later models is not in it; the ``recorded rule`` row
replays today's rule on the same records, at the record floor the run was valued with
(:func:`recorded_floor`; ``--record-floor F`` replays every run at ``F``) and with the run's
warm-up (:func:`recorded_warm_up`: ``warm_up_floor`` and ``warm_up_scope``, every candidate row
too unless it names a scope), and should give the recorded shares, a check on the replay
itself; ``recorded rule, no floor`` replays it with the
floor off (the unbounded record). The other candidate rows replay without the floor unless
they name one.

No bar: the script describes where the valuation's signal is, it does not judge it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation.combine import RECORD_FLOOR
from fedtrail.valuation.standing import (
    accumulate,
    boost_factor,
    demoted_score,
    demotion_reference,
    floored_records,
    floored_score,
    normalised_values,
    outweighing,
    scaled_score,
)

DEMOTE_SCALE = 0.5
"""The combiner's ``demote_scale`` (HISTORY_COMBINER's, the accuracy bench's)."""
MIN_ROBUST_SITES = 3
"""The combiner's ``min_robust_sites``: fewer usable updates, no credit rule."""
RUN_FLOOR = "_replay_record_floor"
RUN_WARM_UP = "_replay_warm_up"
"""The key a loaded run carries its recorded ``(warm_up_floor, warm_up_scope)`` under
(:func:`recorded_warm_up`): the replay scores its warm-up round as the run did."""
"""The key a loaded run carries its recorded floor under (:func:`recorded_floor`), for the
rules that replay the run's own floor (``Rule.record_floor`` None)."""


def recorded_floor(settings: dict[str, Any]) -> float:
    """The record floor a saved accuracy run was valued with, from its settings: the recorded
    number; the product's default (:data:`~fedtrail.valuation.combine.RECORD_FLOOR`) for null
    (``accuracy.py`` wrote null at the default from ``--record-floor``'s introduction until
    session 58); 0 (off) where the key is absent (runs saved before the floor existed)."""
    if "record_floor" not in settings:
        return 0.0
    floor = settings["record_floor"]
    return RECORD_FLOOR if floor is None else float(floor)


def recorded_warm_up(settings: dict[str, Any]) -> tuple[float, int]:
    """The ``(warm_up_floor, warm_up_scope)`` a saved accuracy run was valued with: the
    recorded numbers; (1, 0), the warm-up before the rule (every passer at full score, nothing
    recorded), where ``warm_up_floor`` is absent (runs saved before it)."""
    if settings.get("warm_up_floor") is None:
        return 1.0, 0
    return float(settings["warm_up_floor"]), int(settings.get("warm_up_scope") or 0)


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
            "weight": [_fmt(_weight(r, name), "6.3f", "     -") for r in rounds],
            "value": [_fmt((r.get("values") or {}).get(name), "+6.3f", "     .") for r in rounds],
            "rec": [
                _fmt((r.get("accumulated") or {}).get(name), "+6.2f", "     .") for r in rounds
            ],
            "why": [f"{_reason(r, name):>6}" for r in rounds],
        }
        for i, (row, cells) in enumerate(rows.items()):
            head = f"{name:9} {fault:12}" if i == 0 else " " * 22
            print(f"{head} {row:5} " + " ".join(cells))


def _score(record: dict[str, Any], site: str) -> float | None:
    if site not in record["submitted"]:
        return None
    return float(record["scores"][record["submitted"].index(site)]) / 1e6


def _reason(record: dict[str, Any], site: str) -> str:
    """The site's reason code this round, cut to 6 characters ("-": not submitted)."""
    reasons = record.get("reasons")
    if site not in record["submitted"] or not reasons:
        return "-"
    return str(reasons[record["submitted"].index(site)])[:6]


def _weight(record: dict[str, Any], site: str) -> float | None:
    """The site's share of the round's on-chain weight (None: not submitted or no weight)."""
    weights = record.get("weights") or []
    total = sum(weights)
    if site not in record["submitted"] or not total:
        return None
    return float(weights[record["submitted"].index(site)]) / total


@dataclass(frozen=True)
class Rule:
    """A standing rule replayed on a saved run (see the module docstring)."""

    label: str
    withheld_negative: bool = False
    norm_persist: float = 0.0
    """0: off."""
    norm_window: int = 0
    """How many of the site's latest updates the running median reads (0: all)."""
    relief_cosine: float = -0.7
    """A site whose cosine this round is below it is measured against 0, not the median
    site's negative accumulated value (the combiner's ``relief_cosine``; -1: off, as runs
    saved before it)."""
    boost_clip: float = 0.0
    """The combiner's ``boost_clip`` (0: off, as runs saved before it)."""
    oracle: frozenset[str] = frozenset()
    """Fault kinds whose sites score 0 from round ``oracle_from`` on, whatever their record: a
    bound on what any rule that recognised them could do (empty: none)."""
    oracle_from: int = 2
    credit_norm: float = 0.0
    """A positive share of an update longer than this many median norms is withheld (0: off):
    the mirror of ``credit_cosine`` for over-long updates."""
    harm_norm: float = 0.0
    """A negative share of an update longer than this many median norms counts ``ratio /
    harm_norm`` times (its say in the averaged step; 0: off)."""
    slope_negative: bool = False
    """A positive share of an update whose recorded slope at the global model is negative (it
    points uphill on the validation utility alone: ``accuracy.py --game-probe``) counts as the
    same share negative."""
    screened_harmful: float = 0.0
    """A submitted update the data-free screens zeroed (it has a norm ratio but no value), in
    any round, the warm-up included, sets its site's accumulated value to ``min(0, it)`` minus
    this (0: off): a strike that one later positive share does not undo."""
    max_norm_ratio: float = 0.0
    """The combiner's ``max_norm_ratio`` (0: off): a paid update above this many median norms
    keeps ``(K / ratio) ** norm_power`` of its score (:func:`~fedtrail.valuation.standing.
    norm_factor` at ``norm_power`` 1): a weight bounded by the update's say after clipping it to
    K median norms. A weight factor only: the records are unchanged."""
    norm_power: float = 1.0
    loo_withheld: bool = False
    """An update whose positive share ``credit_cosine`` withholds and whose recorded
    leave-one-out gain at the grand coalition is negative (``accuracy.py --game-probe``: the
    round's aggregate is better without it) gets that gain as its share, normalised as the
    round's values are (``loo / sum |value|``)."""
    against_factor: float = 1.0
    """A paid update whose cosine to the median update is below ``credit_cosine`` keeps this
    share of its score (1: off): a weight factor for the direction, as ``max_norm_ratio`` is
    for the length."""
    loo_any: bool = False
    """Every valued update with a negative leave-one-out gain gets ``min(share, loo / sum
    |value|)`` (anti-aligned or not)."""
    record_floor: float | None = 0.0
    """The product's record floor (0: off; None: the run's recorded floor, ``RUN_FLOOR``),
    applied as the aggregator applies it
    (:func:`fedtrail.valuation.standing.floored_records`, before the round's scores, never in
    the warm-up): every valued site's accumulated value is kept at or above its reference (the
    median site's negative record, or 0) minus ``max(record_floor, demote_scale)``: a record
    already at zero score stops sinking, so later positive shares count at once (a CUSUM's
    reflecting barrier). This script kept a copy of the rule before session 58, which floored
    after the scores at ``record_floor`` alone."""
    negative_below: float = -1.0
    """A positive share withheld by ``credit_cosine`` counts as the same share negative when the
    update's cosine to the median update is below this (-1: never; ``withheld_negative`` is this
    at ``credit_cosine``): evidence against only the updates that point almost exactly against
    the consensus, sparing an honest minority-class site between the two bounds."""
    decay: float = 1.0
    """Each round the previous accumulated values are multiplied by this before the round's
    shares are added (1: off): old shares forgotten geometrically."""
    warm_up_scope: int | None = None
    """The warm-up's ``warm_up_scope`` replayed (None: the run's own, ``RUN_WARM_UP``); acts
    only where the run's ``warm_up_floor`` is below 1."""
    record_cap: float = 0.0
    """After each round's shares are added, a record above this is cut to it (0: off): a site
    cannot bank positive credit beyond it to shield later negative shares (issue 12 (c): the
    x10 site of alpha 1 seed 0 banks +0.44 in rounds 1-4 and keeps full score through round 6
    while its shares are negative)."""


@dataclass(frozen=True)
class Replay:
    """One run under one rule: the faulty sites' mean weight share over the rounds that
    closed, and the honest site-rounds scored 0 out of those submitted."""

    faulty_share: float
    honest_zeroed: int
    honest_total: int
    honest_cut: int = 0
    """Honest site-rounds whose score the rule's weight factors (``max_norm_ratio``,
    ``against_factor``) lowered."""


def replay(run: dict[str, Any], rule: Rule, *, credit_cosine: float) -> Replay | None:
    """``run``'s scores and weights re-derived from its recorded game values under ``rule``
    (None when the run recorded no values). A round whose every score is 0 is cancelled, as
    the aggregator cancels it: nothing of it is carried on."""
    rounds = run["rounds"]
    if not rounds or "values" not in rounds[0]:
        return None
    samples = dict(zip(run["site_names"], run["site_samples"], strict=True))
    kinds = dict(zip(run["site_names"], run["site_faults"], strict=True))
    faulty = {n for n, f in kinds.items() if f != "none"}
    record_floor = (
        float(run.get(RUN_FLOOR, 0.0)) if rule.record_floor is None else rule.record_floor
    )
    warm_floor, warm_scope = run.get(RUN_WARM_UP, (1.0, 0))
    if rule.warm_up_scope is not None:
        warm_scope = rule.warm_up_scope
    first = True  # the warm-up: the first round that is not skipped
    accumulated: dict[str, float] = {}
    ratios: dict[str, list[float]] = {}
    shares: list[float] = []
    zeroed = total = cut = 0
    for r in rounds:
        if r["skipped"]:
            continue
        warm_up, first = first, False
        values: dict[str, float] = r["values"]
        cosines: dict[str, float] = r["cosines"]
        normalised = normalised_values(values) if r["shares"] is not None else None
        loos: dict[str, float] = r.get("loos") or {}
        scale = sum(abs(v) for v in values.values())
        if normalised is not None and len(cosines) >= MIN_ROBUST_SITES:
            for site, v in list(normalised.items()):
                c = cosines.get(site)
                loo = loos.get(site)
                if v > 0 and c is not None and c < credit_cosine:
                    negative = rule.withheld_negative or c < rule.negative_below
                    normalised[site] = -v if negative else 0.0
                    if rule.loo_withheld and loo is not None and loo < 0 and scale > 0:
                        normalised[site] = loo / scale
                if rule.loo_any and loo is not None and loo < 0 and scale > 0:
                    normalised[site] = min(normalised[site], loo / scale)
                slope = (r.get("slopes") or {}).get(site)
                if rule.slope_negative and slope is not None and slope < 0:
                    normalised[site] = -abs(normalised[site])
                ratio = r["norm_ratios"].get(site)
                if ratio is not None and rule.credit_norm > 0 and ratio > rule.credit_norm:
                    normalised[site] = min(normalised[site], 0.0)
                if (
                    ratio is not None
                    and rule.harm_norm > 0
                    and ratio > rule.harm_norm
                    and normalised[site] < 0
                ):
                    normalised[site] *= ratio / rule.harm_norm
        scoped: frozenset[str] | None = None  # warm_up_scope 1: the warm-up's scored sites
        if warm_up and normalised is not None and warm_floor < 1.0 and warm_scope:
            scoped = outweighing(normalised, {site: samples[site] for site in normalised})
        after = accumulate(
            {k: v * rule.decay for k, v in accumulated.items()},
            {k: v for k, v in (normalised or {}).items() if scoped is None or k in scoped},
        )
        scored_records = (
            accumulate(after, {}) if scoped is None else accumulate(accumulated, normalised or {})
        )
        if rule.record_cap > 0:
            after = {k: min(v, rule.record_cap) for k, v in after.items()}
        if rule.screened_harmful > 0:  # in the warm-up round too
            for site in r["submitted"]:
                if site in r["norm_ratios"] and site not in values:
                    after[site] = min(after.get(site, 0.0), 0.0) - rule.screened_harmful
        robust = len(cosines) >= MIN_ROBUST_SITES
        if record_floor > 0 and r["shares"] is not None and not warm_up:
            after = floored_records(
                after,
                {s: cosines.get(s) if robust else None for s in r["submitted"] if s in values},
                record_floor=record_floor,
                demote_scale=DEMOTE_SCALE,
                relief_cosine=rule.relief_cosine,
            )
            scored_records = after
        reference = demotion_reference(scored_records.get(s, 0.0) for s in values)
        norms: dict[str, float] = r["norm_ratios"]
        median_n = statistics.median([samples[s] for s in norms]) if norms else 0
        seen = dict(ratios)
        for site, ratio in norms.items():
            allowance = max(1.0, samples[site] / median_n) if median_n > 0 else 1.0
            seen[site] = [*seen.get(site, []), ratio / allowance]
        scores: dict[str, int] = {}
        for site in r["submitted"]:
            score = 0
            if site in values:
                c = cosines.get(site)
                own = (
                    0.0
                    if c is not None and len(cosines) >= MIN_ROBUST_SITES and c < rule.relief_cosine
                    else reference
                )
                score = demoted_score(
                    scored_records.get(site, 0.0) - own, demote_scale=DEMOTE_SCALE
                )
                if warm_up and normalised is not None and warm_floor < 1.0:
                    score = floored_score(score, warm_floor)
                    if scoped is not None and site not in scoped:
                        score = SCORE_SCALE
                history = seen.get(site, [])
                if rule.norm_window:
                    history = history[-rule.norm_window :]
                if (
                    rule.norm_persist > 0
                    and len(norms) >= MIN_ROBUST_SITES
                    and len(history) >= 3
                    and statistics.median(history) > rule.norm_persist
                ):
                    score = 0
                c = cosines.get(site)
                ratio = norms.get(site)
                if score > 0 and len(cosines) >= MIN_ROBUST_SITES and ratio is not None:
                    score = scaled_score(
                        score, boost_factor(ratio, 1.0, c, boost_clip=rule.boost_clip)
                    )
                    before = score
                    if rule.max_norm_ratio > 0 and ratio > rule.max_norm_ratio:
                        score = scaled_score(
                            score, (rule.max_norm_ratio / ratio) ** rule.norm_power
                        )
                    if rule.against_factor < 1 and c is not None and c < credit_cosine:
                        score = scaled_score(score, rule.against_factor)
                    if score < before and site not in faulty:
                        cut += 1
            if kinds[site] in rule.oracle and r["round"] >= rule.oracle_from:
                score = 0
            scores[site] = score
        weights = {s: samples[s] * sc for s, sc in scores.items()}
        weight = sum(weights.values())
        if weight == 0:
            continue  # cancelled
        accumulated, ratios = after, seen
        shares.append(sum(w for s, w in weights.items() if s in faulty) / weight)
        for site, score in scores.items():
            if site not in faulty:
                total += 1
                zeroed += score == 0
    if not shares:
        return None
    return Replay(statistics.fmean(shares), zeroed, total, cut)


def recorded_share(run: dict[str, Any]) -> float:
    """The faulty sites' mean weight share over the rounds that closed, as recorded."""
    faulty = {n for n, f in zip(run["site_names"], run["site_faults"], strict=True) if f != "none"}
    shares = [
        sum(w for s, w in zip(r["submitted"], r["weights"], strict=True) if s in faulty)
        / sum(r["weights"])
        for r in run["rounds"]
        if not r["skipped"] and sum(r["weights"]) > 0
    ]
    return statistics.fmean(shares) if shares else float("nan")


def decomposition(run: dict[str, Any]) -> list[tuple[str, str, int, float, float, float, int]]:
    """Where a run's faulty weight share comes from: per faulty site (site, fault kind,
    claimed samples), its part of the run's mean faulty share over the rounds that closed
    (:func:`recorded_share` is their sum), split into the first closed round (the warm-up),
    the later rounds it kept the full score in, and the later rounds it was paid at a demoted
    score (below 1e6, above 0); and how many later rounds it was paid 0 in."""
    names: list[str] = run["site_names"]
    samples = dict(zip(names, run["site_samples"], strict=True))
    faults = dict(zip(names, run["site_faults"], strict=True))
    closed = [r for r in run["rounds"] if not r.get("skipped") and sum(r.get("weights") or []) > 0]
    out = []
    for site in (n for n in names if faults[n] != "none"):
        parts = [0.0, 0.0, 0.0]
        zero = 0
        for k, r in enumerate(closed):
            if site not in r["submitted"]:
                continue
            i = r["submitted"].index(site)
            share = r["weights"][i] / sum(r["weights"]) / len(closed)
            if k == 0:
                parts[0] += share
            elif r["scores"][i] >= 1_000_000:
                parts[1] += share
            elif r["scores"][i] > 0:
                parts[2] += share
            else:
                zero += 1
        out.append((site, faults[site], samples[site], *parts, zero))
    return out


def _print_decomposition(runs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    lines = []
    for label, run in runs:
        for site, fault, n, first, full, demoted, zero in decomposition(run):
            lines.append(
                f"  {label} seed {run['seed']} {site} ({fault}, {n} samples): "
                f"{first + full + demoted:.4f} of the mean share: round 1 {first:.4f}, later "
                f"rounds at full score {full:.4f}, demoted {demoted:.4f}; paid 0 in {zero} "
                "later round(s)"
            )
    if lines:
        print("\nWhere the faulty weight share comes from (each site's part of its run's mean):")
        print("\n".join(lines))


def _count_relief(run: dict[str, Any], relief_cosine: float, counts: list[int]) -> None:
    """Adds to ``counts`` (honest site-rounds below ``relief_cosine``, those of them whose
    record after the round is negative beside a negative median record of the round's valued
    sites, honest site-rounds) over ``run``'s valued rounds (those with shares; the data-free
    statistics applied: at least :data:`MIN_ROBUST_SITES` cosines)."""
    faulty = {n for n, f in zip(run["site_names"], run["site_faults"], strict=True) if f != "none"}
    for r in run["rounds"]:
        if r.get("skipped") or r.get("shares") is None or len(r["cosines"]) < MIN_ROBUST_SITES:
            continue
        after: dict[str, float] = r.get("accumulated") or {}
        valued = r.get("values") or r["shares"]
        median = statistics.median([after.get(s, 0.0) for s in valued]) if valued else 0.0
        for site, c in r["cosines"].items():
            if site in faulty or site not in valued:
                continue
            counts[2] += 1
            if c < relief_cosine:
                counts[0] += 1
                counts[1] += median < 0 and after.get(site, 0.0) < 0


def _print_what_if(
    runs: Sequence[tuple[str, dict[str, Any]]], rules: Sequence[Rule], credit_cosine: float
) -> None:
    print(
        "\nWhat-if (first order: the same trajectory, scores re-derived from the recorded values):"
    )
    floors = sorted({float(run.get(RUN_FLOOR, 0.0)) for _, run in runs})
    print(
        "  the recorded rule's record floor (the runs'): "
        + ", ".join(f"{f:g}" + (" (off)" if f == 0 else "") for f in floors)
    )
    for rule in rules:
        replays = [
            (label, run, replay(run, rule, credit_cosine=credit_cosine)) for label, run in runs
        ]
        done = [(label, run, x) for label, run, x in replays if x is not None]
        if not done:
            print("  no run recorded the game's values")
            return
        cells = "; ".join(
            f"{label} seed {run['seed']} {x.faulty_share:.3f} (recorded {recorded_share(run):.3f})"
            for label, run, x in done
        )
        zeroed = sum(x.honest_zeroed for _, _, x in done)
        total = sum(x.honest_total for _, _, x in done)
        cut = sum(x.honest_cut for _, _, x in done)
        mean = statistics.fmean(x.faulty_share for _, _, x in done)
        print(
            f"  {rule.label}: faulty share mean {mean:.4f}, honest zeroed {zeroed}/{total}, "
            f"cut {cut}: {cells}"
        )


def _attach_slopes(doc: dict[str, Any]) -> None:
    """Each valuation run's rounds get ``slopes`` (site -> slope at the global model) from the
    document's ``game_probe`` records (``accuracy.py --game-probe``; the k-th probe run is the
    k-th valuation run in the document's order), when it has them."""
    runs = [r for sc in doc["scenarios"].values() for r in sc["runs"] if r["method"] == "valuation"]
    for rec in doc.get("game_probe") or []:
        rounds = [x for x in runs[rec["run"]]["rounds"] if x["round"] == rec["round"]]
        if rounds and rec.get("slope") is not None:
            rounds[0].setdefault("slopes", {})[rec["site"]] = rec["slope"]
        if rounds and rec.get("loo") is not None:
            rounds[0].setdefault("loos", {})[rec["site"]] = rec["loo"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--scenario", help="only this scenario key (a, b, c, ...)")
    parser.add_argument("--seed", type=int, help="only this seed")
    parser.add_argument("--credit-cosine", type=float, default=-0.7)
    parser.add_argument(
        "--relief-cosine",
        type=float,
        default=-0.7,
        help="the combiner's relief_cosine the runs were valued with (the recorded rule's; "
        "-1 for runs saved before it)",
    )
    parser.add_argument(
        "--boost-clip",
        type=float,
        default=0.0,
        help="the combiner's boost_clip the runs were valued with (the recorded rule's; 0 for "
        "runs saved before it)",
    )
    parser.add_argument(
        "--record-floor",
        type=float,
        default=None,
        help="the combiner's record_floor the runs were valued with (the recorded rule's); "
        "default: each run's own (its settings' record_floor: null is the product's 0.5, "
        "absent 0, off)",
    )
    parser.add_argument(
        "--boost-clips",
        default="0.25,0.33,0.5,0.67,1",
        help="boost_clip values to replay (comma-separated)",
    )
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--what-if", action="store_true", help="replay candidate rules")
    parser.add_argument("--norm-persist", type=float, default=2.5)
    parser.add_argument(
        "--norm-window",
        type=int,
        default=0,
        help="the persistent norm rule reads the site's latest N updates (0: all of them)",
    )
    args = parser.parse_args(argv)
    if args.record_floor is not None and not args.record_floor >= 0:
        parser.error(f"--record-floor must be a number >= 0, got {args.record_floor}")

    honest_norms: list[float] = []
    fault_norms: dict[str, list[float]] = {}
    streaks: list[tuple[str, int, str, str, int, float]] = []
    relief: dict[str, list[int]] = {}  # label -> [honest below, of them relieved, honest]
    shown = 0
    replayed: list[tuple[str, dict[str, Any]]] = []
    for path in args.runs:
        doc = json.loads(path.read_text())
        alpha = doc["settings"]["alpha"]
        floor = recorded_floor(doc["settings"]) if args.record_floor is None else args.record_floor
        _attach_slopes(doc)
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
                run[RUN_FLOOR] = floor
                run[RUN_WARM_UP] = recorded_warm_up(doc["settings"])
                label = f"alpha {alpha:g} ({key})"
                replayed.append((label, run))
                if not args.summary_only:
                    _print_run(label, run)
                _count_relief(run, args.relief_cosine, relief.setdefault(label, [0, 0, 0]))
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
        if not values:  # every update of that kind rejected before the robust statistics
            print(f"  {fault} norm / median norm: no update reached the robust statistics")
            continue
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
    for label, (below, relieved, total) in relief.items():
        print(
            f"  {label}: honest site-rounds (valued rounds) below cosine {args.relief_cosine:g}: "
            f"{below}/{total}; of them with a negative record beside a negative median record "
            f"(where relief_cosine acts): {relieved}"
        )
    for s in streaks:
        if s[3] != "none":
            print(
                f"  {s[0]} seed {s[1]} {s[2]} ({s[3]}): longest streak {s[4]}, lowest cosine "
                f"{s[5]:+.2f}"
            )
    _print_decomposition(replayed)
    if args.what_if:
        _print_what_if(
            replayed,
            [
                Rule(
                    "recorded rule",
                    relief_cosine=args.relief_cosine,
                    boost_clip=args.boost_clip,
                    record_floor=None,
                ),
                Rule(
                    "recorded rule, no floor",
                    relief_cosine=args.relief_cosine,
                    boost_clip=args.boost_clip,
                ),
                Rule("boost_clip 0 (off)", relief_cosine=args.relief_cosine),
                *(
                    Rule(
                        f"record floor {f:g} + negative below {b:g}",
                        relief_cosine=args.relief_cosine,
                        record_floor=f,
                        negative_below=b,
                    )
                    for f in (0.5,)
                    for b in (-1.0, -0.8, -0.85, -0.9, -0.93)
                ),
                *(
                    Rule(f"boost_clip {c:g}", relief_cosine=args.relief_cosine, boost_clip=c)
                    for c in (float(x) for x in args.boost_clips.split(",") if x)
                ),
                Rule(
                    "withheld negative",
                    withheld_negative=True,
                    relief_cosine=args.relief_cosine,
                ),
                *(
                    Rule(f"credit_norm {k:g}", relief_cosine=args.relief_cosine, credit_norm=k)
                    for k in (1.5, 2.0, 3.0)
                ),
                *(
                    Rule(f"harm_norm {k:g}", relief_cosine=args.relief_cosine, harm_norm=k)
                    for k in (1.0, 1.5, 2.0)
                ),
                *(
                    Rule(
                        f"credit_norm + harm_norm {k:g}",
                        relief_cosine=args.relief_cosine,
                        credit_norm=k,
                        harm_norm=k,
                    )
                    for k in (1.5, 2.0)
                ),
                Rule(
                    "slope negative",
                    relief_cosine=args.relief_cosine,
                    slope_negative=True,
                ),
                Rule(
                    "slope negative + withheld negative",
                    relief_cosine=args.relief_cosine,
                    slope_negative=True,
                    withheld_negative=True,
                ),
                *(
                    Rule(
                        f"screened harmful {k:g}",
                        relief_cosine=args.relief_cosine,
                        screened_harmful=k,
                    )
                    for k in (0.5, 1.0)
                ),
                *(
                    Rule(
                        f"max_norm_ratio {k:g}" + (f" power {p:g}" if p != 1 else ""),
                        relief_cosine=args.relief_cosine,
                        max_norm_ratio=k,
                        norm_power=p,
                    )
                    for k in (1.5, 2.0, 2.5, 3.0)
                    for p in (1.0, 2.0)
                ),
                *(
                    Rule(
                        f"against {f:g}" + (f" + max_norm_ratio {k:g} power 2" if k else ""),
                        relief_cosine=args.relief_cosine,
                        against_factor=f,
                        max_norm_ratio=k,
                        norm_power=2.0,
                    )
                    for f in (0.5, 0.25)
                    for k in (0.0, 2.0)
                ),
                Rule("loo withheld", relief_cosine=args.relief_cosine, loo_withheld=True),
                Rule("loo negative (any)", relief_cosine=args.relief_cosine, loo_any=True),
                *(
                    Rule(
                        f"loo withheld + max_norm_ratio {k:g}"
                        + (f" power {p:g}" if p != 1 else ""),
                        relief_cosine=args.relief_cosine,
                        loo_withheld=True,
                        max_norm_ratio=k,
                        norm_power=p,
                    )
                    for k, p in ((2.0, 1.0), (2.0, 2.0), (3.0, 2.0))
                ),
                *(
                    Rule(f"record floor {f:g}", relief_cosine=args.relief_cosine, record_floor=f)
                    for f in (0.5, 0.75, 1.0)
                ),
                *(
                    Rule(f"decay {d:g}", relief_cosine=args.relief_cosine, decay=d)
                    for d in (0.5, 0.7, 0.8)
                ),
                Rule(
                    "record floor 0.5 + warm_up_scope 0 (every warm-up passer from its share)",
                    relief_cosine=args.relief_cosine,
                    record_floor=0.5,
                    warm_up_scope=0,
                ),
                *(
                    Rule(
                        f"record floor 0.5 + record cap {c:g}",
                        relief_cosine=args.relief_cosine,
                        record_floor=0.5,
                        record_cap=c,
                    )
                    for c in (0.05, 0.1, 0.2, 0.3)
                ),
                Rule("relief_cosine -1 (off)", relief_cosine=-1.0),
                Rule("relief_cosine -0.7", relief_cosine=-0.7),
                Rule("relief_cosine -0.5", relief_cosine=-0.5),
                Rule("relief -0.7 + withheld negative", relief_cosine=-0.7, withheld_negative=True),
                Rule(
                    f"norm persist {args.norm_persist:g}",
                    norm_persist=args.norm_persist,
                    norm_window=args.norm_window,
                    relief_cosine=args.relief_cosine,
                ),
                Rule(
                    f"both ({args.norm_persist:g})",
                    relief_cosine=args.relief_cosine,
                    withheld_negative=True,
                    norm_persist=args.norm_persist,
                    norm_window=args.norm_window,
                ),
                *(
                    Rule(
                        f"oracle: {'+'.join(sorted(kinds))} zeroed from round {start}",
                        relief_cosine=args.relief_cosine,
                        boost_clip=args.boost_clip,
                        oracle=kinds,
                        oracle_from=start,
                    )
                    for kinds, start in (
                        (frozenset({"scale"}), 2),
                        (frozenset({"scale"}), 1),
                        (frozenset({"sign_flip"}), 2),
                        (frozenset({"scale", "sign_flip"}), 2),
                    )
                ),
            ],
            args.credit_cosine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
