#!/usr/bin/env python3
"""Attack a141 (h-303, session 62): what ``budget_shapley``'s interpolation between sampled
coalition sizes makes of an update that is good alone and bad in any coalition (the game alone).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/attacks/a141_budget_sizes.py [--players 75]
        [--variant x10] [--warm 0] [--seed 1] [--game budget_shapley] [--per-size 2]

A player's Shapley value is the mean over the sizes ``m = 0 .. n - 1`` of its mean marginal at
that size. In a FedAvg coalition model an update weighs about ``1 / (m + 1)`` of the coalition
mean, so marginals fall off like ``1 / (m + 1)``; the stratified game samples a few sizes (0,
37, 74 at 75 players) and interpolates linearly between them, so the size-0 marginal (the update
alone) stands for the sizes up to 36 with weights summing to 19/75, where in the Shapley value
it weighs 1/75. This script plays the product's game (``LARGE_GAMES["budget_shapley"]`` on
``CoalitionUtility``, metric ``balanced_loss``) on ``--players - 1`` honest synthetic sites
(``valuation_bench.py``'s builder) plus one attacker variant (as ``a141_budget_regimes.py``; also
``mixB``: a real step plus ``B`` times a one-epoch step on 300 images with every label flipped),
then measures the attacker's marginal at every size (``--per-size`` seeded random coalitions of
the others each) and prints the profile at a few sizes, their plain mean (the Shapley value,
stratified over every size) and the budget game's value. Exits 0 always: a measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedtrail.ml.aggregation import apply_delta  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec, federated_state, initial_model  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.simulation.faults import (  # noqa: E402
    gaussian_update,
    label_noise,
    scale_update,
    sign_flip,
)
from fedtrail.valuation import (  # noqa: E402
    LARGE_GAMES,
    Candidate,
    CoalitionUtility,
    ValuationContext,
)
from scripts.bench.valuation_bench import _synthetic_sites, real_updates  # noqa: E402


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
    parser.add_argument("--variant", default="x10")
    parser.add_argument("--warm", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--game",
        default="budget_shapley",
        choices=("budget_shapley", "budget_shapley2"),
        help="the large game attacked (budget_shapley2: h-308's fix)",
    )
    parser.add_argument("--per-size", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    splits = load_bundled()
    spec = ModelSpec()
    state = federated_state(initial_model(spec, seed=0))
    for _ in range(args.warm):
        ups = real_updates(splits, spec, state)
        state = apply_delta(state, {k: sum(u[k] for u in ups) / len(ups) for k in ups[0]})
    real = real_updates(splits, spec, state)
    synth = _synthetic_sites(real, args.players - 1)
    honest = [Candidate(f"h{i:02d}", ns, d) for i, (ns, d) in enumerate(synth)]
    name = args.variant
    if name.startswith("x"):
        delta = scale_update(real[1], float(name[1:]))
    elif name == "flip":
        delta = sign_flip(real[0])
    elif name == "noisy" or name.startswith("mix"):
        rng0 = np.random.default_rng(0)
        pool = set(rng0.choice(len(splits.train), 1500, False).tolist())
        outside = np.array([i for i in range(len(splits.train)) if i not in pool])
        rate = 0.4 if name == "noisy" else 1.0
        data = label_noise(splits.train.subset(outside[:300]), rate, seed=7)
        delta = train_local(state, data, spec=spec, config=TrainConfig(epochs=1, seed=99)).delta
        if name.startswith("mix"):  # a real step plus B times a step on all labels flipped
            delta = {k: real[1][k] + float(name[3:]) * v for k, v in delta.items()}
    elif name.startswith("noise"):
        delta = _noisy(real[1], float(name[5:]))
    elif name == "honest":
        delta = real[1]
    else:
        raise SystemExit(f"unknown variant {name}")
    att = Candidate("h50a", 300, delta)
    cands = sorted([*honest, att], key=lambda c: c.site)
    ctx = ValuationContext(
        global_state=state,
        spec=spec,
        candidates=cands,
        validation=splits.val,
        metric="balanced_loss",
    )
    utility = CoalitionUtility(ctx)
    start = time.perf_counter()
    game = LARGE_GAMES[args.game](utility, args.seed)
    budget = game.values["h50a"]
    others = [c.site for c in honest]
    rng = np.random.default_rng(args.seed)
    n = args.players
    profile = []
    for m in range(n):
        draws = []
        for _ in range(args.per_size):
            s = frozenset(rng.choice(others, m, replace=False).tolist()) if m else frozenset()
            draws.append(utility(s | {"h50a"}) - utility(s))
        profile.append(float(np.mean(draws)))
    shapley = float(np.mean(profile))
    show = sorted({0, 1, 2, 4, 8, n // 4, n // 2, n - 1})
    print(
        f"{n} players ({n - 1} honest synthetic + {name}), warm {args.warm}, seed {args.seed}, "
        f"{time.perf_counter() - start:.0f} s"
    )
    print("mean marginal by coalition size: " + ", ".join(f"{m}: {profile[m]:+.6f}" for m in show))
    print(
        f"attacker: alone {profile[0]:+.6f}; Shapley (every size, {args.per_size} coalitions "
        f"each) {shapley:+.6f}; {args.game} {budget:+.6f} ({game.evaluations} evaluations)"
    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
