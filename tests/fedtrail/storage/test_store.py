"""Content store: the embedded LocalStore, and IpfsStore against a real js-ipfs daemon."""

from __future__ import annotations

import http.server
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipfshttpclient
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrail.errors import (
    ConfigError,
    ContentNotFound,
    ContentTooLarge,
    HashMismatch,
    InvalidCid,
    InvalidSha256,
    InvalidStoreConfig,
    NonCanonicalCid,
    StoreError,
    StoreUnreachable,
)
from fedtrail.storage.store import (
    IpfsStore,
    LocalStore,
    compute_cid,
    open_store,
    sha256_hex,
)
from tests.fedtrail.storage.test_cid import BAD_CIDS, HELLO_MH, HELLO_WORLD_CID, v1
from tests.fixtures.ipfs import IpfsDaemon

# ipfshttpclient 0.8.0a2 passes urllib3's removed `strict` argument on every request.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")

CHUNK = 256 * 1024


def _blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _closed_port_api() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"/ip4/127.0.0.1/tcp/{port}/http"


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


# ------------------------------------------------------------------ LocalStore


def test_local_put_returns_kubo_cidv0(local: LocalStore) -> None:
    assert local.put(b"hello world\n") == HELLO_WORLD_CID


def test_local_put_get_roundtrip(local: LocalStore) -> None:
    data = _blob(3 * CHUNK + 17)
    cid = local.put(data)
    assert local.get(cid, sha256_hex(data)) == data


def test_local_put_twice_is_idempotent(local: LocalStore) -> None:
    data = _blob(1000)
    assert local.put(data) == local.put(data)
    assert len(list((local.root / "blobs").iterdir())) == 1


def test_local_get_accepts_uppercase_sha256(local: LocalStore) -> None:
    cid = local.put(b"x")
    assert local.get(cid, sha256_hex(b"x").upper()) == b"x"


def test_local_get_of_dag_pb_cidv1_finds_the_cidv0_blob(local: LocalStore) -> None:
    assert local.put(b"hello world\n") == HELLO_WORLD_CID
    dag_pb_v1 = v1(b"\x01\x70" + HELLO_MH)
    assert local.get(dag_pb_v1, sha256_hex(b"hello world\n")) == b"hello world\n"


def _raw_cidv1(data: bytes) -> str:
    """The raw-codec CIDv1 of ``data`` (``block/put format=raw``): the same bytes, another DAG."""
    return v1(b"\x01\x55\x12\x20" + bytes.fromhex(sha256_hex(data)))


def test_local_get_under_a_non_canonical_cid_raises_non_canonical_cid(
    local: LocalStore,
) -> None:
    """Bytes found under any CID but the one ``compute_cid`` gives them (here a blob file named
    by their raw CIDv1, as a store directory copied from elsewhere could hold) are refused, with
    the right sha256: the rule is the CID's, not the store's (attack a121)."""
    data = _blob(5000, seed=11)
    canonical = local.put(data)
    other = _raw_cidv1(data)
    (local.root / "blobs" / other).write_bytes(data)
    with pytest.raises(NonCanonicalCid) as err:
        local.get(other, sha256_hex(data))
    assert other in str(err.value) and canonical in str(err.value)
    assert isinstance(err.value, InvalidCid)  # read as an invalid CID: MALFORMED, not missing
    assert local.get(canonical, sha256_hex(data)) == data


def test_local_has_true_after_put_false_for_unknown(local: LocalStore) -> None:
    cid = local.put(b"present")
    assert local.has(cid)
    assert not local.has(compute_cid(b"absent"))


def test_local_put_pins_and_pin_is_recorded(local: LocalStore) -> None:
    cid = local.put(b"pinned")
    local.pin(cid)
    assert local.pinned() == [cid]


def test_local_pin_unknown_raises_content_not_found(local: LocalStore) -> None:
    with pytest.raises(ContentNotFound):
        local.pin(compute_cid(b"never stored"))


def test_local_get_missing_raises_content_not_found(local: LocalStore) -> None:
    with pytest.raises(ContentNotFound):
        local.get(compute_cid(b"never stored"), sha256_hex(b"never stored"))


def test_local_tampered_bytes_on_disk_raise_hash_mismatch(local: LocalStore) -> None:
    data = _blob(5000)
    cid = local.put(data)
    path = local.root / "blobs" / cid
    tampered = bytearray(path.read_bytes())
    tampered[123] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(HashMismatch) as err:
        local.get(cid, sha256_hex(data))
    msg = str(err.value)
    assert cid in msg
    assert sha256_hex(data) in msg
    assert sha256_hex(bytes(tampered)) in msg


def test_local_get_with_other_recorded_hash_raises_hash_mismatch(local: LocalStore) -> None:
    cid = local.put(b"real bytes")
    with pytest.raises(HashMismatch):
        local.get(cid, sha256_hex(b"other bytes"))


@pytest.mark.parametrize(
    "bad", ["", "abc", "0x" + "0" * 64, "g" * 64, "0" * 63, "0" * 64 + "\n", None, 123]
)
def test_local_get_malformed_sha256_raises_invalid_sha256(local: LocalStore, bad: object) -> None:
    cid = local.put(b"x")
    with pytest.raises(InvalidSha256) as err:
        local.get(cid, bad)  # type: ignore[arg-type]
    assert isinstance(err.value, StoreError) and not isinstance(err.value, HashMismatch)
    assert "64 hex characters" in str(err.value)


def test_local_get_of_an_unreadable_blob_raises_store_error(local: LocalStore) -> None:
    cid = compute_cid(b"x")
    (local.root / "blobs" / cid).mkdir(parents=True)  # a directory where the blob should be
    with pytest.raises(StoreError, match="cannot read content"):
        local.get(cid, sha256_hex(b"x"))


@pytest.mark.parametrize("bad", BAD_CIDS)
def test_local_bad_cid_raises_invalid_cid(local: LocalStore, bad: str) -> None:
    with pytest.raises(InvalidCid):
        local.get(bad, sha256_hex(b""))
    with pytest.raises(InvalidCid):
        local.has(bad)
    with pytest.raises(InvalidCid):
        local.pin(bad)


def test_local_get_over_store_limit_raises_content_too_large(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, max_bytes=1000)
    ok, big = _blob(1000), _blob(1001)
    assert store.get(store.put(ok), sha256_hex(ok)) == ok
    with pytest.raises(ContentTooLarge):
        store.get(store.put(big), sha256_hex(big))


def test_local_get_over_call_limit_raises_content_too_large(local: LocalStore) -> None:
    data = _blob(2000)
    cid = local.put(data)
    with pytest.raises(ContentTooLarge):
        local.get(cid, sha256_hex(data), max_bytes=1999)
    assert local.get(cid, sha256_hex(data), max_bytes=2000) == data


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=3 * CHUNK))
def test_local_roundtrip_of_arbitrary_bytes(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    store = LocalStore(tmp_path_factory.mktemp("h"))
    cid = store.put(data)
    assert cid == compute_cid(data)
    assert store.get(cid, sha256_hex(data)) == data


# ------------------------------------------------------------------ open_store


def test_open_store_bare_path_and_local_prefix_give_local_store(tmp_path: Path) -> None:
    a = open_store(str(tmp_path / "a"))
    b = open_store(f"local:{tmp_path / 'b'}")
    assert isinstance(a, LocalStore) and a.root == tmp_path / "a"
    assert isinstance(b, LocalStore) and b.root == tmp_path / "b"


def test_open_store_ipfs_multiaddr_and_http_url_give_ipfs_store() -> None:
    a = open_store("ipfs:/ip4/127.0.0.1/tcp/5001/http")
    b = open_store("http://127.0.0.1:5002")
    c = open_store("ipfs:")
    assert isinstance(a, IpfsStore) and a.api == "/ip4/127.0.0.1/tcp/5001/http"
    assert isinstance(b, IpfsStore) and b.api == "/ip4/127.0.0.1/tcp/5002/http"
    assert isinstance(c, IpfsStore) and c.api == "/ip4/127.0.0.1/tcp/5001/http"


def test_open_store_bare_multiaddr_is_refused_not_a_directory() -> None:
    with pytest.raises(StoreError):
        open_store("/ip4/127.0.0.1/tcp/5001/http")


# ------------------------------------------------------------------ IpfsStore without a daemon


def test_ipfs_invalid_cid_raises_before_any_network_call() -> None:
    store = IpfsStore(_closed_port_api(), retries=0)
    for bad in BAD_CIDS:
        with pytest.raises(InvalidCid):
            store.get(bad, sha256_hex(b""))
        with pytest.raises(InvalidCid):
            store.has(bad)
        with pytest.raises(InvalidCid):
            store.pin(bad)


def test_ipfs_no_daemon_raises_store_unreachable_naming_endpoint() -> None:
    api = _closed_port_api()
    store = IpfsStore(api, retries=2, backoff=0.01)
    with pytest.raises(StoreUnreachable) as err:
        store.put(b"data")
    assert api in str(err.value)
    assert "3 attempts" in str(err.value)


# ------------------------------------------------------------------ bad settings


@pytest.mark.parametrize(
    "api",
    [
        "http://127.0.0.1:99999",  # port out of range
        "http://127.0.0.1:abc",
        "http://127.0.0.1:-1",
        "http://127.0.0.1:0",
        "http://[::1",  # unclosed IPv6 literal
        "http://",
        "ftp://127.0.0.1:5001",
        "/ip4/999.1.1.1/tcp/5001/http",
        "/ip4/127.0.0.1/udp/5001",
        "/foo",
    ],
)
def test_bad_ipfs_api_address_raises_invalid_store_config(api: str) -> None:
    with pytest.raises(InvalidStoreConfig) as err:
        IpfsStore(api)
    assert isinstance(err.value, StoreError) and isinstance(err.value, ConfigError)
    with pytest.raises(InvalidStoreConfig):
        open_store(f"ipfs:{api}" if api.startswith("/") else api)


@pytest.mark.parametrize("location", ["", "local:", "ftp://host/dir", "file:///tmp/x", None, 5])
def test_bad_store_location_raises_invalid_store_config(location: object) -> None:
    with pytest.raises(InvalidStoreConfig):
        open_store(location)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bytes": -1},
        {"timeout": 0},
        {"probe_timeout": -1.0},
        {"retries": -1},
        {"backoff": -0.5},
        {"timeout": float("nan")},
    ],
)
def test_bad_ipfs_store_settings_raise_invalid_store_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidStoreConfig):
        IpfsStore(_closed_port_api(), **kwargs)


def test_negative_size_limits_raise_invalid_store_config(local: LocalStore) -> None:
    with pytest.raises(InvalidStoreConfig):
        LocalStore(local.root, max_bytes=-1)
    cid = local.put(b"x")
    with pytest.raises(InvalidStoreConfig):
        local.get(cid, sha256_hex(b"x"), max_bytes=-1)
    with pytest.raises(InvalidStoreConfig):
        IpfsStore(_closed_port_api(), retries=0).get(cid, sha256_hex(b"x"), max_bytes=-1)


class _FakeDaemon:
    """An RPC API on a loopback port whose ``cat`` answers ``body`` whatever was asked (it
    ignores ``length``); records each request's path and client port. ``one_per_connection``:
    it closes every connection after one answer without saying so, as a daemon closes an idle
    keep-alive connection."""

    def __init__(self, body: bytes, *, one_per_connection: bool = False) -> None:
        self.requests: list[tuple[str, int]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                fake.requests.append((self.path.split("?")[0], self.client_address[1]))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = one_per_connection

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}/http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_daemon() -> Iterator[Callable[..., _FakeDaemon]]:
    made: list[_FakeDaemon] = []

    def make(body: bytes, **kwargs: Any) -> _FakeDaemon:
        made.append(_FakeDaemon(body, **kwargs))
        return made[-1]

    yield make
    for daemon in made:
        daemon.close()


def test_ipfs_get_is_one_request_over_one_kept_connection(
    fake_daemon: Callable[..., _FakeDaemon],
) -> None:
    """A blob costs one ``cat`` (no ``files/stat`` before it: ``length`` and counting bound the
    size, the answer's first bytes are the probe), and requests share a connection."""
    daemon = fake_daemon(b"hello world\n")
    store = IpfsStore(daemon.api, retries=0)
    for _ in range(3):
        assert store.get(HELLO_WORLD_CID, sha256_hex(b"hello world\n")) == b"hello world\n"
    assert [path for path, _ in daemon.requests] == ["/api/v0/cat"] * 3
    assert len({port for _, port in daemon.requests}) == 1
    store.close()


def test_ipfs_get_from_a_daemon_that_ignores_length_stops_at_the_limit(
    fake_daemon: Callable[..., _FakeDaemon],
) -> None:
    daemon = fake_daemon(b"x" * 1000)
    store = IpfsStore(daemon.api, retries=0)
    with pytest.raises(ContentTooLarge, match="over 100"):
        store.get(HELLO_WORLD_CID, sha256_hex(b"x" * 1000), max_bytes=100)
    x1000 = compute_cid(b"x" * 1000)
    assert store.get(x1000, sha256_hex(b"x" * 1000), max_bytes=1000) == b"x" * 1000


def test_ipfs_connection_closed_by_the_daemon_while_idle_is_replaced_not_unreachable(
    fake_daemon: Callable[..., _FakeDaemon],
) -> None:
    daemon = fake_daemon(b"hello world\n", one_per_connection=True)
    store = IpfsStore(daemon.api, retries=0)  # no retry: a failure would be StoreUnreachable
    for _ in range(3):
        assert store.get(HELLO_WORLD_CID, sha256_hex(b"hello world\n")) == b"hello world\n"
        time.sleep(0.05)  # let the daemon's close arrive before the next request
    assert len({port for _, port in daemon.requests}) == 3


# ------------------------------------------------------------------ IpfsStore, real daemon


@pytest.mark.ipfs
def test_ipfs_put_get_pin_multi_mb_blob(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api)
    data = _blob(5 * 1024 * 1024 + 123, seed=1)
    cid = store.put(data)
    assert cid == compute_cid(data)
    assert store.has(cid)
    store.pin(cid)
    pins = ipfshttpclient.Client(ipfs_api).pin.ls(type="recursive")["Keys"]
    assert cid in pins
    assert store.get(cid, sha256_hex(data)) == data


@pytest.mark.ipfs
def test_ipfs_put_many_is_one_add_with_each_blobs_cid_pinned(ipfs_api: str) -> None:
    blobs = [_blob(n, seed=n) for n in (0, 1, 1000, CHUNK + 1)] + [_blob(1000, seed=1000)]
    cids = IpfsStore(ipfs_api).put_many(blobs)
    assert cids == [compute_cid(b) for b in blobs]  # in order; a repeated blob too
    pins = ipfshttpclient.Client(ipfs_api).pin.ls(type="recursive")["Keys"]
    assert all(cid in pins for cid in cids)
    assert IpfsStore(ipfs_api).put_many([]) == []


def test_local_put_many_gives_each_blobs_cid(local: LocalStore) -> None:
    blobs = [b"", b"a", b"a", _blob(CHUNK + 1)]
    assert local.put_many(blobs) == [compute_cid(b) for b in blobs]
    assert all(local.get(compute_cid(b), sha256_hex(b)) == b for b in blobs)


@pytest.mark.ipfs
def test_ipfs_check_names_the_daemons_version_or_the_unreachable_endpoint(ipfs_api: str) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", IpfsStore(ipfs_api).check())
    api = _closed_port_api()
    with pytest.raises(StoreUnreachable, match=re.escape(api)):
        IpfsStore(api, retries=0).check()


@pytest.mark.ipfs
def test_ipfs_put_alone_pins(ipfs_api: str) -> None:
    """ContentStore.put pins: callers (the aggregator's own blobs) pin nothing after it."""
    data = _blob(1000, seed=7)
    cid = IpfsStore(ipfs_api).put(data)
    assert cid in ipfshttpclient.Client(ipfs_api).pin.ls(type="recursive")["Keys"]


@pytest.mark.ipfs
def test_ipfs_get_with_tampered_hash_raises_hash_mismatch(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api)
    data = _blob(300_000, seed=2)
    cid = store.put(data)
    recorded = sha256_hex(data[:-1] + bytes([data[-1] ^ 1]))  # what a tamperer would serve
    with pytest.raises(HashMismatch) as err:
        store.get(cid, recorded)
    msg = str(err.value)
    assert cid in msg and recorded in msg and sha256_hex(data) in msg


def _add_as(ipfs_api: str, data: bytes, **options: str) -> str:
    """``ipfs add`` of ``data`` with other options than the store's (another chunker, CID
    version or leaves), through the daemon's RPC API; its root CID."""
    parts = ipfs_api.split("/")
    answer = requests.post(
        f"http://{parts[2]}:{parts[4]}/api/v0/add",
        params={"pin": "true", **options},
        files={"file": ("blob", data, "application/octet-stream")},
        timeout=60,
    )
    answer.raise_for_status()
    return str(answer.json()["Hash"])


@pytest.mark.ipfs
@pytest.mark.parametrize(
    "options",
    [
        {"chunker": "size-48", "cid-version": "0", "raw-leaves": "false"},  # attack a121
        {"cid-version": "1", "cid-base": "base32"},  # a raw-leaves CIDv1: one raw block
        {"cid-version": "1", "cid-base": "base32", "raw-leaves": "false"},  # the same root
    ],
    ids=["chunker-48", "raw-cidv1", "dag-pb-cidv1"],
)
def test_ipfs_get_is_given_only_under_the_canonical_cid(
    ipfs_api: str, options: dict[str, str]
) -> None:
    """The daemon serves the same bytes under another DAG (many 48-byte leaves: a121's shape;
    a raw CIDv1); ``get`` refuses them there, right sha256 and all (``NonCanonicalCid``), and
    gives them under ``put``'s CID; the dag-pb CIDv1 of the canonical root is the same DAG."""
    store = IpfsStore(ipfs_api)
    data = _blob(3000, seed=12)  # one 256 KiB chunk canonically, 63 leaves of 48 bytes
    canonical = store.put(data)
    other = _add_as(ipfs_api, data, **options)
    assert other != canonical
    if options.get("raw-leaves") == "false" and "chunker" not in options:
        assert store.get(other, sha256_hex(data)) == data
    else:
        with pytest.raises(NonCanonicalCid, match=canonical):
            store.get(other, sha256_hex(data))
        # under another sha256 too: what a reader that timed out on the DAG reads (MALFORMED),
        # not TAMPERED for the reader that was fast enough
        with pytest.raises(NonCanonicalCid):
            store.get(other, sha256_hex(b"other bytes"))
    assert store.get(canonical, sha256_hex(data)) == data


@pytest.mark.ipfs
def test_ipfs_get_missing_cid_raises_content_not_found(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api, probe_timeout=0.5)
    missing = _blob(64, seed=3)
    with pytest.raises(ContentNotFound):
        store.get(compute_cid(missing), sha256_hex(missing))
    with pytest.raises(ContentNotFound):
        store.pin(compute_cid(missing))


@pytest.mark.ipfs
def test_ipfs_has_false_for_missing_true_after_put(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api, probe_timeout=0.5)
    data = _blob(100, seed=4)
    assert not store.has(compute_cid(data))
    store.put(data)
    assert store.has(compute_cid(data))


@pytest.mark.ipfs
def test_ipfs_get_over_limit_raises_content_too_large(ipfs_api: str) -> None:
    store = IpfsStore(ipfs_api, max_bytes=CHUNK)
    data = _blob(CHUNK + 1, seed=5)
    cid = store.put(data)
    with pytest.raises(ContentTooLarge):
        store.get(cid, sha256_hex(data))
    assert store.get(cid, sha256_hex(data), max_bytes=CHUNK + 1) == data


@pytest.mark.ipfs
def test_ipfs_open_store_with_ipfs_prefix_roundtrips(ipfs_api: str) -> None:
    store = open_store(f"ipfs:{ipfs_api}")
    cid = store.put(b"via open_store")
    assert store.get(cid, sha256_hex(b"via open_store")) == b"via open_store"


@pytest.mark.ipfs
def test_ipfs_daemon_stopped_mid_test_raises_store_unreachable_naming_endpoint(
    ipfs_daemon: IpfsDaemon,
) -> None:
    store = IpfsStore(ipfs_daemon.api, retries=2, backoff=0.05)
    data = _blob(10_000, seed=6)
    cid = store.put(data)
    assert store.get(cid, sha256_hex(data)) == data

    ipfs_daemon.stop()
    assert not ipfs_daemon.running()

    with pytest.raises(StoreUnreachable) as err:
        store.get(cid, sha256_hex(data))
    assert ipfs_daemon.api in str(err.value)
    with pytest.raises(StoreUnreachable) as err:
        store.put(data)
    assert ipfs_daemon.api in str(err.value)


@pytest.mark.ipfs
@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        1000,
        CHUNK - 1,
        CHUNK,  # exactly one chunk: a single leaf
        CHUNK + 1,  # first size with a root node over two leaves
        2 * CHUNK,
        5 * 1024 * 1024,  # ~5 MB, the order of a model blob
        # 175 leaves: past one node's 174 links, so a two-level tree (~46 MB)
        pytest.param(174 * CHUNK + 1, marks=pytest.mark.slow),
    ],
)
def test_local_store_cids_equal_daemon_cids(ipfs_api: str, tmp_path: Path, size: int) -> None:
    data = _blob(size, seed=size)
    daemon_cid = ipfshttpclient.Client(ipfs_api).add_bytes(data)  # the daemon's own defaults
    assert LocalStore(tmp_path).put(data) == daemon_cid


def test_reading_a_local_store_that_does_not_exist_writes_nothing(tmp_path: Path) -> None:
    from fedtrail.errors import ContentNotFound as _NotFound
    from fedtrail.storage.store import LocalStore as _Local

    root = tmp_path / "never-created"
    store = _Local(root)
    with pytest.raises(_NotFound):
        store.get("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "0" * 64)
    assert not store.has("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")
    assert store.pinned() == [] and not root.exists()


def test_open_store_refuses_a_file_for_a_writer_too(tmp_path: Path) -> None:
    """A writer's store folder is made on its first put: a file there failed then, as an OS
    error about `FILE/blobs`. Refused at open, naming the file."""
    from fedtrail.errors import InvalidStoreConfig

    file = tmp_path / "store"
    file.write_text("x")
    with pytest.raises(InvalidStoreConfig, match="is a file, not a folder"):
        open_store(f"local:{file}")
    with pytest.raises(InvalidStoreConfig, match="is a file, not a folder"):
        open_store(str(file))
