"""A56: **aggregator / coordinator**: a deployment file whose ``block_number`` is not the
block of the contract's creation.

Every event read (``RoundOpened``, ``UpdateCommitted``, ``UpdateSubmitted``,
``RoundFinalized``, ``SiteRegistered``, ``PrivacySpent``, reputation and decline events)
starts at the deployment's ``block_number`` (``Ledger.from_block``); the file comes from the
coordinator, often the aggregator itself. A later ``block_number`` hides every event before
it from ``audit verify``, ``audit privacy`` and the report; an earlier one only widens the
scan. Sites ``h0``..``h2`` (150 images each), two rounds on the harness, then each reader
under these deployment files:

- ``true``: the creation block (the receipt's),
- ``earlier``: the creation block minus one,
- ``before round 1``: the block of round 1's ``RoundOpened`` (hides the registrations),
- ``after round 1``: one past round 1's ``RoundFinalized`` (hides all of round 1).

For each the script opens the ledger the way the CLI does (``Ledger.at``) and runs
``verify_all``, ``audit_privacy`` and the report's ``collect``; it prints the verdicts and
what each read differs from the true file's (registered names, reputation history, privacy
spends).

Holds when no deployment file other than ``true`` (and ``earlier``, which hides nothing) is
accepted, or when every such reading fails verify.

usage: python scripts/attacks/a56_deployment_block.py
       scripts/attacks/real.sh scripts/attacks/a56_deployment_block.py
Exits 1 when a shifted deployment file passes verify (the attack works), 0 otherwise.
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

from fedtrail.auditor.privacy import audit_privacy
from fedtrail.auditor.report import collect
from fedtrail.auditor.verify import verify_all
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger

sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150)]
out = run(sites, 2, verify=False, real=True)
fed, store = out["fed"], out["store"]
ledger = fed.ledger
created = ledger.from_block
deployment = fed.deployment
opened = ledger.events("RoundOpened", argument_filters={"round": 1})[0].block_number
finalized = ledger.events("RoundFinalized", argument_filters={"round": 1})[0].block_number
files = {
    "true": created,
    "earlier": created - 1,
    "before round 1": opened,
    "after round 1": finalized + 1,
}


def read(led: Ledger) -> dict:
    audits = verify_all(led, store)
    failed = [(a.round, c.name) for a in audits for c in a.checks if c.applicable and not c.passed]
    privacy = audit_privacy(led, store)
    report = collect(led, store, audits)
    return dict(
        passed=all(a.passed for a in audits),
        failed=failed,
        names=sorted(led.names_at_finalize(1).items()),
        reputation=sorted((k, tuple(v)) for k, v in report.reputation.items()),
        privacy=privacy.passed,
        spends=sorted((u.round, u.site, u.declared_micro) for u in privacy.updates),
    )


truth = None
problems = []
for label, block in files.items():
    shifted = dataclasses.replace(deployment, block_number=block)
    try:
        led = Ledger.at(ledger.w3, shifted)
    except FedtrailError as exc:
        print(f"  {label} (block_number {block}): refused: {exc}")
        if label == "true":
            problems.append("the true deployment file is refused")
        continue
    try:
        got = read(led)
    except FedtrailError as exc:
        print(f"  {label} (block_number {block}): a reader refuses: {exc}")
        continue
    if truth is None:
        truth = got
    hidden = [k for k in ("names", "reputation", "spends") if got[k] != truth[k]]
    verdict = "PASS" if got["passed"] else "FAIL"
    print(
        f"  {label} (block_number {block}; created {created}): verify {verdict} "
        f"{got['failed'][:4]}; privacy {'PASS' if got['privacy'] else 'FAIL'}; "
        f"differs from the true reading in {hidden or 'nothing'}"
    )
    if label not in ("true", "earlier") and got["passed"]:
        problems.append(f"verify passes under block_number {label} (hiding {hidden})")
# the independent reader (scripts/independent, no fedtrail import) under the same files
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
if rpc and api:
    folder = Path(tempfile.mkdtemp(prefix="a56-"))
    for label in ("true", "before round 1"):
        path = folder / "deployment.json"
        path.write_text(dataclasses.replace(deployment, block_number=files[label]).to_json())
        argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            try:
                rc = reader.main(argv)
            except SystemExit as exc:
                rc = exc.code
        fails = [line for line in printed.getvalue().splitlines() if "FAIL" in line]
        print(f"  independent reader, {label}: exit {rc!r} {fails[:2]}")
        if label != "true" and rc == 0:
            problems.append(f"the independent reader passes block_number {label}")
        if label == "true" and rc != 0:
            problems.append("the independent reader fails the true file")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds")
