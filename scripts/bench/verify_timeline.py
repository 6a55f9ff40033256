#!/usr/bin/env python3
"""When the parts of one ``audit verify`` happen (issue 18): seconds from its start at which the
first update fetch begins, the last update blob is back, the duplicate screen begins, and the
verify ends, for this tree's verify (and a parent checkout's, alternated, with ``--parent``).

    python scripts/bench/verify_timeline.py [--sites 100] [--runs 3] [--parent DIR]

The round is built as ``critical_path.py`` builds it (its ``one_round``; ``--large-game
linear_shapley`` above 10 sites); ``--parent DIR`` loads DIR's ``auditor/verify.py`` as
``verify_ab.py`` does. The marks come from the store (each update's ``get`` begun and returned,
any thread) and from ``find_duplicates`` (its call), so they mean the same for both sides.
Prints one line per run and the load average; exits 1 when a verify fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fedtrail.auditor.verify as this_verify  # noqa: E402
import scripts.bench.critical_path as cp  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402
from scripts.bench.verify_ab import _load  # noqa: E402


class MarkedStore(IpfsStore):
    """An IPFS store noting when the first of ``updates`` was asked for and the last returned."""

    def __init__(self, api: str, updates: set[str]) -> None:
        super().__init__(api)
        self.updates = updates
        self.lock = threading.Lock()
        self.first_asked: float | None = None
        self.last_back = 0.0

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        if cid in self.updates:
            with self.lock:
                if self.first_asked is None:
                    self.first_asked = time.perf_counter()
        blob = super().get(cid, sha256, max_bytes=max_bytes)
        if cid in self.updates:
            with self.lock:
                self.last_back = max(self.last_back, time.perf_counter())
        return blob


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="verifies of each side")
    ap.add_argument("--parent", type=Path, help="an exported parent checkout to alternate with")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sides: dict[str, ModuleType] = {"this tree": this_verify}
    if args.parent is not None:
        parent_dup = _load("_parent_duplicates", args.parent / "fedtrail/protocol/duplicates.py")
        parent = _load("_parent_verify", args.parent / "auditor/verify.py")
        parent.find_duplicates = parent_dup.find_duplicates  # type: ignore[attr-defined]
        sides = {"parent": parent, **sides}
    got: dict[str, Any] = {}

    def grab(ledger: Any, api: str, round_id: int, repeats: int = 1) -> dict[str, Any]:
        got.update(ledger=ledger, round=round_id)
        return {"seconds": 0.0, "runs_s": [], "parts_s": {}, "threaded_fetch_s": 0.0}

    cp._verify = grab  # the round only; this script times verify itself
    screen_at: list[float] = []
    for module in sides.values():
        real = module.find_duplicates

        def marked(*a: Any, __real: Any = real, **k: Any) -> Any:
            screen_at.append(time.perf_counter())
            return __real(*a, **k)

        module.find_duplicates = marked  # type: ignore[attr-defined]
    with daemons() as (rpc, api):
        large = "linear_shapley" if args.sites > 10 else None
        cp.one_round(rpc, api, args.sites, cp.Clock(), large_game=large)
        ledger, round_id = got["ledger"], got["round"]
        updates = {s.cid for s in ledger.get_submissions(round_id)}
        for i in range(args.runs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                store = MarkedStore(api, updates)
                screen_at.clear()
                t = time.perf_counter()
                audit = sides[name].verify_round(ledger, store, round_id)
                end = time.perf_counter() - t
                if not audit.passed or store.first_asked is None or not screen_at:
                    print(f"{name}: verify failed or marks missing")
                    return 1
                print(
                    f"{name}: first update asked {store.first_asked - t:.3f} s, last update "
                    f"back {store.last_back - t:.3f} s, duplicate screen {screen_at[0] - t:.3f} "
                    f"s, end {end:.3f} s",
                    flush=True,
                )
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
