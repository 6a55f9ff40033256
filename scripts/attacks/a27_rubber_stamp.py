"""A27: peer-mode validators that rubber-stamp (score every update full) shield a poisoner.

Scores only demote: a site's score is lowered only when more than half of its jury (the other
counted validators) lowers it, and the medians are mostly full scores, so a validator that
skips its validation game and reveals SCORE_SCALE for every site stays close to the medians (its
reputation barely moves) and costs nothing to run. Each such vote is a vote against every
demotion. Here site 0 poisons (``sign_flip``, its delta times ``-factor``) and the last K sites
rubber-stamp (they still train and send honest updates; the poisoner itself validates honestly,
its own entry never counts). In the benchmarks' in-process peer simulation
(``scripts/bench/_sim.py``, the contract's rule through ``peer_outcome``), against the same seed
with every validator honest.

Open with the product's high median (2 of 5: the poisoner paid 0.806 over 4 rounds against 0.266).
The same votes, relabelled, are two colluders of five zeroing an honest rival (``a26 ... one
--cartel 2``), so a jury rule that closes this reopens that: ``JURY_RULE=low`` pays 0.267 here and
zeroes the rival; ``JURY_RULE=true`` halves both (0.564 here); ``JURY_RULE=cos`` (low only for an
update whose cosine to the median update is below -0.7) closes ``2`` but not ``3 --sites 7
--factor 3`` (0.415; the flip's cosine -0.36 and -0.28 in two rounds) nor ``2 --alpha 1``
(0.867, the flip at cosine +0.85), and needs a cosine the chain cannot compute (README, peer
scoring, *Not built / limits*).

usage: python attacks/a27_rubber_stamp.py K [--factor 1] [--sites 5] [--rounds 4] [--seed 0]
       [--alpha 100]
K 0 is the control (honest validators only). Prints per round the poisoner's weight with and
without the stampers, the medians (with ``JURY_RULE``, the poisoner's cosine to the median
update), the stampers' reputations and test AUC.
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
from fedtrail.simulation.faults import SiteFault  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("k", type=int)
ap.add_argument("--factor", type=float, default=1.0)
ap.add_argument("--sites", type=int, default=5)
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--alpha", type=float, default=100.0)
args = ap.parse_args()
stampers = range(args.sites - args.k, args.sites)


def stamp(self, honest, sites):
    return tuple(0 if i == self.site else SCORE_SCALE for i in sites)


AdversarialValidator.lie = stamp  # the "invert" adversary now rubber-stamps
splits = load_bundled()
faults = (SiteFault(kind="sign_flip", factor=args.factor),) + (SiteFault(),) * (args.sites - 1)
base = SimConfig(
    sites=args.sites,
    rounds=args.rounds,
    alpha=args.alpha,
    seed=args.seed,
    valuation_mode="peers",
    faults=faults,
)
clean = _sim.run_method("valuation", base, splits)
attacked = _sim.run_method(
    "valuation",
    replace(base, adversaries=tuple(AdversarialValidator(site=k, kind="invert") for k in stampers)),
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


bad = clean.site_names[0]
names = [clean.site_names[k] for k in stampers]
paid_c = paid_a = 0.0
for r, (c, a) in enumerate(zip(weights(clean), weights(attacked), strict=True), 1):
    paid_c += c[bad]
    paid_a += a[bad]
    rec = attacked.rounds[r - 1]
    cosine = f"; its cosine {rec.cosines[bad]:+.2f}" if bad in rec.cosines else ""
    print(
        f"round {r}: poisoner {bad} weight {c[bad]:.3f} -> {a[bad]:.3f}; medians {rec.scores} "
        f"(honest validators only {clean.rounds[r - 1].scores}); abstained {rec.abstained}"
        f"{cosine}"
    )
reps = next(
    rec.validator_reputations for rec in reversed(attacked.rounds) if rec.validator_reputations
)
honest = [v for k, v in reps.items() if k not in names]
print(
    f"poisoner paid {paid_c:.3f} -> {paid_a:.3f} over {args.rounds} rounds; stampers' "
    f"reputations {[reps.get(n) for n in names]} vs honest mean {sum(honest) / len(honest):.0f} "
    f"(gate 500000); test AUC {attacked.test['auc']:.4f} vs {clean.test['auc']:.4f}"
)
