"""A55: **aggregator**: a claim smuggled into the audit trail through the round log's
free-form ``aggregation.detail``.

The explanation log leaves a few objects open (``fedtrail.protocol.roundlog``): the rule, the
spec, each site's components, the ``explanations`` block and the aggregation's ``detail``.
Every one but ``detail`` is compared with the terms, recomputed or checked field by field;
``detail`` is read by no check and written by no fedtrail writer (the schema allowed it from
the first log format on). So an aggregator can put in the hashed, on-chain-pinned log of a
finalized round whatever it likes there, e.g. that honest ``h0`` was clipped as a poisoner and
that the round's update came from other sites, and ``audit verify`` passes: a round log is the
trail's record of "what was aggregated", and this one says something the chain and the replay
contradict. Four honest sites of 150 images, one round; the production service, its
``build_round_log`` wrapped to add the detail (``honest`` leaves it out: the control).

Holds when ``audit verify`` fails the round (``log.agrees``) with the detail, and passes
without.

``explain``: the same claim as an extra key (``flagged``) of the ``explanations`` block, with
heatmaps on (integrated gradients), which no check reads either.

usage: python scripts/attacks/a55_log_detail_smuggle.py [smuggle|explain|honest]
       scripts/attacks/real.sh scripts/attacks/a55_log_detail_smuggle.py
Exits 1 when verify passes a log carrying the smuggled detail, 0 otherwise.
"""

import dataclasses
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.protocol import roundlog

MODE = sys.argv[1] if len(sys.argv) > 1 else "smuggle"
honest_build = roundlog.build_round_log
victims: list[str] = []


def smuggling_build(**kw):
    log = honest_build(**kw)
    victim = kw["sites"][0].site
    victims.append(victim)
    detail = {
        "clipped_as_poisoner": [victim],
        "note": f"{victim}'s update was clipped to 0 before averaging (norm 37x the median)",
    }
    if MODE == "explain":  # the same claim as an extra key of the explanations block
        block = {**dict(log.to_json()["explanations"]), "flagged": detail}
        return dataclasses.replace(log, explanations=block)
    agg = dataclasses.replace(log.aggregation, detail=detail)
    return dataclasses.replace(log, aggregation=agg)


if MODE != "honest":
    roundlog.build_round_log = smuggling_build
settings = None
if MODE != "smuggle":  # heatmaps on: the log has an explanations block
    settings = AggregatorSettings(
        explain_method="integrated_gradients", round_seconds=60, reveal_seconds=30
    )
try:
    out = run([Site(f"h{i}", 150) for i in range(4)], 1, real=True, settings=settings)
finally:
    roundlog.build_round_log = honest_build
fed, store = out["fed"], out["store"]
info = fed.ledger.get_round(1)
log = roundlog.RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256))
print(f"round 1's log on chain: aggregation.detail = {log.aggregation.detail}")
if log.explanations is not None:
    print(f"  explanations keys: {sorted(log.explanations)}")
weights = {k: round(v["weight"], 3) for k, v in out["results"][0].items()}
print(f"on-chain weights: {weights}")
smuggled = log.aggregation.detail is not None or "flagged" in (log.explanations or {})
if MODE != "honest" and not smuggled:
    print("setup failed: the log carries no smuggled claim")
    sys.exit(2)
if MODE != "honest" and out["audit_ok"]:
    print("ATTACK WORKS: verify passes a log whose aggregation detail says a paid site was clipped")
    sys.exit(1)
if MODE == "honest" and not out["audit_ok"]:
    print("control failed: verify fails the honest log")
    sys.exit(1)
print("defence holds: " + ("the smuggled claim fails verify" if MODE != "honest" else "PASS"))
