"""What the canonical-CID rule adds to a read (README *Content not given*, attack a121).

Every ``get`` checks its bytes with ``fedtrail.storage.store._verify``: the sha256 the chain
holds and, since session 55, that the CID asked for is the one ``compute_cid`` gives the bytes.
This times ``_verify`` (both checks) against the sha256 alone, alternated in one process, per
MB of blob, for a SmallCNN update (422,176 bytes) and larger blobs; the best of ``--repeats``
(the machine's other load only ever adds).

usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/canonical_cid_cost.py [--repeats 21]
Exits 1 when the added cost is over 10 ms per MB (about 15 sha256 passes) at any size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from fedtrail.storage.cid import compute_cid, sha256_hex
from fedtrail.storage.store import _verify

TARGET_MS_PER_MB = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    worst = 0.0
    print(f"best of {args.repeats}, alternated; load {os.getloadavg()[0]:.1f}")
    print(f"{'bytes':>10} {'sha256 ms/MB':>13} {'_verify ms/MB':>14} {'added ms/MB':>12}")
    for size in (422_176, 4 << 20, 32 << 20):
        data = os.urandom(size)
        cid, sha = compute_cid(data), sha256_hex(data)
        plain, full = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            sha256_hex(data)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            _verify(cid, data, sha, cid_first=True)
            full.append(time.perf_counter() - t)
        mb = size / (1 << 20)
        a, b = min(plain) / mb * 1e3, min(full) / mb * 1e3
        worst = max(worst, b - a)
        print(f"{size:>10} {a:>13.2f} {b:>14.2f} {b - a:>12.2f}")
    ok = worst <= TARGET_MS_PER_MB
    print(f"added at most {worst:.2f} ms/MB: {'within' if ok else 'OVER'} {TARGET_MS_PER_MB} ms/MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
