#!/usr/bin/env python3
"""One JSON-RPC request's cost through ``fedtrail.chain.connect``'s keep-alive transport and
through web3's ``requests`` session, alternated in one process against one fresh Anvil.

    OMP_NUM_THREADS=1 python scripts/bench/rpc_transport.py [--batches 30]

Each batch is 10 raw ``eth_blockNumber`` requests (``provider.make_request``) and 10
``w3.eth.get_block("latest")`` (web3's middleware and formatters around the request); the
sides take turns batch by batch, in alternating order. Prints each side's median wall and
process CPU milliseconds per request. No bar: the per-request part of issue 18's chain part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.chain import _PostPool, connect  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args()
    with daemons() as (rpc, _):
        pooled, plain = connect(rpc), connect(rpc)
        manager = plain.provider._request_session_manager  # type: ignore[attr-defined]
        assert isinstance(manager, _PostPool)
        plain.provider._request_session_manager = manager._fallback  # type: ignore[attr-defined]
        sides = [("requests session", plain), ("keep-alive pool", pooled)]
        wall: dict[str, list[float]] = {name: [] for name, _ in sides}
        cpu: dict[str, list[float]] = {name: [] for name, _ in sides}
        for i in range(args.batches):
            for name, w3 in sides if i % 2 == 0 else sides[::-1]:
                t, c = time.perf_counter(), time.process_time()
                for _ in range(10):
                    w3.provider.make_request("eth_blockNumber", [])  # type: ignore[arg-type]
                    w3.eth.get_block("latest")
                wall[name].append((time.perf_counter() - t) / 20)
                cpu[name].append((time.process_time() - c) / 20)
        for name, _ in sides:
            print(
                f"{name:17s} wall {1000 * statistics.median(wall[name]):.3f} ms, "
                f"CPU {1000 * statistics.median(cpu[name]):.3f} ms a request (medians)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
