"""How often ``IpfsStore.get`` calls a blob that IS in the daemon missing when read the way
``audit verify`` reads a round (h-328): up to 8 updates and 8 heatmaps at once.

    OMP_NUM_THREADS=1 python scripts/bench/verify_read_contention.py API [--threads 8]
        [--big-mb 20] [--big 7] [--small 30] [--reps 3] [--via-fetch] [--probe-timeout 2]

API: a running daemon's RPC multiaddr (``scripts/ipfs_daemon.sh start`` prints it). It puts
``--big`` random blobs of ``--big-mb`` MB (a resnet10 update is ~20 MB) and ``--small`` 3 KB
PNG-headed blobs, then reads them all ``--reps`` times on two pools of ``--threads`` threads,
printing per rep the blobs read, the slowest read and the store's ``ContentNotFound`` answers.
``--via-fetch``: each read through ``fedtrail.auditor.verify._fetch`` (its ``FETCH_TRIES``),
else one ``store.get``. A ``ContentNotFound`` here is always false: every blob was put first.
``--probe-timeout``: the store's (default its own, 2 s); a shorter one stands in for a busier
daemon. "held-checks" counts the store's ``pin/ls`` asks (h-330: a read whose first answer
took over the probe asks whether the daemon holds the blob; 0 in a store without it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fedtrail.auditor.verify as verify_mod
from fedtrail.errors import ContentNotFound, StoreError
from fedtrail.storage.cid import sha256_hex
from fedtrail.storage.store import IpfsStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("api")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--big-mb", type=float, default=20.0)
    ap.add_argument("--big", type=int, default=7)
    ap.add_argument("--small", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--via-fetch", action="store_true")
    ap.add_argument("--probe-timeout", type=float, default=None)
    args = ap.parse_args(argv)
    store = (
        IpfsStore(args.api)
        if args.probe_timeout is None
        else IpfsStore(args.api, probe_timeout=args.probe_timeout)
    )
    misses = [0]
    held_checks = [0]
    real_pinned = getattr(store, "_pinned", None)
    if real_pinned is not None:

        def counting_pinned(cid: str) -> bool:
            held_checks[0] += 1
            return bool(real_pinned(cid))

        store._pinned = counting_pinned  # type: ignore[method-assign]
    real_get = store.get

    def counting(cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        try:
            return real_get(cid, sha256, max_bytes=max_bytes)
        except ContentNotFound:
            misses[0] += 1
            raise

    store.get = counting  # type: ignore[method-assign]
    big = [os.urandom(int(args.big_mb * 1e6)) for _ in range(args.big)]
    small = [b"\x89PNG\r\n\x1a\n" + os.urandom(3000) for _ in range(args.small)]
    refs = [
        [(cid, sha256_hex(b)) for cid, b in zip(store.put_many(blobs), blobs, strict=True)]
        for blobs in (big, small)
    ]

    def read(ref: tuple[str, str]) -> tuple[bool, float]:
        started = time.monotonic()
        if args.via_fetch:
            got = verify_mod._fetch(store, *ref).blob is not None
        else:
            try:
                store.get(*ref)
                got = True
            except StoreError:
                got = False
        return got, time.monotonic() - started

    bad_reps = 0
    for rep in range(args.reps):
        before, checks_before = misses[0], held_checks[0]
        with ThreadPoolExecutor(args.threads) as a, ThreadPoolExecutor(args.threads) as b:
            futures = [a.submit(read, r) for r in refs[0]] + [b.submit(read, r) for r in refs[1]]
            res = [f.result() for f in futures]
        read_ok = sum(ok for ok, _ in res)
        bad_reps += read_ok < len(res)
        print(
            f"rep {rep}: load {os.getloadavg()[0]:.1f}, read {read_ok}/{len(res)}, slowest "
            f"{max(s for _, s in res):.2f} s, ContentNotFound answers {misses[0] - before}, "
            f"held-checks {held_checks[0] - checks_before}",
            flush=True,
        )
    return 1 if bad_reps else 0


if __name__ == "__main__":
    sys.exit(main())
