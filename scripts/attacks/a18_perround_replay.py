"""A18: an aggregator turns the free-rider screen off by writing per-round terms.

``valuation.standing`` is the aggregator's choice in each round's terms; until stop 41 no
``[accept]`` limit bounded it (since then ``per_round`` is false by default and an honest node
refuses such terms; the harness commits for every site itself and prints that refusal).
Without standing no update is ever ``FREE_RIDER``
(``reasons.free_rider`` then requires that none is), so the stale screen (cosine above
``stale_cosine`` 0.99999 to an update or a global delta of the last ``stale_rounds`` rounds)
does not run, and a per-round score is ``value / best`` of the round's validation game. A round
valued per round also writes no ``standing`` block, and ``standing.chain`` lets the next round
continue the latest log that has one, so nothing of the record is lost by the switch.

The ally has no data (registered with a cap of 150): from round 2 it resends the previous
round's public global delta times SCALE (default 2: about one honest update's norm), claiming
150. Four honest sites of 150 images train as usual.

usage: python attacks/a18_perround_replay.py MODE [rounds] [scale]
  perround: every round's terms without standing (the aggregator's choice)
  standing: the default terms (control: the replay is FREE_RIDER)
  switch: standing in odd rounds, per round in even rounds (the record stays chained)
Prints per round the ally's reason/score/weight (FedAvg share of its data: 0), then
``audit verify``.
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings

mode = sys.argv[1] if len(sys.argv) > 1 else "perround"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
scale = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0


def ally(ctx):
    if not ctx.past_global:
        return None
    return {k: scale * v for k, v in ctx.past_global[-1].items()}, 150


def setup(fed, acct):
    if mode != "switch":
        return
    svc = fed.service
    plain = svc.open_next
    # a dishonest aggregator skips the service's own pre-flight (PaymentSettingsChanged)
    svc._payment_changes = lambda terms: []
    opened = []

    def open_next(**kwargs):
        opened.append(1)
        svc.settings = replace(svc.settings, standing=len(opened) % 2 == 1)
        return plain(**kwargs)

    svc.open_next = open_next


res = run(
    [Site(f"h{i}", 150) for i in range(4)] + [Site("ally", 0, strategy=ally, cap=150)],
    rounds=rounds,
    setup=setup,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, standing=mode == "standing"
    ),
)
for i, row in enumerate(res["results"], 1):
    a = row.get("ally")
    print(
        f"round {i}: "
        + (
            f"ally {a['reason']} score {a['score']:.3f} weight {a['weight']:.3f}; "
            if a
            else "ally absent; "
        )
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
