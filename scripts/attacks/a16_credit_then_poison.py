"""A16: build standing, then spend it on a sign-flipped, boosted update.

With standing, a site's score is 10**6 while its accumulated value is at least the reference
(``min(0, median)``), and this round's share is ``phi / fsum(|phi_j|)``: at most 1 in
magnitude *whatever the harm*. So k honest rounds (about 1/N each) buy a poisoned round at full
pay. The poison is the attacker's own honest delta times -B: ``min_cosine`` is -1 by default
(the direction screen off; ``[accept]`` lets an aggregator raise it to -0.5 at most), and the
norm screen passes up to ``median * (1 + max_norm_z * norm_scale_floor)`` = 6x the median norm,
so B = 5 is `OK` (robust z 16 < 20). ``credit_cosine`` (-0.7) zeroes only *positive* shares.

Prints per round: the attacker's reason, score, weight (FedAvg share 0.250), its standing before
and after (the log's ``standing`` block) and the global model's validation AUC and balanced
loss before and after the round (the log's ``metrics``), then ``audit verify``.

usage: python attacks/a16_credit_then_poison.py K B [rounds] [mincos]
  K: honest rounds before the poison (0: poison from round 1), B: the flip's boost
  e.g. ``4 5 7`` (credit 4 rounds, then -5x every round), ``0 5 3`` (no credit),
  ``4 1 7`` (plain sign flip), control: ``99 1 7`` (never poisons)
  mincos (4th argument, e.g. ``-0.5``): terms with that ``min_cosine`` (the strictest a site's
  default ``[accept]`` takes), to see whether the direction screen, if the aggregator turned it
  on, would stop it
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.protocol.roundlog import from_bytes
from fedtrail.valuation import default_combiner

k = int(sys.argv[1]) if len(sys.argv) > 1 else 4
b = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
mincos = float(sys.argv[4]) if len(sys.argv) > 4 else None


def attacker(ctx):
    d = ctx.now["att"]
    if ctx.round <= k:
        return d, 150
    return {n: -b * v for n, v in d.items()}, 150


combiner = None if mincos is None else replace(default_combiner(True), min_cosine=mincos)
res = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("att", 150, strategy=attacker)],
    rounds=rounds,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=combiner
    ),
)
fed, store = res["fed"], res["store"]
att = next(s.account.address for s in fed.sites if s.name == "att")
for i, row in enumerate(res["results"], 1):
    info = fed.ledger.get_round(i)
    doc = from_bytes(store.get(info.log_cid, info.log_sha256))
    st = doc.get("standing") or {}
    m = doc["metrics"]
    before = (st.get("before") or {}).get(att)
    after = (st.get("after") or {}).get(att)
    a = row["att"]
    print(
        f"round {i}: att {'POISON' if i > k else 'honest'} {a['reason']} score {a['score']:.3f} "
        f"weight {a['weight']:.3f}; standing {before} -> {after}; global val AUC "
        f"{m['before']['auc']:.4f} -> {m['after']['auc']:.4f}, loss "
        f"{m['before']['loss']:.4f} -> "
        f"{m['after']['loss']:.4f}"
    )
