#!/usr/bin/env python3
"""What reading the registry's history once per ``audit verify`` saves (session 49).

``sites.names`` and ``log.agrees`` judge each round by the names registered when it was
finalized. Before session 49 each finalized round read them twice (``registry_at_finalize``
and ``check_names``, each ``Ledger.names_at_finalize``: a filtered ``RoundFinalized`` read and
every ``SiteRegistered`` event), an open or cancelled round once; ``verify_all`` now reads
``Ledger.registrations()`` once and asks it for every round (``Registrations.names_at``);
since session 49's h-172 it reads ``Ledger.registry_history()`` once (seven event reads: the
names, and a65/a66's removals, caps, budgets, openings and valuations) and asks it.

    python scripts/bench/names_reads.py [--rounds 6] [--extra-sites 100] [--repeats 5]

Runs ``--rounds`` honest rounds of three sites (``scripts/attacks/harness.py`` on a fresh Anvil
and IPFS), then registers ``--extra-sites`` more sites (each one more ``SiteRegistered`` event
to read), and times, alternating, ``--repeats`` times in this one process: the earlier reads
(``names_at_finalize`` per round as verify called it) and the new ones (one
``registry_history()``, then ``names_at`` per round), counting ``eth_getLogs`` calls; then one
``verify_all`` for scale, counting its ``eth_getLogs`` calls too. Also timed, alternating: the
registry history read round by round (``registry_history(r)`` for each round, what a verify that
did not share it would read: before h-172 each finalized round read as many events for a65/a66,
``names_while_finalizing`` and ``registry_moves``) against the one read ``verify_all`` makes.
Prints the medians; exits 1 when the three give different names or the one read makes as many
``eth_getLogs`` calls as either of the others. Timings are wall seconds on a shared machine:
compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "attacks"))

import fedtrail.ledger.client as client  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import dev_account  # noqa: E402
from fedtrail.ledger import Ledger  # noqa: E402
from fedtrail.protocol.codes import Phase  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--extra-sites", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("FEDTRAIL_ANVIL_BLOCK_TIME", "0")
    os.environ.setdefault("FEDTRAIL_ANVIL_STATE", "none")
    with daemons() as (rpc, api):
        os.environ["FEDTRAIL_ATTACK_RPC"], os.environ["FEDTRAIL_ATTACK_IPFS"] = rpc, api
        from harness import Site, run  # reads the two variables above

        out = run(
            [Site("hospital-a", 150), Site("hospital-b", 150), Site("plain", 150)],
            args.rounds,
            real=True,
            verbose=False,
            verify=False,
        )
        ledger: Ledger = out["fed"].ledger
        coordinator = out["fed"].coordinator
        for i in range(args.extra_sites):
            ledger.register_site(coordinator, dev_account(100 + i).address, f"extra-{i}", 100)
        rounds = range(1, ledger.current_round() + 1)
        finalized = {r for r in rounds if ledger.get_round(r).phase == Phase.FINALIZED}

        calls = 0
        real_get_logs = client._get_logs

        def counted(*a: Any, **k: Any) -> Any:
            nonlocal calls
            calls += 1
            return real_get_logs(*a, **k)

        client._get_logs = counted  # type: ignore[assignment]

        def before() -> list[dict[str, str]]:
            names = []
            for r in rounds:  # verify's reads before session 49
                names.append(ledger.names_at_finalize(r))
                if r in finalized:
                    ledger.names_at_finalize(r)  # registry_at_finalize, then check_names
            return names

        def after() -> list[dict[str, str]]:
            history = ledger.registry_history()
            return [history.names_at(r) for r in rounds]

        def per_round() -> list[dict[str, str]]:
            return [ledger.registry_history(r).names_at(r) for r in rounds]

        times: dict[str, list[float]] = {"before": [], "after": [], "per_round": []}
        counts: dict[str, int] = {}
        results: dict[str, list[dict[str, str]]] = {}
        for _ in range(args.repeats):
            for side, fn in (("before", before), ("after", after), ("per_round", per_round)):
                calls = 0
                start = time.perf_counter()
                results[side] = fn()
                times[side].append(time.perf_counter() - start)
                counts[side] = calls
        calls = 0
        start = time.perf_counter()
        audits = verify_all(ledger, out["store"])
        verify_calls = calls
        whole = time.perf_counter() - start
        client._get_logs = real_get_logs  # type: ignore[assignment]

    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(
        f"{len(rounds)} rounds ({len(finalized)} finalized), "
        f"{3 + args.extra_sites} SiteRegistered events, {args.repeats} repeats (medians)"
    )
    print(f"  before: {counts['before']} eth_getLogs, {b * 1000:.1f} ms")
    print(f"  after:  {counts['after']} eth_getLogs, {a * 1000:.1f} ms  ({a / b:.2f}x)")
    p = statistics.median(times["per_round"])
    print(
        f"  registry history round by round: {counts['per_round']} eth_getLogs, "
        f"{p * 1000:.1f} ms; read once: {a / p:.2f}x of it"
    )
    print(
        f"  one verify_all (new reads): {whole:.2f} s, {verify_calls} eth_getLogs, "
        f"{sum(not x.passed for x in audits)} round(s) failed; "
        f"the old reads were {b / whole:.1%} of it"
    )
    if not results["before"] == results["after"] == results["per_round"]:
        print("MISS: the two reads give different names")
        return 1
    if counts["after"] >= min(counts["before"], counts["per_round"]):
        print("MISS: the new reads make as many eth_getLogs calls as the old")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
