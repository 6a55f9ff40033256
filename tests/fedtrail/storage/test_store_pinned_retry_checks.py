"""IpfsStore's second ``cat`` of a pinned blob (h-330) under a hostile or broken daemon answer
(h-333's review): the retry keeps the size cap and the CID/sha256 checks, and a body that
starts and then stalls is not taken as "no answer" (no pin/ls, no second download)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fedtrail.errors import ContentNotFound, ContentTooLarge, NonCanonicalCid
from fedtrail.storage.store import IpfsStore, compute_cid, sha256_hex

BLOB = b"a pinned update\n" * 200
CID = compute_cid(BLOB)
PROBE = 0.3


class _Daemon:
    """A fake RPC API: ``pin/ls`` says ``CID`` is pinned at once; the first ``cat`` sends
    nothing for ``4 * PROBE`` (then answers ``first``), later cats answer ``second`` at once;
    ``stall``: the first cat sends its headers and part of ``first`` at once, then nothing.
    Records each request (endpoint, query)."""

    def __init__(self, *, first: bytes, second: bytes, stall: bool = False) -> None:
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.stop = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                endpoint = url.path.removeprefix("/api/v0/")
                query = parse_qs(url.query)
                fake.requests.append((endpoint, query))
                cats = sum(1 for e, _ in fake.requests if e == "cat")
                if endpoint == "pin/ls":
                    body = json.dumps({"Keys": {CID: {"Type": "recursive"}}}).encode()
                elif endpoint == "cat" and cats == 1 and stall:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(first)))
                    self.end_headers()
                    self.wfile.write(first[:100])
                    self.wfile.flush()
                    fake.stop.wait(30)
                    return
                elif endpoint == "cat" and cats == 1:
                    fake.stop.wait(4 * PROBE)
                    body = first
                else:
                    body = second
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}/http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoints(self) -> list[str]:
        return [e for e, _ in self.requests]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def daemon() -> Iterator[Callable[..., _Daemon]]:
    made: list[_Daemon] = []

    def make(**kwargs: Any) -> _Daemon:
        made.append(_Daemon(**kwargs))
        return made[-1]

    yield make
    for d in made:
        d.close()


def test_the_second_cat_of_a_pinned_blob_answering_other_bytes_is_refused(
    daemon: Callable[..., _Daemon],
) -> None:
    other = b"other bytes, same length!\n" * 123
    fake = daemon(first=BLOB, second=other)
    store = IpfsStore(fake.api, timeout=10, probe_timeout=PROBE, retries=0)
    with pytest.raises(NonCanonicalCid):
        store.get(CID, sha256_hex(BLOB))
    assert fake.endpoints() == ["cat", "pin/ls", "cat"]
    store.close()


def test_the_second_cat_of_a_pinned_blob_keeps_the_size_cap(
    daemon: Callable[..., _Daemon],
) -> None:
    fake = daemon(first=BLOB, second=b"x" * 5000)  # ignores `length`
    store = IpfsStore(fake.api, timeout=10, probe_timeout=PROBE, retries=0)
    with pytest.raises(ContentTooLarge):
        store.get(CID, sha256_hex(BLOB), max_bytes=1000)
    assert fake.endpoints() == ["cat", "pin/ls", "cat"]
    # both cats asked the daemon to stop at the cap + 1
    assert [q["length"] for e, q in fake.requests if e == "cat"] == [["1001"], ["1001"]]
    store.close()


def test_a_cat_whose_body_starts_then_stalls_is_not_asked_again_nor_looked_up_in_the_pins(
    daemon: Callable[..., _Daemon],
) -> None:
    fake = daemon(first=BLOB, second=BLOB, stall=True)
    # timeout 1: each read of the body waits timeout + 5 s
    store = IpfsStore(fake.api, timeout=1, probe_timeout=PROBE, retries=0)
    started = time.monotonic()
    with pytest.raises(ContentNotFound):
        store.get(CID, sha256_hex(BLOB))
    took = time.monotonic() - started
    assert fake.endpoints() == ["cat"]  # no pin/ls, no second download
    assert 6.0 <= took < 9.0, took
    store.close()
