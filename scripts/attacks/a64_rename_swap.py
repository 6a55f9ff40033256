"""A64: **coordinator**: a paid site's name handed to a newcomer after the fact.

Three honest sites (``hospital-a``, ``clinic``, ``plain``) run one round, which is finalized and
verified. Then the coordinator removes ``hospital-a``'s address and registers it again as
``hospital-z``, and registers a new address (which never trained) as ``hospital-a``. No two
names read alike, and every round's log names its sites as they were registered when it was
finalized (``log.agrees``), so ``audit verify`` passes; but the report names every site by its
current registration: round 1's weight shows under ``hospital-z``, and ``hospital-a`` reads as a
site that never contributed.

Holds when verify still passes (nothing on chain is wrong) and the report shows the renamed
site's earlier name beside its current one.

``BEFORE=1`` in the environment leaves the earlier names out (the report before session 48).

usage: scripts/attacks/real.sh scripts/attacks/a64_rename_swap.py
Exits 1 when the report credits round 1 only to the new name, 0 otherwise.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.report import write_report
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import dev_account

if os.environ.get("BEFORE"):
    import fedtrail.auditor.report.collect  # noqa: F401  (the module, for sys.modules)

    sys.modules["fedtrail.auditor.report.collect"].former_names = lambda ledger, sites: {}
    print("BEFORE: the report's earlier names left out")
out = run([Site("hospital-a", 150), Site("clinic", 150), Site("plain", 150)], 1, real=True)
fed, store = out["fed"], out["store"]
names = {s.address: s.name for s in fed.ledger.get_sites()}
paid = next(a for a, n in names.items() if n == "hospital-a")
newcomer = dev_account(12).address
fed.ledger.remove_site(fed.coordinator, paid)
fed.ledger.register_site(fed.coordinator, paid, "hospital-z", 150)
fed.ledger.register_site(fed.coordinator, newcomer, "hospital-a", 150)
print(f"renamed {paid} hospital-a -> hospital-z; {newcomer} registered as hospital-a")
failed = [(a.round, c.name) for a in verify_all(fed.ledger, store) for c in a.checks if c.failed]
print("verify_all failed checks:", failed or "none")
html = Path(write_report(fed.ledger, store, Path(tempfile.mkdtemp(prefix="a64-")))).read_text()
flagged = "hospital-z (formerly hospital-a)" in html
print("report shows the earlier name beside the current one:", flagged)
problems = []
if failed:
    problems.append(f"verify fails an honest round: {failed}")
if not flagged:
    problems.append("the report credits round 1 to 'hospital-z' with no trace of 'hospital-a'")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: verify passes, and the report names the renamed site's earlier name")
