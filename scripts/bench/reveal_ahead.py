#!/usr/bin/env python3
"""A site's reveal step with and without its preflight asked beside the store's add (issue 18;
tried in session 59 and dropped: this bench is why).

    python scripts/bench/reveal_ahead.py [--runs 30]

One round open on a fresh ledger (real Anvil + js-ipfs, ``_daemons``), one site committed, the
commit window closed. Then, alternated ``--runs`` times in this process, with a fresh blob of an
update's size (422,176 bytes) each time:

- after: ``store.put`` of the blob, then the reveal's preflight (``fedtrail.ledger.client.
  _preflight``: one batch of estimate, nonce, fees), as ``SiteNode.participate`` asks them;
- beside: the same preflight in a thread started before the put (the CID computed first) and
  joined after it, as session 59's dropped change asked them.

Nothing is sent (the reveal's estimate runs against the round; each blob is new, so it reverts
with the commitment's mismatch: the same round trip). Prints each side's median wall and CPU
time and their ratio. No bar: the bars are on the whole round (``overhead.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import threading  # noqa: E402

from fedtrail.chain import advance_time, connect, dev_account  # noqa: E402
from fedtrail.ledger import commitment  # noqa: E402
from fedtrail.ledger.client import Ledger, _preflight, to_bytes32  # noqa: E402
from fedtrail.storage.cid import compute_cid  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402

BLOB = 422_176


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with daemons() as (rpc, api):
        w3 = connect(rpc)
        coord, agg, site = dev_account(0), dev_account(1), dev_account(2)
        ledger, _ = Ledger.deploy(w3, coord, aggregator=agg.address)
        ledger.register_site(coord, site.address, "s0", 100)
        r, _ = ledger.open_round(
            agg,
            "QmM",
            "11" * 32,
            terms_cid="QmT",
            terms_sha256="22" * 32,
            commit_seconds=300,
            reveal_seconds=3600,
        )
        ledger.commit_update(site, r, commitment(site.address, r, "33" * 32, 10))
        advance_time(w3, 301)
        store = IpfsStore(api)

        def preflight(cid: str) -> None:
            call = ledger._fn.revealUpdate(r, cid, to_bytes32("33" * 32), 10)
            _preflight(w3, call, site.address, ledger._contract)

        def after() -> None:
            blob = os.urandom(BLOB)
            preflight(store.put(blob))

        def beside() -> None:
            blob = os.urandom(BLOB)
            ahead = threading.Thread(target=preflight, args=(compute_cid(blob),))
            ahead.start()
            try:
                store.put(blob)
            finally:
                ahead.join()

        sides = {"after": after, "beside": beside}
        wall: dict[str, list[float]] = {k: [] for k in sides}
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        for fn in sides.values():
            fn()  # warm
        for i in range(args.runs):
            order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
            for k, fn in order:
                t, c = time.perf_counter(), time.process_time()
                fn()
                wall[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in sides}
    for k, (w, c) in med.items():
        print(
            f"{k:<7} median wall {w * 1000:7.1f} ms   CPU {c * 1000:6.1f} ms   ({args.runs} runs)"
        )
    print(f"beside / after wall {med['beside'][0] / med['after'][0]:.3f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
