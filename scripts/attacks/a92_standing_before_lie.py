"""A92: **aggregator**: a round log whose standing block starts an ally from a larger value.

With valuation ``standing`` each site's score follows from the value it accumulated across
rounds, chained through the logs: a round's ``standing.before`` is the previous log's
``after`` (README *Standing chain*; ``audit verify``'s ``standing.chain``).
``scripts/independent/reader.py`` took ``before`` from the log itself and checked only
``after = before + share``, so a log that carries an ally in with more than it earned passed it
(``audit verify`` failed it). Three sites of 150 (production service, standing), three rounds;
in round 3 the aggregator adds ``LIFT`` to the ``before`` and ``after`` of the site with the
largest ``after`` (the median, and so every other score, unchanged: the lie costs nothing
today and pays in every later demotion).

Modes: ``lie`` (the above), ``honest`` (control). ``BEFORE=1`` runs the reader of a59c0d9
(before session 52) from git instead of the working tree's.

usage: scripts/attacks/real.sh scripts/attacks/a92_standing_before_lie.py [lie|honest]
Exits 1 when verify or the reader passes the lie (or fails the honest run), else 0.
"""

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.verify import verify_all

MODE = sys.argv[1] if len(sys.argv) > 1 else "lie"
if MODE not in ("lie", "honest"):
    sys.exit(f"unknown mode {MODE!r}")
LIFT = 0.5
lied: dict[str, str] = {}


def setup(fed, acct) -> None:
    honest = fed.service._valuate

    def valuate(round_id, global_state, pairs):
        report, standing = honest(round_id, global_state, pairs)
        if MODE == "honest" or standing is None or not standing.before or round_id != 3:
            return report, standing
        ally = max(standing.after, key=lambda s: standing.after[s])
        before = dict(standing.before)
        before[ally] = before.get(ally, 0.0) + LIFT
        after = dict(standing.after)
        after[ally] += LIFT
        lied["ally"] = ally
        return report, dataclasses.replace(standing, before=before, after=after)

    fed.service._valuate = valuate


out = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150)],
    3,
    real=True,
    verify=False,
    verbose=False,
    setup=setup,
)
fed, store = out["fed"], out["store"]
print(f"mode {MODE}: {'lifted ' + lied['ally'] if lied else 'no lie told'}")
audits = verify_all(fed.ledger, store)
failed = [(a.round, c.name) for a in audits for c in a.checks if c.failed]
print("public audit verify:", "PASS" if not failed else f"FAIL {failed}")

here = Path(__file__).resolve().parents[1] / "independent"
if os.environ.get("BEFORE"):
    old = Path(tempfile.mkdtemp(prefix="a92-")) / "reader.py"
    old.write_bytes(
        subprocess.run(
            ["git", "show", "a59c0d9:scripts/independent/reader.py"],
            cwd=here,
            check=True,
            capture_output=True,
        ).stdout
    )
    here = old.parent
    print("BEFORE: the reader of a59c0d9")
sys.path.insert(0, str(here))
import reader  # noqa: E402

reader.ROOT = Path(__file__).resolve().parents[2]
reader.ARTIFACT = reader.ROOT / "contracts" / "build" / "FederationLedger.json"
reader.README = reader.ROOT / "README.md"
rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_failed: list[tuple[int, str]] | None = None
if rpc and api:
    path = Path(tempfile.mkdtemp(prefix="a92-")) / "deployment.json"
    path.write_text(fed.deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    reader_failed = [(x["round"], x["check"]) for x in reader.RESULTS if x["result"] == "FAIL"]
    print("independent reader:", "PASS" if not reader_failed else f"FAIL {reader_failed}")
problems = []
if MODE == "honest":
    if failed or reader_failed:
        problems.append("the honest run fails")
else:
    if not failed:
        problems.append("verify passes")
    if reader_failed == []:
        problems.append("the independent reader passes")
if problems:
    print(f"ATTACK WORKS ({MODE}): " + "; ".join(problems))
    sys.exit(1)
print("defence holds" if MODE != "honest" else "control: both pass the honest run")
