#!/usr/bin/env python3
"""The reads issue 18's h-304 cut, as they were and as they are, alternated on one Anvil.

    python scripts/bench/poll_reads.py [--runs 200]

A ledger with one 5-site round, every site revealed; then, alternated ``--runs`` times in this
process, medians of wall and CPU (this process) printed:

- after the reveals: the simulation's reads before (``get_round``, the pending block's clock,
  ``get_peer_round``, then the value step's ``round_poll``) against the service's one poll now;
- before a finalize: the step's ``round_poll`` then the finalize's ``get_submissions`` against
  ``round_poll(submissions=True)``.

No bar: it prints what the cut saves per round on this machine at this moment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.chain import advance_time, connect, dev_account, next_block_timestamp  # noqa: E402
from fedtrail.ledger import Ledger, commitment  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    with daemons() as (rpc, _):
        w3 = connect(rpc)
        coord = dev_account(0)
        ledger, _ = Ledger.deploy(w3, coord, aggregator=coord.address)
        sites = [dev_account(2 + i) for i in range(5)]
        for i, s in enumerate(sites):
            ledger.register_site(coord, s.address, f"s{i}", 100)
        r, _ = ledger.open_round(
            coord,
            "QmM",
            "11" * 32,
            terms_cid="QmT",
            terms_sha256="22" * 32,
            commit_seconds=300,
            reveal_seconds=300,
        )
        shas = [f"{i + 3}{i + 3}" * 32 for i in range(len(sites))]
        for s, sha in zip(sites, shas, strict=True):
            ledger.commit_update(s, r, commitment(s.address, r, sha, 10))
        advance_time(w3, 301)
        for i, (s, sha) in enumerate(zip(sites, shas, strict=True)):
            ledger.reveal_update(s, r, f"QmU{i}", sha, 10)

        def before_after_reveals() -> None:
            ledger.get_round(r)
            next_block_timestamp(w3)
            ledger.get_peer_round(r)
            ledger.round_poll(r)

        def before_finalize() -> None:
            ledger.round_poll(r, peer=False)
            ledger.get_submissions(r)

        pairs: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            ("after the reveals", before_after_reveals, lambda: ledger.round_poll(r)),
            (
                "before a finalize",
                before_finalize,
                lambda: ledger.round_poll(r, peer=False, submissions=True),
            ),
        ]
        for name, old, new in pairs:
            wall: dict[str, list[float]] = {"before": [], "now": []}
            cpu: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(args.runs):
                for key, fn in (("before", old), ("now", new)):
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    wall[key].append(time.perf_counter() - t)
                    cpu[key].append(time.process_time() - c)
            shown = ", ".join(
                f"{key} {statistics.median(wall[key]) * 1e3:.2f} ms wall / "
                f"{statistics.median(cpu[key]) * 1e3:.2f} ms CPU"
                for key in ("before", "now")
            )
            print(f"{name}: {shown} (medians of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
