"""Content-addressed storage for models, updates and explanation logs.

The chain records a blob's CID and sha256; the blob itself lives here. Two stores share one
interface and, for the same bytes, one CID (Kubo's default CIDv0: dag-pb, balanced layout,
256 KiB chunks, sha2-256):

- ``IpfsStore`` talks to an IPFS daemon's RPC API (js-ipfs on 127.0.0.1, or any Kubo node);
- ``LocalStore`` is a plain directory, for the embedded default and tests without a daemon.

``get`` never trusts the store: it always checks the bytes against the sha256 that the chain
recorded, and it refuses to download more than a size limit, because blobs come from other
sites and are untrusted. CIDs and hashes are validated before any disk or network access
(``fedtrail.storage.cid``); every failure is a ``StoreError``.
"""

from __future__ import annotations

import abc
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ipfshttpclient
from ipfshttpclient import exceptions as ipfs_exc

from fedtrail.errors import (
    ContentNotFound,
    ContentTooLarge,
    HashMismatch,
    InvalidCid,
    InvalidSha256,
    InvalidStoreConfig,
    NotAFile,
    StoreError,
    StoreUnreachable,
)
from fedtrail.fsutil import atomic_write
from fedtrail.storage.cid import check_cid, compute_cid, sha256_hex

__all__ = [
    "DEFAULT_API",
    "DEFAULT_MAX_BYTES",
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

# ipfshttpclient 0.8.0a2 passes urllib3's removed `strict` argument on every request, which
# warns each time; the warning is about the client library, not about anything we can fix.
warnings.filterwarnings(
    "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
)

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


def _verify(cid: str, data: bytes, expected: str) -> bytes:
    actual = sha256_hex(data)
    if actual != expected:
        raise HashMismatch(
            f"content {cid} has sha256 {actual} but {expected} was recorded: "
            "tampered or corrupted content, refusing it"
        )
    return data


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

    @abc.abstractmethod
    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes under ``cid`` after checking them against ``sha256``.

        Raises ``InvalidCid``, ``ContentNotFound``, ``NotAFile`` (a directory's CID),
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
            atomic_write(path, data)
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
        return _verify(cid, data, expected)

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


_NOT_FOUND_MARKERS = ("timed out", "deadline exceeded", "not found", "could not find")
# What a daemon answers for a CID whose node is no file (js-ipfs: "this dag node is a directory"
# from cat, "no data in PBNode" from files/stat of a bare dag-pb node; Kubo words them alike).
_NOT_A_FILE_MARKERS = ("directory", "pbnode", "unixfs", "protocol buffer")


class IpfsStore(ContentStore):
    """A store backed by an IPFS daemon's RPC API (js-ipfs 0.18 or Kubo).

    Quirks handled here:

    - ``ipfshttpclient.connect()`` warns or refuses on daemons newer than 0.8 (js-ipfs reports
      0.18.1), so the client is constructed directly and no version check runs;
    - an offline js-ipfs node never answers "not found": a request for a missing block waits
      forever. Every lookup therefore carries the daemon's own ``timeout`` option and a missing
      root block is detected with a short probe (``probe_timeout``) before anything else;
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
        try:
            # Not ipfshttpclient.connect(): that checks the daemon version (see class doc).
            self._client: Any = ipfshttpclient.Client(self.api, timeout=timeout)
        except ipfs_exc.AddressError as exc:
            raise InvalidStoreConfig(f"bad IPFS API address {_short(api)}: {exc}") from exc

    def __repr__(self) -> str:
        return f"IpfsStore({self.api!r})"

    def close(self) -> None:
        """Release pooled connections (the client opens one per request unless in a session)."""
        self._client.close()

    # -------------------------------------------------------------- plumbing

    def _call(self, what: str, fn: Callable[[], _T], *, cid: str | None = None) -> _T:
        """Run one RPC operation, retrying connection failures and mapping errors to ours."""
        delay = self.backoff
        started = time.monotonic()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (ipfs_exc.ConnectionError, ipfs_exc.ProtocolError) as exc:
                last = exc
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
            except ipfs_exc.TimeoutError as exc:
                if cid is not None:
                    raise ContentNotFound(
                        f"{cid} not available from the IPFS API at {self.api} "
                        f"within {self.timeout:g}s"
                    ) from exc
                raise StoreError(f"IPFS API at {self.api} timed out during {what}") from exc
            except ipfs_exc.ErrorResponse as exc:
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
            except ipfs_exc.Error as exc:
                raise StoreError(f"IPFS API at {self.api} failed {what}: {exc}") from exc
        raise StoreUnreachable(
            f"IPFS API at {self.api} does not answer ({what}; {self.retries + 1} attempts over "
            f"{time.monotonic() - started:.1f}s): {last}. Is the daemon running? "
            "(scripts/ipfs_daemon.sh start)"
        ) from last

    def check(self) -> str:
        """The daemon's version; ``StoreUnreachable`` naming the endpoint when it is down."""
        info = self._call("version", lambda: self._client.version(timeout=self.probe_timeout + 5))
        return str(info.get("Version", "")) if isinstance(info, dict) else ""

    def _probe(self, cid: str) -> None:
        """Raise ``ContentNotFound`` fast when the root block is not in the daemon's repo."""
        self._call(
            "block/stat",
            lambda: self._client.block.stat(
                cid,
                offline=True,  # Kubo: answer from the local repo only; js-ipfs is offline anyway
                opts={"timeout": _duration(self.probe_timeout)},
                timeout=self.probe_timeout + 5,
            ),
            cid=cid,
        )

    # -------------------------------------------------------------- interface

    def put(self, data: bytes) -> str:
        expected = compute_cid(data)
        result = self._call(
            "add",
            lambda: self._client.add_bytes(data, opts=dict(_ADD_OPTS), timeout=self.timeout),
        )
        cid = str(result)
        if cid != expected:
            # The daemon chunked differently than Kubo's default: LocalStore and auditors
            # would disagree on the address, so do not let this CID reach the chain.
            raise StoreError(
                f"IPFS API at {self.api} stored the bytes as {cid}, expected {expected}"
            )
        return cid

    def get(self, cid: str, sha256: str, *, max_bytes: int | None = None) -> bytes:
        check_cid(cid)
        expected = _check_sha256(sha256)
        limit = _limit(self.max_bytes, max_bytes)

        def stat_size() -> int:
            # also the probe (see _probe): it needs only the root block, so it answers at once
            # when the content is here and runs into the probe's timeout when it is not
            st = self._client.files.stat(
                f"/ipfs/{cid}",
                offline=True,
                opts={"timeout": _duration(self.probe_timeout)},
                timeout=self.probe_timeout + 5,
            )
            kind = st.get("Type", "file") if isinstance(st, dict) else "file"
            if kind != "file":
                raise NotAFile(f"{cid} is a {_short(kind)}, not a file, so no blob")
            try:
                return int(st["Size"])
            except (KeyError, TypeError, ValueError):
                raise StoreError(
                    f"IPFS API at {self.api} answered files/stat for {cid} without a size: "
                    f"{_short(st)}"
                ) from None

        size = self._call("files/stat", stat_size, cid=cid)
        if size > limit:
            raise _too_large(cid, size, limit)

        def fetch() -> bytes:
            # `length` makes the daemon stop at limit + 1 bytes; counting guards against one
            # that ignores it.
            stream = self._client.cat(
                cid,
                opts={"length": str(limit + 1), "timeout": _duration(self.timeout)},
                stream=True,
                timeout=self.timeout + 5,
            )
            buf = bytearray()
            try:
                for chunk in _as_chunks(stream):
                    buf += chunk
                    if len(buf) > limit:
                        raise _too_large(cid, f"over {limit}", limit)
            finally:
                close = getattr(stream, "close", None)
                if callable(close):
                    close()
            return bytes(buf)

        data = self._call("cat", fetch, cid=cid)
        return _verify(cid, data, expected)

    def pin(self, cid: str) -> None:
        check_cid(cid)
        self._probe(cid)
        self._call(
            "pin/add",
            lambda: self._client.pin.add(
                cid, opts={"timeout": _duration(self.timeout)}, timeout=self.timeout + 5
            ),
            cid=cid,
        )

    def has(self, cid: str) -> bool:
        check_cid(cid)
        try:
            self._probe(cid)
        except ContentNotFound:
            return False
        return True


def _as_chunks(stream: Iterable[Any]) -> Iterable[bytes]:
    for chunk in stream:
        if not isinstance(chunk, bytes | bytearray):
            raise StoreError(f"unexpected chunk type from the IPFS API: {type(chunk).__name__}")
        yield bytes(chunk)


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
    return LocalStore(Path(location).expanduser())
