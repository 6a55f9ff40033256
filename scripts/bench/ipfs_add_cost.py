#!/usr/bin/env python3
"""Where an IPFS ``add`` of a round's blobs goes: the daemon's writes, its pin, or the request.

    python scripts/bench/ipfs_add_cost.py [--runs 15] [--split]

On a fresh js-ipfs (scripts/bench/_daemons.py), the adds a 5-site round makes, with fresh random
bytes of their sizes each time: one site's update (422,176 bytes, the bench model's dense
update: 3 blocks) and the finalize's one request (the global model, 8 heatmap PNGs, the log and
the next round's terms: 11 files). Each is sent three ways, alternated within one process so
load moves them alike: as ``IpfsStore`` sends it (``_ADD_OPTS``: CIDv0, dag-pb leaves, 256 KiB
chunks, sha2-256, pinned), the same unpinned (``pin=false``), and ``only-hash`` (the daemon
reads, chunks and hashes the bytes and writes nothing). Prints the median milliseconds of
each and the client's own CPU per add (the request's assembly, and ``compute_cid``, which
checks the daemon's CID). No bar: a breakdown for issue 18's store part (README *Audit
overhead*); the CID-setting options are not free to change (every recorded CID is Kubo's
default), so only the pin and the daemon's writes are candidates, and both are durability.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.storage.cid import compute_cid  # noqa: E402
from fedtrail.storage.store import _ADD_OPTS, IpfsStore, _read_json_lines  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402

UPDATE = [422_176]
FINALIZE = [422_176, 86_068, 91_168, 83_342, 91_191, 91_253, 87_395, 87_881, 93_161, 9_290, 1_514]
"""Blob sizes of one ``overhead.py --epochs 1`` round (its store adds, printed by a wrapper)."""

WAYS = {
    "as sent": dict(_ADD_OPTS),
    "pin=false": {**_ADD_OPTS, "pin": "false"},
    "only-hash": {**_ADD_OPTS, "pin": "false", "only-hash": "true"},
}


def add(store: IpfsStore, blobs: list[bytes], opts: dict[str, str]) -> int:
    """One ``add`` request of ``blobs`` with ``opts`` (as ``IpfsStore._add`` builds it); the
    number of entries answered."""
    boundary = os.urandom(16).hex()
    parts: list[bytes] = []
    for i, data in enumerate(blobs):
        parts += (
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="blob-{i}"\r\n'.encode(),
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            b"\r\n",
        )
    parts.append(f"--{boundary}--\r\n".encode())
    entries = store._api.post(
        "add",
        list(opts.items()),
        _read_json_lines,
        wait=60,
        read_timeout=60,
        body=b"".join(parts),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    return len(entries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument(
        "--split",
        action="store_true",
        help="instead: the finalize's blobs through IpfsStore.put_many as one request (before "
        "session 54) and as its two (the global model with the next round's terms, which it "
        "puts beside the heatmaps, then the heatmaps with the log), alternated",
    )
    args = ap.parse_args()
    if args.split:
        return split(args.runs)
    with daemons() as (_, api):
        store = IpfsStore(api)
        for label, sizes in (("a site's update", UPDATE), ("the finalize's add", FINALIZE)):
            seconds: dict[str, list[float]] = {way: [] for way in WAYS}
            client: list[float] = []
            for _ in range(args.runs):
                for way, opts in WAYS.items():
                    blobs = [os.urandom(n) for n in sizes]
                    t = time.perf_counter()
                    got = add(store, blobs, opts)
                    seconds[way].append(time.perf_counter() - t)
                    assert got == len(blobs), (way, got)
                blobs = [os.urandom(n) for n in sizes]
                c = time.process_time()
                for data in blobs:
                    compute_cid(data)
                client.append(time.process_time() - c)
            cells = ", ".join(
                f"{way} {statistics.median(v) * 1e3:.1f} ms" for way, v in seconds.items()
            )
            print(
                f"{label} ({len(sizes)} files, {sum(sizes):,} bytes): {cells}; "
                f"compute_cid {statistics.median(client) * 1e3:.2f} ms CPU"
            )
        store.close()
    return 0


def split(runs: int) -> int:
    """The finalize's store requests before and after session 54 (h-214), alternated in one
    process with fresh random blobs of the round's sizes: what the round waits for was the one
    request of 11 files; it is now the second request (8 heatmaps and the log), the first (the
    model and the terms) running while the heatmaps are made."""
    early, late = [FINALIZE[0], FINALIZE[-1]], FINALIZE[1:-1]
    seconds: dict[str, list[float]] = {"one request": [], "model + terms": [], "heatmaps + log": []}
    with daemons() as (_, api):
        store = IpfsStore(api)
        for _ in range(runs):
            for key, sizes in (
                ("one request", FINALIZE),
                ("model + terms", early),
                ("heatmaps + log", late),
            ):
                blobs = [os.urandom(n) for n in sizes]
                t = time.perf_counter()
                store.put_many(blobs)
                seconds[key].append(time.perf_counter() - t)
        store.close()
    med = {k: statistics.median(v) * 1e3 for k, v in seconds.items()}
    print(", ".join(f"{k} {v:.1f} ms" for k, v in med.items()) + f" (medians of {runs})")
    print(
        f"the finalize waits for {med['heatmaps + log']:.1f} ms instead of "
        f"{med['one request']:.1f} ms ({med['heatmaps + log'] / med['one request']:.2f}x) while "
        f"the heatmaps take longer than {med['model + terms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
