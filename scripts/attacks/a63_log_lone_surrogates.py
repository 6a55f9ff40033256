"""A63: **aggregator**: a round log whose strings hold lone UTF-16 surrogates.

JSON lets a string escape any code unit, ``"\\ud800"`` included, and a document of pure ASCII
bytes can carry one; Python's ``json`` reads it as a ``str`` holding U+D800, which no UTF-8
stream can write (``UnicodeEncodeError: surrogates not allowed``). The aggregator writes its
round log's bytes itself (fedtrail's writer would not), with ``\\ud800`` appended to strings,
hash-pins that log on chain, and every reader then shows it:

- ``text``: only the free-text fields (the summary, each site's explanation and each reason's
  text), so the log stays schema-valid and the readers go as far as they can;
- ``explanation``: only each site's explanation text (a claim no check recomputes);
- ``all``: every string of the log (names and enums too: schema and ``log.agrees`` fail).

Readers: ``verify_all``, the report (``write_report``), and the CLI's ``audit verify`` (table,
csv, json), ``audit log`` (table, json) and ``audit report``, each run through click's test
runner, whose streams encode strictly as a UTF-8 terminal does.

Holds when no reader crashes (a verdict or a refusal is fine, an uncaught exception is not)
and verify does not pass the log: RFC 7493 (I-JSON) forbids lone surrogates, and a reader in
another language (Rust's ``serde_json``) refuses the whole document that Python reads.
``BEFORE=1`` in the environment turns off ``fedtrail.safejson``'s refusal (session 48) to show
the code before it.

usage: scripts/attacks/real.sh scripts/attacks/a63_log_lone_surrogates.py text|explanation|all
Exits 1 when a reader crashes or verify passes the log, 0 otherwise.
"""

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from click.testing import CliRunner
from harness import Site, run

from fedtrail.auditor.report import write_report
from fedtrail.auditor.verify import verify_all
from fedtrail.cli import cli
from fedtrail.errors import FedtrailError
from fedtrail.protocol import roundlog

MODE = sys.argv[1] if len(sys.argv) > 1 else "text"
TEXT_KEYS = (
    {"explanation"}
    if MODE == "explanation"
    else {"summary", "explanation", "text", "detail", "caption", "note"}
)
if os.environ.get("BEFORE"):
    import re

    from fedtrail import safejson

    safejson._SURROGATE_ESCAPE = re.compile(b"(?!)")  # the check never runs
    print("BEFORE: fedtrail.safejson's lone-surrogate refusal turned off")
honest_bytes = roundlog.RoundLog.to_bytes
touched: list[str] = []


def poison(value, key=""):
    if isinstance(value, dict):
        return {k: poison(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [poison(v, key) for v in value]
    if isinstance(value, str) and (MODE == "all" or key in TEXT_KEYS):
        touched.append(key)
        return value + "\ud800"
    return value


def lying_bytes(log):
    doc = poison(json.loads(honest_bytes(log)))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


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
print(f"strings given a lone surrogate: {len(touched)} ({sorted(set(touched))})")
crashes: list[str] = []


def reader(label, fn):
    try:
        result = fn()
        print(f"  {label}: {result}")
    except FedtrailError as exc:
        print(f"  {label}: refused: {str(exc)[:120]!r}")
    except Exception as exc:  # a crash, not a verdict
        crashes.append(f"{label}: {type(exc).__name__}: {exc}")
        print(f"  {label}: CRASH {type(exc).__name__}: {str(exc)[:160]!r}")
        traceback.print_exc(limit=-3)


def verify():
    audits = verify_all(fed.ledger, store)
    return [(a.round, c.name) for a in audits for c in a.checks if c.failed] or "PASS"


reader("verify_all", verify)
if not any("verify_all" in c for c in crashes) and verify() == "PASS":
    crashes.append("verify_all passes a log whose strings hold lone surrogates")
reader(
    "write_report",
    lambda: Path(write_report(fed.ledger, store, Path(tempfile.mkdtemp(prefix="a63-")))).name,
)
where = [
    "--rpc-url", os.environ["FEDTRAIL_ATTACK_RPC"], "--contract", fed.ledger.address,
    "--store", f"ipfs:{os.environ['FEDTRAIL_ATTACK_IPFS']}",
]  # fmt: skip
commands = {
    "audit verify (table)": ["audit", "verify", *where],
    "audit verify (csv)": ["audit", "verify", *where, "--format", "csv"],
    "audit verify (json)": ["audit", "verify", *where, "--format", "json"],
    "audit log (table)": ["audit", "log", "1", *where],
    "audit log (json)": ["audit", "log", "1", *where, "--format", "json"],
    "audit report": ["audit", "report", *where, "--out", tempfile.mkdtemp(prefix="a63r-")],
}
for label, args in commands.items():

    def invoke(args=args):
        r = CliRunner().invoke(cli, args)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return f"exit {r.exit_code}"

    reader(label, invoke)
if crashes:
    print("ATTACK WORKS: " + "; ".join(c[:200] for c in crashes))
    sys.exit(1)
print("defence holds: every reader gives a verdict or a refusal")
