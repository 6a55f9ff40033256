#!/usr/bin/env python3
"""Attack a141 (h-303, session 62): ``budget_shapley``'s regime boundaries, the game alone.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/attacks/a141_budget_regimes.py [--players 75]
        [--warm 0] [--seed 1] [--game budget_shapley] [--variants x3,x10,x40,flip,noisy,copy]
        [--screens]

``budget_shapley`` changes what it estimates with the number of screened updates: Monte-Carlo up
to 12, stratified by coalition size from 13 to 75 (at 61-75 the sizes 0, ``(n - 1) / 2`` and
``n - 1``), and from 76 on each update alone (``v({i}) - v({})``, no coalition at all). A site
(or colluders) that adds one Sybil to a round of ``--players`` updates, or withholds one, moves
the round across the boundary. For each attacker variant this plays the product's game
(``fedtrail.valuation.LARGE_GAMES["budget_shapley"]`` on ``CoalitionUtility``, metric
``balanced_loss``) with ``--players - 1`` honest synthetic sites (``valuation_bench.py``'s site
builder) plus the attacker (``n = --players``), and again with one more honest-looking Sybil
(``n = --players + 1``), and prints the attacker's value, rank and share of the positive values
in both, and its marginal in the full coalition of the larger round (``v(N) - v(N - a)``: what
its update does to the model the round builds). The variants: ``xK`` a real update scaled by K,
``flip`` a sign-flipped one, ``noisy`` one trained on 40% flipped labels, ``copy`` a second copy
of honest site h00's update (x1.02 plus 2% of another real update: not white noise), for which the
row gives the pair's summed value, and h00's value in the same rounds with another honest site
(``s01``) in the copy's place.

``noiseB`` a real update plus Gaussian noise of ``B`` times each tensor's RMS.

``--screens``: instead, each variant's round at both sizes through ``value_round`` as a later
round with a standing (the screens, ``HISTORY_COMBINER``, free-rider references of
``valuation_bench.earlier_references``, all records 0): the attacker's reason, score and weight
share (``exact_shares``) against its FedAvg share; for ``copy`` also whether the default
``DuplicateRule`` (which the service applies before ``value_round``) marks it.

``--rounds K`` (with ``--screens``): the same round valued K times in a row, each with the previous
one's accumulated values as its standing and the seed plus the round index (a persistent
attacker over K rounds; ``others below``: the sites scored lower than it).

``--warm K``: the global model after K FedAvg rounds of the five real updates (default 0: the
initial model, where a longer step helps). Exits 0 always: a measurement (README, *Trust model*,
the a141 entry).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedtrail.ml.aggregation import apply_delta  # noqa: E402
from fedtrail.ml.datasets import ImageDataset, load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.protocol.duplicates import Entry, find_duplicates  # noqa: E402
from fedtrail.protocol.terms import DuplicateRule  # noqa: E402
from fedtrail.protocol.weights import exact_shares  # noqa: E402
from fedtrail.simulation.faults import (  # noqa: E402
    gaussian_update,
    label_noise,
    scale_update,
    sign_flip,
)
from fedtrail.valuation import (  # noqa: E402
    HISTORY_COMBINER,
    LARGE_GAMES,
    Candidate,
    CoalitionUtility,
    History,
    ValuationContext,
    value_round,
)
from fedtrail.valuation.freeride import duplicate_residual_z  # noqa: E402
from scripts.bench.valuation_bench import (  # noqa: E402
    _synthetic_sites,
    earlier_references,
    real_updates,
)

Delta = dict[str, torch.Tensor]


def _noisy(delta: dict[str, torch.Tensor], b: float) -> dict[str, torch.Tensor]:
    """``delta`` plus Gaussian noise of ``b`` times each tensor's RMS (the synthetic sites carry
    0.5): a real step with a component that helps no coalition."""
    noise = gaussian_update(delta, 1.0, seed=4242)
    return {
        k: v + noise[k] * (b * float(v.double().square().mean().sqrt())) for k, v in delta.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=75)
    parser.add_argument("--warm", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--game",
        default="budget_shapley",
        choices=("budget_shapley", "budget_shapley2", "budget_shapley3"),
        help="the large game attacked (budget_shapley2: h-308's fix)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--screens: the same round valued this many times in a row, each with the "
        "previous one's accumulated values (seed + round)",
    )
    parser.add_argument("--variants", default="x3,x10,x40,flip,noisy,copy")
    parser.add_argument(
        "--screens",
        action="store_true",
        help="instead of the game alone: value_round as a later round with a standing (the "
        "screens, HISTORY_COMBINER, free-rider references, budget_shapley) at both sizes; "
        "prints the attacker's reason, score and weight share against its FedAvg share",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    splits = load_bundled()
    spec = ModelSpec()
    state = federated_state(initial_model(spec, seed=0))
    for _ in range(args.warm):
        ups = real_updates(splits, spec, state)
        mean = {k: sum(u[k] for u in ups) / len(ups) for k in ups[0]}
        state = apply_delta(state, mean)
    real = real_updates(splits, spec, state)
    synth = _synthetic_sites(real, args.players + 1)  # players - 1 honest + two Sybils
    honest = [Candidate(f"h{i:02d}", ns, d) for i, (ns, d) in enumerate(synth[:-2])]
    sybil = Candidate("s00", synth[-2][0], synth[-2][1])
    other = Candidate("s01", synth[-1][0], synth[-1][1])
    rng = np.random.default_rng(0)
    pool = set(rng.choice(len(splits.train), 1500, False).tolist())
    outside = np.array([i for i in range(len(splits.train)) if i not in pool])
    own = splits.train.subset(outside[:300])

    def variant(name: str) -> Delta:
        if name.startswith("x"):
            return scale_update(real[1], float(name[1:]))
        if name.startswith("noise"):
            return _noisy(real[1], float(name[5:]))
        if name == "flip":
            return sign_flip(real[0])
        if name == "noisy":
            data = label_noise(own, 0.4, seed=7)
            return train_local(state, data, spec=spec, config=TrainConfig(epochs=1, seed=99)).delta
        if name == "copy":
            return {k: 1.02 * v + 0.02 * real[2][k] for k, v in honest[0].delta.items()}
        raise SystemExit(f"unknown variant {name}")

    game = LARGE_GAMES[args.game]

    def play(cands: list[Candidate]) -> tuple[dict[str, float], int, CoalitionUtility]:
        ctx = ValuationContext(
            global_state=state,
            spec=spec,
            candidates=sorted(cands, key=lambda c: c.site),
            validation=splits.val,
            metric="balanced_loss",
        )
        utility = CoalitionUtility(ctx)
        g = game(utility, args.seed)
        return g.values, g.evaluations, utility

    def cell(values: dict[str, float], who: list[str]) -> str:
        v = sum(values[p] for p in who)
        order = sorted(values, key=lambda p: values[p], reverse=True)
        paid = sum(x for x in values.values() if x > 0)
        return f"{v:+.6f} (rank {order.index(who[0]) + 1}/{len(values)}, {max(v, 0.0) / paid:.1%})"

    n = args.players
    if args.screens:
        return _screens(args, state, splits.val, spec, honest, sybil, variant)
    print(
        f"{n - 1} honest synthetic sites + attacker (n = {n}) against the same + one Sybil "
        f"(n = {n + 1}); warm rounds {args.warm}, seed {args.seed}, {args.game}, balanced_loss"
    )
    head = f"| variant | n = {n} | n = {n + 1} | marginal in N ({n + 1}) | h00, n = {n} / {n + 1} |"
    print(head)
    print("|---|---:|---:|---:|---:|")
    start = time.perf_counter()
    base_small = base_large = None
    for name in args.variants.split(","):
        att = Candidate("h50a", 300, variant(name))
        small, e1, _ = play([*honest, att])
        large, e2, utility = play([*honest, att, sybil])
        full = frozenset(utility.players)
        marginal = utility(full) - utility(full - {"h50a"})
        who = ["h50a", "h00"] if name == "copy" else ["h50a"]
        if name == "copy":
            if base_small is None:
                base_small, _, _ = play([*honest, other])
                base_large, _, _ = play([*honest, other, sybil])
            h00 = f"{base_small['h00']:+.6f} / {base_large['h00']:+.6f}"
        else:
            h00 = ""
        print(
            f"| {name} | {cell(small, who)} | {cell(large, who)} | {marginal:+.6f} | {h00} |",
            flush=True,
        )
        print(f"  ({e1} + {e2} evaluations, {time.perf_counter() - start:.0f} s)", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return 0


def _screens(
    args: argparse.Namespace,
    state: Delta,
    validation: ImageDataset,
    spec: ModelSpec,
    honest: list[Candidate],
    sybil: Candidate,
    variant: Callable[[str], Delta],
) -> int:
    """Each variant's round valued by ``value_round`` as a later round with a standing."""
    print(
        f"value_round, a later round with a standing (all records 0), seed {args.seed}, "
        f"large game {args.game}"
    )
    print("| variant | n | round | reason | score | others below | weight share | FedAvg share |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    start = time.perf_counter()
    for name in args.variants.split(","):
        att = Candidate("h50a", 300, variant(name))
        if name == "copy":  # the aggregator's duplicate screen (value_round leaves it out)
            pair = [honest[0], att]
            found = find_duplicates(
                [Entry(c.site, i + 1, str(i), c.delta) for i, c in enumerate(pair)],
                DuplicateRule(),
                whiteness=duplicate_residual_z,
            )
            print(f"  copy: the default duplicate rule marks {found or 'nothing'}")
        for cands in ([*honest, att], [*honest, att, sybil]):
            cands = sorted(cands, key=lambda c: c.site)
            refs = earlier_references([(c.num_samples, dict(c.delta)) for c in cands])
            accumulated: dict[str, float] = {c.site: 0.0 for c in cands}
            for r in range(args.rounds):
                history = History(accumulated=accumulated, valued_rounds=1 + r, references=refs)
                report = value_round(
                    global_state=state,
                    spec=spec,
                    candidates=cands,
                    validation=validation,
                    method="mc_shapley",
                    metric="balanced_loss",
                    seed=args.seed + r,
                    combiner=HISTORY_COMBINER,
                    history=history,
                    large_game=args.game,
                )
                accumulated = dict(report.accumulated or {})
                counts = [c.num_samples for c in cands]
                scores = [v.score for v in report.sites]
                shares = exact_shares(counts, scores)
                i = [c.site for c in cands].index("h50a")
                v = report.sites[i]
                below = sum(x < v.score for j, x in enumerate(scores) if j != i)
                print(
                    f"| {name} | {len(cands)} | {r + 1} | {v.reason.name} | {v.score} | {below} "
                    f"| {float(shares[i]):.4f} | {counts[i] / sum(counts):.4f} |",
                    flush=True,
                )
    print(f"({time.perf_counter() - start:.0f} s) load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
