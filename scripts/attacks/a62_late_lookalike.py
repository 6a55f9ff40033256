"""A62: **coordinator**: a look-alike registered when no finalized round will hold it.

``audit verify``'s ``sites.names`` (session 48) judges each finalized round by the names its
registry held when it was finalized (``names_at_finalize``). Three honest sites
(``hospital-a``, ``hospital-b``, ``plain``) run one round, which is finalized; then the
coordinator registers an imposter ``hospital-\\u0430`` (Cyrillic a) beside ``hospital-a``:

- ``after``: after the last finalized round, with no round open;
- ``open``: while round 2 is open (opened, nobody submits yet; never finalized).

Every reader then runs: ``verify_all``, the report (``write_report``) and ``audit verify``'s
CLI line. The imposter holds no weight, but every table and the report list it under a name
that reads like the paid site's.

Holds when verify passes the honest rounds (nothing in them is wrong) and yet a reader is told:
``audit verify`` prints a warning naming both addresses, the report shows it, and in ``open``
the open round's own ``sites.names`` fails.

usage: scripts/attacks/real.sh scripts/attacks/a62_late_lookalike.py after|open
Exits 1 when the look-alike reaches a reader unflagged, 0 otherwise.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from click.testing import CliRunner
from harness import Site, run

from fedtrail.auditor.report import write_report
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import dev_account
from fedtrail.protocol.names import registry_warning

MODE = sys.argv[1] if len(sys.argv) > 1 else "after"
IMPOSTER = "hospital-\u0430"

out = run([Site("hospital-a", 150), Site("hospital-b", 150), Site("plain", 150)], 1, real=True)
fed, store = out["fed"], out["store"]
imposter = dev_account(12).address
if MODE == "open":
    one = fed.ledger.get_round(1)
    fed.ledger.open_round(
        fed.aggregator,
        one.global_cid,
        one.global_sha256,
        terms_cid=one.terms_cid,
        terms_sha256=one.terms_sha256,
        commit_seconds=600,
        reveal_seconds=600,
    )
fed.ledger.register_site(fed.coordinator, imposter, IMPOSTER, 100)
print(
    f"registered {imposter} as {IMPOSTER!r} ({MODE}); round phases:",
    [fed.ledger.get_round(r).phase.label for r in range(1, fed.ledger.current_round() + 1)],
)
problems = []
audits = verify_all(fed.ledger, store)
failed = [(a.round, c.name) for a in audits for c in a.checks if c.failed]
print("verify_all failed checks:", failed)
if MODE == "open" and (2, "sites.names") not in failed:
    problems.append("the open round's sites.names passes")
if any(r == 1 for r, _ in failed):
    problems.append("the honest finalized round 1 fails")
names = {s.address: s.name for s in fed.ledger.get_sites()}
warning = registry_warning(names)
print("registry warning:", warning)
page = write_report(fed.ledger, store, Path(tempfile.mkdtemp(prefix="a62-")))
html = Path(page).read_text(encoding="utf-8")
shown = "hospital-\\u0430" in html and "Warning: registered names read alike" in html
print("report flags it:", shown)
if not shown:
    problems.append("the report lists the imposter without a warning")
# the CLI reads a deployment; the harness's ledger is named by address and RPC URL
import os  # noqa: E402

from fedtrail.cli import cli  # noqa: E402

ipfs = os.environ.get("FEDTRAIL_ATTACK_IPFS", "")
r = CliRunner().invoke(
    cli,
    [
        "audit", "verify", "--rpc-url", os.environ["FEDTRAIL_ATTACK_RPC"],
        "--contract", fed.ledger.address, "--store", f"ipfs:{ipfs}",
    ],
)  # fmt: skip
line = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
print(f"audit verify exit {r.exit_code}; {line[0][:160] if line else 'no warning'}")
if not line:
    problems.append("audit verify prints no warning")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: the honest rounds pass, and verify, the report (and the open round) flag it")
