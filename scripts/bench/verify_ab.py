#!/usr/bin/env python3
"""``audit verify`` of one round, this tree's against a parent commit's, alternated in one
process on the same round (issue 18): on a shared machine two bench processes minutes apart
see different loads, which moved a 100-site verify by 0.5 s between runs of the same code.

    git archive <parent> | tar -x -C /tmp/parent
    python scripts/bench/verify_ab.py --parent /tmp/parent [--sites 100] [--runs 8] [--rounds 2]

The round is built as ``critical_path.py`` builds it (its ``one_round``; ``--large-game
linear_shapley`` above 10 sites). ``--rounds 2``: a second round is built after it the same way
(``critical_path._more_round``) and verified alone: its free-rider check reads the first
round's updates and models as its references, which the byte floor then counts too (every blob
the verify read). ``--all``: ``verify_all`` of every round built is timed instead (the floors
count every blob it read, each once). The parent's side is its ``auditor/verify.py`` with its
``fedtrail/protocol/duplicates.py``'s ``find_duplicates`` and its
``fedtrail/storage/canonical.py``'s ``check_canonical_update``; everything else they import is
this tree's. The modules of ``SWAPPED`` (the deterministic sums, ``Rows``, the robust
statistics, the free-rider screen, the ledger client's decoding, the canonical CID every
``get`` checks) are this tree's objects running
the parent's code: on the parent's turn each of their functions and methods that the parent also
defines takes the parent's code object (swapped back after). So the A/B covers changes to those
modules too, as long as their names stay. Every run must pass every check,
with the same results and details on both sides (exit 1 otherwise); prints each side's runs and
median, the blobs each side read through IPFS, and the load average.

``--memory`` also times each side against a store holding in memory every blob a first verify
fetched (``critical_path.MemoryStore``: ``get`` still checks each blob's sha256): verify with
its fetches made free, the part of it no fetch concurrency can hide, printed beside the byte
floor it is compared with (every byte of those blobs through one IPFS cat, at the rate of a
4 MiB blob's cat, plus sha256), measured again before each alternation: the floor moves with the
load as much as verify does, so each run's ratio is to the floor of its moment (median and range
printed per side). Each run's CPU seconds (``time.process_time``: every thread of this process,
so the fetch threads' hashing too) are printed beside its wall time: on a machine shared with
other work they move less than wall seconds, which count the waits for the cores. So are the
js-ipfs daemon's CPU seconds in each run (``_daemons.cpu_seconds`` of the process listening on
its API port; 10 ms ticks): with this process's, the CPU a verify through IPFS needs of the
machine's cores, which no overlap of fetch and computation brings under their sum over the cores.

Beside the bar's byte floor, ``--memory`` also prints a *full floor*, measured at the same
moments: the work verify cannot skip on those same blobs, which the byte floor leaves out.
Each blob is one IPFS request: the requests' own cost is that of as many cats of a 64-byte blob
made as verify makes them, ``FETCH_THREADS`` in flight; the bytes beyond it count at the
marginal rate of the 4 MiB cat (its time less one 64-byte cat's); every byte is hashed twice,
sha256 against the chain's record and the canonical CID (``compute_cid``, which
``IpfsStore.get`` checks before handing bytes out, attack a121), at the rates measured on the
4 MiB probe; and the chain's records verify reads (submissions, events, registry: 12 JSON-RPC
requests at 100 sites) count one round trip, as if batched into one. Its ratios are printed
beside the bar's.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fedtrail.auditor.verify as this_verify  # noqa: E402
import scripts.bench.critical_path as cp  # noqa: E402
from fedtrail.chain import connect  # noqa: E402
from fedtrail.storage.cid import compute_cid  # noqa: E402
from fedtrail.storage.store import ContentStore, IpfsStore  # noqa: E402
from scripts.bench._daemons import cpu_seconds, daemons, listening_pids  # noqa: E402


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SWAPPED = (
    "fedtrail/ml/aggregation.py",
    "fedtrail/valuation/rows.py",
    "fedtrail/valuation/robust.py",
    "fedtrail/valuation/freeride.py",
    "fedtrail/ledger/client.py",
    "fedtrail/storage/cid.py",
)
"""Modules whose functions run the parent's code on the parent's turn (see the docstring)."""


def _code_swaps(parent_root: Path) -> list[tuple[Any, Any, Any]]:
    """``(function, parent code, this code)`` for every function and method of ``SWAPPED``
    defined in both trees with the same closure variables."""
    swaps = []
    for rel in SWAPPED:
        name = rel.removesuffix(".py").replace("/", ".")
        here = importlib.import_module(name)
        there = _load(f"_parent_{name.replace('.', '_')}", parent_root / rel)
        pairs = [(getattr(here, k), getattr(there, k)) for k in vars(there) if hasattr(here, k)]
        for mine, theirs in list(pairs):
            if isinstance(mine, type) and isinstance(theirs, type):
                pairs += [(vars(mine)[k], v) for k, v in vars(theirs).items() if k in vars(mine)]
        for mine, theirs in pairs:
            f, g = getattr(mine, "__func__", mine), getattr(theirs, "__func__", theirs)
            f = getattr(f, "__wrapped__", f) if not hasattr(f, "__code__") else f
            g = getattr(g, "__wrapped__", g) if not hasattr(g, "__code__") else g
            if not (hasattr(f, "__code__") and hasattr(g, "__code__")):
                continue
            if getattr(f, "__module__", None) != name:
                continue  # imported from elsewhere
            if f.__code__.co_freevars == g.__code__.co_freevars:
                swaps.append((f, g.__code__, f.__code__))
    return swaps


class _Counted(IpfsStore):
    """An IPFS store counting the blobs it returned and their bytes (every thread's)."""

    def __init__(self, api: str) -> None:
        super().__init__(api)
        self.lock = threading.Lock()
        self.gets = self.bytes = 0

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        blob = super().get(cid, sha256, max_bytes=max_bytes)
        with self.lock:
            self.gets += 1
            self.bytes += len(blob)
        return blob


def _byte_floor(store: IpfsStore, cid: str, sha: str, mib: float) -> float:
    """Seconds for ``mib`` MiB through IPFS cat (the median rate of three cats of the 4 MiB blob
    ``cid``) plus sha256 (16 MiB hashed), measured now."""
    cats = []
    for _ in range(3):
        t = time.perf_counter()
        store.get(cid, sha)
        cats.append(time.perf_counter() - t)
    data = bytes(16 << 20)
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    sha_s = time.perf_counter() - t
    return mib * statistics.median(cats) / 4 + mib * sha_s / 16


def _full_floor(
    store: IpfsStore,
    probe: tuple[str, str],
    tiny: tuple[str, str],
    blob: bytes,
    rpc: str,
    mib: float,
    blobs: int,
) -> float:
    """The full floor (see the docstring), measured now: ``blobs`` cats of the 64-byte blob
    ``tiny`` on ``FETCH_THREADS`` threads, ``mib`` MiB at the 4 MiB cat's (``probe``) marginal
    rate, sha256 and CID of ``mib`` MiB at the rates of ``blob`` (the probe's bytes), and one
    JSON-RPC round trip."""

    def median_of(fn: Any, n: int) -> float:
        runs = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    cat = median_of(lambda: store.get(*probe), 3)
    request = median_of(lambda: store.get(*tiny), 5)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=this_verify.FETCH_THREADS) as pool:
        list(pool.map(lambda _: store.get(*tiny), range(blobs)))
    requests = time.perf_counter() - t
    sha = median_of(lambda: hashlib.sha256(blob).digest(), 3)
    cid = median_of(lambda: compute_cid(blob), 3)
    w3 = connect(rpc)
    rtt = median_of(lambda: w3.eth.block_number, 5)
    per_mib = max(cat - request, 0.0) / 4 + (sha + cid) / (len(blob) / (1 << 20))
    return requests + mib * per_mib + rtt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", type=Path, required=True, help="an exported parent checkout")
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--runs", type=int, default=8, help="runs of each side, alternated")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds built (the later ones untimed); the last one is verified, alone",
    )
    ap.add_argument(
        "--all", action="store_true", help="time verify_all of every round built instead"
    )
    ap.add_argument(
        "--memory", action="store_true", help="also time both sides with every blob in memory"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    parent_dup = _load("_parent_duplicates", args.parent / "fedtrail/protocol/duplicates.py")
    parent = _load("_parent_verify", args.parent / "auditor/verify.py")
    parent.find_duplicates = parent_dup.find_duplicates  # type: ignore[attr-defined]
    parent_canonical = _load("_parent_canonical", args.parent / "fedtrail/storage/canonical.py")
    parent.check_canonical_update = parent_canonical.check_canonical_update  # type: ignore[attr-defined]
    sides = {"parent": parent, "this tree": this_verify}
    swaps = _code_swaps(args.parent)
    changed = sum(1 for _, theirs, mine in swaps if theirs.co_code != mine.co_code)
    print(f"{len(swaps)} functions of {len(SWAPPED)} shared modules swapped, {changed} differ")
    with daemons() as (rpc, api):
        large = "linear_shapley" if args.sites > 10 else None
        ledger, round_id = cp.round_to_verify(
            rpc, api, args.sites, large_game=large, rounds=args.rounds
        )
        times: dict[str, list[float]] = {name: [] for name in sides}
        memory = cp.MemoryStore(IpfsStore(api))
        floors: list[float] = []
        full_floors: list[float] = []
        ratios: dict[str, list[float]] = {}
        full_ratios: dict[str, list[float]] = {}
        if args.memory:
            if args.all:
                this_verify.verify_all(ledger, memory)
            else:
                this_verify.verify_round(ledger, memory, round_id)
            size = sum(len(b) for b in memory.blobs.values()) / (1 << 20)
            plain = IpfsStore(api)
            probe = os.urandom(4 << 20)
            probe_ref = (plain.put(probe), hashlib.sha256(probe).hexdigest())
            tiny = os.urandom(64)
            tiny_ref = (plain.put(tiny), hashlib.sha256(tiny).hexdigest())
            print(f"{len(memory.blobs)} blobs, {size:.1f} MiB")
            times.update({f"{name}, blobs in memory": [] for name in sides})
            ratios = {name: [] for name in times}
            full_ratios = {name: [] for name in times}
        cpus: dict[str, list[float]] = {name: [] for name in times}
        # the js-ipfs daemon's CPU seconds in each run (its own cores' share of the fetch)
        ipfs_pids = listening_pids(int(api.split("/tcp/")[1].split("/")[0]))
        daemon_cpus: dict[str, list[float]] = {name: [] for name in times}
        reads: dict[str, tuple[int, int]] = {}
        reference = None
        for i in range(args.runs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            if args.memory:
                order += [f"{name}, blobs in memory" for name in order]
                floors.append(_byte_floor(plain, *probe_ref, size))
                full_floors.append(
                    _full_floor(plain, probe_ref, tiny_ref, probe, rpc, size, len(memory.blobs))
                )
            for name in order:
                store: ContentStore = memory if name.endswith("in memory") else _Counted(api)
                t, cpu = time.perf_counter(), time.process_time()
                daemon_cpu = cpu_seconds(ipfs_pids)
                side = sides[name.removesuffix(", blobs in memory")]
                for f, theirs, mine in swaps:
                    f.__code__ = theirs if side is parent else mine
                try:
                    audits = (
                        side.verify_all(ledger, store)
                        if args.all
                        else [side.verify_round(ledger, store, round_id)]
                    )
                finally:
                    for f, _, mine in swaps:
                        f.__code__ = mine
                times[name].append(time.perf_counter() - t)
                cpus[name].append(time.process_time() - cpu)
                daemon_cpus[name].append(cpu_seconds(ipfs_pids) - daemon_cpu)
                if isinstance(store, _Counted):
                    reads[name] = (store.gets, store.bytes)
                if args.memory:
                    ratios[name].append(times[name][-1] / floors[-1])
                    full_ratios[name].append(times[name][-1] / full_floors[-1])
                checks = [
                    (c.name, c.passed, c.detail, c.applicable) for a in audits for c in a.checks
                ]
                passed = all(a.passed for a in audits)
                if not passed or (reference is not None and checks != reference):
                    print(f"{name}: checks fail or differ from the other side's")
                    return 1
                reference = checks
    print(f"load average {os.getloadavg()}")
    for name, (gets, got) in reads.items():
        print(f"{name}: {gets} blobs read through IPFS, {got / (1 << 20):.1f} MiB (last run)")
    for name, runs in times.items():
        each = " / ".join(f"{t:.2f}" for t in runs)
        print(f"{name}: median {statistics.median(runs):.3f} s ({each})")
    for name, runs in cpus.items():
        each = " / ".join(f"{t:.2f}" for t in runs)
        print(f"{name}: CPU median {statistics.median(runs):.3f} s ({each})")
    if ipfs_pids:
        for name, runs in daemon_cpus.items():
            each = " / ".join(f"{t:.2f}" for t in runs)
            print(f"{name}: js-ipfs daemon CPU median {statistics.median(runs):.3f} s ({each})")
    if floors:
        each = " / ".join(f"{t:.2f}" for t in floors)
        print(
            f"byte floor before each alternation: median {statistics.median(floors):.3f} s ({each})"
        )
        for name, rs in ratios.items():
            print(
                f"{name}: x the byte floor of its moment, median {statistics.median(rs):.2f} "
                f"({min(rs):.2f}-{max(rs):.2f})"
            )
        each = " / ".join(f"{t:.2f}" for t in full_floors)
        print(
            f"full floor before each alternation: median {statistics.median(full_floors):.3f} s "
            f"({each})"
        )
        for name, rs in full_ratios.items():
            print(
                f"{name}: x the full floor of its moment, median {statistics.median(rs):.2f} "
                f"({min(rs):.2f}-{max(rs):.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
