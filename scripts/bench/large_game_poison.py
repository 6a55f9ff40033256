#!/usr/bin/env python3
"""How the large games value poisoned updates next to honest ones (issue 18): the game alone.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/large_game_poison.py [--sites 100]
        [--games budget_shapley,linear_shapley] [--seed 1] [--label-skew ALPHA [--warm-rounds K]]
        [--mc-cycles K] [--screens [--size-norm-z T]]

``--sites - 3`` honest updates (``valuation_bench.py``'s sites: five real one-epoch SmallCNN
updates from the initial model and seeded noisy variations), one sign-flipped, one x10 and one x40
of real ones (300 samples each), valued by each game of ``--games``
(``fedtrail.valuation.LARGE_GAMES``, or ``mc_shapley``: the Monte-Carlo game the default played
before) on the same coalition utility (metric ``balanced_loss``), without the screens that would
stop the x40 first: what the game itself makes of an oversized update that points well, which may
wreck the small coalitions it joins. Prints each poisoner's value, rank and share of the positive
values (what a round scored in proportion to the values would pay it, before any screen), the
honest updates with a value <= 0, the evaluations and seconds, and, when ``budget_shapley`` (or
``budget_shapley2``, ``budget_shapley3``) and ``mc_shapley`` are played, Spearman between them
over the honest updates
and exits 1 where a budget game pays a poisoner (value > 0) that Monte-Carlo values at or below 0
(the property it is to keep).

``--label-skew ALPHA`` (issue 18, the 100-site check with label skew): instead of the synthetic
sites, the bundled training split is cut into ``--sites`` Dirichlet(ALPHA) label-skewed shards
(``partition_dirichlet``, seed ``--seed``, at least 5 images each: 2,428 images over 100 sites) and
every site trains one local epoch on its own shard; the last five are the bad ones: ``noisy`` (its
shard with 40% of its labels flipped), ``flip`` (its update sign-flipped), ``x10`` and ``x40``
(scaled), ``zero`` (a zero delta: a free-rider claiming its shard's size). ``--warm-rounds K``
values them at the global model after K FedAvg rounds of the honest sites (default 0: the initial
model, where a longer step helps). ``--screens`` also scores the round as the product's round 1
does (``value_round`` with the screens, the default combiner, ``--screen-game``, default
``budget_shapley``) and prints each bad update's reason and score.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedtrail.ml.aggregation import apply_delta  # noqa: E402
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled, partition_dirichlet  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.simulation.faults import label_noise, scale_update, sign_flip  # noqa: E402
from fedtrail.valuation import (  # noqa: E402
    LARGE_GAMES,
    Candidate,
    CoalitionUtility,
    GameValues,
    ValuationContext,
    default_combiner,
    mc_shapley,
    value_round,
)
from scripts.bench.valuation_bench import (  # noqa: E402
    _spearman,
    _synthetic_sites,
    real_updates,
)

POISONERS = ("flip", "x10", "x40")
SKEWED_POISONERS = ("noisy", "flip", "x10", "x40", "zero")
"""The bad sites of ``--label-skew``, the last five shards in this order."""

Delta = dict[str, torch.Tensor]


def _skewed_candidates(
    splits: Splits,
    spec: ModelSpec,
    state: Delta,
    n_sites: int,
    alpha: float,
    seed: int,
    warm_rounds: int,
) -> tuple[Delta, list[Candidate]]:
    """``n_sites`` Dirichlet(alpha) shards of the training split, each trained one epoch; the
    global model after ``warm_rounds`` FedAvg rounds of the honest shards, and the candidates
    at it (the last five the bad ones of :data:`SKEWED_POISONERS`)."""
    shards = [
        splits.train.subset(p)
        for p in partition_dirichlet(splits.train.labels, n_sites, alpha, seed=seed, min_size=5)
    ]
    honest = len(shards) - len(SKEWED_POISONERS)

    def train(i: int, data: ImageDataset, at: Delta) -> Delta:
        return train_local(at, data, spec=spec, config=TrainConfig(epochs=1, seed=i)).delta

    for r in range(warm_rounds):
        deltas = [train(1000 * (r + 1) + i, shards[i], state) for i in range(honest)]
        sizes = [len(shards[i]) for i in range(honest)]
        mean = {
            k: sum(n * d[k].double() for n, d in zip(sizes, deltas, strict=True)) / sum(sizes)
            for k in deltas[0]
        }
        state = apply_delta(state, {k: v.float() for k, v in mean.items()})
    cands = [
        Candidate(f"site{i:02d}", len(shards[i]), train(i, shards[i], state)) for i in range(honest)
    ]
    noisy = label_noise(shards[honest], 0.4, seed=seed)
    cands.append(Candidate("noisy", len(noisy), train(honest, noisy, state)))
    cands.append(
        Candidate(
            "flip", len(shards[honest + 1]), sign_flip(train(honest + 1, shards[honest + 1], state))
        )
    )
    for j, (name, factor) in enumerate((("x10", 10.0), ("x40", 40.0)), start=honest + 2):
        cands.append(
            Candidate(name, len(shards[j]), scale_update(train(j, shards[j], state), factor))
        )
    zero = {k: torch.zeros_like(v) for k, v in cands[0].delta.items()}
    cands.append(Candidate("zero", len(shards[-1]), zero))
    return state, cands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--games", default="budget_shapley,linear_shapley")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--label-skew",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="Dirichlet(ALPHA) label-skewed shards of the training split, each trained one "
        "epoch, the last five bad (noisy labels, sign-flip, x10, x40, zero); default 0: the "
        "synthetic sites",
    )
    parser.add_argument(
        "--warm-rounds",
        type=int,
        default=0,
        help="with --label-skew: value at the global model after K FedAvg rounds of the honest "
        "sites (default 0: the initial model)",
    )
    parser.add_argument(
        "--mc-cycles",
        type=int,
        default=0,
        help="mc_shapley's max_cycles (its min_cycles at most this; default 0: the game's own, "
        "up to 10): at 100 label-skewed sites a cycle is thousands of coalition models",
    )
    parser.add_argument(
        "--screens",
        action="store_true",
        help="also score the round as the product does: value_round with the screens, the "
        "aggregator's default combiner, no history (round 1) and large game budget_shapley; "
        "prints each poisoner's reason and score",
    )
    parser.add_argument(
        "--size-norm-z",
        type=float,
        default=None,
        metavar="T",
        help="with --screens: the combiner's size_norm_z (the second norm screen, on the norm "
        "over its claimed count's uncapped allowance; default: the combiner's, 0: off)",
    )
    parser.add_argument(
        "--screen-game",
        default="budget_shapley",
        choices=tuple(LARGE_GAMES),
        help="with --screens: the large game value_round plays (default budget_shapley)",
    )
    args = parser.parse_args()
    if args.mc_cycles < 0:
        parser.error("--mc-cycles must be >= 0")
    if args.warm_rounds and not args.label_skew:
        parser.error("--warm-rounds needs --label-skew")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    splits = load_bundled()
    spec = ModelSpec()
    global_state = federated_state(initial_model(spec, seed=0))
    bad: tuple[str, ...]
    if args.label_skew:
        bad = SKEWED_POISONERS
        start = time.perf_counter()
        global_state, cands = _skewed_candidates(
            splits, spec, global_state, args.sites, args.label_skew, args.seed, args.warm_rounds
        )
        print(
            f"label skew: Dirichlet alpha {args.label_skew} shards of the training split "
            f"(sizes {min(c.num_samples for c in cands)}-{max(c.num_samples for c in cands)}), "
            f"{args.warm_rounds} warm FedAvg round(s), "
            f"trained in {time.perf_counter() - start:.1f} s"
        )
    else:
        bad = POISONERS
        real = real_updates(splits, spec, global_state)
        sites = _synthetic_sites(real, args.sites - 3)
        cands = [Candidate(f"site{i:02d}", ns, d) for i, (ns, d) in enumerate(sites)]
        cands.append(Candidate("flip", 300, sign_flip(real[0])))
        cands.append(Candidate("x10", 300, scale_update(real[1], 10.0)))
        cands.append(Candidate("x40", 300, scale_update(real[2], 40.0)))
    ctx = ValuationContext(
        global_state=global_state,
        spec=spec,
        candidates=cands,
        validation=splits.val,
        metric="balanced_loss",
    )
    print(f"\n{args.sites} sites, seed {args.seed}, the game alone (no screens)")
    print(f"| game | evaluations | seconds | {' | '.join(bad)} | honest <= 0 |")
    print(f"|---|---:|---:|{'---|' * len(bad)}---:|")
    played: dict[str, dict[str, float]] = {}
    for name in args.games.split(","):
        utility = CoalitionUtility(ctx)
        start = time.perf_counter()
        game: GameValues
        if name == "mc_shapley":
            cycles = (
                {"min_cycles": min(2, args.mc_cycles), "max_cycles": args.mc_cycles}
                if args.mc_cycles
                else {}
            )
            game = mc_shapley(utility.players, utility, seed=args.seed, **cycles)
        else:
            game = LARGE_GAMES[name](utility, args.seed)
        seconds = time.perf_counter() - start
        v = game.values
        order = sorted(v, key=lambda p: v[p], reverse=True)
        paid = sum(x for x in v.values() if x > 0)
        cells = " | ".join(
            f"{v[p]:+.6f} (rank {order.index(p) + 1}, {max(v[p], 0.0) / paid:.1%})" for p in bad
        )
        honest = [x for p, x in v.items() if p not in bad]
        low = sum(x <= 0 for x in honest)
        print(f"| {name} | {game.evaluations} | {seconds:.1f} | {cells} | {low} of {len(honest)} |")
        played[name] = v
    if args.screens:
        combiner = default_combiner(True)
        if args.size_norm_z is not None:
            combiner = replace(combiner, size_norm_z=args.size_norm_z)
        start = time.perf_counter()
        report = value_round(
            global_state=global_state,
            spec=spec,
            candidates=cands,
            validation=splits.val,
            method="mc_shapley",
            metric="balanced_loss",
            seed=args.seed,
            combiner=combiner,
            large_game=args.screen_game,
        )
        print(
            f"\nvalue_round with the screens (round 1, large game {args.screen_game}, size_norm_z "
            f"{combiner.size_norm_z:g}): "
            f"{report.method}, {report.evaluations} evaluations, "
            f"{time.perf_counter() - start:.1f} s"
        )
        scores = sorted((v.score for v in report.sites), reverse=True)
        for v in report.sites:
            if v.site in bad:
                z = "n/a" if v.norm_z is None else f"{v.norm_z:.1f}"
                print(
                    f"  {v.site}: {v.reason.name}, score {v.score} "
                    f"(rank {scores.index(v.score) + 1}), norm robust z {z}"
                )
        zeroed = sum(v.score == 0 for v in report.sites if v.site not in bad)
        print(f"  honest updates scored 0: {zeroed} of {len(report.sites) - len(bad)}")
    print(f"load average after: {os.getloadavg()}")
    failed = False
    for name in ("budget_shapley", "budget_shapley2", "budget_shapley3"):
        if name not in played or "mc_shapley" not in played:
            continue
        budget, mc = played[name], played["mc_shapley"]
        honest_names = [p for p in mc if p not in bad]
        rho = _spearman([budget[p] for p in honest_names], [mc[p] for p in honest_names])
        print(f"{name} vs mc_shapley, Spearman over the {len(honest_names)} honest: {rho:.3f}")
        differ = [p for p in bad if (budget[p] > 0) != (mc[p] > 0)]
        print(
            f"{name} vs mc_shapley, the poisoners' signs (> 0 or not): "
            + (f"differ for {', '.join(differ)}" if differ else "the same")
        )
        paid = [p for p in bad if budget[p] > 0 >= mc[p]]
        print(
            f"{name} pays a poisoner Monte-Carlo does not: "
            + (f"YES, {', '.join(paid)}" if paid else "no")
        )
        failed = failed or bool(paid)
    if failed:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
