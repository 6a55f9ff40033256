#!/usr/bin/env python3
"""Decoding plus the canonical check of 100 SmallCNN updates, as ``audit verify`` runs them,
this tree's against a parent commit's ``fedtrail/storage/canonical.py`` (and the parse without
``direct_if_canonical``, as the parent's verify calls it), alternated in one process (issue 18).

    git archive <parent> | tar -x -C /tmp/parent
    python scripts/bench/decode_ab.py --parent /tmp/parent [--method none|topk8] [--runs 12]

Both sides must accept every update; prints each side's runs and median (ms per 100 updates)
and the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedtrail.ml.models import ModelSpec  # noqa: E402
from fedtrail.storage.canonical import check_canonical_update  # noqa: E402
from fedtrail.storage.codec import (  # noqa: E402
    Compression,
    decode_update_stored,
    encode_update,
    zero_state,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", type=Path, required=True, help="an exported parent checkout")
    ap.add_argument("--method", choices=["none", "topk8"], default="none")
    ap.add_argument("--runs", type=int, default=12, help="runs of each side, alternated")
    args = ap.parse_args()
    found = importlib.util.spec_from_file_location(
        "_parent_canonical", args.parent / "fedtrail/storage/canonical.py"
    )
    if found is None or found.loader is None:
        raise SystemExit("cannot load the parent's canonical.py")
    parent = importlib.util.module_from_spec(found)
    found.loader.exec_module(parent)
    spec = ModelSpec()
    compression = Compression(method=args.method)
    blobs = []
    for i in range(100):
        gen = torch.Generator().manual_seed(i)
        delta = {k: torch.randn(v.shape, generator=gen) for k, v in zero_state(spec).items()}
        blobs.append(encode_update(delta, spec=spec, round=1, compression=compression).blob)

    def before() -> None:
        for b in blobs:
            _, meta, parts = decode_update_stored(b, spec=spec, expected_round=1)
            parent.check_canonical_update(b, spec=spec, expected_round=1, meta=meta, parts=parts)

    def after() -> None:
        for b in blobs:
            _, meta, parts = decode_update_stored(
                b, spec=spec, expected_round=1, direct_if_canonical=True
            )
            check_canonical_update(b, spec=spec, expected_round=1, meta=meta, parts=parts)

    sides: dict[str, Callable[[], None]] = {"parent": before, "this tree": after}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.runs):
        for name in list(sides) if i % 2 == 0 else list(reversed(sides)):
            t = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t)
    print(f"{args.method}: {len(blobs[0])} bytes an update; load average {os.getloadavg()}")
    for name, runs in times.items():
        each = " / ".join(f"{1e3 * t:.0f}" for t in runs)
        print(f"{name}: median {1e3 * statistics.median(runs):.1f} ms per 100 updates ({each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
