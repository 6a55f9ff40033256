"""A84: **aggregator**: an honest update zeroed under a reason the independent reader does not
replay.

``audit verify`` holds every reason an aggregator round posts to a rule: ``LATE`` is never
given (``reasons.public``), ``CONTRADICTED`` needs the site's signed reply in the log
(``evidence.contradicted``), ``TAMPERED`` / ``MALFORMED`` must be how the audit reads the
blob (``log.status`` and ``update.*``), ``LOW_GAIN`` never falls on a screen passer under
standing (``reasons.screen``). ``scripts/independent/reader.py`` compared the chain's reasons
only with the ones its rules predict (duplicates, counts, free riders, size bound, screens),
so a code outside that set passed it whatever the update was. The aggregator runs the
production service but posts h0's honest, readable update (round 1, three sites of 150,
standing) as score 0 with the chosen code; the log repeats the chain (h0's status as read, its
statistics kept, no game value).

Modes: ``late``, ``contradicted``, ``tampered``, ``malformed``, ``lowgain``, ``honest``.
(``NOT_REVEALED``, ``PEER_REJECTED``, ``WITHHELD`` are refused by the client and the contract.)

usage: scripts/attacks/real.sh scripts/attacks/a84_reason_reader_gap.py MODE
Exits 1 when verify or the reader passes the zeroed round (or fails the honest one), else 0.
"""

import contextlib
import dataclasses
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.verify import verify_all
from fedtrail.protocol.codes import Reason

MODE = sys.argv[1] if len(sys.argv) > 1 else "late"
CODES = {
    "late": Reason.LATE,
    "contradicted": Reason.CONTRADICTED,
    "tampered": Reason.TAMPERED,
    "malformed": Reason.MALFORMED,
    "lowgain": Reason.LOW_GAIN,
    "honest": None,
}
if MODE not in CODES:
    sys.exit(f"unknown mode {MODE!r}")
target: dict[str, str] = {}


def setup(fed, acct) -> None:
    target["h0"] = acct["h0"].address
    honest = fed.service._valuate

    def valuate(round_id, global_state, pairs):
        report, standing = honest(round_id, global_state, pairs)
        code = CODES[MODE]
        if code is None:
            return report, standing
        sites = [
            dataclasses.replace(v, score=0, reason=code, value=None, method=None)
            if v.site == target["h0"]
            else v
            for v in report.sites
        ]
        return dataclasses.replace(report, sites=sites), standing

    fed.service._valuate = valuate


out = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150)],
    1,
    real=True,
    verify=False,
    verbose=False,
    setup=setup,
)
fed, store = out["fed"], out["store"]
row = out["results"][0]
shown = ", ".join(f"{n} {v['reason']} {v['weight']:.3f}" for n, v in row.items())
print(f"round 1 ({MODE}): {shown}")
audits = verify_all(fed.ledger, store)
failed = [c.name for a in audits for c in a.checks if c.failed]
print("public audit verify:", "PASS" if not failed else f"FAIL {failed}")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_failed: list[str] | None = None
if rpc and api:
    path = Path(tempfile.mkdtemp(prefix="a84-")) / "deployment.json"
    path.write_text(fed.deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    reader_failed = [x["check"] for x in reader.RESULTS if x["result"] == "FAIL"]
    details = [x["detail"][:200] for x in reader.RESULTS if x["result"] == "FAIL"]
    print("independent reader:", "PASS" if not reader_failed else f"FAIL {details}")
problems = []
if MODE == "honest":
    if failed or reader_failed:
        problems.append("the honest round fails")
else:
    if not failed:
        problems.append("verify passes")
    if reader_failed == []:
        problems.append("the independent reader passes")
if problems:
    print(f"ATTACK WORKS ({MODE}): " + "; ".join(problems))
    sys.exit(1)
print("defence holds" if MODE != "honest" else "control: both pass the honest round")
