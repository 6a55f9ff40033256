"""A20: an aggregator freezes (or hands to one update) the global model with a legal rule.

The terms' aggregation rule is the aggregator's choice: until stop 41 a site's ``[accept]``
bounded only how a BatchNorm model's running statistics are combined, and ``_unrunnable`` refused
only a rule :class:`~fedtrail.ml.aggregation.AggregationRule` cannot parse (since then
``min_clip_norm`` and ``min_krum_m`` refuse both terms below; the harness commits for every site
itself and prints that refusal). ``norm_clip`` takes any positive
finite ``max_norm``, so ``1e-12`` clips every update to nothing: the global model never moves,
every site is still valued and paid by its samples, and ``audit verify`` replays the rule bit for
bit. ``krum`` with ``krum_f`` 0 and ``krum_m`` 1 makes the global step one site's update.

usage: python attacks/a20_rule_freeze.py MODE [rounds]
  clip: norm_clip, max_norm 1e-12; krum: krum_f 0, krum_m 1; weighted: the default (control)
Prints each round's weights and the global model's validation AUC before and after, then
``audit verify``.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.protocol.roundlog import from_bytes

mode = sys.argv[1] if len(sys.argv) > 1 else "clip"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
rule = {
    "clip": AggregationRule(name="norm_clip", max_norm=1e-12),
    "krum": AggregationRule(name="krum", krum_f=0, krum_m=1),
    "weighted": AggregationRule(),
}[mode]
res = run(
    [Site(f"h{i}", 150) for i in range(4)],
    rounds=rounds,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, rule=rule
    ),
)
fed, store = res["fed"], res["store"]
for i, row in enumerate(res["results"], 1):
    info = fed.ledger.get_round(i)
    m = from_bytes(store.get(info.log_cid, info.log_sha256))["metrics"]
    print(
        f"round {i}: weights "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
        + f"; global val AUC {m['before']['auc']:.4f} -> {m['after']['auc']:.4f}"
    )
