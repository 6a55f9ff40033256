"""A21: an aggregator picks the valuation metric (or method) that pays its ally's sign flip.

``valuation.metric`` (``auc``, ``loss``, ``balanced_loss``) and ``valuation.method``
(``shapley``, ``mc_shapley``, ``loo``) are the aggregator's choice in each round's terms; until
stop 41 no ``[accept]`` limit bounded them (since then ``methods`` leaves out ``loo`` by default
and an honest node refuses such terms; the harness commits for every site itself and prints
that refusal). The product chose
the balanced loss because AUC ignores calibration: a sign-flipped update can keep the model's
ranking while wrecking its outputs (README, *Scores from standing*). Here ``att`` (150 images)
trains honestly in round 1, then sends its delta times -B (default 1) beside three honest
150-image sites, under terms naming METRIC and METHOD.

usage: python attacks/a21_metric_choice.py METRIC [METHOD] [rounds] [B]
  e.g. ``auc shapley 6``, ``loss shapley 6``, ``balanced_loss loo 6``; the default terms
  (``balanced_loss shapley``) are a19's ``alone`` run. B = -1 makes att honest (its delta
  times +1): ``balanced_loss loo 6 -1`` is four honest sites under leave-one-out terms,
  ``balanced_loss shapley 6 -1`` the same under the default terms (control)
Prints att's reason/score/weight/standing per round and the global validation AUC, then
``audit verify``.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.protocol.roundlog import from_bytes

metric = sys.argv[1] if len(sys.argv) > 1 else "auc"
method = sys.argv[2] if len(sys.argv) > 2 else "shapley"
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
b = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0


def att(ctx):
    d = ctx.now["att"]
    if ctx.round == 1:
        return d, 150
    return {k: -b * v for k, v in d.items()}, 150


res = run(
    [Site(f"h{i}", 150) for i in range(3)] + [Site("att", 150, strategy=att)],
    rounds=rounds,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, valuation=method, metric=metric
    ),
)
fed, store = res["fed"], res["store"]
who = next(s.account.address for s in fed.sites if s.name == "att")
for i, row in enumerate(res["results"], 1):
    info = fed.ledger.get_round(i)
    doc = from_bytes(store.get(info.log_cid, info.log_sha256))
    after = ((doc.get("standing") or {}).get("after") or {}).get(who)
    a = row["att"]
    print(
        f"round {i}: att {a['reason']} score {a['score']:.3f} weight {a['weight']:.3f} "
        f"standing {after}; honest "
        + ", ".join(f"{nm} {r['weight']:.3f}" for nm, r in sorted(row.items()) if nm != "att")
        + f"; global val AUC {doc['metrics']['after']['auc']:.4f}, loss "
        f"{doc['metrics']['after']['loss']:.4f}"
    )
