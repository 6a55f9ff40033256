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
log's bytes rewritten to add the detail (``honest`` leaves it out: the control).

Holds when ``audit verify`` fails the round (``log.agrees`` until stop 47, ``log.schema`` since)
with the detail, and passes
without.

``explain``: the same claim as an extra key (``flagged``) of the ``explanations`` block, with
heatmaps on (integrated gradients), which no check reads either.

``image``: the same as an extra key of one heatmap's entry. Since stop 47 the log schema refuses
all three (``log.schema``; no writer ever wrote them), so the service's own writer cannot write
them: the dishonest aggregator here writes the log's bytes itself.

usage: python scripts/attacks/a55_log_detail_smuggle.py [smuggle|explain|image|honest]
       scripts/attacks/real.sh scripts/attacks/a55_log_detail_smuggle.py
Exits 1 when verify passes a log carrying the smuggled detail, 0 otherwise.
"""

import json
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import verify_round
from fedtrail.protocol import roundlog

MODE = sys.argv[1] if len(sys.argv) > 1 else "smuggle"
honest_bytes = roundlog.RoundLog.to_bytes
victims: list[str] = []


def smuggling_bytes(log):
    """The log's canonical bytes with the claim added: a dishonest aggregator skips fedtrail's
    validating writer (since stop 47 the schema refuses both keys, so the writer would)."""
    doc = json.loads(honest_bytes(log))
    victim = doc["sites"][0]["site"]
    victims.append(victim)
    detail = {
        "clipped_as_poisoner": [victim],
        "note": f"{victim}'s update was clipped to 0 before averaging (norm 37x the median)",
    }
    if MODE == "explain":  # the same claim as an extra key of the explanations block
        doc["explanations"]["flagged"] = detail
    elif MODE == "image":  # ... or of one heatmap's entry
        doc["explanations"]["images"][0]["flagged"] = detail
    else:
        doc["aggregation"]["detail"] = detail
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


if MODE != "honest":
    roundlog.RoundLog.to_bytes = smuggling_bytes
settings = None
if MODE != "smuggle":  # heatmaps on: the log has an explanations block
    settings = AggregatorSettings(
        explain_method="integrated_gradients", round_seconds=60, reveal_seconds=30
    )
try:
    out = run([Site(f"h{i}", 150) for i in range(4)], 1, real=True, settings=settings)
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
fed, store = out["fed"], out["store"]
info = fed.ledger.get_round(1)
doc = json.loads(store.get(info.log_cid, info.log_sha256))
print(f"round 1's log on chain: aggregation.detail = {doc['aggregation'].get('detail')}")
if doc.get("explanations") is not None:
    print(f"  explanations keys: {sorted(doc['explanations'])}")
    print(f"  first heatmap's keys: {sorted(doc['explanations']['images'][0])}")
audit = verify_round(fed.ledger, store, 1)
print("failed checks:", [(c.name, c.detail[:100]) for c in audit.checks if c.failed][:3])
weights = {k: round(v["weight"], 3) for k, v in out["results"][0].items()}
print(f"on-chain weights: {weights}")
smuggled = "detail" in doc["aggregation"] or "flagged" in json.dumps(doc.get("explanations"))
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
