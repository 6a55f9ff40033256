"""A26: a peer-mode validator that is also a site scores its rivals down to raise its own weight.

In a peer round every site validates, and weights are ``n_i * s_i / sum_j n_j * s_j`` over the
medians: a validator cannot raise its own score (its own entry never counts) but every rival it
drags below the median raises its own share. The high median and the reputation gate bound it:
one entry of v - 1 moves a rival only where the honest entries are split, and a validator far
from the medians falls below ``REPUTATION_GATE`` and loses its vote. This script measures what is
left, in the benchmarks' in-process peer simulation (``scripts/bench/_sim.py``, the contract's
rule through ``peer_outcome``; Dirichlet(alpha) label skew, every site honest in training), with
the last site (or the last ``--cartel K`` sites, who spare each other) lying about its vector:

- ``zero``: every rival 0;
- ``shade F``: every rival its honest entry times F (e.g. 0.9: close to the medians, so its
  distance, and its reputation's fall, stay small);
- ``pile``: only rivals it already scores below full are scored 0 (it piles on where honest
  validators are most likely split);
- ``one``: only site 0 is scored 0, every other rival its honest entry (the bar's "colluding to
  zero one honest site"; with ``--cartel 2`` of 5 the mirror image of a27's two stampers: the
  same vote matrix with the sites relabelled);
- ``clean``: no lie (the control; printed beside each run anyway).

``one --cartel 2 --alpha 100``: +0.000 with the high median (the colluders fall to 0.75 against
the honest 0.998); ``JURY_RULE=low`` zeroes the rival every round (+0.423) and ``zero --cartel 2``
then takes every honest site (+2.326): the price of closing a27 by the jury rule.

usage: python attacks/a26_selfish_validator.py MODE [F] [--sites 5] [--rounds 4] [--seed 0]
       [--alpha 1.0] [--cartel 1]
Prints per round the selfish site's weight with and without its lie, the largest honest weight
move, its final validator reputation against the honest validators' mean, and test AUC.
``JURY_RULE=high|low|true|cos`` in the environment (an experiment): both runs score every jury
with that rule (``scripts/bench/jury_rules.py``); unset, the product's high median.
"""

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.bench import _sim  # noqa: E402
from scripts.bench._sim import AdversarialValidator, SimConfig  # noqa: E402

if os.environ.get("JURY_RULE"):
    from scripts.bench import jury_rules

    jury_rules.install(os.environ["JURY_RULE"])
    print(f"EXPERIMENT: every jury scored with the {os.environ['JURY_RULE']!r} median")

from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.protocol.weights import SCORE_SCALE  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=("zero", "shade", "pile", "one", "clean"))
ap.add_argument("factor", nargs="?", type=float, default=0.9)
ap.add_argument("--sites", type=int, default=5)
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--alpha", type=float, default=1.0)
ap.add_argument("--cartel", type=int, default=1, help="the last K sites lie, sparing each other")
args = ap.parse_args()
me = args.sites - 1
cartel = range(args.sites - args.cartel, args.sites)


def lie(self, honest, sites):
    out = []
    for i, s in zip(sites, honest, strict=True):
        if i == self.site:
            out.append(0)
        elif i in cartel:
            out.append(s)
        elif args.mode == "zero":
            out.append(0)
        elif args.mode == "shade":
            out.append(int(s * args.factor))
        elif args.mode == "one":
            out.append(0 if i == 0 else s)
        elif args.mode == "pile":
            out.append(0 if s < SCORE_SCALE else s)
        else:
            out.append(s)
    return tuple(out)


AdversarialValidator.lie = lie  # the "invert" adversary now lies as MODE says
splits = load_bundled()
base = SimConfig(
    sites=args.sites,
    rounds=args.rounds,
    alpha=args.alpha,
    seed=args.seed,
    valuation_mode="peers",
)
clean = _sim.run_method("valuation", base, splits)
attacked = _sim.run_method(
    "valuation",
    replace(base, adversaries=tuple(AdversarialValidator(site=k, kind="invert") for k in cartel)),
    splits,
)


def weights(res):
    out = []
    for rec in res.rounds:
        w = dict.fromkeys(res.site_names, 0.0)
        if not rec.skipped:
            for site, weight in zip(rec.submitted, rec.weights, strict=True):
                w[site] = weight / 1e18
        out.append(w)
    return out


name = clean.site_names[me]
members = [clean.site_names[k] for k in cartel]
wc, wa = weights(clean), weights(attacked)
gain = 0.0
for r, (c, a) in enumerate(zip(wc, wa, strict=True), 1):
    honest_move = max(abs(a[n] - c[n]) for n in clean.site_names if n not in members)
    gain += sum(a[n] - c[n] for n in members)
    votes = attacked.rounds[r - 1].votes.get(name)
    print(
        f"round {r}: {'+'.join(members)} weight {sum(c[n] for n in members):.3f} -> "
        f"{sum(a[n] for n in members):.3f} "
        f"(largest honest move {honest_move:.3f}); {name}'s vector {votes}; medians "
        f"{attacked.rounds[r - 1].scores} (clean {clean.rounds[r - 1].scores}); validators "
        f"{len(attacked.rounds[r - 1].votes)}, abstained {attacked.rounds[r - 1].abstained}"
    )
reps = next(
    rec.validator_reputations for rec in reversed(attacked.rounds) if rec.validator_reputations
)
honest = [v for k, v in reps.items() if k not in members]
print(
    f"{'+'.join(members)}: weight gained over {args.rounds} rounds {gain:+.3f}; validator "
    f"reputation {[reps.get(n) for n in members]} vs honest mean "
    f"{sum(honest) / len(honest):.0f} (gate 500000); "
    f"test AUC {attacked.test['auc']:.4f} vs {clean.test['auc']:.4f}"
)
