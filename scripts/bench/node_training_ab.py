#!/usr/bin/env python3
"""The node's training in a round vs the same ``train_local`` call beside it, paired.

    python scripts/bench/node_training_ab.py [--sites 5] [--epochs 5] [--rounds 2]

Builds the federation ``overhead.py`` builds (Anvil + IPFS, the same sites, seeds and one torch
thread), runs an untimed first round, then ``--rounds`` rounds in which every site's training
through ``SiteNode.participate`` is bracketed by the identical call (the start model the node
decoded, the same dataset and ``TrainConfig``) run just before and just after it in the same
thread. Each call is measured in wall seconds, in the thread's own CPU seconds
(``time.thread_time``) and, where Linux gives it, in seconds spent runnable but waiting for a
core (``/proc/self/task/<tid>/schedstat``). Prints the node's CPU and wall over the mean of its
two neighbours' (per call and the medians) and checks that all three deltas are bit-identical.

Issue 18 noticed the node's training taking ~5% longer than the in-process baseline's in
``overhead.py``; this separates what the node path does from what the machine does at that
moment. Exits 1 when a delta differs or the median CPU ratio exceeds :data:`CPU_RATIO_BAR`.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fedtrail.node.daemon as daemon_mod  # noqa: E402
from fedtrail.chain import connect, dev_account  # noqa: E402
from fedtrail.ml.datasets import load_bundled, partition_dirichlet  # noqa: E402
from fedtrail.ml.training import LocalResult, TrainConfig  # noqa: E402
from fedtrail.simulation.federation import build_federation, make_sites  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402

CPU_RATIO_BAR = 1.02
"""The node's training may cost at most this much CPU over the identical call beside it (median)."""


def waited() -> float:
    """Seconds this thread has spent runnable but not running (0 where Linux's schedstat is
    not there)."""
    try:
        fields = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").read_text()
    except OSError:
        return 0.0
    return int(fields.split()[1]) / 1e9


def measured(fn: Callable[[], LocalResult]) -> tuple[LocalResult, dict[str, float]]:
    w, c, q = time.perf_counter(), time.thread_time(), waited()
    result = fn()
    return result, {
        "wall": time.perf_counter() - w,
        "cpu": time.thread_time() - c,
        "wait": waited() - q,
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    splits = load_bundled()
    parts = partition_dirichlet(splits.train.labels, args.sites, 3.0, 0, min_size=50)
    trains = [splits.train.subset(p) for p in parts]
    train_local = daemon_mod.train_local
    rows: list[dict[str, Any]] = []

    def bracketed(global_state: Any, train: Any, **kw: Any) -> LocalResult:
        def neighbour() -> LocalResult:
            state = {k: v.clone() for k, v in global_state.items()}
            return train_local(state, train, spec=kw["spec"], config=replace(kw["config"]))

        before, m_before = measured(neighbour)
        result, m_node = measured(lambda: train_local(global_state, train, **kw))
        after, m_after = measured(neighbour)
        rows.append(
            {
                "node": m_node,
                "before": m_before,
                "after": m_after,
                "identical": same(result.delta, before.delta) and same(result.delta, after.delta),
            }
        )
        return result

    folder = Path(tempfile.mkdtemp(prefix="fedtrail-node-training-"))
    try:
        with daemons() as (rpc, api):
            fed = build_federation(
                w3=connect(rpc),
                coordinator=dev_account(0),
                sites=make_sites(
                    [dev_account(2 + i) for i in range(args.sites)],
                    trains,
                    training=TrainConfig(epochs=args.epochs),
                ),
                store=IpfsStore(api),
                folder=folder,
                validation=splits.val,
            )
            assert fed.run_round() is not None, "the warm-up round did not close"
            gc.collect()
            gc.freeze()
            daemon_mod.train_local = bracketed  # type: ignore[assignment]
            try:
                for _ in range(args.rounds):
                    assert fed.run_round() is not None, "a timed round did not close"
            finally:
                daemon_mod.train_local = train_local
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def ratio(row: dict[str, Any], key: str) -> float:
        return float(row["node"][key] / ((row["before"][key] + row["after"][key]) / 2))

    cpu = [ratio(r, "cpu") for r in rows]
    wall = [ratio(r, "wall") for r in rows]
    for key in ("node", "before", "after"):
        total = {f: sum(r[key][f] for r in rows) for f in ("wall", "cpu", "wait")}
        print(f"{key:<7} " + "  ".join(f"{f} {v:.3f} s" for f, v in total.items()))
    print("node cpu / neighbours'  " + " ".join(f"{x:.3f}" for x in cpu))
    print("node wall / neighbours' " + " ".join(f"{x:.3f}" for x in wall))
    median_cpu = statistics.median(cpu)
    print(f"median cpu ratio {median_cpu:.3f}, median wall ratio {statistics.median(wall):.3f}")
    identical = all(r["identical"] for r in rows)
    print(f"deltas bit-identical: {identical} ({len(rows)} calls)")
    ok = identical and median_cpu <= CPU_RATIO_BAR
    print(
        f"bar: median cpu ratio <= {CPU_RATIO_BAR} and identical deltas -> "
        + ("met" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
