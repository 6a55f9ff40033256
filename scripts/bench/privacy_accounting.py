"""On-chain privacy accounting (issue 16): the chain's total under the ``summed`` and the
``composed`` rule for one site, with the product's accountant alone (no training, no chain).

A site of ``--images`` training images plans each round's DP-SGD as the node does
(:func:`fedtrail.ml.privacy.plan_privacy` at ``--noise``, ``--batch`` expected Poisson batch,
one epoch, delta ``--delta``) and declares each round's spend as the node does
(:func:`fedtrail.ml.privacy.declared_micro`, the function ``audit verify`` recomputes it with).
Printed per rule: the chain's total after ``--rounds`` rounds next to the RDP-composed epsilon
of the same updates, and how many rounds fit a budget of ``--budget`` (the contract refuses a
reveal past it; the node skips the round before training).

Targets (exit 1 when missed): under ``composed`` the chain's total after every round is the
composed epsilon rounded up to a micro-epsilon (within the 1 micro-epsilon a round the contract's
positive spend may add); the composed rule fits at least ``--min-ratio`` times the rounds of the
summed rule under the budget.

    .venv/bin/python scripts/bench/privacy_accounting.py --images 486 --batch 32 --noise 1.0
"""

from __future__ import annotations

import argparse
import math
import sys

from fedtrail.ml.privacy import DpSettings, declared_micro, epsilon_composed, plan_privacy
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol.privacy import COMPOSED, SUMMED, DpParams, from_micro, to_micro


def totals(params: DpParams, rounds: int) -> list[int]:
    """The chain's total (micro-epsilon) after each of ``rounds`` identical updates."""
    total, history, out = 0, [], []
    for _ in range(rounds):
        total += declared_micro(params, history, total)
        history.append(params)
        out.append(total)
    return out


def rounds_within(params: DpParams, budget_micro: int, limit: int = 10_000) -> int:
    """How many rounds the node trains before the next would pass the budget."""
    total, history = 0, []
    for n in range(limit):
        spend = declared_micro(params, history, total)
        if total + spend > budget_micro:
            return n
        total += spend
        history.append(params)
    return limit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=486)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--budget", type=float, default=8.0)
    ap.add_argument("--min-ratio", type=float, default=3.0)
    args = ap.parse_args(argv)
    ok = True
    plans = {
        rule: plan_privacy(
            DpSettings(noise_multiplier=args.noise, batch_size=args.batch, accounting=rule),
            args.images,
            TrainConfig(epochs=1),
            args.delta,
        )
        for rule in (SUMMED, COMPOSED)
    }
    p = plans[COMPOSED]
    print(
        f"{args.images} images, expected batch {args.batch} (q {p.sample_rate:.4f}, "
        f"{p.steps} steps a round), noise {args.noise:g}, delta {args.delta:g}"
    )
    fits = {}
    for rule, params in plans.items():
        chain = totals(params, args.rounds)
        composed = [epsilon_composed([params] * (i + 1)) for i in range(args.rounds)]
        fits[rule] = rounds_within(params, to_micro(args.budget))
        print(
            f"{rule:>8}: on-chain total after {args.rounds} rounds {from_micro(chain[-1]):.4f}, "
            f"RDP-composed {composed[-1]:.4f}; rounds within budget {args.budget:g}: "
            f"{fits[rule]}"
        )
        if rule == COMPOSED:
            for i, (got, eps) in enumerate(zip(chain, composed, strict=True)):
                want = to_micro(eps)
                if not want <= got <= want + i + 1:
                    print(f"MISS: round {i + 1}: chain {got} micro, composed {want}")
                    ok = False
    ratio = fits[COMPOSED] / max(1, fits[SUMMED])
    print(f"rounds within the budget, composed / summed: {ratio:.2f}x (target {args.min_ratio:g}x)")
    if not math.isfinite(ratio) or ratio < args.min_ratio:
        print("MISS: the composed rule fits fewer rounds than the target")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
