#!/usr/bin/env python3
"""Put/get throughput of the content stores, in seconds per MB (median over repeats).

    .venv/bin/python scripts/bench/store_bench.py [--api MULTIADDR] [--sizes-mb 1 5 20]

Without ``--api`` it starts a throwaway js-ipfs daemon through scripts/ipfs_daemon.sh (temp
repo, free loopback port), reports how long that took, and stops it afterwards. ``get`` includes
the sha256 check every read does. Blobs are random, so every put stores new blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.storage.store import ContentStore, IpfsStore, LocalStore, sha256_hex  # noqa: E402

SCRIPT = ROOT / "scripts" / "ipfs_daemon.sh"
MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _daemon(workdir: Path) -> Iterator[tuple[str, float]]:
    """Start a throwaway daemon; yield its API multiaddr and the start time in seconds."""
    port = _free_port()
    env = {**os.environ, "IPFS_PATH": str(workdir / "ipfs"), "FEDTRAIL_IPFS_PORT": str(port)}
    t0 = time.perf_counter()
    subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    started = time.perf_counter() - t0
    try:
        yield f"/ip4/127.0.0.1/tcp/{port}/http", started
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, check=False,
                       stdout=subprocess.DEVNULL)  # fmt: skip


def _measure(store: ContentStore, size: int, repeats: int, seed: int) -> tuple[float, float]:
    """Median put and get seconds per MB for blobs of ``size`` bytes."""
    rng = random.Random(seed)
    puts, gets = [], []
    for _ in range(repeats):
        data = rng.randbytes(size)
        digest = sha256_hex(data)
        t0 = time.perf_counter()
        cid = store.put(data)
        t1 = time.perf_counter()
        back = store.get(cid, digest)
        t2 = time.perf_counter()
        assert back == data
        puts.append((t1 - t0) / (size / MB))
        gets.append((t2 - t1) / (size / MB))
    return statistics.median(puts), statistics.median(gets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="RPC API multiaddr of a running daemon (default: start one)")
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1.0, 5.0, 20.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    rows: list[dict[str, object]] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="store-bench-")))
        start_s: float | None = None
        if args.api:
            api = args.api
        else:
            api, start_s = stack.enter_context(_daemon(work))
        stores: dict[str, ContentStore] = {
            "LocalStore": LocalStore(work / "local"),
            "IpfsStore": IpfsStore(api),
        }
        for name, store in stores.items():
            for size_mb in args.sizes_mb:
                size = int(size_mb * MB)
                put_s, get_s = _measure(store, size, args.repeats, seed=size)
                rows.append({"store": name, "size_mb": size_mb,
                             "put_s_per_mb": put_s, "get_s_per_mb": get_s})  # fmt: skip

    if args.json:
        print(json.dumps({"api": api, "daemon_start_s": start_s, "results": rows}, indent=2))
        return 0
    if start_s is not None:
        print(f"js-ipfs daemon start (fresh repo, init included): {start_s:.2f} s")
    print(f"IPFS API: {api}; median of {args.repeats} runs; get includes the sha256 check")
    print(f"{'store':<11} {'size MB':>8} {'put s/MB':>10} {'get s/MB':>10}")
    for r in rows:
        print(f"{r['store']:<11} {r['size_mb']:>8g} {r['put_s_per_mb']:>10.4f} "
              f"{r['get_s_per_mb']:>10.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
