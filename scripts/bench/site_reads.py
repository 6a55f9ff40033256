#!/usr/bin/env python3
"""A site node's chain reads per round on Anvil, before and after issue 18's one batch a step.

    python scripts/bench/site_reads.py [--sites 5] [--runs 40]

One round open on a fresh ledger (real Anvil + js-ipfs, ``_daemons``), every site committed. Then,
alternated ``--runs`` times in this process, one site's reads for both of its steps:

- one by one, the reads ``SiteNode.participate`` made before ``Ledger.site_round`` (at e560f94),
  through the ledger's single reads: per step the round (one batch), the commitment (a view,
  and its two event queries once it exists), the pending block's clock; in the commit step
  also the last finalized round and the privacy plan's round and privacy account; in the reveal
  step the clock once more (the commit step's read after training and after its commitment are
  in both sides, so neither is counted);
- batched: ``Ledger.site_round`` once a step.

Both sides read the same chain state (the site's commitment exists in both steps here, so the
commit step's event queries are counted, as at a restart or for a later poll). Prints the
median of each side, the ratio, and the requests each side sent; the values read must agree
(exit 1 otherwise). No bar: issue 18's bars are on the whole round (``overhead.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.chain import connect, dev_account, next_block_timestamp  # noqa: E402
from fedtrail.ledger import Ledger, commitment  # noqa: E402
from fedtrail.ml.datasets import load_bundled, partition_dirichlet  # noqa: E402
from fedtrail.simulation.federation import build_federation, make_sites  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402


def single_submission(ledger: Ledger, r: int, site: str) -> Any:
    """``get_submission`` as it read before: the view, then its two event queries."""
    raw = ledger._view(ledger._fn.getSubmission(r, site))
    return ledger._submission(r, raw, ledger.update_cids(r), ledger.commit_orders(r))


def one_by_one(ledger: Ledger, r: int, site: str) -> tuple[Any, ...]:
    """Both steps' reads as participate made them before (see the module's doc)."""
    info = ledger.get_round(r)  # commit step
    sub = single_submission(ledger, r, site)
    now = next_block_timestamp(ledger.w3)
    last = ledger.last_finalized_round()
    ledger.get_round(r)  # the privacy plan's
    privacy = ledger.privacy(site)
    ledger.get_round(r)  # reveal step
    single_submission(ledger, r, site)
    next_block_timestamp(ledger.w3)
    next_block_timestamp(ledger.w3)  # whether reveals are open
    return info, sub, last, privacy, now


def batched(ledger: Ledger, r: int, site: str) -> tuple[Any, ...]:
    view = ledger.site_round(r, site)  # commit step
    ledger.site_round(r, site)  # reveal step
    return view.info, view.submission, view.last_finalized, view.privacy, view.pending_timestamp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    splits = load_bundled()
    parts = partition_dirichlet(splits.train.labels, args.sites, 3.0, 0, min_size=50)
    with daemons() as (rpc, api):
        fed = build_federation(
            w3=connect(rpc),
            coordinator=dev_account(0),
            sites=make_sites(
                [dev_account(2 + i) for i in range(args.sites)],
                [splits.train.subset(p) for p in parts],
            ),
            store=IpfsStore(api),
            folder=Path(tempfile.mkdtemp()),
            validation=splits.val,
        )
        ledger = fed.ledger
        r = fed.service.open_next()
        for i, node in enumerate(fed.nodes):
            sha = hashlib.sha256(bytes([i])).hexdigest()
            ledger.commit_update(node.account, r, commitment(node.address, r, sha, 100))
        site = fed.nodes[0].address

        sides = {"one by one (before)": one_by_one, "batched (site_round)": batched}
        sent = {name: 0 for name in sides}
        times: dict[str, list[float]] = {name: [] for name in sides}
        count = {"n": 0}
        provider: Any = ledger.w3.provider
        single_req, batch_req = provider._make_request, provider.make_batch_request

        def counted_single(method: Any, data: Any) -> Any:
            count["n"] += 1
            return single_req(method, data)

        def counted_batch(calls: Any) -> Any:
            count["n"] += 1
            return batch_req(calls)

        provider._make_request, provider.make_batch_request = counted_single, counted_batch
        answers: dict[str, Any] = {}
        for _ in range(args.runs):
            for name, fn in sides.items():
                count["n"] = 0
                t = time.perf_counter()
                got = fn(ledger, r, site)
                times[name].append(time.perf_counter() - t)
                sent[name] = count["n"]
                answers[name] = got[:4]
        provider._make_request, provider.make_batch_request = single_req, batch_req
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name in sides:
        print(f"{name:<24} median {medians[name] * 1e3:6.2f} ms, {sent[name]} requests")
    before, after = medians.values()
    print(f"ratio batched / one by one: {after / before:.2f} (median of {args.runs} alternations)")
    same = len({repr(a) for a in answers.values()}) == 1
    print("values read: " + ("the same" if same else f"DIFFER: {answers}"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
