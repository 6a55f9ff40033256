"""A66: **coordinator**: a paid site removed after it revealed, before the round is valued.

The contract keeps a removed site's past submissions, and a valuation must cover exactly the
revealed updates, so the aggregator has to value (and pay) a site the registry no longer holds;
its round log names sites as the registry did at finalization. Does any reader (the
aggregator's valuation and log, ``audit verify``, the report) crash, drop the site, or fail an
honest aggregator? Three honest sites of 150, two rounds; in round 2, once every reveal is sent:
- ``remove``: the coordinator removes ``t``;
- ``rename``: removes ``t`` and registers it again at once as ``t-renamed``;
- ``later``: the same rename, made between rounds (after round 1 is finalized, before round 2
  opens: a registry change where it belongs), with the same aggregator service running on;
- ``honest``: nothing (control).

usage: scripts/attacks/real.sh scripts/attacks/a66_remove_after_reveal.py remove|rename|honest
Exits 0 when round 2 is finalized with ``t`` paid as the others and ``audit verify`` and the
report both complete (verify passing), 1 otherwise.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.report import write_report

MODE = sys.argv[1] if len(sys.argv) > 1 else "remove"
if MODE not in ("remove", "rename", "later", "honest"):
    sys.exit(f"unknown mode {MODE!r}: remove, rename, later or honest")


def rename(fed, acct):
    t = acct["t"].address
    fed.ledger.remove_site(fed.coordinator, t)
    if MODE != "remove":
        fed.ledger.register_site(fed.coordinator, t, "t-renamed", 150)


def after_reveals(fed, acct, r):
    if r == 2 and MODE in ("remove", "rename"):
        rename(fed, acct)
        print(f"round 2: coordinator, after every reveal: {MODE} t")


def between(fed, acct, r):
    # round 2 is open and every commitment is on chain: t already committed, so the
    # coordinator's rename would void it (a65); made before round 2 opened instead, below
    pass


def setup(fed, acct):
    if MODE != "later":
        return
    opened = fed.service.open_next

    def open_next():
        if fed.ledger.current_round() == 1:  # round 1 finalized: rename t before round 2
            rename(fed, acct)
            print("between rounds 1 and 2: coordinator renames t to t-renamed")
        return opened()

    fed.service.open_next = open_next


problems = []
try:
    out = run(
        [Site("a", 150), Site("b", 150), Site("t", 150)],
        2,
        real=True,
        after_reveals=after_reveals,
        setup=setup,
    )
except Exception as exc:  # what an attack on the aggregator's service looks like
    print(f"CRASH in the federation: {type(exc).__name__}: {exc}")
    sys.exit(1)
r2 = out["results"][1]
print("round 2:", {k: round(v["weight"], 3) for k, v in r2.items()})
if r2.get("t", {}).get("weight", 0) <= 0:
    problems.append("t was not paid in round 2")
if not out["audit_ok"]:
    problems.append(f"verify fails: {out['failed']}")
try:
    html = Path(
        write_report(out["fed"].ledger, out["store"], Path(tempfile.mkdtemp(prefix="a66-")))
    ).read_text()
    print("report written;", ("t-renamed" in html and "shows t-renamed") or "")
except Exception as exc:
    problems.append(f"the report crashed: {type(exc).__name__}: {exc}")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: t paid, verify passes, the report is written")
