"""A15: data-less Sybils under the free-rider allowance (``tiny_size_power`` 2: the floor against
the global model's norm is lowered by (claimed / median)^2 below the median count).

K Sybils, no data, each claims N samples and sends seeded Gaussian noise of LEVEL times the
start model's norm (the README measured one such site claiming 20 at 0.005%: paid 0.030-0.032).
Four honest 150-image sites. Prints the Sybils' total weight per round (their FedAvg share: 0).

usage: python attacks/a15_tiny_noise_sybils.py K [N] [LEVEL] [rounds] [rule]
  e.g. ``3 20 5e-5 3`` (``before``: tiny_size_power 0, the floor before the allowance;
  ``clip``: the norm allowance on, norm_size_cap 10, and the aggregation rule ``norm_clip``,
  every positive-weight update clipped to the round's median norm)
  K + 4 <= 8: the embedded chain funds 8 site accounts.
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

k = int(sys.argv[1]) if len(sys.argv) > 1 else 3
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
level = float(sys.argv[3]) if len(sys.argv) > 3 else 5e-5
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
rule = sys.argv[5] if len(sys.argv) > 5 else "now"


def noise(i):
    def strategy(ctx):
        g = torch.Generator().manual_seed(1000 * ctx.round + i)
        z = {key: torch.randn(v.shape, generator=g) for key, v in ctx.start.items()}
        mn = torch.sqrt(sum((v.double() ** 2).sum() for v in ctx.start.values()))
        zn = torch.sqrt(sum((v.double() ** 2).sum() for v in z.values()))
        return {key: (level * mn / zn).float() * v for key, v in z.items()}, n

    return strategy


combiner = None
if rule == "before":
    combiner = replace(default_combiner(True), tiny_size_power=0.0)
elif rule == "clip":
    combiner = replace(default_combiner(True), norm_size_cap=10.0)
agg = AggregationRule(name="norm_clip") if rule == "clip" else AggregationRule()
res = run(
    [Site(f"h{i}", 150) for i in range(4)]
    + [Site(f"syb{i}", 0, strategy=noise(i), cap=n) for i in range(k)],
    rounds=rounds,
    verbose=False,
    accept=ThresholdLimits.accepting(combiner) if rule == "clip" and combiner else None,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=combiner, rule=agg
    ),
)
for i, row in enumerate(res["results"], 1):
    syb = {nm: r for nm, r in row.items() if nm.startswith("syb")}
    print(
        f"round {i}: sybils' weight {sum(r['weight'] for r in syb.values()):.3f} (FedAvg 0); "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
