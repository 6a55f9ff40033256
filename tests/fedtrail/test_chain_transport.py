"""A plain-http endpoint's JSON-RPC requests go over pooled keep-alive connections of
``http.client``, not through ``requests`` (issue 18: ~0.9 ms of CPU a request less), with the
same answers and the same failures: every fault a node can answer with reads as the same error
through both transports, a connection the node closed while idle is not reused, and no request
is sent twice."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from fedtrail.chain import _PostPool, connect, next_block_timestamp
from fedtrail.errors import ChainUnreachable, chain_read_error
from tests.fedtrail.test_chain_faults import BLOCK, Answer, _refuse_pending, _rpc, _status, node
from tests.fixtures.chain import free_port

__all__ = ["node"]  # the fault endpoint fixture, shared with test_chain_faults


def _through_requests(url: str) -> Web3:
    """The same endpoint through web3's own ``requests`` session (the transport before)."""
    w3 = connect(url)
    manager = w3.provider._request_session_manager  # type: ignore[attr-defined]
    assert isinstance(manager, _PostPool)
    w3.provider._request_session_manager = manager._fallback  # type: ignore[attr-defined]
    return w3


def _outcome(read: Any) -> tuple[str, str]:
    try:
        return "value", repr(read())
    except Exception as exc:
        return type(exc).__name__, str(exc)


FAULTS = [
    _refuse_pending,
    _status(200, b"<html>a login page</html>"),
    _status(404, b"not found"),
    _rpc({"number": "0x5"}),
    _status(503, b"upstream down"),
    _status(429, b"slow down"),
    _rpc(error={"code": -32603, "message": "internal error"}),
    _status(502, b"<html>bad gateway</html>"),
    _rpc(error={"code": -32000, "message": "header not found"}),
    _status(200, b""),
    _status(200, b'{"jsonrpc":"2.0","id":1,"resu'),
    _rpc(None),
    _rpc(BLOCK),
]


@pytest.mark.parametrize("answer", FAULTS)
def test_every_answer_reads_the_same_through_both_transports(
    node: tuple[str, dict[str, Answer]], answer: Answer
) -> None:
    url, answers = node
    answers["eth_getBlockByNumber"] = answer
    ours, theirs = connect(url), _through_requests(url)
    assert isinstance(ours.provider._request_session_manager, _PostPool)  # type: ignore[attr-defined]
    assert _outcome(lambda: next_block_timestamp(ours)) == _outcome(
        lambda: next_block_timestamp(theirs)
    )
    # web3's own path (middleware, formatters) and a batch, raw, the same way
    for read in (
        lambda w3: w3.eth.get_block("latest"),
        lambda w3: w3.provider.make_batch_request([("eth_getBlockByNumber", ["latest", False])]),
    ):
        assert _outcome(lambda r=read: r(ours)) == _outcome(lambda r=read: r(theirs))


def test_an_http_error_carries_the_answer_as_requests_does(
    node: tuple[str, dict[str, Answer]],
) -> None:
    """chain_read_error tells a 5xx or 429 (retried) from another 4xx (a fault) by the
    ``response`` an HTTPError carries."""
    url, answers = node
    answers["eth_getBlockByNumber"] = _status(503, b"upstream down")
    w3 = connect(url)
    with pytest.raises(requests.exceptions.HTTPError) as caught:
        w3.provider.make_request("eth_getBlockByNumber", ["latest", False])  # type: ignore[arg-type]
    assert caught.value.response is not None
    assert caught.value.response.status_code == 503
    assert isinstance(chain_read_error(caught.value, "x"), ChainUnreachable)


class _Counting:
    """A keep-alive JSON-RPC endpoint that counts connections and requests, answers
    ``eth_blockNumber`` with the count so far, and can close its idle connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.sockets: list[socket.socket] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                outer.connections += 1
                outer.sockets.append(self.connection)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                result = "0x7a69" if request["method"] == "eth_chainId" else hex(outer.requests)
                body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close_idle(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def counting() -> Iterator[_Counting]:
    endpoint = _Counting()
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()


def test_requests_share_one_connection_and_none_goes_through_requests(
    counting: _Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[str] = []
    post = requests.Session.post

    def counted(self: requests.Session, url: Any, *a: Any, **k: Any) -> Any:
        posted.append(str(url))
        return post(self, url, *a, **k)

    monkeypatch.setattr(requests.Session, "post", counted)
    w3 = connect(counting.url)
    numbers = [w3.eth.block_number for _ in range(20)]
    assert numbers == sorted(set(numbers))  # each asked once, in order
    assert counting.connections == 1
    assert posted == []  # on the parent every request was a requests POST


def test_a_connection_closed_while_idle_is_replaced_and_no_request_is_sent_twice(
    counting: _Counting,
) -> None:
    w3 = connect(counting.url)
    w3.eth.block_number  # noqa: B018
    before = counting.requests
    counting.close_idle()  # what a node does with a connection idle past its keep-alive
    pool = w3.provider._request_session_manager  # type: ignore[attr-defined]
    body = b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":7}'
    # the pool itself, not through web3 (whose retries would hide a request sent on the
    # dead connection): the first request after the close already finds a live one
    answers = [
        json.loads(pool.make_post_request(counting.url, body, timeout=5, headers={}))
        for _ in range(3)
    ]
    assert [a["result"] for a in answers] == [hex(before + i) for i in (1, 2, 3)]
    assert counting.requests == before + 3
    assert counting.connections == 2


def test_an_endpoint_that_does_not_answer_in_time_is_unreachable() -> None:
    """A node that accepts and never answers: requests' ReadTimeout, a retried outage."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ChainUnreachable):
            connect(url, timeout=0.3)
        provider = HTTPProvider(url, request_kwargs={"timeout": 0.3})
        pool = _PostPool(provider._request_session_manager, url)
        with pytest.raises(requests.exceptions.ReadTimeout):
            pool.make_post_request(url, b"{}", timeout=0.3, headers={})
    finally:
        listener.close()


def test_a_refused_connection_is_requests_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    pool = _PostPool(HTTPProvider(url)._request_session_manager, url)
    with pytest.raises(requests.exceptions.ConnectionError):
        pool.make_post_request(url, b"{}", timeout=2, headers={})
    with pytest.raises(ChainUnreachable):
        connect(url)


def test_a_proxied_endpoint_keeps_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy applies through requests only: such an endpoint keeps web3's session."""
    for name in ("HTTP_PROXY", "NO_PROXY", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    from fedtrail.chain import _plain, _session

    url = "http://127.0.0.1:8545"
    assert not _plain(url, _session(url))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert _plain(url, _session(url))
    assert not _plain("https://127.0.0.1:8545", _session("https://127.0.0.1:8545"))


@pytest.mark.parametrize(
    ("env", "direct"),
    [
        ({"no_proxy": "proxy.example.org"}, True),  # names other hosts: requests goes direct
        ({"https_proxy": "http://10.9.9.9:3128"}, True),  # for https only
        ({"all_proxy": "socks5://10.9.9.9:1080"}, False),
        ({"http_proxy": "http://10.9.9.9:3128", "no_proxy": "example.org"}, False),
        ({"http_proxy": "http://10.9.9.9:3128", "no_proxy": "127.0.0.1"}, True),
    ],
)
def test_the_pool_carries_what_requests_sends_direct(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], direct: bool
) -> None:
    """A hospital's environment often sets ``no_proxy`` for every process: where requests
    would still send to the endpoint directly, the pool carries it (before, any proxy
    variable at all, ``no_proxy`` included, kept requests)."""
    from requests.utils import get_environ_proxies, select_proxy

    from fedtrail.chain import _plain, _session

    for name in ("http", "https", "all", "no"):
        for spelled in (f"{name}_proxy", f"{name.upper()}_PROXY"):
            monkeypatch.delenv(spelled, raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = "http://127.0.0.1:8545"
    assert (select_proxy(url, get_environ_proxies(url)) is None) is direct  # requests' own view
    assert _plain(url, _session(url)) is direct


class _Scripted:
    """A keep-alive JSON-RPC endpoint written on a bare socket, so that it can answer as a
    proxy or a misbehaving node does: ``answer(path, headers, request)`` gives the raw bytes
    sent back, or None to stop answering (the headers read, nothing more sent, the connection
    held a while). It keeps every request it read, with its path and headers."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            while line := stream.readline():
                headers: dict[str, str] = {}
                while (header := stream.readline()) not in (b"\r\n", b""):
                    name, value = header.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                request = json.loads(stream.read(int(headers.get("content-length", "0"))))
                path = line.split()[1].decode()
                self.seen.append((path, headers, request))
                raw = self.answer(path, headers, request)
                if raw is None:
                    threading.Event().wait(3.0)
                    return
                conn.sendall(raw)

    def methods(self) -> list[str]:
        return [request["method"] for _, _, request in self.seen]


def _ok(request: dict[str, Any], status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    result = "0x7a69" if request["method"] == "eth_chainId" else "0x10"
    body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + extra
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


@contextlib.contextmanager
def _scripted(answer: Any) -> Iterator[_Scripted]:
    endpoint = _Scripted(answer)
    try:
        yield endpoint
    finally:
        endpoint.listener.close()


def _both(url: str, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[Any, Any]:
    """``connect(url)`` as it is, and with every request through requests (no pool at all,
    the chain id included)."""
    import fedtrail.chain

    ours = _outcome(lambda: connect(url, **kw))
    with monkeypatch.context() as patched:
        patched.setattr(fedtrail.chain, "_plain", lambda *_: False)
        theirs = _outcome(lambda: connect(url, **kw))
    return ours, theirs


def test_a_login_in_the_url_is_sent_as_requests_sends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``http://user:password@host``: requests sends basic auth from the URL; the pool sent
    none, and an endpoint behind a login was unreachable."""
    login = "Basic " + base64.b64encode(b"site:s3cret").decode()

    def answer(_: str, headers: dict[str, str], request: dict[str, Any]) -> bytes:
        if headers.get("authorization") != login:
            return b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
        return _ok(request)

    with _scripted(answer) as endpoint:
        url = f"http://site:s3cret@127.0.0.1:{endpoint.port}"
        ours, theirs = _both(url, monkeypatch)
        assert theirs[0] == "value"
        assert ours[0] == "value"
        assert {h.get("authorization") for _, h, _ in endpoint.seen} == {login}


def test_a_redirect_is_followed_as_requests_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 307 from an endpoint that moved (a reverse proxy's rewrite): requests re-sends the
    request there; the pool gave web3 the redirect's empty body."""

    def answer(path: str, _: dict[str, str], request: dict[str, Any]) -> bytes:
        if path == "/":
            return b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /rpc\r\nContent-Length: 0\r\n\r\n"
        return _ok(request)

    with _scripted(answer) as endpoint:
        url = f"http://127.0.0.1:{endpoint.port}"
        ours, theirs = _both(url, monkeypatch)
        assert theirs[0] == "value"
        assert ours[0] == "value"
        w3 = connect(url)
        before = len(endpoint.seen)
        assert w3.eth.block_number == 16
        # once redirected, the endpoint's requests go through requests: asked once there
        assert [path for path, _, _ in endpoint.seen[before:]] == ["/", "/rpc"]


def test_a_body_that_stops_coming_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer whose headers came and whose body stops: requests raises ConnectionError
    (web3 does not retry it); the pool raised ReadTimeout, which web3 retries 4 times more,
    ``eth_sendRawTransaction`` included: the same transaction sent 5 times, 5 timeouts long."""

    def answer(_: str, __: dict[str, str], request: dict[str, Any]) -> bytes | None:
        if request["method"] == "eth_chainId":
            return _ok(request)
        whole = _ok(request)
        return whole[: whole.index(b"\r\n\r\n") + 6]  # the headers and a few bytes of body

    with _scripted(answer) as endpoint:
        url = f"http://127.0.0.1:{endpoint.port}"
        sent: dict[str, list[str]] = {}
        raised: dict[str, str] = {}
        for name, plain in (("ours", True), ("theirs", False)):
            import fedtrail.chain

            with monkeypatch.context() as patched:
                if not plain:
                    patched.setattr(fedtrail.chain, "_plain", lambda *_: False)
                w3 = connect(url, timeout=0.3)
            before = len(endpoint.seen)
            raised[name] = _outcome(
                lambda w3=w3: w3.provider.make_request("eth_sendRawTransaction", ["0x00"])
            )[0]
            sent[name] = endpoint.methods()[before:]
        assert sent["theirs"] == ["eth_sendRawTransaction"]
        assert sent["ours"] == sent["theirs"]
        assert raised["ours"] == raised["theirs"] == "ConnectionError"


def test_a_request_the_node_does_not_read_in_time_is_requests_connection_error() -> None:
    """A node that accepts and reads nothing while a long request (more than the socket
    buffers hold) is sent: requests raises ConnectionError ("Connection aborted."), which web3
    does not retry; the pool raised ReadTimeout, which web3 retries (a transaction sent again)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        fallback = HTTPProvider(url)._request_session_manager
        pool = _PostPool(fallback, url)
        body = b"x" * (64 << 20)
        outcomes = []
        for manager in (pool, fallback):
            with pytest.raises(requests.exceptions.RequestException) as caught:
                manager.make_post_request(url, body, timeout=0.3, headers={})
            outcomes.append(caught.value)
        ours, theirs = outcomes
        assert isinstance(theirs, requests.exceptions.ConnectionError)
        assert not isinstance(theirs, requests.exceptions.Timeout)
        assert isinstance(ours, requests.exceptions.ConnectionError)
        assert not isinstance(ours, requests.exceptions.Timeout)
    finally:
        listener.close()


@pytest.mark.parametrize("path", ["/rpc node", "/knoten/ü", "/%7Esite/rpc", "/rpc?key=a%20b&n=1"])
def test_the_path_is_sent_as_requests_sends_it(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """An endpoint path with a space or a non-ASCII letter: requests quotes it; the pool
    sent it raw (http.client refused it: the endpoint unreachable)."""
    with _scripted(lambda _, __, request: _ok(request)) as endpoint:
        ours, theirs = _both(f"http://127.0.0.1:{endpoint.port}{path}", monkeypatch)
        assert theirs[0] == "value"
        assert ours[0] == "value"
        targets = {target for target, _, _ in endpoint.seen}
        assert len(targets) == 1, targets  # both transports asked the same request-target
