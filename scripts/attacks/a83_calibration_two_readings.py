"""A83: **aggregator**: a round log whose calibration reads one way to the auditor's tables and
another to the sites and clinicians.

A round log records each global model's decision twice: ``metrics.after.bias`` (the intercept
fitted on the aggregator's validation split) and, for two classes, ``threshold``, which is
``1 / (1 + exp(b1 - b0))`` of that bias. ``fedtrail explain --round`` (heatmaps and captions
for clinicians) and every site node (its validation figures) decide with the bias;
``fedtrail audit log`` ("decision threshold fitted on that set") and the HTML report show the
``threshold`` field. Both are the aggregator's claim, checked only by ``audit verify
--validation`` (``metrics.recomputed``), so public verify let them disagree. The lies, each in
round 1's log (schema-valid, the summary its fields'):

- ``bias``: the bias moved to ``[0, 2]`` (explain decides at 0.119), the threshold left as
  fitted (what the tables show);
- ``threshold``: the bias as fitted, the threshold field written as 0.5;
- ``classes``: a third entry in the bias and both recall lists of the two-class model: every
  reader of the decision (``decision_bias``) finds none for two classes and falls back to 0.5,
  while the tables show the fitted threshold;
- ``n``: the metrics claim a validation set of 40 images, the log (and terms) 270.

``honest``: the log as written (control). Three sites of 150 on Anvil + IPFS (``real.sh``).

usage: scripts/attacks/real.sh scripts/attacks/a83_calibration_two_readings.py MODE
(MODE: bias, threshold, classes, n or honest)
Exits 1 when public verify passes a lying log (or fails the honest one), 0 otherwise.
"""

import json
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.explain_command import _decision
from fedtrail.auditor.verify import verify_all
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog

MODE = sys.argv[1] if len(sys.argv) > 1 else "bias"
if MODE not in ("bias", "threshold", "classes", "n", "honest"):
    sys.exit(f"unknown mode {MODE!r}")
honest_bytes = roundlog.RoundLog.to_bytes


def lie(after: dict) -> None:
    if MODE == "bias":
        after["bias"] = [0.0, 2.0]
    elif MODE == "threshold":
        after["threshold"] = 0.5
    elif MODE == "classes":
        for key in ("bias", "recall", "recall_calibrated"):
            after[key] = [*after[key], 0.0]
    elif MODE == "n":
        after["n"] = 40


def lying_bytes(log: RoundLog) -> bytes:
    doc = json.loads(honest_bytes(log))
    if MODE != "honest" and log.round == 1:
        lie(doc["metrics"]["after"])
    return roundlog.to_bytes(doc)


roundlog.RoundLog.to_bytes = lying_bytes
try:
    out = run(
        [Site("h0", 150), Site("h1", 150), Site("h2", 150)],
        1,
        real=True,
        verify=False,
        verbose=False,
    )
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
fed, store = out["fed"], out["store"]
info = fed.ledger.get_round(1)
log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES))
after = log.metrics.after
applied = _decision(log, 1, "", 2)
print(
    f"round 1 ({MODE}): the tables show threshold {after.threshold!r} (n {after.n}, validation "
    f"{log.validation.images}); explain and the nodes decide at {applied.threshold!r} "
    f"({applied.rule}, bias {applied.bias})"
)
audits = verify_all(fed.ledger, store)
failed = [(a.round, c.name, c.detail[:160]) for a in audits for c in a.checks if c.failed]
print("public audit verify:", "PASS" if not failed else f"FAIL {failed}")
if MODE == "honest":
    if failed:
        print("ATTACK HARNESS BROKEN: the honest log fails")
        sys.exit(1)
    print("control: the honest log passes")
    sys.exit(0)
if not failed:
    print("ATTACK WORKS: public verify passes a log whose calibration reads two ways")
    sys.exit(1)
print("defence holds: public verify fails the lying log")
