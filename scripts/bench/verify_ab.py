#!/usr/bin/env python3
"""``audit verify`` of one round, this tree's against a parent commit's, alternated in one
process on the same round (issue 18): on a shared machine two bench processes minutes apart
see different loads, which moved a 100-site verify by 0.5 s between runs of the same code.

    git archive <parent> | tar -x -C /tmp/parent
    python scripts/bench/verify_ab.py --parent /tmp/parent [--sites 100] [--runs 8]

The round is built as ``critical_path.py`` builds it (its ``one_round``; ``--large-game
linear_shapley`` above 10 sites). The parent's side is its ``auditor/verify.py`` with its
``fedtrail/protocol/duplicates.py``'s ``find_duplicates``; everything else they import is this
tree's, so the A/B covers changes to those two modules only. Every run must pass every check,
with the same results and details on both sides (exit 1 otherwise); prints each side's runs and
median, and the load average.

``--memory`` also times each side against a store holding in memory every blob a first verify
fetched (``critical_path.MemoryStore``: ``get`` still checks each blob's sha256): verify with
its fetches made free, the part of it no fetch concurrency can hide, printed beside the byte
floor it is compared with (every byte of those blobs through one IPFS cat, measured as
``critical_path.floors`` does, plus sha256).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fedtrail.auditor.verify as this_verify  # noqa: E402
import scripts.bench.critical_path as cp  # noqa: E402
from fedtrail.storage.store import ContentStore, IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", type=Path, required=True, help="an exported parent checkout")
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--runs", type=int, default=8, help="runs of each side, alternated")
    ap.add_argument(
        "--memory", action="store_true", help="also time both sides with every blob in memory"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    parent_dup = _load("_parent_duplicates", args.parent / "fedtrail/protocol/duplicates.py")
    parent = _load("_parent_verify", args.parent / "auditor/verify.py")
    parent.find_duplicates = parent_dup.find_duplicates  # type: ignore[attr-defined]
    sides = {"parent": parent, "this tree": this_verify}
    got: dict[str, Any] = {}

    def grab(ledger: Any, api: str, round_id: int, repeats: int = 1) -> dict[str, Any]:
        got.update(ledger=ledger, round=round_id)
        return {
            "seconds": 0.0,
            "runs_s": [],
            "parts_s": {},
            "threaded_fetch_s": 0.0,
            "in_memory_s": 0.0,
        }

    cp._verify = grab  # the round only; this script times verify itself
    with daemons() as (rpc, api):
        large = "linear_shapley" if args.sites > 10 else None
        cp.one_round(rpc, api, args.sites, cp.Clock(), large_game=large)
        times: dict[str, list[float]] = {name: [] for name in sides}
        memory = cp.MemoryStore(IpfsStore(api))
        if args.memory:
            this_verify.verify_round(got["ledger"], memory, got["round"])
            size = sum(len(b) for b in memory.blobs.values()) / (1 << 20)
            f = cp.floors(rpc, api)
            floor = size / f["ipfs_cat_mib_s"] + size / f["sha256_mib_s"]
            print(
                f"{len(memory.blobs)} blobs, {size:.1f} MiB; byte floor {floor:.3f} s (cat "
                f"{f['ipfs_cat_mib_s']:.0f} MiB/s, sha256 {f['sha256_mib_s']:.0f} MiB/s)"
            )
            times.update({f"{name}, blobs in memory": [] for name in sides})
        reference = None
        for i in range(args.runs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            if args.memory:
                order += [f"{name}, blobs in memory" for name in order]
            for name in order:
                store: ContentStore = memory if name.endswith("in memory") else IpfsStore(api)
                t = time.perf_counter()
                side = sides[name.removesuffix(", blobs in memory")]
                audit = side.verify_round(got["ledger"], store, got["round"])
                times[name].append(time.perf_counter() - t)
                checks = [(c.name, c.passed, c.detail, c.applicable) for c in audit.checks]
                if not audit.passed or (reference is not None and checks != reference):
                    print(f"{name}: checks fail or differ from the other side's")
                    return 1
                reference = checks
    print(f"load average {os.getloadavg()}")
    for name, runs in times.items():
        each = " / ".join(f"{t:.2f}" for t in runs)
        print(f"{name}: median {statistics.median(runs):.3f} s ({each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
