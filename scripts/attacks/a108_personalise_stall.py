"""A108: **aggregator**: personalisation steps that keep the honest nodes busy past the next
round's commit window, so that an ally that skips personalising is paid alone.

The round terms' ``personalisation`` block (method, ``steps`` up to 10,000, ``lr``) is the
aggregator's choice, free per round and bounded by no ``[accept]`` key: it is the sites' own
business, done after each finalized round and never sent anywhere. But a ``fedtrail node run``
daemon personalises in its watch loop, between two looks at the chain: while it runs its steps
it does not look, and the aggregator's service opens the next round the moment it finalizes
one. With enough steps every honest node is still fine-tuning when the next round's windows
close: measured, each honest node committed to the new round in the loop pass that saw it open,
then personalised the last one through the whole reveal window, so its commitment reads on
chain as an update it withheld (with more steps, or the round opened a moment later, it commits
nothing at all). An ally whose node does not personalise (it need not: nothing checks) takes
the whole round, and ``audit verify`` passes.

Three sites of ~100 images (``a``, ``b`` honest, ``x`` the ally, whose node skips
personalisation) run ``fedtrail node run`` daemons (``SiteNode.run``, in threads) against the
aggregator's own service loop (``AggregatorService.run``, 2 rounds, commit 30 s, reveal 20 s),
on Anvil + IPFS. The terms ask ``finetune`` for STEPS steps (default 1,000: ~90 s on this
machine at load ~20).

- ``attack``: with ``BEFORE=1`` the node personalises as before this change.
- ``honest``: control, no personalisation in the terms.

usage: scripts/attacks/real.sh scripts/attacks/a108_personalise_stall.py attack|honest [STEPS]
Exits 1 when round 2 pays the ally alone while a and b took part in round 1, and verify passes,
else 0.
"""

import os
import sys
import threading
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import print_audit, three_site_federation

import fedtrail.node.daemon as daemon_module
from fedtrail.protocol.codes import Reason

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack or honest")
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
BEFORE = os.environ.get("BEFORE") == "1"

if BEFORE:
    daemon_module.SiteNode._round_waiting = lambda self, round_id: False  # the code before a108
    print("BEFORE=1: personalisation does not give way to an open round")


def main() -> int:
    names = ["a", "b", "x"]
    _, fed, _ = three_site_federation(
        "a108",
        names,
        site_poll_interval=0.5,
        personalise_steps=STEPS if MODE == "attack" else 0,
    )
    ally = fed.nodes[2]
    ally.personalise_latest = lambda: None  # type: ignore[method-assign]
    plan = f"finetune x {STEPS} steps" if MODE == "attack" else "off"
    print(f"terms: personalisation {plan}")
    threads = [threading.Thread(target=n.run, daemon=True) for n in fed.nodes]
    for t in threads:
        t.start()
    began = time.monotonic()
    fed.service.run(rounds=2)
    print(f"2 rounds closed in {time.monotonic() - began:.0f} s")
    for n in fed.nodes:
        n.stop_event.set()
    for t in threads:
        t.join(timeout=120)

    ledger = fed.ledger
    paid: dict[int, dict[str, float]] = {}
    for r in (1, 2):
        info = ledger.get_round(r)
        print(f"round {r}: {info.phase.label}")
        paid[r] = {}
        for name, node in zip(names, fed.nodes, strict=True):
            s = ledger.get_submission(r, node.address)
            if s is None or s.commit_order == 0:
                print(f"  {name}: nothing on chain")
                continue
            if not s.revealed:
                print(f"  {name}: committed (order {s.commit_order}), never revealed")
                continue
            paid[r][name] = s.weight / 1e18
            print(
                f"  {name}: samples {s.num_samples}, reason {Reason(s.reason).name}, "
                f"weight {s.weight / 1e18:.3f}"
            )
        for name, node in zip(names, fed.nodes, strict=True):
            note = node.state.rounds.get(r)
            if note is not None and (note.personal_note or note.personal_sha256):
                print(f"  {name} personalised round {r}: {note.personal_note or 'kept'}")
    passed = print_audit(ledger, fed.store)
    honest_in_1 = paid[1].get("a", 0) > 0 and paid[1].get("b", 0) > 0
    works = honest_in_1 and paid[2].get("x", 0) == 1.0 and passed
    print(
        "RESULT: "
        + (
            "the attack works: the ally takes all of round 2, a and b busy personalising, "
            "audit verify passes"
            if works
            else "round 2 was not handed to the ally"
        )
    )
    return 1 if works else 0


if __name__ == "__main__":
    sys.exit(main())
