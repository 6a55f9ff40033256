"""Peer rounds with and without the public screen (round terms ``valuation.public_screen``):
the same seeded federations run twice through ``_sim`` (every validator's ``peer_vector``, the
contract's median rule, the on-chain weight rule), once with every validator screening
free-riders itself and once with the screen run once a round in public and its weighted marks
dropped (``dropScreened``). Prints, per round, the updates each zeroes (with their reasons:
PEER_REJECTED, the median of the validators' own screens, against the drop's FREE_RIDER), whether
the final scores and weights agree, the largest weight difference and both weight vectors.

    python scripts/bench/public_screen_verdicts.py [--sites 6] [--rounds 4] [--seeds 0-1]

Cases: no free-rider, a stale resend of its own previous update (``Stale("own")``), a resend
of the global delta (``Stale("global")``) and a noisy resend (1% white noise). Exit 1 when a
round's zeroed updates differ between the two (the verdicts must be the same); a score or
weight difference among the other sites is reported, not a failure (the validators' game
includes the free-rider under the public screen, by design).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedtrail.ml.datasets import load_bundled
from scripts.bench import _sim
from scripts.bench._sim import SimConfig, Stale

CASES = {
    "none": (),
    "stale_own": (Stale(site=2, source="own"),),
    "stale_global": (Stale(site=2, source="global"),),
    "stale_noisy": (Stale(site=2, source="own", noise=0.01),),
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sites", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seeds", default="2", help="a count N or a list 0,3,7-9")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_bundled()
    failed = 0
    for seed in _sim.parse_seeds(args.seeds):
        for case, stale in CASES.items():
            runs = {}
            for public in (False, True):
                config = SimConfig(
                    sites=args.sites,
                    rounds=args.rounds,
                    seed=seed,
                    valuation_mode="peers",
                    stale=stale,
                    public_screen=public,
                )
                runs[public] = _sim.run_method("valuation", config, splits)
            for mine, theirs in zip(runs[False].rounds, runs[True].rounds, strict=True):
                # every validator screening: a free-rider's median is 0 (PEER_REJECTED); with
                # the public screen: the drop's FREE_RIDER
                zeroed = [s for s, v in zip(mine.submitted, mine.scores, strict=True) if v == 0]
                public_zeroed = [
                    s for s, v in zip(theirs.submitted, theirs.scores, strict=True) if v == 0
                ]
                same = zeroed == public_zeroed
                failed += not same
                diff = max(
                    (abs(a - b) / 1e18 for a, b in zip(mine.weights, theirs.weights, strict=False)),
                    default=0.0,
                )
                why = [r for r, v in zip(mine.reasons, mine.scores, strict=True) if v == 0]
                public_why = [
                    r for r, v in zip(theirs.reasons, theirs.scores, strict=True) if v == 0
                ]
                print(
                    f"seed {seed} {case:<12} round {mine.round}: zeroed by the validators "
                    f"{zeroed} {why}, with the public screen {public_zeroed} {public_why} "
                    f"({'same' if same else 'DIFFERENT'}); public marks {sorted(theirs.screened)}; "
                    f"scores {'equal' if mine.scores == theirs.scores else 'differ'}, weights "
                    f"{'equal' if mine.weights == theirs.weights else 'differ'} (largest weight "
                    f"difference {diff:.4f}; weights {[round(w / 1e18, 3) for w in mine.weights]} "
                    f"vs {[round(w / 1e18, 3) for w in theirs.weights]})"
                )
    print(
        "zeroed updates: "
        + ("the same in every round" if not failed else f"{failed} round(s) differ")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
