"""A82: **aggregator**: round-log fields that ``audit verify`` binds to the chain, lied about
for the independent reader.

``log.agrees`` (and ``terms.model`` / ``terms.validation`` / ``terms.reference``) compare many
fields of a round log with the chain or the committed terms; the README states those rules,
and ``scripts/independent/reader.py`` (written from the README, no ``import fedtrail``) checked
only each valued site's weight, fraction, score, reason and count (``log.weights``), the
settings' valuation / rule / spec / spec hash and the names. The aggregator writes its log's
bytes itself (any bytes hash-pin the same way) and lies in one field a round:

- ``cid``: h0's ``update`` names h1's CID and sha256 (h0 framed as a copier of h1);
- ``extra``: an entry for ``idle``, a registered site that sent nothing, as a ``TAMPERED``
  update (an honest site framed);
- ``label``: h0's ``reason_label`` ``FREE_RIDER`` while its code is 0 (``OK``) and it is paid;
- ``included``: ``included_sites`` leaves out h2, which has weight on chain;
- ``global``: ``aggregation.global_sha256`` names the start model (nothing aggregated);
- ``start``: ``start_model.cid`` names another blob (h0's update);
- ``ledger``: the log names another deployment's address;
- ``round``: the log says it is for round 99;
- ``classes``: the task's class names swapped (``pneumonia`` read as class 0);
- ``validation``: another validation-set hash and size than the committed one;
- ``terms``: the terms reference names another blob.

Each lie keeps the log schema-valid and its summary its fields' sentence. ``all`` (default)
runs one round per lie; ``honest``: one honest round (control). Three sites of 150 plus ``idle``
on Anvil + IPFS through ``harness.run``; then ``verify_all`` and the reader (``reader.main``
on the deployment file) over every round.

usage: scripts/attacks/real.sh scripts/attacks/a82_log_reader_gap.py [all|honest|LIE]
Exits 1 when verify or the reader passes a lying round (or fails the honest one), else 0.
"""

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.verify import verify_all
from fedtrail.protocol import roundlog

LIES = [
    "cid",
    "extra",
    "label",
    "included",
    "global",
    "start",
    "classes",
    "validation",
    "terms",
    "ledger",
    "round",
]
MODE = sys.argv[1] if len(sys.argv) > 1 else "all"
if MODE not in (*LIES, "all", "honest"):
    sys.exit(f"unknown mode {MODE!r}")
PLAN = [] if MODE == "honest" else LIES if MODE == "all" else [MODE]
honest_bytes = roundlog.RoundLog.to_bytes
addresses: dict[str, str] = {}  # name -> address (filled by setup)


def lie(doc: dict, what: str) -> None:
    sites = {e["name"]: e for e in doc["sites"]}
    if what == "cid":
        sites["h0"]["update"]["cid"] = sites["h1"]["update"]["cid"]
        sites["h0"]["update"]["sha256"] = sites["h1"]["update"]["sha256"]
    elif what == "extra":
        fake = json.loads(json.dumps(sites["h0"]))
        fake.update(
            site=addresses["idle"],
            name="idle",
            status="tampered",
            score=0,
            reason=4,
            reason_label="TAMPERED",
            explanation="the update's bytes do not match its on-chain sha256",
            weight="0",
            weight_fraction=0.0,
            components={},
        )
        doc["sites"].append(fake)
    elif what == "label":
        sites["h0"]["reason_label"] = "FREE_RIDER"
        sites["h0"]["explanation"] = "FREE_RIDER"
    elif what == "included":
        doc["aggregation"]["included_sites"].remove(addresses["h2"])
    elif what == "global":
        doc["aggregation"]["global_sha256"] = doc["start_model"]["sha256"]
    elif what == "start":
        doc["start_model"]["cid"] = sites["h0"]["update"]["cid"]
    elif what == "ledger":
        doc["ledger"]["address"] = addresses["idle"]
    elif what == "round":
        doc["round"] = 99
    elif what == "classes":
        doc["settings"]["class_names"] = list(reversed(doc["settings"]["class_names"]))
    elif what == "validation":
        doc["validation"] = {"sha256": "ab" * 32, "images": 999}
    elif what == "terms":
        doc["settings"]["terms"] = dict(sites["h0"]["update"])
        doc["settings"]["terms"].pop("num_samples", None)
    else:
        raise AssertionError(what)
    # the summary stays the sentence its (lying) fields give
    doc["summary"] = roundlog.summary_of(roundlog.RoundLog.from_json(doc))


def lying_bytes(log: roundlog.RoundLog) -> bytes:
    doc = json.loads(honest_bytes(log))
    if 1 <= log.round <= len(PLAN):
        lie(doc, PLAN[log.round - 1])
    return roundlog.to_bytes(doc)


def setup(fed, acct) -> None:
    addresses.update({name: a.address for name, a in acct.items()})


roundlog.RoundLog.to_bytes = lying_bytes
try:
    out = run(
        [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("idle", 0, lambda ctx: None)],
        max(1, len(PLAN)),
        real=True,
        verify=False,
        verbose=False,
        setup=setup,
    )
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
fed, store = out["fed"], out["store"]
for r, row in enumerate(out["results"], start=1):
    shown = ", ".join(f"{n} {v['reason']} {v['weight']:.3f}" for n, v in row.items())
    print(f"round {r} ({PLAN[r - 1] if PLAN else 'honest'}): {shown}")

failed_verify: dict[int, list[str]] = {}
for a in verify_all(fed.ledger, store):
    failed_verify[a.round] = [c.name for c in a.checks if c.applicable and not c.passed]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
failed_reader: dict[int, list[str]] = {}
if rpc and api:
    folder = Path(tempfile.mkdtemp(prefix="a82-"))
    path = folder / "deployment.json"
    path.write_text(fed.deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    for x in reader.RESULTS:
        if x["result"] == "FAIL":
            failed_reader.setdefault(x["round"], []).append(x["check"])
else:
    print("no real daemons (run through scripts/attacks/real.sh): the reader is not run")

problems = []
for r in range(1, len(out["results"]) + 1):
    what = PLAN[r - 1] if PLAN else "honest"
    v, rd = failed_verify.get(r, []), failed_reader.get(r, [])
    print(f"round {r} ({what}): verify fails {v or 'nothing'}; reader fails {rd or 'nothing'}")
    if what == "honest":
        if v or rd:
            problems.append(f"round {r}: the honest round fails")
        continue
    if not v:
        problems.append(f"verify passes round {r}'s lie '{what}'")
    if rpc and api and not rd:
        problems.append(f"the independent reader passes round {r}'s lie '{what}'")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: every lie fails verify and the reader")
