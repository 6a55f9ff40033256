"""Adversarial validators and per-site scoring time in peer scoring (issue 14).

Usage: .venv/bin/python scripts/bench/peer_validators.py [--seeds 0,1] [--rounds 4]
       [--alpha 1.0] [--cases 5-invert,5-collude,7-invert,7-collude] [--target 0]
       [--timing-sites 10,100] [--timing-rounds 2] [--timing-committee 2] [--large-rounds 1]
       [--no-timing]
       [--large-game none|linear_shapley] [--validator-game linear_shapley|loo|none]
       [--val-shards dirichlet|proportional] [--clock wall|cpu] [--compression topk8]
       [--threads 1] [--out .run/bench/peer_validators.json]

Every run is the benchmarks' in-process simulation (``scripts/bench/_sim.py``) of the
``valuation`` method in peer mode: each site trains on its Dirichlet(``alpha``) share of the
bundled training split (all sites honest), scores every other update on its own shard of the
validation split with :func:`fedtrail.valuation.peer_vector` (playing ``--validator-game``, the
round terms' validator game; default the aggregator's), and each update's score is the
median of its peers' scores (:func:`fedtrail.protocol.peers.peer_outcome`, the contract's rule);
weights are ``onchain_weights``, aggregation the product's weighted rule.
``JURY_RULE=high|low|true|cos`` in the environment (an experiment, attack a27): every jury
scored with that rule (``scripts/bench/jury_rules.py``) in both runs of every case.
``VALIDATOR_MIN_CLASS=K`` (an experiment): a validator whose val shard holds fewer than K
images of a class abstains, in both runs of every case (unset: the product's rule).

Cases (``--cases``; the adversaries are the last sites, they still train and send honest
updates):

``5-invert``  1 of 5 validators reveals ``SCORE_SCALE`` minus its honest vector;
``5-collude`` 1 of 5 scores the honest site ``--target`` 0 and the others honestly;
``7-invert``  2 of 7 invert;
``7-collude`` 2 of 7 collude against ``--target``;
``5-abstain`` / ``7-abstain``  the same 1 of 5 / 2 of 7 sites are honest but do not validate:
              the floor any combination rule starts from (a validator that is ignored, as a
              liar at best would be, still takes its honest vote away). Reported, not a bar.

Each case runs the same seeds with and without its adversaries (same data, faults, seeds) and
prints, per seed, every honest site's largest weight change over the rounds (a round cancelled
in one run counts as weight 0 there) and the validators' final reputations (the contract's EMA
of their agreement with the medians). Bars (issue 14; exit 1 when one is missed):

- every honest site's weight moves by at most 0.05 (max over rounds, sites and seeds);
- the adversaries' reputation falls: in every seed each adversary ends below its own
  reputation in the run without adversaries and below the mean of the honest validators.

Timing (``--timing-sites``): per validator, its scoring time per round (its ``peer_vector``)
against its own local training time that round, both on ``--clock``: ``wall`` (perf_counter,
the default) or ``cpu`` (the process's CPU seconds: with ``--threads 1`` each is one thread's
work, less disturbed by other processes on a shared machine); the figures give both. At 10
sites every site validates, over ``--timing-rounds`` rounds at ``--alpha``; at 100 sites,
``--large-rounds`` rounds (default one: the warm-up, where a validator plays no game and the
free-rider screen has no references; 2 times the later round too), a committee of the first
``--timing-committee`` sites validates (100: every site; each validator scores the 99 others
either way), at alpha 100 and at least 10 training images a
site (the 270 validation images have no Dirichlet(1) split that gives each of 100 sites one
image). Bar: at 10 sites, each site's scoring time at most its training time (per site, the
mean over rounds; the figures give the worst site and the median ratio).

A validator's work grows with its validation shard (the game's forward and gradient passes),
its training with its training shard. ``--val-shards`` (``_sim.validation_shards``) chooses how
the 270 validation images are shared out: ``dirichlet`` (the default, as every earlier figure):
a Dirichlet draw of their own, whose sizes are unrelated to the training shards' (10 sites,
alpha 1, seed 0: site-09 validates on 74 images and trains on 142, site-03 on 1 and 147);
``proportional``: each site holds out the same fraction of its own data (its training shard's
class counts scaled to the val split, about 11%), as a hospital keeps a fixed share of its
images for validation. The bar line names the shards it was measured on: the issue's bar is
not met by a change of shards alone.

``--public-screen`` / ``--no-public-screen`` (the round terms' ``valuation.public_screen``;
default the aggregator's, on for a new peer federation since session 57): under it the
validators skip the free-rider screen and the aggregator runs it once a round on the updates the
medians pay, in the cases' runs and the timing runs alike; ``--no-public-screen`` simulates the
mode before (every validator screens).

``--compression`` (a codec of ``fedtrail.storage.codec``, e.g. ``topk8``; default none): every
sent update goes through that codec, encoded and decoded as a node sends it (``_sim``'s
``SimConfig.compression``), in the cases' runs and the timing runs alike. Sparse ``topk8``
updates are what the free-rider screen's sparse stale tests (``stale_support_cosine``,
``stale_support_overlap``) examine; dense updates skip them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from fedtrail.aggregator.service import DEFAULT_PUBLIC_SCREEN
from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import Splits, load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.storage.codec import Compression
from fedtrail.valuation import VALIDATOR_GAMES
from scripts.bench import _sim
from scripts.bench._sim import ROOT, AdversarialValidator, SimConfig, SimResult, parse_seeds

if os.environ.get("JURY_RULE"):
    from scripts.bench import jury_rules

    jury_rules.install(os.environ["JURY_RULE"])
    print(f"EXPERIMENT: every jury scored with the {os.environ['JURY_RULE']!r} median")

MIN_CLASS = int(os.environ.get("VALIDATOR_MIN_CLASS") or 1)
"""An experiment (``_sim.SimConfig.validator_min_class``): a validator whose val shard holds
fewer than this many images of a class abstains; 1, unset: the product's rule."""
if MIN_CLASS > 1:
    print(f"EXPERIMENT: a validator with fewer than {MIN_CLASS} images of a class abstains")

WEIGHT_BAR = 0.05
"""Largest allowed move of an honest site's weight (issue 14)."""


@dataclass(frozen=True)
class Case:
    key: str
    sites: int
    adversaries: int
    kind: str


CASES: dict[str, Case] = {
    "5-invert": Case("5-invert", 5, 1, "invert"),
    "5-collude": Case("5-collude", 5, 1, "collude"),
    "7-invert": Case("7-invert", 7, 2, "invert"),
    "7-collude": Case("7-collude", 7, 2, "collude"),
    "5-abstain": Case("5-abstain", 5, 1, "abstain"),
    "7-abstain": Case("7-abstain", 7, 2, "abstain"),
}

DEFAULT_CASES = ("5-invert", "5-collude", "7-invert", "7-collude")
"""The default ``--cases``: the four adversarial ones (the abstain cases are opt-in)."""


def adversaries(case: Case, target: int) -> tuple[AdversarialValidator, ...]:
    """The case's lying validators: its last sites (none for an abstain case)."""
    liars = range(case.sites - case.adversaries, case.sites)
    if case.kind == "abstain":
        return ()
    if case.kind == "invert":
        return tuple(AdversarialValidator(site=s, kind="invert") for s in liars)
    return tuple(AdversarialValidator(site=s, kind="collude", target=target) for s in liars)


def weights_by_round(res: SimResult) -> list[dict[str, float]]:
    """Per round, each site's weight as a fraction (0 in a cancelled round or when it sent
    nothing)."""
    out = []
    for rec in res.rounds:
        w = {name: 0.0 for name in res.site_names}
        if not rec.skipped:
            for site, weight in zip(rec.submitted, rec.weights, strict=True):
                w[site] = weight / 1e18
        out.append(w)
    return out


def final_reputations(res: SimResult) -> dict[str, int]:
    """The validators' reputations after the last round that closed with weights."""
    for rec in reversed(res.rounds):
        if not rec.skipped and rec.validator_reputations:
            return dict(rec.validator_reputations)
    return {}


def compare(clean: SimResult, attacked: SimResult, liars: Sequence[str]) -> dict[str, Any]:
    """One seed of one case: honest sites' largest weight change, reputations of both runs."""
    honest = [n for n in clean.site_names if n not in liars]
    moves: dict[str, float] = {}
    for site in honest:
        moves[site] = max(
            (
                abs(a[site] - c[site])
                for a, c in zip(weights_by_round(attacked), weights_by_round(clean), strict=True)
            ),
            default=0.0,
        )
    reps, reps_clean = final_reputations(attacked), final_reputations(clean)
    honest_reps = [reps[n] for n in honest if n in reps]
    honest_mean = statistics.fmean(honest_reps) if honest_reps else math.nan
    abstained = sorted({n for rec in attacked.rounds for n in rec.abstained})
    falls: dict[str, bool | None] = {}
    for n in liars:
        if n in abstained or n not in reps:
            falls[n] = None  # never voted: nothing to fall
        else:
            falls[n] = reps[n] < reps_clean.get(n, math.inf) and reps[n] < honest_mean
    return {
        "seed": clean.seed,
        "weight_moves": moves,
        "max_move": max(moves.values(), default=0.0),
        "reputations": reps,
        "reputations_without_adversaries": reps_clean,
        "honest_mean_reputation": honest_mean,
        "adversary_falls": falls,
        "abstained": abstained,
        "auc": attacked.test["auc"],
        "auc_without_adversaries": clean.test["auc"],
    }


def run_cases(
    cases: Sequence[Case],
    seeds: Sequence[int],
    *,
    rounds: int,
    alpha: float,
    target: int,
    large_game: str | None,
    validator_game: str | None,
    splits: Splits,
    log: Any,
    compression: Compression | None = None,
    public_screen: bool = DEFAULT_PUBLIC_SCREEN,
) -> dict[str, list[dict[str, Any]]]:
    """Each case against the same seeds without adversaries; ``public_screen``: the round
    terms' option in both runs (default the aggregator's; False: every validator screens)."""
    clean_runs: dict[tuple[int, int], SimResult] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        out[case.key] = []
        for seed in seeds:
            base = SimConfig(
                sites=case.sites,
                rounds=rounds,
                alpha=alpha,
                seed=seed,
                valuation_mode="peers",
                large_game=large_game,
                validator_game=validator_game,
                compression=compression,
                public_screen=public_screen,
                validator_min_class=MIN_CLASS,
            )
            if (case.sites, seed) not in clean_runs:
                clean_runs[case.sites, seed] = _sim.run_method("valuation", base, splits)
                log(f"{case.sites} sites seed {seed} without adversaries done")
            last = list(range(case.sites - case.adversaries, case.sites))
            if case.kind == "abstain":
                committee = tuple(i for i in range(case.sites) if i not in last)
                run = replace(base, validators=committee)
            else:
                run = replace(base, adversaries=adversaries(case, target))
            attacked = _sim.run_method("valuation", run, splits)
            names = [attacked.site_names[i] for i in last]
            row = compare(clean_runs[case.sites, seed], attacked, names)
            out[case.key].append(row)
            log(
                f"{case.key} seed {seed}: max honest weight move {row['max_move']:.3f}, "
                f"adversaries' reputations {[row['reputations'].get(n) for n in names]} vs "
                f"honest mean {row['honest_mean_reputation']:.0f}"
            )
    return out


def timing(
    n_sites: int,
    *,
    rounds: int,
    alpha: float,
    committee: int | None,
    seed: int,
    large_game: str | None,
    validator_game: str | None,
    splits: Splits,
    val_shards: _sim.ValShards = "dirichlet",
    clock: str = "wall",
    compression: Compression | None = None,
    public_screen: bool = DEFAULT_PUBLIC_SCREEN,
) -> dict[str, Any]:
    """Per validator: mean scoring and training seconds per round (``clock``: the ratio's);
    ``public_screen``: the round terms' option (validators skip the free-rider screen, the
    aggregator runs it once a round: its time per round is reported beside)."""
    config = SimConfig(
        sites=n_sites,
        rounds=rounds,
        alpha=alpha,
        min_size=min(50, len(splits.train) // (2 * n_sites)),
        seed=seed,
        valuation_mode="peers",
        validators=None if committee is None else tuple(range(committee)),
        large_game=large_game,
        validator_game=validator_game,
        validation_shards=val_shards,
        compression=compression,
        public_screen=public_screen,
    )
    # One throwaway training first: the process's first train_local pays torch's one-time set-up
    # (measured 8.9 s for site 0 against 0.4-2.4 s for the others), which is not a site's cost.
    train_local(
        federated_state(initial_model(ModelSpec(), seed)),
        splits.train.subset(np.arange(64)),
        spec=ModelSpec(),
        config=TrainConfig(epochs=1, seed=seed),
    )
    load_before = os.getloadavg()
    res = _sim.run_method("valuation", config, splits)
    load_after = os.getloadavg()
    per_site: dict[str, dict[str, float]] = {}
    for name in res.site_names:
        scoring = [r.scoring_seconds[name] for r in res.rounds if name in r.scoring_seconds]
        training = [r.training_seconds[name] for r in res.rounds if name in r.training_seconds]
        scoring_cpu = [
            r.scoring_cpu_seconds[name] for r in res.rounds if name in r.scoring_cpu_seconds
        ]
        training_cpu = [
            r.training_cpu_seconds[name] for r in res.rounds if name in r.training_cpu_seconds
        ]
        if scoring and training:
            means = {
                "scoring_wall": statistics.fmean(scoring),
                "training_wall": statistics.fmean(training),
                "scoring_cpu": statistics.fmean(scoring_cpu),
                "training_cpu": statistics.fmean(training_cpu),
            }
            per_site[name] = {
                **means,
                "scoring": means[f"scoring_{clock}"],
                "training": means[f"training_{clock}"],
                "ratio": means[f"scoring_{clock}"] / means[f"training_{clock}"],
                "ratio_wall": means["scoring_wall"] / means["training_wall"],
                "ratio_cpu": means["scoring_cpu"] / means["training_cpu"],
                # each round's, on the ratio's clock (round 1 is the warm-up)
                "scoring_rounds": scoring_cpu if clock == "cpu" else scoring,
                "training_rounds": training_cpu if clock == "cpu" else training,
            }
    shard_sizes = {
        name: len(shard)
        for name, shard in zip(
            res.site_names,
            _sim.validation_shards(splits.val, config, splits.train),
            strict=True,
        )
    }
    train_sizes = dict(zip(res.site_names, res.site_samples, strict=True))
    methods = sorted({str(r.valuation_method) for r in res.rounds})
    evaluations = [r.valuation_evaluations for r in res.rounds if r.votes]
    scored = [sum(1 for s in r.scores if s > 0) for r in res.rounds if r.votes]
    return {
        "sites": n_sites,
        "rounds": rounds,
        "alpha": alpha,
        "val_shards": val_shards,
        "clock": clock,
        "compression": None if compression is None else compression.method,
        "public_screen": public_screen,
        "screen_seconds": [r.screen_seconds for r in res.rounds if r.votes],
        "screen_cpu_seconds": [r.screen_cpu_seconds for r in res.rounds if r.votes],
        "screened": [r.screened for r in res.rounds if r.votes],
        "round_scores": [r.scores for r in res.rounds],
        "round_reasons": [r.reasons for r in res.rounds],
        "round_weights": [[str(w) for w in r.weights] for r in res.rounds],
        "load_average": [load_before, load_after],
        "validation_images": shard_sizes,
        "training_images": train_sizes,
        "median_ratio": statistics.median([v["ratio"] for v in per_site.values()])
        if per_site
        else math.nan,
        "validators": len(per_site),
        "abstained": sorted({n for r in res.rounds for n in r.abstained}),
        "games": methods,
        "evaluations_per_round": evaluations,
        "updates_paid_per_round": scored,
        "per_site": per_site,
        "max_ratio": max((v["ratio"] for v in per_site.values()), default=math.nan),
        "median_scoring": statistics.median([v["scoring"] for v in per_site.values()])
        if per_site
        else math.nan,
        "median_training": statistics.median([v["training"] for v in per_site.values()])
        if per_site
        else math.nan,
    }


Bar = tuple[str, bool, str]


def bars(results: dict[str, list[dict[str, Any]]], timings: Sequence[dict[str, Any]]) -> list[Bar]:
    out: list[Bar] = []
    for key, rows in results.items():
        if key in CASES and CASES[key].kind == "abstain":
            continue  # a reference (see reference_lines), not an issue-14 bar
        worst = max(rows, key=lambda r: r["max_move"])
        out.append(
            (
                f"{key}: every honest site's weight moves by at most {WEIGHT_BAR}",
                worst["max_move"] <= WEIGHT_BAR,
                f"max {worst['max_move']:.3f} (seed {worst['seed']})",
            )
        )
        verdicts = [v for r in rows for v in r["adversary_falls"].values() if v is not None]
        out.append(
            (
                f"{key}: every adversary's final reputation falls (below its own without the "
                "attack and below the honest validators' mean, every seed)",
                bool(verdicts) and all(verdicts),
                f"{sum(verdicts)}/{len(verdicts)} adversary-seeds fell"
                + (
                    f"; {sum(v is None for r in rows for v in r['adversary_falls'].values())} "
                    "never voted (one-class split)"
                    if any(v is None for r in rows for v in r["adversary_falls"].values())
                    else ""
                ),
            )
        )
    for t in timings:
        if t["sites"] == 10:
            shards = t.get("val_shards", "dirichlet")
            out.append(
                (
                    "10 sites: each site's scoring time per round at most its local training time "
                    f"({t.get('clock', 'wall')} clock, {shards} validation shards"
                    + (f", {t['compression']} updates)" if t.get("compression") else ")"),
                    t["max_ratio"] <= 1.0,
                    f"worst site {t['max_ratio']:.2f}x, median ratio "
                    f"{t.get('median_ratio', math.nan):.2f}x, median scoring "
                    f"{t['median_scoring']:.3f} s vs training {t['median_training']:.3f} s",
                )
            )
    return out


def reference_lines(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What the abstain cases show: the honest weight move with no liar at all."""
    out = []
    for key, rows in results.items():
        if key not in CASES or CASES[key].kind != "abstain":
            continue
        worst = max(rows, key=lambda r: r["max_move"])
        out.append(
            f"{key}: honest weight move when {CASES[key].adversaries} honest validator(s) do not "
            f"vote: max {worst['max_move']:.3f} (seed {worst['seed']}); per seed "
            + ", ".join(f"{r['max_move']:.3f}" for r in rows)
        )
    return out


def report(doc: dict[str, Any]) -> int:
    results, timings = doc["cases"], doc["timing"]
    s = doc["settings"]
    print(
        f"Peer scoring under adversarial validators: seeds {s['seeds']}, {s['rounds']} rounds, "
        f"Dirichlet alpha {s['alpha']}, adversaries' collusion target site {s['target']}, "
        f"public screen {'on' if s.get('public_screen') else 'off'}; "
        f"wall {doc['wall_seconds']:.0f} s\n"
    )
    for key, rows in results.items():
        print(f"{key}:")
        for r in rows:
            moves = " ".join(f"{n[-2:]}:{m:.3f}" for n, m in r["weight_moves"].items())
            reps = " ".join(
                f"{n[-2:]}:{v / 1e6:.3f}"
                + (
                    f"({r['reputations_without_adversaries'][n] / 1e6:.3f})"
                    if n in r["reputations_without_adversaries"]
                    else ""
                )
                for n, v in sorted(r["reputations"].items())
            )
            print(
                f"  seed {r['seed']}: honest weight moves {moves} (max {r['max_move']:.3f}); "
                f"final reputations (without adversaries) {reps}; adversaries fell "
                f"{r['adversary_falls']}; abstained {r['abstained']}; test AUC "
                f"{r['auc']:.3f} vs {r['auc_without_adversaries']:.3f} without"
            )
    for t in timings:
        load = t.get("load_average")
        print(
            f"\nScoring time, {t['sites']} sites ({t['rounds']} round(s), alpha {t['alpha']:g}, "
            f"{t.get('val_shards', 'dirichlet')} validation shards, {_updates(t)}"
            f"{t.get('clock', 'wall')} "
            f"clock, {t['validators']} validators timed, games {t['games']}, coalition "
            f"evaluations per round (most of any validator) {t.get('evaluations_per_round')}, "
            f"updates paid per round {t.get('updates_paid_per_round')}, abstained "
            f"{len(t['abstained'])}): median per site {t['median_scoring']:.3f} s scoring vs "
            f"{t['median_training']:.3f} s training; worst ratio {t['max_ratio']:.2f}x, median "
            f"ratio {t.get('median_ratio', math.nan):.2f}x"
            + (f"; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after" if load else "")
        )
        if t.get("public_screen"):
            cpu = ", ".join(f"{1000 * x:.1f}" for x in t["screen_cpu_seconds"])
            wall = ", ".join(f"{1000 * x:.1f}" for x in t["screen_seconds"])
            print(
                f"  public screen (the aggregator's, once a round): CPU {cpu} ms, wall {wall} "
                f"ms; marked {t['screened']}"
            )
        val_sizes, train_sizes = t.get("validation_images", {}), t.get("training_images", {})
        for name, v in t["per_site"].items():
            both = (
                f" [wall {v['ratio_wall']:.2f}x, cpu {v['ratio_cpu']:.2f}x]"
                if "ratio_cpu" in v
                else ""
            )
            sizes = (
                f", {val_sizes[name]} validation / {train_sizes[name]} training images"
                if name in val_sizes and name in train_sizes
                else ""
            )
            by_round = (
                "; by round: scoring "
                + ", ".join(f"{1000 * x:.1f}" for x in v["scoring_rounds"])
                + " ms, training "
                + ", ".join(f"{1000 * x:.1f}" for x in v["training_rounds"])
                + " ms"
                if len(v.get("scoring_rounds", ())) > 1
                else ""
            )
            print(
                f"  {name}: scoring {v['scoring']:.3f} s, training {v['training']:.3f} s "
                f"({v['ratio']:.2f}x){both}{sizes}{by_round}"
            )
    found = bars(results, timings)
    refs = reference_lines(results)
    if refs:
        print("\nReference (not bars): the same runs without the silent validators' votes")
        for line in refs:
            print(f"  {line}")
    print("\nBars (issue 14):")
    for name, met, figures in found:
        print(f"  {'MET ' if met else 'MISS'}  {name}: {figures}")
    missed = sum(1 for _, met, _ in found if not met)
    print(f"  {len(found) - missed} met, {missed} missed")
    print(f"\nCommand: `.venv/bin/python scripts/bench/peer_validators.py {' '.join(doc['argv'])}`")
    return 1 if missed else 0


def _updates(t: dict[str, Any]) -> str:
    """The report's words for a timing run's codec (none for dense updates)."""
    return f"{t['compression']} updates, " if t.get("compression") else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="a count N or a list 0,3,7-9")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated, of {', '.join(CASES)}",
    )
    parser.add_argument("--target", type=int, default=0, help="the colluders' honest target")
    parser.add_argument("--timing-sites", default="10,100")
    parser.add_argument("--timing-rounds", type=int, default=2)
    parser.add_argument("--timing-committee", type=int, default=2)
    parser.add_argument(
        "--large-rounds", type=int, default=1, help="rounds of the timing runs above 10 sites"
    )
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument(
        "--large-game",
        choices=("linear_shapley", "none"),
        default=SimConfig.large_game or "none",
        help="the game above 10 screened updates (default: the aggregator's)",
    )
    parser.add_argument(
        "--validator-game",
        choices=(*VALIDATOR_GAMES, "none"),
        default=SimConfig.validator_game or "none",
        help="the game validators play at every size (the round terms' validator_game; "
        "default: the aggregator's; none: the round's method)",
    )
    parser.add_argument(
        "--val-shards",
        choices=_sim.VAL_SHARDS,
        default="dirichlet",
        help="how the val split is shared out among the validators (see the docstring)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the clock of the timing bar (both are printed)",
    )
    parser.add_argument(
        "--compression", default="", help="every sent update through this codec (topk8)"
    )
    parser.add_argument(
        "--public-screen",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_PUBLIC_SCREEN,
        help="the round terms' valuation.public_screen, in the cases' and the timing runs: "
        "validators skip the free-rider screen, the aggregator runs it once a round (its time "
        "is printed beside); default: the aggregator's (on since session 57); "
        "--no-public-screen: every validator screens",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".run" / "bench" / "peer_validators.json"
    )
    parser.add_argument("--render", type=Path, help="print a saved run's report again")
    args = parser.parse_args(argv)
    if args.render:
        return report(json.loads(args.render.read_text(encoding="utf-8")))
    cases = []
    for key in (k for k in args.cases.split(",") if k):  # --cases "": timing only
        if key not in CASES:
            parser.error(f"unknown case {key!r}; known: {', '.join(CASES)}")
        cases.append(CASES[key])
    if any(not 0 <= args.target < c.sites - c.adversaries for c in cases):
        parser.error("--target must be an honest site of every case")
    torch.set_num_threads(args.threads)
    large_game = None if args.large_game == "none" else args.large_game
    validator_game = None if args.validator_game == "none" else args.validator_game
    seeds = parse_seeds(args.seeds)
    if not seeds:
        parser.error("--seeds gives no seed (a count N runs seeds 0..N-1)")
    try:
        compression = Compression(method=args.compression) if args.compression else None
    except ConfigError as exc:
        parser.error(f"--compression: {exc}")
    splits = load_bundled()
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    results = run_cases(
        cases,
        seeds,
        rounds=args.rounds,
        alpha=args.alpha,
        target=args.target,
        large_game=large_game,
        validator_game=validator_game,
        splits=splits,
        log=log,
        compression=compression,
        public_screen=args.public_screen,
    )
    timings = []
    if not args.no_timing:
        for n in (int(x) for x in args.timing_sites.split(",") if x):
            small = n <= 10
            timings.append(
                timing(
                    n,
                    rounds=args.timing_rounds if small else args.large_rounds,
                    alpha=args.alpha if small else 100.0,
                    committee=None if small else args.timing_committee,
                    seed=seeds[0],
                    large_game=large_game,
                    validator_game=validator_game,
                    splits=splits,
                    val_shards=args.val_shards,
                    clock=args.clock,
                    compression=compression,
                    public_screen=args.public_screen,
                )
            )
            log(f"timing at {n} sites done")
    doc = {
        "benchmark": "peer_validators",
        "argv": list(sys.argv[1:] if argv is None else argv),
        "settings": {
            "seeds": seeds,
            "rounds": args.rounds,
            "alpha": args.alpha,
            "target": args.target,
            "large_game": large_game,
            "validator_game": validator_game,
            "val_shards": args.val_shards,
            "clock": args.clock,
            "compression": args.compression or None,
            "public_screen": args.public_screen,
            "threads": args.threads,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "provenance": _sim.provenance(),
        "wall_seconds": time.perf_counter() - started,
        "cases": results,
        "timing": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float), encoding="utf-8")
    code = report(doc)
    print(f"JSON: {args.out}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
