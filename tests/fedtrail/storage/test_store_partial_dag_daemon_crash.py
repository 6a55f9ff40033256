"""h-333 (reviewing h-330): js-ipfs 0.18.1's CLI exits on any unhandled rejection, and a ``cat``
of a file whose root and first leaf it holds, and a later leaf it lacks, leaves one when it is
aborted, by the request's own ``timeout`` option or by the client leaving (``IpfsStore.get``'s
probe gives up on the headers after ``probe_timeout``): "Failed to cat file: Want for Qm...
aborted" (ipfs-bitswap), and the daemon was gone, every later read ``StoreUnreachable``. The DAG
is canonical (``compute_cid`` of its full bytes), so a site that could place its root in a
reader's daemon (``block/put``; a shared daemon) stopped that reader. ``scripts/ipfs_daemon.sh``
now preloads ``scripts/ipfs_abort_guard.cjs``, which logs that rejection and keeps the CLI's
exit for every other one (session 64)."""

from __future__ import annotations

import os
import time

import pytest

from fedtrail.errors import StoreError
from fedtrail.storage.cid import check_cid
from fedtrail.storage.store import IpfsStore, compute_cid, sha256_hex

CHUNK = 262144
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _multihash(cid: str) -> bytes:
    n = 0
    for c in check_cid(cid):
        n = n * 58 + _B58.index(c)
    return n.to_bytes(34, "big")


def _field(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _varint(len(value)) + value


def _root(children: list[str]) -> bytes:
    """The dag-pb root that Kubo's balanced layout gives a file of ``len(children)`` full
    chunks (links first, then the UnixFS file data)."""
    links = b"".join(
        _field(0x12, _field(0x0A, _multihash(c)) + b"\x12\x00" + b"\x18" + _varint(CHUNK + 14))
        for c in children
    )
    data = b"\x08\x02\x18" + _varint(CHUNK * len(children))
    data += b"".join(b"\x20" + _varint(CHUNK) for _ in children)
    return links + _field(0x0A, data)


@pytest.mark.ipfs
def test_a_read_of_a_canonical_dag_missing_a_later_leaf_leaves_the_daemon_running(
    ipfs_api: str,
) -> None:
    store = IpfsStore(ipfs_api, timeout=5, probe_timeout=2, retries=0)
    held, lacking = b"L" * CHUNK, b"M" * CHUNK
    first = store.put(held)
    full = held + lacking
    boundary = os.urandom(8).hex()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + _root([first, compute_cid(lacking)])
        + f"\r\n--{boundary}--\r\n".encode()
    )
    put = store._api.post(
        "block/put",
        [("format", "dag-pb"), ("mhtype", "sha2-256"), ("version", "0")],
        lambda r: r.read(),
        wait=30,
        read_timeout=30,
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert compute_cid(full).encode() in put  # the DAG is the canonical one
    with pytest.raises(StoreError):
        store.get(compute_cid(full), sha256_hex(full))
    time.sleep(1.5)
    assert store.check()  # the daemon still answers
    again = os.urandom(1024)  # and still reads and writes
    assert store.get(store.put(again), sha256_hex(again)) == again
