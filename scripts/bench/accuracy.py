"""Accuracy benchmark (the seed review's table): local-only models vs FedAvg vs on-chain-valuation
weighting vs each robust aggregation rule, on the bundled chest X-rays (or any other data
source), over several seeds.

Usage: .venv/bin/python scripts/bench/accuracy.py [--data pneumonia|retina|NPZ] [--seeds 5]
       [--rounds 10] [--epochs 1] [--alpha 1.0] [--scenarios a,b,c,d,e,f]
       [--valuation shapley] [--valuation-mode aggregator|peers|both] [--dp-epsilon E]
       [--metric balanced_loss|loss|auc]
       [--out .run/bench/accuracy.json] [--quick] [--render JSON [JSON ...]]

``--data`` is a data source of :func:`fedtrail.ml.catalog.load_source`: a shipped dataset
(``pneumonia``, the default; ``retina``: RetinaMNIST, 5 grades of diabetic retinopathy on 28x28
colour fundus photographs) or a MedMNIST-format ``.npz``; the model is the ``smallcnn`` with the
data's channels and classes. With more than two classes the tables show macro one-vs-rest AUC
and balanced accuracy (plain argmax, and at the intercept fitted on the validation split)
instead of AUC and F1, and issue 12's bars (measured on the chest X-rays) are not checked.

Scenarios (sites from a Dirichlet(alpha) label-skew split of the data's training split; the
faulty sites are the last ones of the split):

(a) clean non-IID, 5 sites;
(b) 5 sites, 2 of them low-quality: 40% of their training labels flipped;
(c) 10 sites, 2 of them poisoning: one sends its update sign-flipped, the other scaled x10;
(j) 10 sites, 2 of them poisoning as issue 12 words (c): both send their update x -10;
(d) 5 sites, 2 of them free-riding: one sends a zero delta, the other resends its round-1 update;
(e) 5 sites, 2 of them free-riding: one sends noise at 0.5% of an update's magnitude, the other
    resends the last global delta (where the screens zero both riders in every round, as
    measured at alpha 1, the ``valuation`` runs equal (d)'s: the one rider update paid, site 4's
    honest round 1, is the same, and a weight-0 update is not in the aggregate; FedAvg and the
    robust rules differ);
(f) 5 sites, 2 of them taking small steps: one sends its update scaled x -0.3 (against its
    honest direction), the other x 0.3 (inside the honest spread).
(h) 5 sites, 2 of them free-riding with noisy copies: one resends its round-1 update, the other
    the last global delta, each plus fresh Gaussian noise of 2% of the copy's norm (enough to
    pass the stale screen's cosine).
(i) (h) with shaped noise: each coordinate's Gaussian scaled by the copy's magnitude there, so
    the noise has the copy's structure (the copier adapted to the white-noise screen).

Methods and the simulation are described in ``scripts/bench/_sim.py`` (weights from
``onchain_weights``, the contract's rule; no chain or store). Metrics: ROC AUC and F1 (class 1 =
pneumonia, threshold at equal logits) of the final global model on the data's test split (468
images of the chest X-rays); for ``local``, the mean over sites of each site's own model, each
trained alone for ``rounds x epochs`` epochs (and, in a second row, over the honest sites
only). F1 is reported at the plain decision (p > 0.5) and at the calibrated one (the intercept
fitted on the validation split, ``fedtrail.ml.metrics.fit_intercept``). Each cell is mean +-
sample standard deviation over the seeds; the seed fixes the split, the initial model, the batch
order and the faults. ``--seeds N`` is a count, seeds 0..N-1 (``--seeds 1`` is seed 0); a list
names seeds (``0,3,7-9``), and one seed S alone is the range ``--seeds S-S``.

It prints a plain table, the same as a Markdown table ready for the README, and the seed review's
two claims checked against these numbers (+5-15% AUC for FL over local models; +7% global F1 from
the valuation with low-quality sites), the valuation-vs-FedAvg table of issue 12 (paired per
seed, mean and worst seed; weight share of the faulty sites; honest site-rounds scored 0), and
writes every run (per-round scores, reasons, weights, accumulated values, test AUC after each
round) to ``--out`` as JSON. ``--quick`` is a smoke test (1 seed, 2 rounds).

``--valuation-mode peers`` scores the ``valuation`` method by peer scoring (issue 14): every site
values the others' updates on its own shard of the validation split and each update gets the
median of its peers' scores (``scripts/bench/_sim.py``); ``both`` runs the aggregator's
valuation and the peer valuation on the same seeds and prints them side by side (the row
``valuation_peers``, and in the issue-12 table a line per mode, the peer line's alpha marked
``peers``), with the peer-minus-aggregator differences paired per seed. Issue 12's bars are
checked for each mode, and issue 14's bar: peer mode meets every issue-12 bar aggregator mode
meets in the same run. Peer mode runs under the public screen (round terms
``valuation.public_screen``, a new peer federation's default since session 57: the validators
skip the free-rider screen, the aggregator runs it once a round); ``--no-public-screen``: every
validator screens, the mode before. ``JURY_RULE=high|low|true|cos`` in the environment (an
experiment, as in ``peer_validators.py``): every peer jury scored with that median
(``scripts/bench/jury_rules.py``; recorded as the settings' ``jury_rule``); unset, the
product's high median. ``VALIDATOR_MIN_CLASS=K`` (an experiment): a validator whose val
shard holds fewer than K images of a class abstains (recorded as the settings'
``validator_min_class``); unset, the product's rule (a one-class shard abstains).

It then checks issue 12's bars that its runs decide (:func:`issue12_bars`; with ``--render`` of
several runs, over all of them) and exits 1 when one is missed.

``--dp-epsilon E``: every site, faulty ones included, trains with the node's DP-SGD
(:func:`fedtrail.ml.privacy.train_private`) at epsilon ``E / rounds`` per round's update
(``--dp-accounting summed``, the chain's old summed rule) or at the per-round target whose rounds
compose (RDP) to ``E`` (``--dp-accounting composed``, as ``privacy.py``'s table), clipping norm
1, delta 1e-5 (``fedtrail demo --dp-epsilon``'s settings); valuation and weights are unchanged,
an update fault applies to the private update. Issue 12's bars (set on plain training) are then
not checked; issue 16's is (:func:`dp_bars`): in scenario (b) the noisy sites' weight share under
valuation stays below FedAvg's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from fedtrail.aggregator.service import DEFAULT_PUBLIC_SCREEN
from fedtrail.ml.catalog import load_source
from fedtrail.ml.models import ModelSpec
from fedtrail.simulation.faults import SiteFault
from fedtrail.valuation import HISTORY_COMBINER, VALIDATOR_GAMES, Combiner
from scripts.bench import (
    _sim,
    delta_clip,
    game_probe,
    norm_persist,
    share_clip,
    step_length,
    weight_factors,
    zeroed_out,
)
from scripts.bench._sim import (
    METHODS,
    ONCHAIN_NOTE,
    ROOT,
    Method,
    RoundRecord,
    SimConfig,
    SimResult,
    Stale,
    mean_std,
    parse_seeds,
)

COMBINERS: dict[str, Combiner] = {"history": HISTORY_COMBINER, "default": Combiner()}
DP_DELTA = 1e-5
"""The delta of ``--dp-epsilon`` runs (``fedtrail demo --dp-epsilon``'s)."""

LOCAL_HONEST = "local_honest"
DEGENERATE_ACCURACY = 0.55
ROW_LABELS: dict[str, str] = {
    "local": "local only (mean over all sites)",
    LOCAL_HONEST: "local only (mean over honest sites)",
    "fedavg": "FedAvg (sample-count weights)",
    "valuation": "on-chain valuation weights (Shapley, balanced loss, history)",
    "valuation_peers": "peer valuation weights (median of the sites' own scores)",
    "median": "coordinate median",
    "trimmed_mean": "trimmed mean (20%)",
    "krum": "multi-Krum",
    "norm_clip": "norm clipping (median norm)",
}

SUMMARY_METRICS = (
    "auc",
    "f1",
    "accuracy",
    "loss",
    "balanced_accuracy",
    "balanced_accuracy_calibrated",
)
BINARY_COLUMNS: tuple[tuple[str, str], ...] = (("auc", "AUC"), ("f1", "F1"))
MULTICLASS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("auc", "macro AUC"),
    ("balanced_accuracy", "bal acc"),
    ("balanced_accuracy_calibrated", "bal acc cal"),
)


PEERS = "valuation_peers"
"""The row (method key) of ``valuation`` runs scored by peers."""
VALUATION_ROWS: dict[str, str] = {"valuation": "aggregator", PEERS: "peers"}
"""Row -> the simulation's valuation_mode."""


def _row(r: SimResult) -> str:
    """The row a run belongs to: its method, ``valuation_peers`` for peer-mode valuation."""
    return PEERS if r.method == "valuation" and r.valuation_mode == "peers" else r.method


def _mode_label(row: str) -> str:
    """What a valuation row adds to the run label in the issue-12 table."""
    return " peers" if row == PEERS else ""


def _num_classes(settings: dict[str, Any]) -> int:
    return int(settings.get("num_classes", 2))


def _columns(settings: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(metric, label) of the table's columns: AUC and F1 for two classes; macro AUC and
    balanced accuracy (plain and calibrated) for more, where F1 of one class says little."""
    return MULTICLASS_COLUMNS if _num_classes(settings) > 2 else BINARY_COLUMNS


def _test_split(settings: dict[str, Any]) -> str:
    """The test split's description (runs saved before --data: the chest X-rays)."""
    data = settings.get("data", "pneumonia")
    return f"the {data} test split ({settings.get('test_images', 468)} images)"


def _is_pneumonia(settings: dict[str, Any]) -> bool:
    """Issue 12's bars were set on the shipped chest X-rays (``bundled`` is their old name)."""
    return settings.get("data", "pneumonia") in ("pneumonia", "bundled")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    sites: int
    faults: Callable[[int], tuple[SiteFault, ...]]
    """Seed -> one fault per site."""
    description: str
    stale: tuple[Stale, ...] = ()
    """Harness-level free-riders that resend an earlier update (see ``_sim.Stale``)."""


def _clean(n: int) -> Callable[[int], tuple[SiteFault, ...]]:
    return lambda seed: tuple(SiteFault() for _ in range(n))


def _noisy(seed: int) -> tuple[SiteFault, ...]:
    honest = [SiteFault() for _ in range(3)]
    noisy = [SiteFault(kind="label_noise", rate=0.4, seed=seed * 1000 + i) for i in (3, 4)]
    return (*honest, *noisy)


def _poisoned(seed: int) -> tuple[SiteFault, ...]:
    honest = [SiteFault() for _ in range(8)]
    flip = SiteFault(kind="sign_flip", seed=seed * 1000 + 8)
    scale = SiteFault(kind="scale", factor=10.0, seed=seed * 1000 + 9)
    return (*honest, flip, scale)


def _flipped10(seed: int) -> tuple[SiteFault, ...]:
    honest = [SiteFault() for _ in range(8)]
    return (
        *honest,
        SiteFault(kind="scale", factor=-10.0, seed=seed * 1000 + 8),
        SiteFault(kind="scale", factor=-10.0, seed=seed * 1000 + 9),
    )


def _poisoned12(seed: int) -> tuple[SiteFault, ...]:
    honest = [SiteFault() for _ in range(10)]
    flip = SiteFault(kind="sign_flip", seed=seed * 1000 + 10)
    scale = SiteFault(kind="scale", factor=10.0, seed=seed * 1000 + 11)
    return (*honest, flip, scale)


def _free_riders(seed: int) -> tuple[SiteFault, ...]:
    return (*(SiteFault() for _ in range(3)), SiteFault(kind="scale", factor=0.0), SiteFault())


def _tiny_riders(seed: int) -> tuple[SiteFault, ...]:
    tiny = SiteFault(kind="random", factor=0.005, seed=seed * 1000 + 3)
    return (*(SiteFault() for _ in range(3)), tiny, SiteFault())


def _small_steps(seed: int) -> tuple[SiteFault, ...]:
    against = SiteFault(kind="scale", factor=-0.3, seed=seed * 1000 + 3)
    short = SiteFault(kind="scale", factor=0.3, seed=seed * 1000 + 4)
    return (*(SiteFault() for _ in range(3)), against, short)


SCENARIOS: dict[str, Scenario] = {
    "a": Scenario("a", "(a) clean non-IID, 5 sites", 5, _clean(5), "5 honest sites"),
    "b": Scenario(
        "b",
        "(b) 2 of 5 sites low-quality",
        5,
        _noisy,
        "sites 3 and 4 train on labels with 40% flipped (label_noise rate 0.4)",
    ),
    "c": Scenario(
        "c",
        "(c) 2 of 10 sites poisoning",
        10,
        _poisoned,
        "site 8 sends its update sign-flipped (x -1), site 9 scaled x10",
    ),
    "j": Scenario(
        "j",
        "(j) 2 of 10 sites sign-flip x10",
        10,
        _flipped10,
        "issue 12's (c) as worded: sites 8 and 9 both send their update sign-flipped and scaled "
        "x10 (x -10)",
    ),
    "g": Scenario(
        "g",
        "(g) 2 of 12 sites poisoning",
        12,
        _poisoned12,
        "(c) above the large-game line: site 10 sign-flipped, site 11 scaled x10 (more than 10 "
        "screened updates: --large-game linear_shapley plays the linearised game)",
    ),
    "d": Scenario(
        "d",
        "(d) 2 of 5 sites free-riding",
        5,
        _free_riders,
        "site 3 sends a zero delta every round, site 4 resends its round-1 update from round 2 on",
        (Stale(4, "own"),),
    ),
    "e": Scenario(
        "e",
        "(e) 2 of 5 sites free-riding (noise, global)",
        5,
        _tiny_riders,
        "site 3 sends uniform noise at 0.5% of its update's magnitude, site 4 resends the last "
        "global delta from round 2 on",
        (Stale(4, "global"),),
    ),
    "h": Scenario(
        "h",
        "(h) 2 of 5 sites free-riding (noisy copies)",
        5,
        _clean(5),
        "site 3 resends its round-1 update, site 4 the last global delta, from round 2 on, each "
        "plus fresh Gaussian noise of 2% of the copy's norm (past the stale screen's cosine)",
        (Stale(3, "own", noise=0.02, seed=3), Stale(4, "global", noise=0.02, seed=4)),
    ),
    "i": Scenario(
        "i",
        "(i) 2 of 5 sites free-riding (shaped noisy copies)",
        5,
        _clean(5),
        "(h) with shaped noise: each coordinate's Gaussian scaled by the copy's magnitude there "
        "(the copier adapted to the white-noise screen: its noise has the copy's structure)",
        (
            Stale(3, "own", noise=0.02, seed=3, shape="shaped"),
            Stale(4, "global", noise=0.02, seed=4, shape="shaped"),
        ),
    ),
    "f": Scenario(
        "f",
        "(f) 2 of 5 sites taking small steps",
        5,
        _small_steps,
        "site 3 sends its update scaled x -0.3 (a small step against its honest direction), "
        "site 4 scaled x 0.3 (a shortened step inside the honest spread): what shortens an "
        "overshooting average used to be paid",
    ),
}


def _fmt(mean: float, sd: float, n: int, total: int) -> str:
    if n == 0:
        return "n/a"
    cell = f"{mean:.3f} ± {sd:.3f}"
    return cell if n == total else f"{cell} ({n}/{total})"


def _summary(runs: Sequence[SimResult]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> metric -> {mean, std, n} over seeds (plus the honest-sites local row)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    by_method: dict[str, list[SimResult]] = {}
    for r in runs:
        by_method.setdefault(_row(r), []).append(r)
    for method, rs in by_method.items():
        rows = {method: [r.test for r in rs]}
        if method == "local":
            rows[LOCAL_HONEST] = [r.test_honest or {} for r in rs]
        for key, tests in rows.items():
            out[key] = {}
            for metric in SUMMARY_METRICS:
                m, s, n = mean_std([t.get(metric, math.nan) for t in tests])
                out[key][metric] = {"mean": m, "std": s, "n": n}
    return out


def _paired(
    runs: Sequence[SimResult], a: str, b: str, metric: str, *, b_honest: bool = False
) -> dict[str, Any]:
    """Per-seed differences ``a - b`` of ``metric`` (absolute, and relative to b in %);
    ``b_honest`` takes b's mean over honest sites (``local`` only)."""
    by = {(_row(r), r.seed): r for r in runs}
    seeds = sorted({r.seed for r in runs})
    diffs, rels = [], []
    for s in seeds:
        ra, rb = by.get((a, s)), by.get((b, s))
        if ra is None or rb is None:
            continue
        va = ra.test[metric]
        vb = (rb.test_honest or rb.test)[metric] if b_honest else rb.test[metric]
        if math.isfinite(va) and math.isfinite(vb):
            diffs.append(va - vb)
            rels.append(100.0 * (va - vb) / vb if vb else math.nan)
    d_mean, d_sd, n = mean_std(diffs)
    r_mean, r_sd, _ = mean_std(rels)
    return {
        "diff_mean": d_mean,
        "diff_std": d_sd,
        "diff_worst": min(diffs) if diffs else math.nan,
        "diffs": diffs,
        "rel_pct_mean": r_mean,
        "rel_pct_std": r_sd,
        "n": n,
    }


def _claim_line(label: str, p: dict[str, Any]) -> str:
    if p["n"] == 0:
        return f"{label}: n/a"
    rel = (
        f"{p['rel_pct_mean']:+.1f}% ± {p['rel_pct_std']:.1f}% relative"
        if math.isfinite(p["rel_pct_mean"])
        else "relative n/a: baseline 0"
    )
    return (
        f"{label}: {p['diff_mean']:+.3f} ± {p['diff_std']:.3f} absolute ({rel}), paired over "
        f"{p['n']} seed(s)"
    )


def _faulty_sites(run: SimResult) -> list[str]:
    return [n for n, f in zip(run.site_names, run.site_faults, strict=True) if f != "none"]


def _valuation_facts(runs: Sequence[SimResult], row: str = "valuation") -> dict[str, Any]:
    """Weight share of the faulty sites (valuation ``row`` vs FedAvg) and the reasons they got."""
    val = [r for r in runs if _row(r) == row]
    fed = [r for r in runs if r.method == "fedavg"]
    if not val or not _faulty_sites(val[0]):
        return {}
    reasons: dict[str, dict[str, int]] = {}
    honest_rejected = 0
    honest_total = 0
    skipped = 0
    for r in val:
        faulty = _faulty_sites(r)
        skipped += sum(1 for rec in r.rounds if rec.skipped)
        for rec in r.rounds:
            for site, reason in zip(rec.submitted, rec.reasons, strict=True):
                if site in faulty:
                    kind = r.site_faults[r.site_names.index(site)]
                    reasons.setdefault(kind, {})
                    reasons[kind][reason] = reasons[kind].get(reason, 0) + 1
                else:
                    honest_total += 1
                    honest_rejected += reason != "OK"
    v_share = mean_std([r.weight_share(_faulty_sites(r)) for r in val])
    f_share = mean_std([r.weight_share(_faulty_sites(r)) for r in fed])
    return {
        "faulty_weight_share_valuation": {"mean": v_share[0], "std": v_share[1]},
        "faulty_weight_share_fedavg": {"mean": f_share[0], "std": f_share[1]},
        "faulty_reasons": reasons,
        "honest_updates_scored_zero": honest_rejected,
        "honest_updates": honest_total,
        "valuation_rounds_skipped": skipped,
    }


def _valuation_vs_fedavg(runs: Sequence[SimResult], row: str = "valuation") -> dict[str, Any]:
    """Issue 12's figures for one scenario: metrics of both methods (the valuation of ``row``),
    paired differences (mean and worst seed), the faulty sites' weight share per seed, honest
    site-rounds scored 0."""
    val = {r.seed: r for r in runs if _row(r) == row}
    fed = {r.seed: r for r in runs if r.method == "fedavg"}
    seeds = sorted(set(val) & set(fed))
    out: dict[str, Any] = {"seeds": seeds}
    for metric in ("auc", "f1", "f1_calibrated", "balanced_accuracy_calibrated", "ece"):
        out[metric] = {
            "valuation": mean_std([val[s].test.get(metric, math.nan) for s in seeds])[0],
            "fedavg": mean_std([fed[s].test.get(metric, math.nan) for s in seeds])[0],
            "paired": _paired(runs, row, "fedavg", metric),
            "valuation_min": min(
                (val[s].test.get(metric, math.nan) for s in seeds), default=math.nan
            ),
        }
    if seeds and _faulty_sites(val[seeds[0]]):
        v_share = [val[s].weight_share(_faulty_sites(val[s])) for s in seeds]
        f_share = [fed[s].weight_share(_faulty_sites(fed[s])) for s in seeds]
        out["faulty_share"] = {
            "valuation": v_share,
            "fedavg": f_share,
            "valuation_mean": mean_std(v_share)[0],
            "fedavg_mean": mean_std(f_share)[0],
            "seeds_lower": sum(1 for v, f in zip(v_share, f_share, strict=True) if v < f),
            "worst_ratio": max(
                (v / f for v, f in zip(v_share, f_share, strict=True) if f > 0), default=math.nan
            ),
        }
    zeroed = total = 0
    for s in seeds:
        r = val[s]
        faulty = set(_faulty_sites(r))
        for rec in r.rounds:
            for site, score in zip(rec.submitted, rec.scores, strict=True):
                if site not in faulty:
                    total += 1
                    zeroed += score == 0
    out["honest_zeroed"] = {"zeroed": zeroed, "total": total}
    return out


FULL_SEEDS = 5
FULL_ROUNDS = 10


def _run_label(settings: dict[str, Any]) -> str:
    """The alpha of a run, with the thresholds when they are not the history preset and the
    epsilon (``dpE``) of a DP run."""
    combiner = settings.get("combiner", "history")
    eps = settings.get("dp_epsilon")
    metric = settings.get("metric", "balanced_loss")
    return (
        f"{settings['alpha']:g}"
        + ("" if combiner == "history" else f" {combiner}")
        + ("" if metric == "balanced_loss" else f" {metric}")
        + ("" if eps is None else f" dp{eps:g}")
        + ("c" if eps is not None and settings.get("dp_accounting") == "composed" else "")
        + (" project" if settings.get("project_shift") else "")
    )


def _dp_of(label: str) -> float | None:
    """The epsilon in a run label, None for plain training."""
    for part in label.split()[1:]:
        if part.startswith("dp"):
            return float(part[2:].removesuffix("c"))
    return None


def _dp_note(settings: dict[str, Any]) -> str:
    eps = settings.get("dp_epsilon")
    if eps is None:
        return ""
    split = (
        "per-round targets composing (RDP) to it"
        if settings.get("dp_accounting") == "composed"
        else f"{eps / settings['rounds']:g} per round, summed"
    )
    return (
        f"; DP-SGD at every site, epsilon {eps:g} over the run ({split}), "
        f"delta {settings.get('dp_delta', 1e-5):g}"
    )


def _reduced(settings: dict[str, Any]) -> str:
    """A warning when a run is smaller than issue 12's benchmark (5 seeds, 10 rounds)."""
    if len(settings["seeds"]) >= FULL_SEEDS and settings["rounds"] >= FULL_ROUNDS:
        return ""
    return (
        f" - REDUCED run: issue 12's table is {FULL_SEEDS} seeds x {FULL_ROUNDS} rounds at "
        "alpha 1, 3 and 100"
    )


def _bars_table(rows: Sequence[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """One line per (alpha, scenario): valuation vs FedAvg, paired per seed (mean, worst seed)."""

    def pair(p: dict[str, Any]) -> str:
        return f"{p['diff_mean']:+.3f} ({p['diff_worst']:+.3f})" if p["n"] else "n/a"

    def both(f: dict[str, Any], metric: str) -> str:
        return f"{f[metric]['valuation']:.3f}/{f[metric]['fedavg']:.3f}"

    widths = (11, 4, 6, 12, 7, 16, 12, 16, 12, 16, 12, 6, 6, 14)
    head = (
        "alpha",
        "sc",
        "seeds",
        "AUC v/F",
        "min v",
        "dAUC (worst)",
        "F1@.5 v/F",
        "dF1@.5 (worst)",
        "F1cal v/F",
        "dF1cal (worst)",
        "share v/F",
        "lower",
        "max v/F",
        "honest zeroed",
    )

    def line(cells: Sequence[str]) -> str:
        return " ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    lines = [line(head), "-" * (sum(widths) + len(widths) - 1)]
    for alpha, key, f in rows:
        share = f.get("faulty_share")
        hz = f["honest_zeroed"]
        frac = hz["zeroed"] / hz["total"] if hz["total"] else math.nan
        lines.append(
            line(
                (
                    alpha,
                    key,
                    str(len(f["seeds"])),
                    both(f, "auc"),
                    f"{f['auc']['valuation_min']:.3f}",
                    pair(f["auc"]["paired"]),
                    both(f, "f1"),
                    pair(f["f1"]["paired"]),
                    both(f, "f1_calibrated"),
                    pair(f["f1_calibrated"]["paired"]),
                    f"{share['valuation_mean']:.3f}/{share['fedavg_mean']:.3f}" if share else "-",
                    f"{share['seeds_lower']}/{len(f['seeds'])}" if share else "-",
                    f"{share['worst_ratio']:.2f}" if share else "-",
                    f"{hz['zeroed']}/{hz['total']} {frac:.0%}",
                )
            )
        )
    lines.append(
        "v/F: valuation/FedAvg means; min v: valuation's worst seed; d: valuation - FedAvg "
        "paired per seed, mean (worst seed); "
        "share: the faulty sites' weight per round; lower: seeds where valuation gives them less "
        "than FedAvg; max v/F: largest per-seed ratio of their shares; honest zeroed: honest "
        "site-rounds scored 0"
    )
    return lines


Bar = tuple[str, bool, str]
"""(bar, met, the figures that decide it)."""


def issue12_bars(rows: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Bar]:
    """Issue 12's bars that these rows (alpha label, scenario, valuation-vs-FedAvg figures)
    decide; a bar whose scenario or alpha is not in the rows is not listed."""
    out: list[Bar] = []

    def alpha_of(label: str) -> float:
        return float(label.split()[0])

    for label, key, f in rows:
        a = alpha_of(label)
        n = len(f["seeds"])
        auc = f["auc"]["paired"]
        share = f.get("faulty_share")
        if key == "a":
            out.append(
                (
                    f"alpha {label} (a): mean paired AUC >= -0.005",
                    auc["n"] > 0 and auc["diff_mean"] >= -0.005,
                    f"{auc['diff_mean']:+.4f}",
                )
            )
            hz = f["honest_zeroed"]
            frac = hz["zeroed"] / hz["total"] if hz["total"] else math.nan
            out.append(
                (
                    f"alpha {label} (a): at most 10% of honest site-rounds scored 0",
                    frac <= 0.10,
                    f"{hz['zeroed']}/{hz['total']} = {frac:.1%}",
                )
            )
        if key == "b" and share:
            lower = share["seeds_lower"]
            out.append(
                (
                    f"alpha {label} (b): noisy share below FedAvg's, lower in >= 4 of 5 seeds",
                    share["valuation_mean"] < share["fedavg_mean"] and lower >= math.ceil(0.8 * n),
                    f"{share['valuation_mean']:.3f} vs {share['fedavg_mean']:.3f}, lower in "
                    f"{lower}/{n}",
                )
            )
            if a >= 100:
                ratio = share["valuation_mean"] / share["fedavg_mean"]
                out.append(
                    (
                        f"alpha {label} (b): noisy share at most half of FedAvg's",
                        ratio <= 0.5,
                        f"{ratio:.2f}x",
                    )
                )
            out.append(
                (
                    f"alpha {label} (b): mean paired AUC >= 0, no seed below -0.01",
                    auc["n"] > 0 and auc["diff_mean"] >= 0 and auc["diff_worst"] >= -0.01,
                    f"{auc['diff_mean']:+.4f} (worst {auc['diff_worst']:+.4f})",
                )
            )
            f1c = f["f1_calibrated"]["paired"]
            need = 0.02 if a >= 100 else 0.0
            out.append(
                (
                    f"alpha {label} (b): mean paired calibrated F1 >= {need:+.2f}",
                    f1c["n"] > 0 and f1c["diff_mean"] >= need,
                    f"{f1c['diff_mean']:+.4f}",
                )
            )
        if key in ("c", "j") and share:
            out.append(
                (
                    f"alpha {label} ({key}): poisoned weight share <= 5%",
                    share["valuation_mean"] <= 0.05,
                    f"{share['valuation_mean']:.3f}",
                )
            )
            out.append(
                (
                    f"alpha {label} ({key}): AUC >= 0.85 in every seed",
                    f["auc"]["valuation_min"] >= 0.85,
                    f"worst seed {f['auc']['valuation_min']:.3f}",
                )
            )
        if key == "f" and share:
            out.append(
                (
                    f"alpha {label} (f): small-step sites paid no more than FedAvg pays them",
                    share["valuation_mean"] <= share["fedavg_mean"],
                    f"{share['valuation_mean']:.3f} vs {share['fedavg_mean']:.3f}",
                )
            )
            clean = next((g for lab, k, g in rows if k == "a" and lab == label), None)
            if clean is not None:
                drop = f["auc"]["valuation"] - clean["auc"]["valuation"]
                out.append(
                    (
                        f"alpha {label} (f): global AUC within 0.02 of the clean run (a)",
                        drop >= -0.02,
                        f"{drop:+.4f}",
                    )
                )
        if key in ("d", "e", "h", "i") and share:
            out.append(
                (
                    f"alpha {label} ({key}): free-riders' share at most half of FedAvg's in "
                    "every seed",
                    share["worst_ratio"] <= 0.5,
                    f"worst seed {share['worst_ratio']:.2f}x",
                )
            )
    return out


def dp_bars(rows: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Bar]:
    """Issue 16's bar for the DP rows (label with ``dpE``) of scenario (b): the noisy sites'
    weight share under valuation below FedAvg's. The verdict is on the means over seeds, as
    the issue words it; the figures give how many seeds are lower and every seed's pair
    (valuation/FedAvg), so a mean carried by one seed shows."""
    out: list[Bar] = []
    for label, key, f in rows:
        eps = _dp_of(label)
        share = f.get("faulty_share")
        if eps is None or key != "b" or not share:
            continue
        out.append(
            (
                f"alpha {label} (b) under DP-SGD at epsilon {eps:g}: noisy sites' weight share "
                "below FedAvg's (issue 16)",
                share["valuation_mean"] < share["fedavg_mean"],
                f"{share['valuation_mean']:.3f} vs {share['fedavg_mean']:.3f}, lower in "
                f"{share['seeds_lower']}/{len(f['seeds'])} seeds (per seed "
                + ", ".join(
                    f"{s}: {v:.3f}/{fa:.3f}"
                    for s, v, fa in zip(
                        f["seeds"], share["valuation"], share["fedavg"], strict=True
                    )
                )
                + ")",
            )
        )
    return out


def _valuation_rows(methods: Sequence[str]) -> list[str]:
    """The valuation rows of a run's methods (aggregator first, as run)."""
    return [m for m in methods if m in VALUATION_ROWS]


def _table_rows(
    settings: dict[str, Any], results: dict[str, list[SimResult]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(run label, scenario, valuation-vs-FedAvg figures) per scenario and valuation row of a
    run (the peer row's label ends in ``peers``); none without FedAvg."""
    methods = settings["methods"]
    if "fedavg" not in methods:
        return []
    label = _run_label(settings)
    return [
        (label + _mode_label(vrow), k, _valuation_vs_fedavg(results[k], vrow))
        for k in results
        for vrow in _valuation_rows(methods)
    ]


def issue14_bars(rows: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Bar]:
    """Issue 14's accuracy bar for each (alpha, scenario) run in both modes: peer mode meets
    every issue-12 bar aggregator mode meets (the figures name any it misses), with the peer -
    aggregator AUC means."""
    plain = {(lab, k): f for lab, k, f in rows if not lab.endswith("peers")}
    out: list[Bar] = []
    for lab, k, f in rows:
        if not lab.endswith("peers"):
            continue
        base = lab[: -len(" peers")]
        agg = plain.get((base, k))
        if agg is None:
            continue
        agg_met = {name: met for name, met, _ in issue12_bars([(base, k, agg)])}
        missed = [
            name
            for name, met, _ in issue12_bars([(base, k, f)])
            if not met and agg_met.get(name, False)
        ]
        out.append(
            (
                f"alpha {base} ({k}): peer mode meets every issue-12 bar aggregator mode meets "
                "(issue 14)",
                not missed,
                f"AUC peers {f['auc']['valuation']:.3f} vs aggregator {agg['auc']['valuation']:.3f}"
                + (f"; missed: {'; '.join(missed)}" if missed else ""),
            )
        )
    return out


def _all_bars(rows: Sequence[tuple[str, str, dict[str, Any]]]) -> list[Bar]:
    """Issue 12's bars over the plain rows (either mode), issue 16's over the DP rows, issue
    14's over the runs with both modes."""
    plain = [r for r in rows if _dp_of(r[0]) is None]
    return issue12_bars(plain) + dp_bars(rows) + issue14_bars(plain)


def _print_bars(bars: Sequence[Bar]) -> int:
    """Prints each bar; 1 when one is missed (the benchmark's exit code)."""
    if not bars:
        return 0
    print("\nBars decided by these runs (issue 12 on plain runs, issue 16 on DP runs):")
    for name, met, figures in bars:
        print(f"  {'MET ' if met else 'MISS'}  {name}: {figures}")
    missed = sum(1 for _, met, _ in bars if not met)
    print(f"  {len(bars) - missed} met, {missed} missed")
    return 1 if missed else 0


def _all_reasons(runs: Sequence[SimResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        if r.method != "valuation":  # either mode
            continue
        for rec in r.rounds:
            for reason in rec.reasons:
                out[reason] = out.get(reason, 0) + 1
    return out


def _degenerate(
    runs: Sequence[SimResult], methods: Sequence[str], num_classes: int = 2
) -> dict[str, int]:
    """Per method, the seeds whose final model predicts (almost) one class for every test image
    (two classes: test accuracy below 0.55 on the balanced test split, F1 then sits near 0 or
    0.667; K > 2: plain balanced accuracy below 1/K + 0.05, one class for every image is 1/K)."""
    metric, floor = "accuracy", DEGENERATE_ACCURACY
    if num_classes > 2:
        metric, floor = "balanced_accuracy", 1 / num_classes + 0.05
    out: dict[str, int] = {}
    for m in methods:
        out[m] = sum(1 for r in runs if _row(r) == m and not r.test.get(metric, 0.0) >= floor)
    return out


def _degenerate_rule(num_classes: int) -> str:
    if num_classes > 2:
        return f"plain balanced accuracy < {1 / num_classes + 0.05:.2f}"
    return f"test accuracy < {DEGENERATE_ACCURACY}"


def _result_from_dict(doc: dict[str, Any]) -> SimResult:
    d = dict(doc)
    d["rounds"] = [RoundRecord(**x) for x in d["rounds"]]
    return SimResult(**d)


def _report(doc: dict[str, Any], results: dict[str, list[SimResult]]) -> dict[str, Any]:
    """Print the tables and the claims of a run; return the claims (for the JSON)."""
    settings = doc["settings"]
    seeds: list[int] = settings["seeds"]
    methods: list[str] = settings["methods"]
    scenario_keys = list(results)
    wall: float = doc["wall_seconds"]
    summaries = {k: _summary(v) for k, v in results.items()}
    rows = [m for m in methods if m != "local"]
    if "local" in methods:
        rows = ["local", LOCAL_HONEST, *rows]

    columns = _columns(settings)
    k_classes = _num_classes(settings)

    # ---- plain table
    print(ONCHAIN_NOTE)
    print(
        f"\nAccuracy on {_test_split(settings)}: mean ± std over {len(seeds)} "
        f"seed(s) {seeds}; {settings['rounds']} rounds x {settings['epochs']} local epoch(s), "
        f"Dirichlet alpha {settings['alpha']}{_dp_note(settings)}; wall {wall:.0f} s\n"
    )
    head = f"{'method':44}" + "".join(
        f"{SCENARIOS[k].title[:3] + ' ' + label:>22}" for k in scenario_keys for _, label in columns
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        line = f"{ROW_LABELS[row]:44}"
        for k in scenario_keys:
            s = summaries[k].get(row)
            for metric, _ in columns:
                if s is None:
                    line += f"{'-':>22}"
                else:
                    v = s[metric]
                    line += f"{_fmt(v['mean'], v['std'], int(v['n']), len(seeds)):>22}"
        print(line)

    # ---- claims
    claims: dict[str, Any] = {}
    lines: list[str] = []
    for k in scenario_keys:
        runs = results[k]
        if "local" in methods and "fedavg" in methods:
            p = _paired(runs, "fedavg", "local", "auc")
            claims[f"{k}_fedavg_minus_local_auc"] = p
            lines.append(_claim_line(f"{SCENARIOS[k].title}: FedAvg - local AUC", p))
            if k_classes > 2:
                above = []
                for metric, label in columns:
                    p = _paired(runs, "fedavg", "local", metric)
                    claims[f"{k}_fedavg_minus_local_{metric}"] = p
                    if metric != "auc":
                        lines.append(
                            _claim_line(f"{SCENARIOS[k].title}: FedAvg - local {label}", p)
                        )
                    above.append(f"{label} {sum(d > 0 for d in p['diffs'])}/{p['n']}")
                lines.append(
                    f"{SCENARIOS[k].title}: FedAvg above local (seeds): " + ", ".join(above)
                )
            if k != "a":
                p = _paired(runs, "fedavg", "local", "auc", b_honest=True)
                claims[f"{k}_fedavg_minus_local_honest_auc"] = p
                lines.append(
                    _claim_line(f"{SCENARIOS[k].title}: FedAvg - local (honest sites) AUC", p)
                )
        for vrow in _valuation_rows(methods):
            name = "peer valuation" if vrow == PEERS else "valuation"
            if "local" in methods:
                p = _paired(runs, vrow, "local", "auc")
                claims[f"{k}_{vrow}_minus_local_auc"] = p
                lines.append(_claim_line(f"{SCENARIOS[k].title}: {name} - local AUC", p))
                for metric, label in columns if k_classes > 2 else ():
                    if metric != "auc":
                        p = _paired(runs, vrow, "local", metric)
                        claims[f"{k}_{vrow}_minus_local_{metric}"] = p
                        lines.append(
                            _claim_line(f"{SCENARIOS[k].title}: {name} - local {label}", p)
                        )
            if "fedavg" not in methods:
                continue
            for metric in ("f1", "auc"):
                p = _paired(runs, vrow, "fedavg", metric)
                claims[f"{k}_{vrow}_minus_fedavg_{metric}"] = p
                lines.append(
                    _claim_line(f"{SCENARIOS[k].title}: {name} - FedAvg {metric.upper()}", p)
                )
            facts = _valuation_facts(runs, vrow)
            if facts:
                claims[f"{k}_{vrow}_facts"] = facts
                v, f = facts["faulty_weight_share_valuation"], facts["faulty_weight_share_fedavg"]
                lines.append(
                    f"{SCENARIOS[k].title}: weight share of the faulty sites per round: "
                    f"{name} {v['mean']:.3f} ± {v['std']:.3f}, FedAvg {f['mean']:.3f} ± "
                    f"{f['std']:.3f}; reasons given to them: {facts['faulty_reasons']}; honest "
                    f"updates scored 0: {facts['honest_updates_scored_zero']}/"
                    f"{facts['honest_updates']}; valuation rounds skipped (all scores 0): "
                    f"{facts['valuation_rounds_skipped']}"
                )
            else:
                reasons = _all_reasons([r for r in runs if _row(r) == vrow])
                claims[f"{k}_{vrow}_reasons"] = reasons
                lines.append(f"{SCENARIOS[k].title}: {name} reasons over all updates {reasons}")
        if "valuation" in methods and PEERS in methods:
            for metric in ("auc", "f1_calibrated"):
                p = _paired(runs, PEERS, "valuation", metric)
                claims[f"{k}_peers_minus_aggregator_{metric}"] = p
                lines.append(
                    _claim_line(f"{SCENARIOS[k].title}: peer - aggregator valuation {metric}", p)
                )
    for k in scenario_keys:
        for vrow in _valuation_rows(methods):
            used: dict[str, int] = {}
            secs: list[float] = []
            for r in results[k]:
                for rec in r.rounds if _row(r) == vrow else []:
                    used[str(rec.valuation_method)] = used.get(str(rec.valuation_method), 0) + 1
                    secs.append(rec.valuation_seconds)
            if used:
                what = "per site (peers)" if vrow == PEERS else "per round"
                claims[f"{k}_{vrow}_cost"] = {"scorers": used, "seconds_per_round": mean_std(secs)}
                lines.append(
                    f"{SCENARIOS[k].title}: {vrow} scorer run per round {used}, "
                    f"{mean_std(secs)[0]:.1f} s {what}"
                )
    for k in scenario_keys:
        deg = _degenerate(results[k], [m for m in methods if m != "local"], k_classes)
        claims[f"{k}_degenerate_final_models"] = deg
        lines.append(
            f"{SCENARIOS[k].title}: final models predicting (almost) one class "
            f"({_degenerate_rule(k_classes)}), per method over {len(seeds)} seeds: "
            + ", ".join(f"{m} {n}" for m, n in deg.items())
        )
    bars = _table_rows(settings, results)
    if bars:
        for label, k, f in bars:
            claims[
                f"{k}_{'valuation_peers' if label.endswith('peers') else 'valuation'}_vs_fedavg"
            ] = f
        print(
            f"\nValuation vs FedAvg (issue 12) on the test split: {len(seeds)} seed(s), "
            f"{settings['rounds']} rounds x {settings['epochs']} epoch(s), alpha "
            f"{settings['alpha']:g}{_dp_note(settings)}{_reduced(settings)}\n"
        )
        for line in _bars_table(bars):
            print(line)
    print("\nThe seed review's claims and other findings (differences paired per seed):")
    for line in lines:
        print(f"  {line}")

    # ---- markdown
    print("\n#### Accuracy (Markdown)\n")
    print(
        f"Test {', '.join(label for _, label in columns)} on {_test_split(settings)}, "
        f"mean ± std over {len(seeds)} seeds; "
        f"{settings['rounds']} rounds x {settings['epochs']} local epoch(s), Dirichlet alpha "
        f"{settings['alpha']}{_dp_note(settings)}. "
        + "; ".join(f"{SCENARIOS[k].title}: {SCENARIOS[k].description}" for k in scenario_keys)
        + ".\n"
    )
    header = "| method | " + " | ".join(
        f"{SCENARIOS[k].title[:3]} {label}" for k in scenario_keys for _, label in columns
    )
    print(header + " |")
    print("|---|" + "---|" * (len(columns) * len(scenario_keys)))
    for row in rows:
        cells = []
        for k in scenario_keys:
            s = summaries[k].get(row)
            for metric, _ in columns:
                if s is None:
                    cells.append("-")
                else:
                    v = s[metric]
                    cells.append(_fmt(v["mean"], v["std"], int(v["n"]), len(seeds)))
        print(f"| {ROW_LABELS[row]} | " + " | ".join(cells) + " |")
    print()
    for line in lines:
        print(f"- {line}")
    command = " ".join([".venv/bin/python scripts/bench/accuracy.py", *doc.get("argv", [])])
    print(
        f"\nCommand: `{command}` — wall {wall / 60:.1f} min on "
        f"{doc['environment']['cpus']} CPU cores, {settings['threads']} torch thread(s)."
    )
    return claims


MERGE_FREE: Final = ("seeds", "methods", "project_shift")
"""Settings in which saved runs may differ and still be merged (``--render ... --merge``);
``project_shift`` only changes the valuation rows, so it is taken from the runs that hold one."""


def _merged(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One saved run of several (``--render A B ... --merge``): runs of the same settings but
    their seeds, methods (e.g. FedAvg in one process, each valuation seed in another) and
    ``project_shift``, their scenarios' runs put together; an overlap (the same scenario, method
    and seed twice) or any other setting that differs is refused."""
    first = docs[0]
    base = {k: v for k, v in first["settings"].items() if k not in MERGE_FREE}
    for doc in docs[1:]:
        other = {k: v for k, v in doc["settings"].items() if k not in MERGE_FREE}
        if other != base or set(doc["scenarios"]) != set(first["scenarios"]):
            diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise SystemExit(f"--merge: the runs differ in {diff or 'their scenarios'}")
    methods: list[str] = []
    seeds: set[int] = set()
    shift = False
    for doc in docs:
        st = doc["settings"]
        methods += [m for m in st["methods"] if m not in methods]
        seeds |= set(st["seeds"])
        if any(m in VALUATION_ROWS for m in st["methods"]):
            shift = shift or bool(st.get("project_shift"))
    scenarios: dict[str, Any] = {}
    for key, sc in first["scenarios"].items():
        runs = [r for doc in docs for r in doc["scenarios"][key]["runs"]]
        seen = [(r["method"], r.get("valuation_mode"), r["seed"]) for r in runs]
        if len(set(seen)) != len(seen):
            raise SystemExit(f"--merge: scenario {key} holds a method and seed twice")
        scenarios[key] = {**sc, "runs": runs}
    argv = [a for doc in docs for a in [*doc.get("argv", []), "+"]][:-1]
    return {
        **first,
        "argv": argv,
        "settings": {**first["settings"], "methods": methods, "seeds": sorted(seeds)}
        | ({"project_shift": True} if shift else {}),
        "wall_seconds": sum(float(doc["wall_seconds"]) for doc in docs),
        "scenarios": scenarios,
    }


def _render(docs: Sequence[dict[str, Any]]) -> int:
    """Print the report of each saved run, then (several runs) one valuation-vs-FedAvg table over
    all of them (one line per alpha and scenario)."""
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for doc in docs:
        if doc.get("benchmark") != "accuracy":
            raise SystemExit("not an accuracy benchmark JSON")
        results = {
            k: [_result_from_dict(r) for r in sc["runs"]] for k, sc in doc["scenarios"].items()
        }
        if "argv" not in doc:
            doc["argv"] = list(doc.get("command", [])[2:])
        _report(doc, results)
        if _is_pneumonia(doc["settings"]):
            rows.extend(_table_rows(doc["settings"], results))
    if len(docs) > 1 and rows:
        notes = sorted({_reduced(doc["settings"]) for doc in docs} - {""})
        sizes = sorted(
            {
                f"{len(d['settings']['seeds'])} seeds x {d['settings']['rounds']} rounds"
                for d in docs
            }
        )
        print(f"\n#### Valuation vs FedAvg, every run ({', '.join(sizes)}){''.join(notes)}\n")
        for line in _bars_table(rows):
            print(line)
    return _print_bars(_all_bars(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data",
        default="pneumonia",
        help="a shipped dataset (pneumonia, retina) or a MedMNIST-format .npz",
    )
    parser.add_argument(
        "--seeds",
        default="5",
        help="a bare number N is a count: seeds 0..N-1 (--seeds 1 runs seed 0 only, --seeds 3 "
        "seeds 0, 1, 2); a list names seeds: 0,3,7-9; one seed S alone is the range S-S "
        "(--seeds 3-3 runs seed 3)",
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet label-skew alpha")
    parser.add_argument("--scenarios", default="a,b,c,d,e,f")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--valuation",
        choices=("shapley", "mc_shapley", "loo"),
        default="shapley",
        help="validation scorer (shapley: exact up to 8 sites, Monte-Carlo above)",
    )
    parser.add_argument(
        "--valuation-mode",
        choices=("aggregator", "peers", "both"),
        default="aggregator",
        help="who scores the valuation method: the aggregator on the whole validation split, "
        "peers (every site on its own shard, the median of the others' scores; issue 14), or "
        "both side by side on the same seeds",
    )
    parser.add_argument(
        "--public-screen",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_PUBLIC_SCREEN,
        help="peer mode: the round terms' valuation.public_screen (validators skip the "
        "free-rider screen, the aggregator runs it once a round); default: the aggregator's "
        "(on since session 57); --no-public-screen: every validator screens, as before",
    )
    parser.add_argument(
        "--combiner",
        choices=tuple(COMBINERS),
        default="history",
        help="valuation thresholds: history = fedtrail.valuation.HISTORY_COMBINER, default = "
        "Combiner() (direction screen at cosine -0.5, norm screen at robust z 10)",
    )
    parser.add_argument(
        "--relief-cosine",
        type=float,
        default=None,
        help="the combiner's relief_cosine (an update whose cosine to the median is below it is "
        "scored against 0, not the median site's negative record); default: the combiner's "
        "(-0.7); -1 = the rule before it",
    )
    parser.add_argument(
        "--boost-clip",
        type=float,
        default=None,
        help="the combiner's boost_clip (an update longer than 1/C median norms along the median "
        "update keeps (1/(C*along))^2 of its score); default: the combiner's (0, off)",
    )
    parser.add_argument(
        "--size-norm-z",
        type=float,
        default=None,
        help="the combiner's size_norm_z (the second norm screen: an update whose robust norm z "
        "after its claimed count's uncapped allowance max(1, n / median n) is above T is "
        "OUTLIER_NORM); default: the combiner's (0, off)",
    )
    parser.add_argument(
        "--max-norm-ratio",
        type=float,
        default=None,
        help="the combiner's max_norm_ratio (a paid update above K median norms keeps K / ratio "
        "of its score: its weight bounded by its say after a clip to K median norms); default: "
        "the combiner's (0, off)",
    )
    parser.add_argument(
        "--weight-factors",
        default=None,
        metavar="K,P,F",
        help="an experiment (issue 12 (c)): a paid update above K median norms keeps "
        "(K / ratio) ** P of its score, one whose cosine to the median is below credit_cosine "
        "keeps F of it (weight_factors.py; records unchanged); K 0 / F 1: that factor off",
    )
    parser.add_argument(
        "--warm-up-floor",
        type=float,
        default=None,
        help="the combiner's warm_up_floor (below 1 the warm-up round scores updates from its own "
        "normalised values, at least this share of the full score); default: the combiner's "
        "(0.5 since session 63; 1 is off)",
    )
    parser.add_argument(
        "--warm-up-scope",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="the combiner's warm_up_scope (under warm_up_floor below 1: 1 scores and records "
        "only the warm-up's outweighing updates, a negative share and a claimed count above "
        "every non-negative one's; 0 every passer; 2 scores every passer and records only the "
        "outweighing ones); default: the combiner's",
    )
    parser.add_argument(
        "--record-floor",
        type=float,
        default=None,
        help="the combiner's record_floor (a scored site's record kept at or above its reference "
        "minus max(F, demote_scale) after each round; 0: off, the unbounded record); default: "
        "the combiner's (0.5)",
    )
    parser.add_argument(
        "--project-shift",
        action="store_true",
        help="the round terms' valuation.project_shift (aggregator run --project-shift): the "
        "validation game values every update with its first-order uniform logit shift removed "
        "(issue 16, private rounds); default: off",
    )
    parser.add_argument(
        "--value-window",
        type=int,
        default=1,
        help="an experiment (issue 16): the valuation values each site's mean of its last N "
        "updates instead of this round's alone; weights still apply to this round's (default 1: "
        "the product's valuation)",
    )
    parser.add_argument(
        "--value-window-sum",
        action="store_true",
        help="with --value-window: the sum of those updates instead of their mean",
    )
    parser.add_argument(
        "--large-game",
        choices=("linear_shapley", "budget_shapley", "none"),
        default=_sim.SimConfig.large_game or "none",
        help="the game above 10 screened updates (default: the aggregator's, none = Monte-Carlo "
        "Shapley at every size; linear_shapley = `aggregator run --large-game linear_shapley`; "
        "budget_shapley = `aggregator run --large-game budget_shapley`)",
    )
    parser.add_argument(
        "--validator-game",
        choices=(*VALIDATOR_GAMES, "none"),
        default=_sim.SimConfig.validator_game or "none",
        help="peer mode: the game every validator plays at every size (the round terms' "
        "validator_game; default: the aggregator's; none = the valuation method's)",
    )
    parser.add_argument(
        "--server-momentum",
        type=float,
        default=0.0,
        metavar="B",
        help="an experiment: heavy-ball server momentum B in [0, 1) for every method (the "
        "global model moves by B x its last change before each round; _sim.SimConfig); "
        "default 0, as the product aggregates",
    )
    parser.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        metavar="E",
        help="every site trains with DP-SGD (fedtrail.ml.privacy.train_private) at epsilon "
        "E over the run (see --dp-accounting), clipping norm 1, delta 1e-5; default: plain",
    )
    parser.add_argument(
        "--metric",
        choices=("balanced_loss", "loss", "auc"),
        default="balanced_loss",
        help="the valuation's utility metric (the terms' valuation.metric; default the "
        "aggregator's, balanced_loss)",
    )
    parser.add_argument(
        "--dp-accounting",
        choices=("summed", "composed"),
        default="summed",
        help="how E is split over the rounds: summed (E / rounds a round, the chain's "
        "accounting; default) or composed (each site's per-round target whose rounds compose, "
        "RDP, to E: privacy.py's table)",
    )
    parser.add_argument(
        "--share-clip",
        type=float,
        default=None,
        metavar="C",
        help="an experiment (attack a19): the standing's round shares with every |value| "
        "clipped at C x the round's median |value| (share_clip.py); default: the product's rule",
    )
    parser.add_argument(
        "--valuation-rule",
        choices=("weighted", "norm_clip"),
        default="weighted",
        help="the aggregation rule of the valuation runs (the aggregator's --rule): norm_clip "
        "clips every paid update to the round's median norm (issue 12 (j)); default: weighted",
    )
    parser.add_argument(
        "--delta-clip",
        type=float,
        default=None,
        metavar="C",
        help="an experiment (issue 12 (c)): valuation runs aggregate with every update's delta "
        "clipped to C x the round's median norm (delta_clip.py); default: the product's rule",
    )
    parser.add_argument(
        "--clip-rounds",
        type=int,
        default=None,
        metavar="N",
        help="with --delta-clip: clip only in each run's first N valued rounds (1: the warm-up); "
        "default: every round",
    )
    parser.add_argument(
        "--clip-game",
        action="store_true",
        help="with --delta-clip: the valuation's game values the clipped updates too",
    )
    parser.add_argument(
        "--zeroed-out",
        action="store_true",
        help="an experiment (attack a19): updates the standing already zeroes are left out of "
        "the other players' game (zeroed_out.py); default: the product's game",
    )
    parser.add_argument(
        "--game-probe",
        action="store_true",
        help="an experiment (issue 12 (c)): record each valued update's utility alone (its "
        "slope at the global model; the global model plus 1, 0.5, -1 times it) in the JSON's "
        "game_probe list (game_probe.py); changes no score",
    )
    parser.add_argument(
        "--step-probe",
        action="store_true",
        help="an experiment (issue 12 (c)): record each usable update's validation utility along "
        "global + t * update for t in step_length.GRID and its best step t_star in the JSON's "
        "step_length list (step_length.py); changes no score",
    )
    parser.add_argument(
        "--step-factor",
        type=float,
        default=None,
        metavar="T",
        help="an experiment (issue 12 (c)): as --step-probe, and a paid update keeps "
        "min(1, t_star / T) of its score (step_length.py; records unchanged)",
    )
    parser.add_argument(
        "--norm-persist",
        type=float,
        default=None,
        metavar="T",
        help="an experiment (issue 12 (c)): a site whose median size-adjusted norm ratio over "
        "its updates (from its third) is above T scores 0 (norm_persist.py); default: the "
        "product's rule",
    )
    parser.add_argument(
        "--norm-window",
        type=int,
        default=0,
        metavar="N",
        help="with --norm-persist: the median of the site's latest N updates only (0: all)",
    )
    parser.add_argument(
        "--persist-measure",
        choices=norm_persist.MEASURES,
        default="norm",
        help="with --norm-persist: record the size-adjusted norm ratio (norm) or the "
        "size-adjusted length along the round's median update (along)",
    )
    parser.add_argument(
        "--persist-from",
        type=int,
        default=norm_persist.MIN_RECORDS,
        metavar="K",
        help="with --norm-persist: judge a site from its K-th recorded update on (1: round 1)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "accuracy.json")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 2 rounds")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the tables of saved runs (their JSON) again, without running anything; "
        "with several, also one valuation-vs-FedAvg table over all of them",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --render: the saved runs as one run (the same settings but their seeds, "
        "methods and project_shift; e.g. FedAvg and each valuation seed run one at a time)",
    )
    args = parser.parse_args(argv)
    if args.merge and not args.render:
        parser.error("--merge goes with --render")
    if args.render:
        docs = [json.loads(p.read_text(encoding="utf-8")) for p in args.render]
        return _render([_merged(docs)] if args.merge else docs)
    if args.quick:
        args.seeds, args.rounds = "1", 2
    jury_rule = os.environ.get("JURY_RULE") or None
    if jury_rule is not None:
        from scripts.bench import jury_rules

        jury_rules.install(jury_rule)
        print(f"EXPERIMENT: every peer jury scored with the {jury_rule!r} median")
    min_class = int(os.environ.get("VALIDATOR_MIN_CLASS") or 1)
    if min_class > 1:
        print(f"EXPERIMENT: a validator with fewer than {min_class} images of a class abstains")
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    scenario_keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    methods: list[str] = []
    modes = ["aggregator", "peers"] if args.valuation_mode == "both" else [args.valuation_mode]
    for m in args.methods.split(","):
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; known: {', '.join(METHODS)}")
        if m == "valuation":
            methods.extend(row for row, mode in VALUATION_ROWS.items() if mode in modes)
        else:
            methods.append(m)
    for k in scenario_keys:
        if k not in SCENARIOS:
            parser.error(f"unknown scenario {k!r}; known: {', '.join(SCENARIOS)}")
    if args.dp_epsilon is not None and not (math.isfinite(args.dp_epsilon) and args.dp_epsilon > 0):
        parser.error(f"--dp-epsilon must be positive, got {args.dp_epsilon}")
    if not 0.0 <= args.server_momentum < 1.0:
        parser.error(f"--server-momentum must be in [0, 1), got {args.server_momentum}")

    if args.share_clip is not None:
        if not (math.isfinite(args.share_clip) and args.share_clip >= 1):
            parser.error(f"--share-clip must be a finite number >= 1, got {args.share_clip}")
        share_clip.install(args.share_clip)
    if args.delta_clip is not None and args.valuation_rule != "weighted":
        parser.error("--delta-clip wraps the weighted rule: leave --valuation-rule at weighted")
    if args.delta_clip is not None:
        if not (math.isfinite(args.delta_clip) and args.delta_clip >= 1):
            parser.error(f"--delta-clip must be a finite number >= 1, got {args.delta_clip}")
        delta_clip.install(args.delta_clip, game=args.clip_game, rounds=args.clip_rounds)
    elif args.clip_game:
        parser.error("--clip-game needs --delta-clip")
    if args.clip_rounds is not None and (args.delta_clip is None or args.clip_rounds < 1):
        parser.error("--clip-rounds needs --delta-clip and a count of at least 1")
    if args.zeroed_out:
        zeroed_out.install()
    if args.game_probe:
        game_probe.install()
    if args.step_factor is not None and not (
        math.isfinite(args.step_factor) and args.step_factor > 0
    ):
        parser.error(f"--step-factor must be a positive number, got {args.step_factor}")
    if args.step_probe or args.step_factor is not None:
        step_length.install(args.step_factor)
    factors: list[float] | None = None
    if args.weight_factors is not None:
        try:
            factors = [float(x) for x in args.weight_factors.split(",")]
            if len(factors) != 3:
                raise ValueError(args.weight_factors)
            weight_factors.install(max_norm_ratio=factors[0], power=factors[1], against=factors[2])
        except ValueError as e:
            parser.error(f"--weight-factors needs K,P,F: {e}")
    if args.norm_persist is not None:
        if not (math.isfinite(args.norm_persist) and args.norm_persist > 0):
            parser.error(f"--norm-persist must be a positive number, got {args.norm_persist}")
        if args.norm_window < 0:
            parser.error(f"--norm-window must be 0 (all) or positive, got {args.norm_window}")
        if args.persist_from < 1:
            parser.error(f"--persist-from must be at least 1, got {args.persist_from}")
        norm_persist.install(
            args.norm_persist,
            args.norm_window,
            measure=args.persist_measure,
            min_records=args.persist_from,
        )

    started = time.perf_counter()
    source = load_source(args.data)
    splits = source.splits()
    height, width = splits.train.image_size
    if height != width:
        parser.error(f"{args.data}: images are {height}x{width}; the models take square images")
    spec = ModelSpec(
        in_channels=splits.train.channels, num_classes=source.num_classes, image_size=height
    )

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    log(ONCHAIN_NOTE)
    results: dict[str, list[SimResult]] = {}
    combiner = COMBINERS[args.combiner]
    if args.relief_cosine is not None:
        combiner = replace(combiner, relief_cosine=args.relief_cosine)
    if args.boost_clip is not None:
        combiner = replace(combiner, boost_clip=args.boost_clip)
    if args.warm_up_floor is not None:
        combiner = replace(combiner, warm_up_floor=args.warm_up_floor)
    if args.warm_up_scope is not None:
        combiner = replace(combiner, warm_up_scope=args.warm_up_scope)
    if args.record_floor is not None:
        combiner = replace(combiner, record_floor=args.record_floor)
    if args.max_norm_ratio is not None:
        combiner = replace(combiner, max_norm_ratio=args.max_norm_ratio)
    if args.size_norm_z is not None:
        combiner = replace(combiner, size_norm_z=args.size_norm_z)
    for key in scenario_keys:
        sc = SCENARIOS[key]
        results[key] = []
        for seed in seeds:
            config = SimConfig(
                sites=sc.sites,
                rounds=args.rounds,
                epochs=args.epochs,
                alpha=args.alpha,
                seed=seed,
                faults=sc.faults(seed),
                valuation=args.valuation,
                stale=sc.stale,
                combiner=combiner,
                large_game=None if args.large_game == "none" else args.large_game,
                validator_game=None if args.validator_game == "none" else args.validator_game,
                dp_epsilon=args.dp_epsilon,
                dp_delta=DP_DELTA,
                dp_accounting=args.dp_accounting,
                server_momentum=args.server_momentum,
                metric=args.metric,
                value_window=args.value_window,
                value_window_sum=args.value_window_sum,
                valuation_rule=args.valuation_rule,
                project_shift=args.project_shift,
                public_screen=args.public_screen,
                validator_min_class=min_class,
            )
            for row in methods:
                method = cast(Method, "valuation" if row in VALUATION_ROWS else row)
                run_config = config
                if row in VALUATION_ROWS:
                    run_config = replace(config, valuation_mode=VALUATION_ROWS[row])
                res = _sim.run_method(method, run_config, splits, spec=spec)
                results[key].append(res)
                log(
                    f"{sc.title} seed {seed} {row}: test AUC {res.test['auc']:.4f} "
                    f"F1 {res.test['f1']:.4f} balanced accuracy "
                    f"{res.test['balanced_accuracy']:.4f} (calibrated "
                    f"{res.test['balanced_accuracy_calibrated']:.4f}) ({res.seconds:.1f}s)"
                )
    wall = time.perf_counter() - started

    doc = {
        "benchmark": "accuracy",
        "note": ONCHAIN_NOTE,
        "command": [sys.executable, *sys.argv],
        "argv": list(sys.argv[1:]),
        "settings": {
            "data": args.data,
            "num_classes": source.num_classes,
            "class_names": list(source.class_names),
            "test_images": len(splits.test),
            "model": {
                "arch": spec.arch,
                "in_channels": spec.in_channels,
                "num_classes": spec.num_classes,
                "image_size": spec.image_size,
            },
            "seeds": seeds,
            "rounds": args.rounds,
            "epochs": args.epochs,
            "alpha": args.alpha,
            "valuation": args.valuation,
            "valuation_mode": args.valuation_mode,
            "public_screen": args.public_screen,
            "validator_game": None if args.validator_game == "none" else args.validator_game,
            "combiner": args.combiner,
            # The combiner's thresholds the runs had, its defaults included (session 58: a run
            # at the default wrote null, so its JSON did not say the record floor was on; so
            # did these four until session 59).
            "relief_cosine": combiner.relief_cosine,
            "metric": args.metric,
            "boost_clip": combiner.boost_clip,
            "warm_up_floor": combiner.warm_up_floor,
            "warm_up_scope": combiner.warm_up_scope,
            "record_floor": combiner.record_floor,
            "max_norm_ratio": combiner.max_norm_ratio,
            "size_norm_z": combiner.size_norm_z,
            "weight_factors": factors,
            "value_window": args.value_window,
            "value_window_sum": args.value_window_sum,
            "project_shift": args.project_shift,
            "threads": args.threads,
            "methods": methods,
            "dp_epsilon": args.dp_epsilon,
            "dp_delta": None if args.dp_epsilon is None else DP_DELTA,
            "dp_accounting": None if args.dp_epsilon is None else args.dp_accounting,
            "share_clip": args.share_clip,
            "zeroed_out": args.zeroed_out,
            "valuation_rule": args.valuation_rule,
            "jury_rule": jury_rule,
            "validator_min_class": min_class,
            "delta_clip": args.delta_clip,
            "clip_game": args.clip_game if args.delta_clip is not None else None,
            "clip_rounds": args.clip_rounds if args.delta_clip is not None else None,
            "norm_persist": args.norm_persist,
            "norm_window": args.norm_window if args.norm_persist is not None else None,
            "persist_measure": args.persist_measure if args.norm_persist is not None else None,
            "persist_from": args.persist_from if args.norm_persist is not None else None,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "provenance": _sim.provenance(),
        "wall_seconds": wall,
        "scenarios": {
            k: {
                "title": SCENARIOS[k].title,
                "sites": SCENARIOS[k].sites,
                "faults": SCENARIOS[k].description,
                "summary": _summary(results[k]),
                "runs": [r.as_dict() for r in results[k]],
            }
            for k in scenario_keys
        },
    }
    if args.delta_clip is not None:
        doc["delta_clip"] = delta_clip.summary()
        for run_key, st in doc["delta_clip"].items():
            log(
                f"delta clip {run_key}: honest updates clipped {st['honest_clipped']}/"
                f"{st['honest_used']} (largest honest norm {st['honest_ratio_max'] or 0:.2f}x the "
                f"median), faulty clipped {st['faulty_clipped']}/{st['faulty_used']}, "
                f"faulty influence share {st['influence_share']:.3f}"
            )
    if args.game_probe:
        doc["game_probe"] = game_probe.records()
    if args.step_probe or args.step_factor is not None:
        doc["step_length"] = step_length.records()
        doc["step_factor"] = args.step_factor
    doc["claims"] = _report(doc, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float, allow_nan=True), encoding="utf-8")
    print(f"\nJSON: {args.out}")
    if _is_pneumonia(doc["settings"]):
        return _print_bars(_all_bars(_table_rows(doc["settings"], results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
