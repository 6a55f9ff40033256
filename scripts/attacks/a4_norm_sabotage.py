"""A4: colluders shrink the median norm so an honest site with more data (more local steps,
so a larger update) becomes OUTLIER_NORM (robust z > max_norm_z over the median norm).
The colluders train honestly on their own shards and send their update scaled by 0.3 (still far
above the free-rider bounds: 1% of the lower median, 0.1% of the model's norm).

usage: python attacks/a4_norm_sabotage.py [control|attack] [rounds] [rule]
  honest sites: 450, 150, 150 images; colluders: 2 sites of 150 images
  control: the colluders send their real update; attack: their update x 0.3
  rule: ``now`` (the default terms) or ``clip`` (the norm allowance on, norm_size_cap 10, and the
  aggregation rule ``norm_clip``: every positive-weight update clipped to the round's median norm)
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

mode = sys.argv[1] if len(sys.argv) > 1 else "attack"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
f = 1.0 if mode == "control" else 0.3
rule = sys.argv[3] if len(sys.argv) > 3 else "now"
combiner = replace(default_combiner(True), norm_size_cap=10.0) if rule == "clip" else None


def shrink(name):
    return lambda ctx: ({k: v * f for k, v in ctx.now[name].items()}, 150)


run(
    [
        Site("big", 450),
        Site("h1", 150),
        Site("h2", 150),
        Site("c1", 150, strategy=shrink("c1")),
        Site("c2", 150, strategy=shrink("c2")),
    ],
    rounds=rounds,
    accept=ThresholdLimits.accepting(combiner) if combiner else None,
    settings=AggregatorSettings(
        explain_method=None,
        round_seconds=60,
        reveal_seconds=30,
        combiner=combiner,
        rule=AggregationRule(name="norm_clip") if rule == "clip" else AggregationRule(),
    ),
)
