"""A10: a count inflated f-fold within the site's cap plus an update boosted b-fold, against the
norm screen's size allowance (``norm_size_cap`` 10, an opt-in since this attack: the screen
judges norm / min(10, claimed / median count); the default, 1, is off). The attacker trains
honestly on 150 images beside three honest 150-image sites, is registered with a cap of 1500,
claims 150 * f and sends its delta * b.
``max_sample_ratio`` 10 lets f up to 10 through (the median includes its own count).

Prints each round's weights and, for the global step g (the new global model minus the start),
the share of g along the attacker's own (unboosted) delta: ``pull`` = <g, b d_att> w_att /
<g, g>, i.e. how much of the global step the attacker's term makes up (under ``norm_clip`` its
term is clipped as the aggregate clips it, so the sites' shares sum to 1); FedAvg for its data
is 0.25 of the weight and about 0.25 of the step (without BIG).

usage: python attacks/a10_inflate_boost.py F B [rounds] [rule]
  F: count inflation (1: honest count), B: boost of the update (1: honest update)
  rule: ``now`` (the default terms: norm allowance off), ``optin`` (norm_size_cap 10, the
  allowance on, as the default was when this attack was found), ``before`` (norm_size_cap 1,
  tiny_size_power 0: the screens before either allowance), ``clip`` (the allowance on and the
  aggregation rule ``norm_clip``: every positive-weight update clipped to the round's median
  norm, :func:`fedtrail.ml.aggregation.norm_clipped_mean`) or ``clipnow`` (``norm_clip`` with
  the default thresholds)
  e.g. ``10 10 2`` (inflate and boost), ``10 1 2`` (count only), ``1 10 2`` (boost only),
  ``1 1 2`` (control), ``10 10 2 before``
  BIG (5th argument): an honest large site of that many images beside them, e.g. ``10 30 3
  optin 600`` (the attacker's claimed 1500 against a real 600-image hospital)
"""

import statistics
import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.storage.codec import decode_model, decode_update
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

f = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
b = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
rule = sys.argv[4] if len(sys.argv) > 4 else "now"
big = int(sys.argv[5]) if len(sys.argv) > 5 else 0  # an honest large site's images (0: none)


def attacker(ctx):
    return {k: v * b for k, v in ctx.now["att"].items()}, round(150 * f)


combiner = None
if rule == "before":
    combiner = replace(default_combiner(True), norm_size_cap=1.0, tiny_size_power=0.0)
elif rule in ("optin", "clip"):
    combiner = replace(default_combiner(True), norm_size_cap=10.0)
agg = AggregationRule(name="norm_clip") if rule in ("clip", "clipnow") else AggregationRule()
res = run(
    [
        Site("h0", 150),
        Site("h1", 150),
        Site("h2", 150),
        Site("att", 150, strategy=attacker, cap=1500),
        *([Site("big", big)] if big else []),
    ],
    rounds=rounds,
    # opted in: the sites consented to the allowance ([accept.loosest] norm_size_cap = 10.0)
    accept=ThresholdLimits.accepting(combiner) if rule in ("optin", "clip") and combiner else None,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=combiner, rule=agg
    ),
)
fed, store = res["fed"], res["store"]
names = {s.account.address: s.name for s in fed.sites}


def flat(d):
    return torch.cat([d[k].double().reshape(-1) for k in sorted(d)])


for i, row in enumerate(res["results"], 1):
    info = fed.ledger.get_round(i)
    start, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=SPEC)
    new, _ = decode_model(store.get(info.global_cid, info.global_sha256), spec=SPEC)
    g = flat({k: new[k] - start[k] for k in new})
    terms = {}
    subs = fed.ledger.get_submissions(i)
    deltas = {
        names[sub.site]: flat(decode_update(store.get(sub.cid, sub.sha256), spec=SPEC)[0])
        for sub in subs
    }
    used = [float(deltas[names[sub.site]].norm()) for sub in subs if sub.weight > 0]
    limit = statistics.median(used) if used else 0.0
    for sub in subs:
        d = deltas[names[sub.site]]
        norm = float(d.norm())
        # the norm_clip rule scales each positive-weight update to at most the median norm
        factor = limit / norm if agg.name == "norm_clip" and norm > limit else 1.0
        terms[names[sub.site]] = (sub.weight / 1e18) * factor * d
    gg = float(g @ g)
    shares = {nm: float(g @ t) / gg for nm, t in terms.items()}
    print(
        f"round {i}: att n={row['att']['samples']} {row['att']['reason']} weight "
        f"{row['att']['weight']:.3f} (FedAvg {150 / (600 + big):.3f}); share of the global step: "
        + ", ".join(f"{nm} {s:.3f}" for nm, s in sorted(shares.items()))
        + f"; |g| {gg**0.5:.4g}"
    )
