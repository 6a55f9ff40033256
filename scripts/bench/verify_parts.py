#!/usr/bin/env python3
"""Where the computation of one ``audit verify`` goes (issue 18): wall seconds per verify spent
in each of its larger checks and reads, with every blob already in memory (fetching free, as
``critical_path.py``'s in-memory figure), averaged over ``--runs`` verifies of one round.

    python scripts/bench/verify_parts.py [--sites 100] [--runs 6]

The round is built as ``critical_path.py`` builds it (its ``one_round``; ``--large-game
linear_shapley`` above 10 sites). The parts are timed by wrapping the functions verify calls
(nested parts count in both: ``check_components`` holds ``robust_statistics``,
``_check_free_riders`` the white-noise screen, ``find_duplicates`` its float32 ``_screen``s,
flats, shared-tensor parts, ``sparse`` and the white-noise statistic), so the column does not
sum to the total. ``--cpu``: each part and verify timed in CPU seconds of the thread that runs it
(``time.thread_time``; the verify's own line, every thread's, ``time.process_time``), which a
machine shared with other work moves less than wall seconds. Prints the median verify and each
part's mean; exits 1 when a verify fails.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fedtrail.auditor.components as components  # noqa: E402
import fedtrail.auditor.verify as verify  # noqa: E402
import fedtrail.ledger.client as client  # noqa: E402
import fedtrail.protocol.duplicates as duplicates  # noqa: E402
import fedtrail.protocol.roundlog as roundlog  # noqa: E402
import fedtrail.valuation.freeride as freeride  # noqa: E402
import scripts.bench.critical_path as cp  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402

PARTS: tuple[tuple[Any, str], ...] = (
    (verify, "find_duplicates"),
    (duplicates, "_screen"),
    (duplicates, "_flat"),
    (duplicates, "_tensor_parts"),
    (duplicates, "sparse"),
    (verify, "duplicate_residual_z"),
    (verify, "_check_free_riders"),
    (freeride, "structure_z"),
    (verify, "check_components"),
    (components, "robust_statistics"),
    (verify, "decode_update_stored"),
    (verify, "check_canonical_update"),
    (verify, "check_oversized"),
    (verify, "aggregate"),
    (verify, "registry_at_finalize"),
    (verify, "_check_declined"),
    (client.Ledger, "get_submissions"),
    (client.Ledger, "get_sites"),
    (roundlog.RoundLog, "from_bytes"),
)
"""(module or class, function): the parts timed, each where verify looks it up."""


def _timed(
    spent: dict[str, float], name: str, fn: Callable[..., Any], clock: Callable[[], float]
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += clock() - start

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall seconds")
    args = ap.parse_args()
    part_clock = time.thread_time if args.cpu else time.perf_counter
    whole_clock = time.process_time if args.cpu else time.perf_counter
    torch.set_num_threads(1)
    spent: dict[str, float] = collections.defaultdict(float)
    with daemons() as (rpc, api):
        large = "linear_shapley" if args.sites > 10 else None
        ledger, round_id = cp.round_to_verify(rpc, api, args.sites, large_game=large)
        memory = cp.MemoryStore(IpfsStore(api))
        verify.verify_round(ledger, memory, round_id)  # fills the memory store
        for owner, name in PARTS:
            label = f"{getattr(owner, '__name__', '')}.{name}".removeprefix("fedtrail.")
            setattr(owner, name, _timed(spent, label, getattr(owner, name), part_clock))
        runs = []
        for _ in range(args.runs):
            start = whole_clock()
            audit = verify.verify_round(ledger, memory, round_id)
            runs.append(whole_clock() - start)
            if not audit.passed:
                print(f"verify failed: {[c.name for c in audit.checks if c.failed]}")
                return 1
    print(f"load average {os.getloadavg()}")
    each = " / ".join(f"{t:.3f}" for t in runs)
    unit = "CPU-s" if args.cpu else "s"
    print(
        f"verify of {args.sites} sites, blobs in memory: "
        f"median {statistics.median(runs):.3f} {unit}"
    )
    print(f"  runs: {each}")
    for label, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {label:40s} {1000 * seconds / args.runs:7.1f} ms per verify ({unit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
