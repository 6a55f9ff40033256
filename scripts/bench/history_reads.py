#!/usr/bin/env python3
"""A valuation's history from the service's memory vs from the store (issue 18).

    python scripts/bench/history_reads.py [--sites 5] [--runs 10]

A federation of ``--sites`` sites on Anvil + js-ipfs runs round 1 through fedtrail
(``Federation.run_round``), then round 2's sites commit and reveal. Round 2's valuation
(``AggregatorService._valuate``, the product's call; with standing, the default, its free-rider
references are round 1's updates and its global delta, its standing source round 1's log) is
then run ``--runs`` times each way, alternated in this process (which way goes first alternates
too): ``memory``, with what the service holds after finalizing round 1 (its held round and kept
blobs); ``store``, as a restarted service reads them (nothing held or kept: the store's ``get``
and the decodes). Every run starts with no references known. Prints, for each way, the median
wall and CPU seconds of the valuation, js-ipfs's and Anvil's CPU in it and the store requests it
made; exits 1 when the two ways' scores, reasons, components or standing differ.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedtrail.chain import advance_time, block_timestamp, connect, dev_account  # noqa: E402
from fedtrail.ml.datasets import load_bundled, partition_dirichlet  # noqa: E402
from fedtrail.ml.training import TrainConfig  # noqa: E402
from fedtrail.simulation.federation import build_federation, make_sites  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import cpu_seconds, daemons, listening_pids  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    splits = load_bundled()
    parts = partition_dirichlet(splits.train.labels, args.sites, 3.0, 0, min_size=50)
    trains = [splits.train.subset(p) for p in parts]
    folder = Path(tempfile.mkdtemp(prefix="fedtrail-history-"))
    gets = [0]
    get = IpfsStore.get

    def counted(self: IpfsStore, *a: Any, **k: Any) -> bytes:
        gets[0] += 1
        return get(self, *a, **k)

    IpfsStore.get = counted  # type: ignore[method-assign]
    try:
        with daemons() as (rpc, api):
            fed = build_federation(
                w3=connect(rpc),
                coordinator=dev_account(0),
                sites=make_sites(
                    [dev_account(2 + i) for i in range(args.sites)],
                    trains,
                    training=TrainConfig(epochs=1),
                ),
                fund_wei=10**18,  # dev accounts past Anvil's ten funded ones
                store=IpfsStore(api),
                folder=folder,
                validation=splits.val,
            )
            ledger, service = fed.ledger, fed.service
            assert fed.run_round() is not None, "round 1 did not close"
            held, kept = dict(service._held), dict(service._kept)
            assert held, "the service holds nothing of round 1"
            r = service.open_next()
            for n in fed.nodes:
                n.participate(r)  # train, encode, commit
            info = ledger.get_round(r)
            now = block_timestamp(ledger.w3)
            advance_time(ledger.w3, info.commit_deadline - now + 3)
            for n in fed.nodes:
                n.participate(r)  # store, reveal
            start = service._model(info.start_cid, info.start_sha256)
            pairs = service.candidates(r, info=info)
            ports = [int(rpc.rsplit(":", 1)[1]), int(api.split("/tcp/")[1].split("/")[0])]
            pids = {
                name: listening_pids(p) for name, p in zip(("anvil", "ipfs"), ports, strict=True)
            }
            gc.collect()
            gc.freeze()
            figures: dict[str, dict[str, list[float]]] = {
                way: {"wall": [], "cpu": [], "ipfs": [], "anvil": [], "gets": []}
                for way in ("memory", "store")
            }
            answers: dict[str, set[str]] = {"memory": set(), "store": set()}
            for i in range(args.runs):
                for way in ("memory", "store") if i % 2 == 0 else ("store", "memory"):
                    service._references = {}
                    service._held = dict(held) if way == "memory" else {}
                    service._kept = dict(kept) if way == "memory" else {}
                    d0 = {name: cpu_seconds(p) for name, p in pids.items()}
                    g0, t0, c0 = gets[0], time.perf_counter(), time.process_time()
                    report, standing = service._valuate(r, start, pairs)
                    f = figures[way]
                    f["wall"].append(time.perf_counter() - t0)
                    f["cpu"].append(time.process_time() - c0)
                    f["gets"].append(gets[0] - g0)
                    for name, p in pids.items():
                        f[name].append(cpu_seconds(p) - d0[name])
                    answers[way].add(
                        json.dumps(
                            {
                                "sites": [
                                    [v.site, v.score, int(v.reason), v.components]
                                    for v in report.sites
                                ],
                                "standing": None if standing is None else standing.to_json(),
                            },
                            default=float,
                            sort_keys=True,
                        )
                    )
    finally:
        IpfsStore.get = get  # type: ignore[method-assign]
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.sites} sites, round {r}'s valuation, {args.runs} runs each way, medians:")
    for way, f in figures.items():
        print(
            f"  {way:<6} wall {statistics.median(f['wall']):.4f} s, CPU "
            f"{statistics.median(f['cpu']):.4f} s, js-ipfs CPU {statistics.median(f['ipfs']):.3f}"
            f" s, Anvil CPU {statistics.median(f['anvil']):.3f} s, store gets "
            f"{statistics.median(f['gets']):.0f}  (wall runs: "
            + ", ".join(f"{x:.3f}" for x in f["wall"])
            + ")"
        )
    same = len(answers["memory"]) == 1 and answers["memory"] == answers["store"]
    print("scores, reasons, components and standing equal both ways:", same)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
