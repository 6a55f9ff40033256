"""IpfsStore against a daemon that is slow to answer (h-330): a daemon busy with other reads
answers a blob it holds late, and a js-ipfs daemon never says "not found" (it searches), so a
late first answer alone cannot tell "held, queued" from "not held". A held (pinned) blob must
be read, not called missing; a blob the daemon does not hold must still be missing promptly."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fedtrail.errors import ContentNotFound, StoreUnreachable
from fedtrail.storage.store import IpfsStore, compute_cid, sha256_hex

BLOB = b"a held update, slow to come\n" * 100
CID = compute_cid(BLOB)
PROBE = 0.3  # the store's probe_timeout here; the fake daemon's delay is past it


class _BusyDaemon:
    """A fake RPC API whose ``cat`` and ``block/stat`` answer only after ``delay`` seconds (a
    daemon queueing requests, or searching for content it lacks; or, like js-ipfs, "request
    timed out" at the request's ``timeout`` option when that comes first), and whose
    ``pin/ls`` answers at once: the blob pinned (``pinned``) or js-ipfs' "is not pinned"
    error. Records each request's endpoint."""

    def __init__(self, *, delay: float, pinned: bool) -> None:
        self.endpoints: list[str] = []
        self.stop = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                endpoint = url.path.removeprefix("/api/v0/")
                query = parse_qs(url.query)
                fake.endpoints.append(endpoint)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = 200, b""
                if endpoint == "pin/ls":
                    arg = query["arg"][0]
                    assert query.get("type") == ["recursive"]
                    if pinned and arg == CID:
                        body = json.dumps({"Keys": {arg: {"Type": "recursive"}}}).encode()
                    else:
                        status = 500
                        body = json.dumps(
                            {"Message": f"path '{arg}' is not pinned", "Code": 0, "Type": "error"}
                        ).encode()
                else:
                    # queued (held) or searching (not held), until the request's own `timeout`
                    # option ("250ms"), as js-ipfs answers it
                    limit = float(query["timeout"][0].removesuffix("ms")) / 1000
                    fake.stop.wait(min(delay, limit))
                    if delay > limit:
                        status = 500
                        body = json.dumps({"Message": "request timed out", "Code": 0}).encode()
                    elif endpoint == "cat":
                        body = BLOB
                    elif endpoint == "block/stat":
                        body = json.dumps({"Key": CID, "Size": 42}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}/http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def busy_daemon() -> Iterator[Callable[..., _BusyDaemon]]:
    made: list[_BusyDaemon] = []

    def make(**kwargs: Any) -> _BusyDaemon:
        made.append(_BusyDaemon(**kwargs))
        return made[-1]

    yield make
    for daemon in made:
        daemon.close()


def test_a_held_blob_whose_first_bytes_come_after_probe_timeout_is_read_not_missing(
    busy_daemon: Callable[..., _BusyDaemon],
) -> None:
    daemon = busy_daemon(delay=4 * PROBE, pinned=True)
    store = IpfsStore(daemon.api, timeout=10, probe_timeout=PROBE, retries=0)
    assert store.get(CID, sha256_hex(BLOB)) == BLOB
    # the first cat went unanswered within probe_timeout; the pin store said "held"; the
    # cat asked again waited for its answer
    assert daemon.endpoints == ["cat", "pin/ls", "cat"]
    assert store.has(CID)
    store.close()


def test_a_blob_the_daemon_does_not_hold_is_missing_within_probe_timeout_and_a_round_trip(
    busy_daemon: Callable[..., _BusyDaemon],
) -> None:
    daemon = busy_daemon(delay=30.0, pinned=False)  # searches "forever"
    store = IpfsStore(daemon.api, timeout=10, probe_timeout=PROBE, retries=0)
    started = time.monotonic()
    with pytest.raises(ContentNotFound, match="not pinned"):
        store.get(CID, sha256_hex(BLOB))
    took = time.monotonic() - started
    assert took < PROBE + 2.0, took  # not the full timeout (10 s), nor the daemon's 30 s
    assert daemon.endpoints == ["cat", "pin/ls"]
    started = time.monotonic()
    assert not store.has(CID)
    assert time.monotonic() - started < PROBE + 2.0
    store.close()


def test_an_unreachable_daemon_still_raises_store_unreachable_naming_the_endpoint() -> None:
    daemon = _BusyDaemon(delay=0, pinned=True)
    api = daemon.api
    daemon.close()
    store = IpfsStore(api, timeout=10, probe_timeout=PROBE, retries=0)
    with pytest.raises(StoreUnreachable, match=api):
        store.get(CID, sha256_hex(BLOB))


@pytest.mark.ipfs
def test_the_real_daemon_answers_the_held_check_and_an_absent_blob_is_missing_not_pinned(
    ipfs_api: str,
) -> None:
    """js-ipfs itself: its pin/ls answer parses as held for a put blob and not held for one never
    put (the fake daemons above assume its answer's shape), and with a probe (1 ms) the
    absent blob's cat cannot meet, get is ContentNotFound through that check ("not pinned").
    The held blob is read whether or not its cat met the probe (an idle daemon often answers a
    local blob in under 1 ms)."""
    store = IpfsStore(ipfs_api, timeout=30, probe_timeout=0.001)
    held = bytes(range(256)) * (3 * 4096)
    cid = store.put(held)
    absent = b"never put here, h-330 " * 50
    assert store._pinned(cid)
    assert not store._pinned(compute_cid(absent))
    assert store.get(cid, sha256_hex(held)) == held
    assert store.has(cid)
    with pytest.raises(ContentNotFound, match="not pinned"):
        store.get(compute_cid(absent), sha256_hex(absent))
    assert not store.has(compute_cid(absent))
    store.close()
