"""Content-addressed storage for models, updates and explanation logs.

The chain records a blob's CID and sha256; the blob itself lives here. Two stores share one
interface and, for the same bytes, one CID (Kubo's default CIDv0: dag-pb, balanced layout,
256 KiB chunks, sha2-256):

- ``IpfsStore`` talks to an IPFS daemon's RPC API (js-ipfs on 127.0.0.1, or any Kubo node);
- ``LocalStore`` is a plain directory, for the embedded default and tests without a daemon.

``get`` never trusts the store: it always checks the bytes against the sha256 that the chain
recorded and the CID it was asked for against the one ``compute_cid`` gives those bytes (a
blob is given only under that canonical CID: another DAG of the same bytes is its writer's
choice of shape, and of every reader's wait), and it refuses to download more than a size
limit, because blobs come from other sites and are untrusted. CIDs and hashes are validated
before any disk or network access (``fedtrail.storage.cid``); every failure is a
``StoreError``.
"""

from __future__ import annotations

import abc
import http.client
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from ipfshttpclient import exceptions as ipfs_exc
from ipfshttpclient.http_common import multiaddr_to_url_data

from fedtrail.errors import (
    ContentNotFound,
    ContentTooLarge,
    HashMismatch,
    InvalidCid,
    InvalidSha256,
    InvalidStoreConfig,
    NonCanonicalCid,
    NotAFile,
    StoreError,
    StoreUnreachable,
)
from fedtrail.fsutil import atomic_write
from fedtrail.storage.cid import check_cid, compute_cid, sha256_hex

__all__ = [
    "DEFAULT_API",
    "DEFAULT_MAX_BYTES",
    "NOT_GIVEN",
    "ContentStore",
    "IpfsStore",
    "LocalStore",
    "check_cid",
    "compute_cid",
    "open_store",
    "sha256_hex",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest blob ``get`` returns unless told otherwise (models here are a few MB)."""

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001/http"

NOT_GIVEN = (ContentNotFound, HashMismatch, InvalidCid, NotAFile, ContentTooLarge)
"""The answers of ``get`` that say the store does not give this blob (a verdict on the blob:
the aggregator scores a round's own update MALFORMED or TAMPERED for them), unlike any other
``StoreError`` (the store unreachable: retried)."""

_T = TypeVar("_T")

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
# A URL scheme ("ftp://"): such a location is a typo, not a directory name.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

# The add options that make any daemon (js-ipfs, or a Kubo with other Import.* settings)
# produce the same CID as `compute_cid`: CIDv0 implies dag-pb leaves.
_ADD_OPTS = {
    "cid-version": "0",
    "raw-leaves": "false",
    "chunker": "size-262144",
    "hash": "sha2-256",
    "pin": "true",
}


# ------------------------------------------------------------------ checks


def _check_sha256(sha256: object) -> str:
    """The expected hash, lowercased; a malformed one is a bad record, not tampering."""
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise InvalidSha256(f"expected sha256 must be 64 hex characters, got {_short(sha256)}")
    return sha256.lower()


def _verify(cid: str, data: bytes, expected: str, *, cid_first: bool) -> bytes:
    """``data``, read under ``cid``, once ``cid`` is its canonical CID (else ``NonCanonicalCid``)
    and it hashes to ``expected`` (else ``HashMismatch``).

    The canonical CID is the one ``compute_cid`` gives the bytes, in either spelling (a dag-pb
    CIDv1 of that root is the same DAG). Any other CID of them (a raw-codec CIDv1, another
    chunker or layout) names a DAG whose shape its writer chose, and a many-block one makes
    each reader's wait its writer's choice (attack a121): refused for every reader, so whether
    a blob is given never hangs on timing. ``cid_first`` (an IPFS read, where a reader can time
    out on such a DAG): the CID is checked before the hash, so bytes under a non-canonical CID
    are not given whatever their sha256, as a reader that timed out on them finds (MALFORMED,
    never TAMPERED by luck). A ``LocalStore`` has no DAG to wait on and names each file by its
    canonical CID: a file that no longer hashes to the record there is tampered, as before."""
    actual = sha256_hex(data)
    if not cid_first and actual != expected:
        raise _mismatch(cid, actual, expected)
    canonical = compute_cid(data)
    if check_cid(cid) != canonical:
        raise NonCanonicalCid(
            f"content {_short(cid)} is not under its canonical CID {canonical} (a default "
            "`ipfs add`: CIDv0, 256 KiB chunks): no reader takes it under another CID"
        )
    if actual != expected:
        raise _mismatch(cid, actual, expected)
    return data


def _mismatch(cid: str, actual: str, expected: str) -> HashMismatch:
    return HashMismatch(
        f"content {cid} has sha256 {actual} but {expected} was recorded: "
        "tampered or corrupted content, refusing it"
    )


def _limit(default: int, override: int | None) -> int:
    limit = default if override is None else override
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidStoreConfig(f"max_bytes must be an integer >= 0, got {_short(limit)}")
    return limit


def _too_large(cid: str, size: int | str, limit: int) -> ContentTooLarge:
    return ContentTooLarge(f"content {cid} is {size} bytes, over the {limit}-byte limit")


def _short(x: object) -> str:
    """repr of an untrusted value, cut so a hostile record cannot flood logs."""
    text = repr(x)
    return text if len(text) <= 140 else text[:137] + "..."


# ------------------------------------------------------------------ interface


class ContentStore(abc.ABC):
    """Where blobs live, addressed by CID; every read is checked against a recorded sha256."""

    @abc.abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data`` (pinned) and return its CID (Kubo's default CIDv0, ``Qm...``)."""

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        """``put`` of each blob, CIDs in the same order; a store that can takes them in one
        request (``IpfsStore``: one ``add``, where each ``put`` is a daemon round trip)."""
        return [self.put(blob) for blob in blobs]

    @abc.abstractmethod
    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes under ``cid`` after checking them against ``sha256``.

        Raises ``InvalidCid`` (its ``NonCanonicalCid`` for bytes under any CID but the one
        ``compute_cid`` gives them), ``ContentNotFound``, ``NotAFile`` (a directory's CID),
        ``ContentTooLarge`` (over ``max_bytes``, default the store's limit) or ``HashMismatch``;
        never returns unverified bytes.
        """

    @abc.abstractmethod
    def pin(self, cid: str) -> None:
        """Keep ``cid`` from garbage collection; ``ContentNotFound`` if it is not stored."""

    @abc.abstractmethod
    def has(self, cid: str) -> bool:
        """Whether ``cid`` is available from this store without the network."""


# ------------------------------------------------------------------ embedded


class LocalStore(ContentStore):
    """A directory of blobs named by the CID an IPFS node would give them.

    Layout: ``blobs/<cid>`` (written atomically), ``pins/<cid>`` (empty markers). Nothing is
    ever garbage-collected here; pins record intent so a later migration to IPFS knows what to
    pin.
    """

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = _limit(max_bytes, None)
        self._blobs = self.root / "blobs"
        self._pins = self.root / "pins"
        # Created on the first put: a reader (an auditor) must not write to disk.

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def put(self, data: bytes) -> str:
        cid = compute_cid(data)
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._pins.mkdir(parents=True, exist_ok=True)
        path = self._blobs / cid
        if not path.exists():
            atomic_write(path, data, shared=True)
        self.pin(cid)
        return cid

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        key = check_cid(cid)
        expected = _check_sha256(sha256)
        limit = _limit(self.max_bytes, max_bytes)
        path = self._blobs / key
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > limit:
                    raise _too_large(cid, size, limit)
                data = fh.read(limit + 1)  # the file may grow between stat and read
        except FileNotFoundError:
            raise ContentNotFound(f"no content {cid} in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot read content {cid} from {self.root}: {exc}") from exc
        if len(data) > limit:
            raise _too_large(cid, f"over {limit}", limit)
        return _verify(cid, data, expected, cid_first=False)

    def pin(self, cid: str) -> None:
        key = check_cid(cid)
        if not (self._blobs / key).is_file():
            raise ContentNotFound(f"cannot pin {cid}: no such content in {self.root}")
        self._pins.mkdir(parents=True, exist_ok=True)
        (self._pins / key).touch()

    def has(self, cid: str) -> bool:
        return (self._blobs / check_cid(cid)).is_file()

    def pinned(self) -> list[str]:
        """The pinned CIDs, sorted (for migrating a LocalStore into an IPFS node)."""
        if not self._pins.is_dir():
            return []
        return sorted(p.name for p in self._pins.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------ IPFS daemon


def _to_multiaddr(api: str) -> str:
    """Accept a multiaddr or an ``http(s)://host:port`` URL; return a multiaddr."""
    if not isinstance(api, str):
        raise InvalidStoreConfig(f"IPFS API must be a string, got {_short(api)}")
    if api.startswith("/"):
        return api
    bad = f"IPFS API must be a multiaddr or http(s)://host:port URL, got {_short(api)}"
    try:
        parts = urlsplit(api)
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise InvalidStoreConfig(f"{bad}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise InvalidStoreConfig(bad)
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    host = parts.hostname
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
        proto = "ip4"
    elif ":" in host:
        proto = "ip6"
    else:
        proto = "dns"
    return f"/{proto}/{host}/tcp/{port}/{parts.scheme}"


def _duration(seconds: float) -> str:
    """A Go/js duration string for the daemon's server-side ``timeout`` option."""
    return f"{max(1, round(seconds * 1000))}ms"


_TIMEOUT_MARKERS = ("timed out", "deadline exceeded")
_NOT_FOUND_MARKERS = (*_TIMEOUT_MARKERS, "not found", "could not find")
# What a daemon answers for a CID whose node is no file (js-ipfs: "this dag node is a directory"
# and "no data in PBNode" from cat; Kubo words them alike).
_NOT_A_FILE_MARKERS = ("directory", "pbnode", "unixfs", "protocol buffer")

_READ_CHUNK = 1 << 20
_MAX_ERROR_BYTES = 64 * 1024  # an error answer's body read at most (a daemon's JSON message)


class _Unreachable(Exception):
    """No answer: the connection failed or broke (retried with backoff)."""


class _TimedOut(Exception):
    """The daemon did not answer, or stopped sending, within the wait."""

    def __init__(self, seconds: float, note: str = "") -> None:
        super().__init__(f"no answer within {seconds:g}s")
        self.seconds = seconds
        self.note = note  # why the wait was not extended (said in ContentNotFound's message)


class _NoAnswer(_TimedOut):
    """No answer's headers within the wait (as opposed to a body that stopped coming): for a
    lookup, the daemon is searching for the content, or busy with other requests."""


class _Refused(Exception):
    """The daemon answered with an error; the message is its own."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (a ``/unix/...`` API multiaddr)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _Api:
    """The daemon's RPC API over HTTP/1.1 keep-alive connections, shared by threads.

    One request here costs the daemon's own latency (~1.5 ms on js-ipfs); through
    ``ipfshttpclient`` each cost about 1 ms more (a new connection and its request machinery per
    call), and a round makes hundreds. A pooled connection that the daemon closed while idle
    (Node closes idle keep-alive connections after 5 s) fails on its next request before any
    answer: that request is sent once more on a new connection (every call here is idempotent)
    rather than counted as the daemon being down.
    """

    def __init__(self, api: str) -> None:
        try:
            base, self._unix, _, _ = multiaddr_to_url_data(api, "api/v0")
            url = urlsplit(base)
            self._host, self._port = url.hostname or "", url.port
        except (ipfs_exc.AddressError, ValueError) as exc:
            raise InvalidStoreConfig(f"bad IPFS API address {_short(api)}: {exc}") from exc
        self._https = url.scheme == "https"
        self._prefix = url.path  # "/api/v0/"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, wait: float, *, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """A connection whose next request waits ``wait`` seconds, and whether it was pooled."""
        conn: http.client.HTTPConnection | None = None
        if not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
        if conn is not None:
            conn.timeout = wait
            if conn.sock is not None:
                conn.sock.settimeout(wait)
            return conn, True
        if self._unix is not None:
            return _UnixConnection(self._unix, wait), False
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=wait), False

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __del__(self) -> None:
        # a store dropped without close(): no socket left to the GC (nor to a failed __init__)
        for conn in getattr(self, "_idle", ()):
            conn.close()

    def post(
        self,
        endpoint: str,
        params: list[tuple[str, str]],
        read: Callable[[http.client.HTTPResponse], _T],
        *,
        wait: float,
        read_timeout: float,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> _T:
        """``read`` of the daemon's 200 answer to ``POST endpoint?params``.

        ``wait``: seconds to connect and for the answer's headers; ``read_timeout``: for each
        read of its body after them. Raises ``_Unreachable``, ``_TimedOut`` or ``_Refused``;
        whatever ``read`` raises passes through.
        """
        path = self._prefix + endpoint + ("?" + urlencode(params) if params else "")
        for fresh in (False, True):
            conn, pooled = self._connection(wait, fresh=fresh)
            try:
                conn.request("POST", path, body=body, headers=headers or {})
                resp = conn.getresponse()
            except TimeoutError as exc:
                conn.close()
                raise _NoAnswer(wait) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if pooled:
                    continue  # closed by the daemon while idle: once more, on a new connection
                raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
            done = False
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(read_timeout)
                if resp.status != 200:
                    raise _Refused(_error_message(resp))
                result = read(resp)
                done = resp.isclosed()  # the answer read to its end: the connection is reusable
                return result
            except TimeoutError as exc:
                raise _TimedOut(read_timeout) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
            finally:
                if done and not resp.will_close:
                    with self._lock:
                        self._idle.append(conn)
                else:
                    conn.close()
        raise AssertionError("unreachable")  # the second attempt returns or raises


def _error_message(resp: http.client.HTTPResponse) -> str:
    """The message of a daemon's error answer (``{"Message": ...}``), or its status."""
    raw = resp.read(_MAX_ERROR_BYTES)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("Message"), str):
        return str(doc["Message"])
    text = raw.decode("utf-8", "replace").strip()
    return f"HTTP {resp.status} {resp.reason}" + (f": {_short(text)}" if text else "")


def _read_json(resp: http.client.HTTPResponse) -> Any:
    """An answer's JSON document (None when it is not one)."""
    try:
        return json.loads(resp.read())
    except ValueError:
        return None


def _read_json_lines(resp: http.client.HTTPResponse) -> list[Any]:
    """An answer of one JSON document per line (``add``: one per file); a line that is not
    one is left out."""
    out = []
    for line in resp.read().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class IpfsStore(ContentStore):
    """A store backed by an IPFS daemon's RPC API (js-ipfs 0.18 or Kubo).

    Quirks handled here:

    - the RPC API is spoken directly over keep-alive connections (``_Api``), no version check
      (js-ipfs reports 0.18.1, which ``ipfshttpclient.connect()`` refuses);
    - an offline js-ipfs node never answers "not found": a request for a missing block waits
      forever. Every lookup therefore carries the daemon's own ``timeout`` option, and a missing
      root block is detected within ``probe_timeout``: ``get``'s ``cat`` answers its first
      bytes only once the content's first blocks are read (``has`` and ``pin`` ask
      ``block/stat``). No answer within ``probe_timeout`` means the content is not there
      unless the daemon holds it pinned (``pin/ls``, which no search delays, answered within
      ``timeout``): a busy daemon is slow for held blobs too (h-330), so a pinned one is then
      asked for again with the full ``timeout``. Content the daemon does not hold is reported
      ``ContentNotFound`` after ``probe_timeout`` plus the ``pin/ls`` round trip (promptly
      "not pinned"; at most ``timeout`` + 5 s more when the daemon cannot say);
    - connection errors are retried with exponential backoff (``retries`` extra attempts), then
      reported as ``StoreUnreachable`` naming the endpoint. Nothing else is retried.
    """

    def __init__(
        self,
        api: str = DEFAULT_API,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_bytes: int = DEFAULT_MAX_BYTES,
        probe_timeout: float = 2.0,
    ) -> None:
        if not (timeout > 0 and probe_timeout > 0 and retries >= 0 and backoff >= 0):
            raise InvalidStoreConfig(
                "timeout and probe_timeout must be > 0, retries and backoff >= 0; got "
                f"{timeout=}, {probe_timeout=}, {retries=}, {backoff=}"
            )
        self.api = _to_multiaddr(api)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_bytes = _limit(max_bytes, None)
        self.probe_timeout = min(probe_timeout, timeout)
        self._api = _Api(self.api)

    def __repr__(self) -> str:
        return f"IpfsStore({self.api!r})"

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        self._api.close()

    # -------------------------------------------------------------- plumbing

    def _call(self, what: str, fn: Callable[[], _T], *, cid: str | None = None) -> _T:
        """Run one RPC operation, retrying connection failures and mapping errors to ours."""
        delay = self.backoff
        started = time.monotonic()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except _Unreachable as exc:
                last = exc
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
            except _TimedOut as exc:
                if cid is not None:
                    raise ContentNotFound(
                        f"{cid} not available from the IPFS API at {self.api} "
                        f"within {exc.seconds:g}s{exc.note}"
                    ) from exc
                raise StoreError(f"IPFS API at {self.api} timed out during {what}") from exc
            except _Refused as exc:
                msg = str(exc)
                low = msg.lower()
                if cid is not None and any(m in low for m in _NOT_FOUND_MARKERS):
                    raise ContentNotFound(
                        f"{cid} not available from the IPFS API at {self.api}: {msg}"
                    ) from exc
                if cid is not None and any(m in low for m in _NOT_A_FILE_MARKERS):
                    raise NotAFile(f"{cid} is not a file, so no blob: {msg}") from exc
                if "invalid" in low and ("cid" in low or "query input" in low):
                    raise InvalidCid(f"the IPFS API at {self.api} rejected {cid!r}: {msg}") from exc
                raise StoreError(f"IPFS API at {self.api} failed {what}: {msg}") from exc
        raise StoreUnreachable(
            f"IPFS API at {self.api} does not answer ({what}; {self.retries + 1} attempts over "
            f"{time.monotonic() - started:.1f}s): {last}. Is the daemon running? "
            "(scripts/ipfs_daemon.sh start)"
        ) from last

    def _json(self, endpoint: str, params: list[tuple[str, str]], wait: float) -> Any:
        return self._api.post(endpoint, params, _read_json, wait=wait, read_timeout=wait)

    def check(self) -> str:
        """The daemon's version; ``StoreUnreachable`` naming the endpoint when it is down."""
        info = self._call("version", lambda: self._json("version", [], self.probe_timeout + 5))
        return str(info.get("Version", "")) if isinstance(info, dict) else ""

    def _pinned(self, cid: str) -> bool:
        """Whether the daemon holds ``cid`` pinned (recursively: all its blocks in the local
        repo), asked in a way that a busy daemon answers late but never wrongly.

        js-ipfs (even ``daemon --offline``) searches for a block it lacks and never says
        "not found" (``block/stat``, ``cat``, ``files/stat`` all wait, and take no ``offline``
        option), so a slow first answer cannot tell "not held" from "held, but queued behind
        other reads". ``pin/ls?arg=CID&type=recursive`` is a lookup in the pin store alone:
        js-ipfs and Kubo answer it without touching the network, promptly "not pinned" (an
        error) for content they do not hold, and it waits, like any request, only for the
        daemon's queue, so it is given the full ``timeout``. Every blob this store puts is
        pinned (``add`` with ``pin=true``, ``pin``). Raises ``_TimedOut``/``_Unreachable``."""
        params = [
            ("arg", cid),
            ("type", "recursive"),
            ("offline", "true"),  # Kubo: resolve nothing from the network; js-ipfs ignores it
            ("timeout", _duration(self.timeout)),
        ]
        try:
            doc = self._json("pin/ls", params, self.timeout + 5)
        except _Refused:
            return False  # "path '...' is not pinned" (or a daemon that cannot say: not held)
        keys = doc.get("Keys") if isinstance(doc, dict) else None
        return isinstance(keys, dict) and bool(keys)

    def _slow_but_pinned(self, cid: str, exc: _NoAnswer | _Refused) -> bool:
        """After ``exc`` (no answer within ``probe_timeout``, or the daemon's own timeout
        answer to a ``probe_timeout`` lookup): whether ``cid`` is pinned in the daemon, so the
        wait for it is the daemon's queue, not a search. When it is not, ``exc`` is noted so
        (its ``ContentNotFound`` says why the wait was not extended)."""
        try:
            pinned = self._pinned(cid)
        except _TimedOut as slow:
            slow.note = " (nor whether it is pinned: the daemon is busy)"
            raise slow from exc
        if not pinned:
            if isinstance(exc, _TimedOut):
                exc.note = " and it is not pinned there"
            else:
                exc.args = (f"{exc}; and it is not pinned there",)
        return pinned

    def _probe(self, cid: str) -> None:
        """Raise ``ContentNotFound`` when the root block is not in the daemon's repo: fast
        (``probe_timeout``) when the daemon answers nothing and the content is not pinned;
        a block the daemon is slow to stat but holds pinned is there (``_pinned``)."""
        params = [
            ("arg", cid),
            # Kubo: answer from the local repo only; js-ipfs ignores it (and searches)
            ("offline", "true"),
            ("timeout", _duration(self.probe_timeout)),
        ]

        def stat() -> None:
            try:
                self._json("block/stat", params, self.probe_timeout + 5)
            except _NoAnswer as exc:
                if not self._slow_but_pinned(cid, exc):
                    raise
            except _Refused as exc:
                # the daemon's own `timeout` fired: it searched, or queued, past probe_timeout
                low = str(exc).lower()
                if not any(m in low for m in _TIMEOUT_MARKERS):
                    raise
                if not self._slow_but_pinned(cid, exc):
                    raise

        self._call("block/stat", stat, cid=cid)

    # -------------------------------------------------------------- interface

    def put(self, data: bytes) -> str:
        return self._add([data])[0]

    def put_many(self, blobs: Sequence[bytes]) -> list[str]:
        """One ``add`` request for all ``blobs`` (one file part each, pinned): a daemon round
        trip costs more than the bytes of a heatmap or a model of a few hundred KB."""
        return self._add(blobs)

    def _add(self, blobs: Sequence[bytes]) -> list[str]:
        if not blobs:
            return []
        expected = [compute_cid(data) for data in blobs]
        boundary = os.urandom(16).hex()  # unknown to whoever chose the bytes
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
        body = b"".join(parts)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        wait = self.timeout + 5

        def add() -> list[Any]:
            return self._api.post(
                "add",
                list(_ADD_OPTS.items()),
                _read_json_lines,
                wait=wait,
                read_timeout=wait,
                body=body,
                headers=headers,
            )

        entries = self._call("add", add)
        # each file's entry by its name (a daemon need not answer in the parts' order)
        by_name = {
            str(e.get("Name")): str(e.get("Hash", "")) for e in entries if isinstance(e, dict)
        }
        cids = []
        for i, want in enumerate(expected):
            cid = by_name.get(f"blob-{i}", "")
            if not cid:
                raise StoreError(
                    f"IPFS API at {self.api} answered add without a CID for part {i}: "
                    f"{_short(entries)}"
                )
            if cid != want:
                # The daemon chunked differently than Kubo's default: LocalStore and auditors
                # would disagree on the address, so do not let this CID reach the chain.
                raise StoreError(
                    f"IPFS API at {self.api} stored the bytes as {cid}, expected {want}"
                )
            cids.append(cid)
        return cids

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        check_cid(cid)
        expected = _check_sha256(sha256)
        limit = _limit(self.max_bytes, max_bytes)
        # One request. `length` makes the daemon stop at limit + 1 bytes, and counting guards
        # against one that ignores it; a directory or other non-file node is an error answer
        # (NotAFile); the answer's headers come with the first bytes, so waiting for them
        # only probe_timeout is the probe of a missing root block (see the class doc), while
        # each read of the body may take the full timeout. A daemon busy with other reads
        # answers a held blob's cat late too: when the content is pinned there (`_pinned`, a
        # lookup no search delays), the cat is asked again with the full timeout for its
        # headers, so a slow daemon never makes a held blob "missing".
        params = [
            ("arg", cid),
            ("length", str(limit + 1)),
            ("timeout", _duration(self.timeout)),
        ]

        def capped(resp: http.client.HTTPResponse) -> bytes:
            buf = bytearray()
            while chunk := resp.read(min(_READ_CHUNK, limit + 1 - len(buf))):
                buf += chunk
                if len(buf) > limit:
                    raise _too_large(cid, f"over {limit}", limit)
            return bytes(buf)

        def cat(wait: float) -> bytes:
            return self._api.post("cat", params, capped, wait=wait, read_timeout=self.timeout + 5)

        def fetch() -> bytes:
            try:
                return cat(self.probe_timeout)
            except _NoAnswer as exc:
                if not self._slow_but_pinned(cid, exc):
                    raise
            return cat(self.timeout + 5)

        data = self._call("cat", fetch, cid=cid)
        return _verify(cid, data, expected, cid_first=True)

    def pin(self, cid: str) -> None:
        check_cid(cid)
        self._probe(cid)
        params = [("arg", cid), ("timeout", _duration(self.timeout))]
        self._call("pin/add", lambda: self._json("pin/add", params, self.timeout + 5), cid=cid)

    def has(self, cid: str) -> bool:
        check_cid(cid)
        try:
            self._probe(cid)
        except ContentNotFound:
            return False
        return True


# ------------------------------------------------------------------ factory


def open_store(location: str) -> ContentStore:
    """Open a store from a config string.

    ``local:/path/dir`` or a bare path -> ``LocalStore``; ``ipfs:<multiaddr>`` (or ``ipfs:``
    alone for the default API) or ``http(s)://host:port`` -> ``IpfsStore``.
    """
    if not isinstance(location, str):
        raise InvalidStoreConfig(f"store location must be a string, got {_short(location)}")
    if location.startswith("ipfs:"):
        return IpfsStore(location[len("ipfs:") :] or DEFAULT_API)
    if location.startswith(("http://", "https://")):
        return IpfsStore(location)
    if location.startswith("local:"):
        location = location[len("local:") :]
    elif re.match(r"/(ip4|ip6|dns|dns4|dns6)/", location):
        # A bare multiaddr would otherwise silently become a directory named /ip4/...
        raise InvalidStoreConfig(f"ambiguous store location {location!r}: write ipfs:{location}")
    elif _SCHEME_RE.match(location):
        # Likewise a URL with another scheme ("ftp://host") would become a directory "ftp:".
        raise InvalidStoreConfig(
            f"store location {_short(location)}: only http(s) URLs, ipfs: and local: are known"
        )
    if not location:
        raise InvalidStoreConfig("empty store location")
    root = Path(location).expanduser()
    if root.exists() and not root.is_dir():  # a reader was told the folder did not exist
        raise InvalidStoreConfig(
            f"local content store {_short(str(root))} is a file, not a folder (give the folder "
            "the blobs are stored in: local:DIR)"
        )
    return LocalStore(root)
