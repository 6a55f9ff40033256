"""A54: **aggregator** (with a leaked copy): commit order reversed, hidden behind the auditor's
deployment file.

Duplicates are re-derived from the chain order of the round's ``UpdateCommitted`` events,
which the contract does not store (``Ledger.commit_orders``: events from the deployment's
``block_number`` on); a commitment without an event gets order 0. The deployment file an
auditor is handed comes from the coordinator, often the aggregator itself, and nothing checks
its ``block_number`` against the chain. Here an ally ``ally`` commits a leaked copy of honest
``h0``'s update after ``h0``; the aggregator reads the round's commit order reversed (its own
``_commit_orders`` patched), so ``h0`` is scored ``DUPLICATE`` 0 and the ally is paid. It then
hands auditors a deployment whose ``block_number`` lies after the round's last commitment:
both commitments read as order 0, the tie falls to the lower address (``ally``), and the
re-derived duplicate is ``h0`` again, the aggregator's verdict.

Holds when ``audit verify`` fails the round under every deployment: the true one
(``duplicates``), and the shifted one, which also hides the round's ``RoundOpened`` event
(it precedes every commitment), so the start model's CID is empty and ``start_model.hash``
fails. Sites ``h1``, ``h0``, ``ally`` (lower address than ``h0``), ``h2``, 150 images each,
one round.

usage: python scripts/attacks/a54_commit_order_deployment.py
       scripts/attacks/real.sh scripts/attacks/a54_commit_order_deployment.py
Exits 1 when verify passes under some deployment file (the attack works), 0 otherwise.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Ctx, Site, run

import fedtrail.ledger.client as client
from fedtrail.auditor.verify import verify_all
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger

honest_orders = client._commit_orders


def reversed_orders(committed):  # the dishonest aggregator's reading of the chain
    order = honest_orders(committed)
    n = len(order)
    return {site: n + 1 - k for site, k in order.items()}


def leaked_copy(ctx: Ctx):
    return ctx.now["h0"], 150  # obtained before the commit deadline (a leak, collusion)


sites = [Site("h1", 150), Site("h0", 150), Site("ally", 0, leaked_copy, cap=150), Site("h2", 150)]
client._commit_orders = reversed_orders
try:
    out = run(sites, 1, verify=False, real=True)
finally:
    client._commit_orders = honest_orders
row = out["results"][0]
fed = out["fed"]
paid = row["ally"]["weight"] > 0 and row["h0"]["reason"] == "DUPLICATE"
print(
    f"aggregator: h0 {row['h0']['reason']} {row['h0']['weight']:.3f}, "
    f"ally {row['ally']['reason']} {row['ally']['weight']:.3f}"
)
if not paid:
    print("setup failed: the reversed order did not pay the ally")
    sys.exit(2)
commits = fed.ledger.events("UpdateCommitted", argument_filters={"round": 1})
opened = fed.ledger.events("RoundOpened", argument_filters={"round": 1})
last_commit = max(e.block_number for e in commits)
deployments = {
    "true block_number": fed.ledger.from_block,
    "block_number after the commitments": last_commit + 1,
}
problems = []
for label, block in deployments.items():
    ledger = Ledger.connect(fed.ledger.w3, fed.ledger.address, from_block=block)
    try:
        audit = verify_all(ledger, out["store"])[0]
    except FedtrailError as exc:
        print(f"  {label} ({block}): verify refuses: {exc}")
        continue
    failed = [(c.name, c.detail[:90]) for c in audit.checks if c.applicable and not c.passed]
    verdict = "PASS" if audit.passed else "FAIL"
    print(f"  {label} ({block}; RoundOpened at {opened[0].block_number}): {verdict} {failed[:3]}")
    if audit.passed:
        problems.append(f"verify passes under a deployment with {label}")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: the reversed order fails verify under either deployment file")
