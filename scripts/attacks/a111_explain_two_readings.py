"""A111: **aggregator**: a83's two-reading log, read by the clinician's page.

a83's lie: round 1's log records the decision twice, ``metrics.after.bias`` moved to
``[0, 2]`` (threshold 0.119) and ``threshold`` left as fitted (0.490, what ``audit log`` and the
report show). Since a83 public ``audit verify`` fails such a log (``log.agrees``: "threshold
... is not its bias's ... threshold"), but ``fedtrail explain --round 1``, the command that
writes the clinicians' page (captions "predicted pneumonia (NN%)", the heatmap of that class),
read the bias without that check: it decided at 0.119 and said "fitted on the aggregator's
validation split, round 1's log", next to "sha256 verified". Nothing on the page said the log
it decides with fails the audit.

``bias``: the lie; ``honest``: the log as written. Three sites of 150 on Anvil + IPFS, one
round, then ``fedtrail explain --round 1 --format json`` through the CLI (4 images per class).

usage: scripts/attacks/real.sh scripts/attacks/a111_explain_two_readings.py bias|honest
(``BEFORE=1``: explain without the check this attack added, as before)
Exits 1 when explain decides with a bias that the log's own threshold contradicts (the
attack works), 0 otherwise.
"""

import json
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from click.testing import CliRunner
from harness import Site, audit_failures, run

from fedtrail.cli import cli
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog

MODE = sys.argv[1] if len(sys.argv) > 1 else "bias"
honest_bytes = roundlog.RoundLog.to_bytes


def lying_bytes(log: RoundLog) -> bytes:
    doc = json.loads(honest_bytes(log))
    if MODE == "bias" and log.round == 1:
        doc["metrics"]["after"]["bias"] = [0.0, 2.0]
    return roundlog.to_bytes(doc)


roundlog.RoundLog.to_bytes = lying_bytes
try:
    out = run([Site(f"h{i}", 150) for i in range(3)], 1, real=True, verify=False, verbose=False)
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
fed, store = out["fed"], out["store"]
failed = audit_failures(fed, store)
info = fed.ledger.get_round(1)
log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES))
shown = log.metrics.after.threshold

if os.environ.get("BEFORE"):  # explain as before a111: the log's bias taken unchecked
    import fedtrail.ml.metrics as metrics_mod

    metrics_mod.calibration_problems = lambda _log: []  # verify holds its own name for it
    print("BEFORE=1: explain without the calibration check")
args = [
    "explain",
    "--round",
    "1",
    "--per-class",
    "4",
    "--validation",
    "pneumonia",
    "--out",
    str(Path(tempfile.mkdtemp(prefix="a111-")) / "page"),
    "--rpc-url",
    os.environ["FEDTRAIL_ATTACK_RPC"],
    "--contract",
    fed.ledger.address,
    "--store",
    f"ipfs:{os.environ['FEDTRAIL_ATTACK_IPFS']}",
    "--format",
    "json",
]
result = CliRunner().invoke(cli, args)
if result.exit_code != 0:
    print(f"HARNESS BROKEN: explain exit {result.exit_code}: {result.output[-400:]}")
    sys.exit(2)
decision = json.loads(result.output)["decision"]
print(
    f"round 1 ({MODE}): audit log and the report show threshold {shown!r}; explain decides at "
    f"{decision['threshold']!r} ({decision['source']})"
)
works = (
    tuple(decision["bias"] or ()) == log.metrics.after.bias
    and decision["threshold"] is not None
    and shown is not None
    and not math.isclose(decision["threshold"], shown, abs_tol=1e-9)
)
print(
    "attack works: the clinician's page decides with a log verify fails"
    if works
    else "attack fails",
    f"(public verify {'FAIL' if failed else 'PASS'})",
)
sys.exit(1 if works else 0)
