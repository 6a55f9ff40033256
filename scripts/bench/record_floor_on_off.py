"""What ``record_floor`` pays an on-off attacker (issue 12 (a), session 57, h-256).

A reflecting barrier under the record lets a demoted site recover faster; an attacker that sends
harmful updates for ``--harmful`` rounds, then one mildly helpful one, and repeats, could use
that to keep weight it would not get with the unbounded record. This script drives the
product's standing path round by round (``normalised_values`` -> ``credited`` ->
``accumulate`` -> ``Combiner.floor_records`` -> ``Combiner.settle`` -> ``onchain_weights``,
the history preset :data:`~fedtrail.valuation.HISTORY_COMBINER`) with *modelled* game values
(not a trained model): four honest sites valued U(``--honest-low``, ``--honest-high``) per
round, the attacker ``-harm`` in its harmful rounds and ``+gain`` in its helpful one, with the
cosine to the median update given per kind (``--cosine``). Equal sample counts, so FedAvg pays
every site 0.2 of every round. Round 1 is the warm-up (nothing accumulated, every passer full).

Prints, per setting, the attacker's mean weight share over all rounds and over its harmful
rounds (the weight its harmful updates get in the aggregate; round 1, the warm-up, is one of
them and pays every passer in full either way) with the floor off (0, the rule before it) and on
(0.5), and FedAvg's. Exits 1 when the floor gives the attacker's harmful
updates more weight than FedAvg would and more than the rule without it (the stated target: the
floor never lifts an on-off attacker's harmful rounds above FedAvg's share; where the attacker is
above it without the floor too, the floor is not what pays it, and the row shows both).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/record_floor_on_off.py --rounds 20 --seeds 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from fedtrail.protocol.weights import onchain_weights
from fedtrail.valuation import HISTORY_COMBINER, Candidate, Combiner, RobustStats
from fedtrail.valuation.standing import accumulate, credited, normalised_values

SITES = ("h0", "h1", "h2", "h3", "x")
ATTACKER = "x"


@dataclass(frozen=True)
class Setting:
    harmful: int
    """Harmful rounds per cycle (then one helpful round)."""
    harm: float
    gain: float
    cosine: float
    """The attacker's cosine to the median update in its harmful rounds (0.6 in helpful ones)."""


def run(setting: Setting, combiner: Combiner, rounds: int, seed: int) -> tuple[float, float]:
    """(mean weight share over all rounds, mean over its harmful rounds) of the attacker."""
    rng = random.Random(seed)
    cands = [Candidate(site=s, num_samples=100, delta={"w": torch.ones(1)}) for s in SITES]
    records: dict[str, float] = {}
    every, harmful = [], []
    for r in range(1, rounds + 1):
        bad = (r - 1) % (setting.harmful + 1) < setting.harmful
        values = {s: rng.uniform(args.honest_low, args.honest_high) for s in SITES[:-1]}
        values[ATTACKER] = -setting.harm if bad else setting.gain
        cosines = {s: rng.uniform(0.3, 0.7) for s in SITES[:-1]}
        cosines[ATTACKER] = setting.cosine if bad else 0.6
        robust = {
            s: RobustStats(cosine=cosines[s], norm=1.0, norm_z=0.0, median_norm=1.0) for s in SITES
        }
        warm = r == 1
        if not warm:
            shares = normalised_values(values) or {}
            shares = credited(shares, cosines, credit_cosine=combiner.credit_cosine)
            passed = combiner.passed(cands, robust)
            records = combiner.floor_records(
                cands, robust, accumulate(records, shares), passed=passed
            )
        sites = combiner.settle(cands, robust, values, records, method="modelled", warm_up=warm)
        scores = [v.score for v in sites]
        weights = onchain_weights([100] * len(SITES), scores)
        share = weights[SITES.index(ATTACKER)] / sum(weights)
        every.append(share)
        if bad:
            harmful.append(share)
    return statistics.fmean(every), statistics.fmean(harmful) if harmful else 0.0


def main(argv: Sequence[str]) -> int:
    global args
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--honest-low", type=float, default=0.02)
    p.add_argument("--honest-high", type=float, default=0.12)
    args = p.parse_args(argv)
    settings = [
        Setting(harmful=h, harm=harm, gain=gain, cosine=cos)
        for h in (1, 2, 3)
        for harm, gain in ((0.3, 0.05), (0.1, 0.1), (0.05, 0.1), (0.02, 0.05))
        for cos in (0.4, -0.9)
    ]
    off = replace(HISTORY_COMBINER, record_floor=0.0)
    on = HISTORY_COMBINER
    fedavg = 1 / len(SITES)
    print(
        f"{args.seeds} seeds x {args.rounds} rounds, 4 honest sites valued "
        f"U({args.honest_low}, {args.honest_high}); FedAvg pays the attacker {fedavg:.3f}"
    )
    print(
        f"{'harmful':>7} {'harm':>5} {'gain':>5} {'cos':>5} | {'all: off':>8} {'on':>6} | "
        f"{'harmful rounds: off':>19} {'on':>6}"
    )
    worst, most_all, most_bad, floor_over = 0.0, 0.0, 0.0, 0
    for s in settings:
        a_off = [run(s, off, args.rounds, seed) for seed in range(args.seeds)]
        a_on = [run(s, on, args.rounds, seed) for seed in range(args.seeds)]
        all_off = statistics.fmean(x for x, _ in a_off)
        all_on = statistics.fmean(x for x, _ in a_on)
        bad_off = statistics.fmean(y for _, y in a_off)
        bad_on = statistics.fmean(y for _, y in a_on)
        worst = max(worst, bad_on)
        most_all, most_bad = max(most_all, all_on - all_off), max(most_bad, bad_on - bad_off)
        floor_over += bad_on > fedavg + 1e-9 and bad_on > bad_off + 1e-9
        print(
            f"{s.harmful:>7} {s.harm:>5} {s.gain:>5} {s.cosine:>5} | {all_off:8.3f} {all_on:6.3f} "
            f"| {bad_off:19.3f} {bad_on:6.3f}"
        )
    met = floor_over == 0
    print(
        f"largest increase the floor gives the attacker: {most_all:+.3f} over all rounds, "
        f"{most_bad:+.3f} over its harmful rounds"
    )
    print(
        f"largest weight share of the attacker's harmful rounds with the floor: {worst:.3f} "
        f"(FedAvg {fedavg:.3f}); settings where the floor pays them above FedAvg and above the "
        f"rule without it: {floor_over} -> {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


args: argparse.Namespace

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
