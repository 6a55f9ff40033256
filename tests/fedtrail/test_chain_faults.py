"""A chain read that fails is retried only when asking again can change the answer.

Session 57 wrapped every chain read so an outage makes the daemons retry; some wrappers took
*any* exception for an outage, so a permanent fault (an endpoint that refuses the ``pending``
block tag, an answer that does not decode, a page that is no JSON-RPC, a revert without data)
kept a daemon logging "will retry" forever. These read a real HTTP endpoint that answers as
such nodes do."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from fedtrail.aggregator.clock import ClockWatch
from fedtrail.chain import next_block_timestamp
from fedtrail.errors import ChainFault, ChainUnreachable, LedgerError, chain_read_error
from fedtrail.ledger.artifact import Artifact
from fedtrail.ledger.client import Ledger
from tests.fixtures.chain import free_port

Answer = Callable[[dict[str, Any]], tuple[int, bytes]]
"""What the fake node answers one JSON-RPC request with: an HTTP status and a body."""


def _rpc(result: Any = None, error: dict[str, Any] | None = None) -> Answer:
    def answer(request: dict[str, Any]) -> tuple[int, bytes]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        body.update({"error": error} if error is not None else {"result": result})
        return 200, json.dumps(body).encode()

    return answer


BLOCK = {"number": "0x5", "timestamp": "0x64", "hash": "0x" + "ab" * 32}


@pytest.fixture
def node() -> Iterator[tuple[str, dict[str, Answer]]]:
    """A JSON-RPC endpoint on a free port and the table of its answers by method (a method
    missing from it answers -32601, as a node without it does)."""
    answers: dict[str, Answer] = {"eth_chainId": _rpc("0x7a69")}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            missing = _rpc(error={"code": -32601, "message": "method not found"})
            if isinstance(request, list):  # a batch: each entry as it would be answered alone
                status, body = (
                    200,
                    b"["
                    + b",".join(answers.get(r["method"], missing)(r)[1] for r in request)
                    + b"]",
                )
            else:
                status, body = answers.get(request["method"], missing)(request)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()


def _w3(url: str) -> Web3:
    return Web3(HTTPProvider(url, request_kwargs={"timeout": 5}))


def _refuse_pending(request: dict[str, Any]) -> tuple[int, bytes]:
    if request["params"][0] == "pending":
        error = {"code": -32602, "message": "invalid params: pending block not supported"}
        return _rpc(error=error)(request)
    return _rpc(BLOCK)(request)


def _status(status: int, body: bytes) -> Answer:
    return lambda _: (status, body)


@pytest.mark.parametrize(
    ("answer", "raised", "said"),
    [
        (_refuse_pending, ChainFault, "pending block not supported"),
        (_status(200, b"<html>a login page</html>"), ChainFault, "not retried"),
        (_status(404, b"not found"), ChainFault, "404"),
        (_rpc({"number": "0x5"}), ChainFault, "timestamp"),  # a block without one
        (_status(503, b"upstream down"), ChainUnreachable, "503"),
        (_status(429, b"slow down"), ChainUnreachable, "429"),
        (_rpc(error={"code": -32603, "message": "internal error"}), LedgerError, "internal"),
        (_status(502, b"<html>bad gateway</html>"), ChainUnreachable, "502"),
        (_rpc(error={"code": -32000, "message": "header not found"}), LedgerError, "header"),
        (_rpc(error={"code": -32000, "message": "missing trie node ab12"}), LedgerError, "trie"),
        (_rpc(error={"code": -32000, "message": "request timed out"}), LedgerError, "timed"),
        (_status(200, b""), ChainUnreachable, "no usable answer"),  # Anvil killed mid-answer
        (_status(200, b'{"jsonrpc":"2.0","id":1,"resu'), ChainUnreachable, "no usable answer"),
        (_rpc(None), LedgerError, "not found"),  # a block a restarted node does not hold yet
    ],
    ids=[
        "pending-refused",
        "html",
        "http-404",
        "no-timestamp",
        "http-503",
        "http-429",
        "-32603",
        "http-502",
        "header-not-found",
        "missing-trie-node",
        "request-timed-out",
        "empty-body",
        "truncated-body",
        "null-block",
    ],
)
def test_the_clock_read_retries_an_outage_and_stops_on_an_answer_that_stays(
    node: tuple[str, dict[str, Answer]], answer: Answer, raised: type[LedgerError], said: str
) -> None:
    """The pending block's timestamp (every daemon reads it each poll): a refusal, a page that
    is no JSON-RPC answer, a 404 or a block without a timestamp is a ChainFault, which the
    daemons do not retry; a 5xx, a 429 or a JSON-RPC internal error stays retryable."""
    url, answers = node
    answers["eth_getBlockByNumber"] = answer
    with pytest.raises(raised, match=said) as caught:
        next_block_timestamp(_w3(url))
    assert isinstance(caught.value, ChainFault) == (raised is ChainFault)


def test_a_dead_endpoint_is_still_unreachable() -> None:
    with pytest.raises(ChainUnreachable, match="no usable answer"):
        next_block_timestamp(_w3(f"http://127.0.0.1:{free_port()}"))


def test_the_stall_warning_stops_on_a_latest_block_it_cannot_decode(
    node: tuple[str, dict[str, Answer]],
) -> None:
    """The aggregator's clock watch reads the latest block when it warns: an answer web3
    cannot format is a ChainFault, not a LedgerError to retry."""
    url, answers = node
    answers["eth_getBlockByNumber"] = _rpc(BLOCK)
    now = [0.0]
    watch = ClockWatch(stall_seconds=1.0, clock=lambda: now[0])
    w3 = _w3(url)
    assert watch.observe(w3, 1, 500) is None
    answers["eth_getBlockByNumber"] = lambda r: (
        _rpc(BLOCK)(r) if r["params"][0] == "pending" else _rpc({"timestamp": "soon"})(r)
    )
    now[0] = 5.0
    with pytest.raises(ChainFault, match="latest block"):
        watch.observe(w3, 1, 500)


def test_a_contract_that_is_not_ours_is_a_fault_not_an_outage(
    node: tuple[str, dict[str, Answer]],
) -> None:
    """A view whose answer does not decode (another contract's return) or that reverts
    without data (a contract without the function) is no outage: ChainFault, alone or in a
    batch."""
    url, answers = node
    ledger = Ledger(_w3(url), "0x" + "12" * 20, 31337, Artifact.load())
    answers["eth_call"] = _rpc("0x1234")
    with pytest.raises(ChainFault, match="not retried"):
        ledger.current_round()
    answers["eth_getLogs"] = _rpc([])
    with pytest.raises(ChainFault, match="unreadable view"):
        ledger.get_round(1)
    answers["eth_call"] = _rpc(error={"code": 3, "message": "execution reverted"})
    with pytest.raises(ChainFault, match="reverted"):
        ledger.current_round()
    answers["eth_call"] = _rpc(error={"code": -32603, "message": "internal error"})
    with pytest.raises(LedgerError) as caught:
        ledger.current_round()
    assert not isinstance(caught.value, ChainFault)


def test_events_the_node_refuses_or_garbles_are_a_fault(
    node: tuple[str, dict[str, Answer]],
) -> None:
    url, answers = node
    ledger = Ledger(_w3(url), "0x" + "12" * 20, 31337, Artifact.load())
    answers["eth_getLogs"] = _rpc(error={"code": -32602, "message": "block range too large"})
    with pytest.raises(ChainFault, match="block range too large"):
        ledger.events("RoundOpened")
    answers["eth_getLogs"] = _rpc([{"topics": ["0x00"], "data": "0x"}])
    with pytest.raises(ChainFault, match="cannot decode"):
        ledger.events("RoundOpened")
    answers["eth_getLogs"] = _rpc(error={"code": -32005, "message": "limit exceeded"})
    with pytest.raises(LedgerError) as caught:
        ledger.events("RoundOpened")
    assert not isinstance(caught.value, ChainFault)


def test_a_restarting_node_s_errors_are_retried_in_views_and_events(
    node: tuple[str, dict[str, Answer]],
) -> None:
    """geth's -32000 "header not found" / "missing trie node" (a reorg, a restart, a lagging
    backend behind a load balancer) and a body cut short by a restart are passing: a view or
    an event read raises a retryable error, never the ChainFault that ends a daemon."""
    url, answers = node
    ledger = Ledger(_w3(url), "0x" + "12" * 20, 31337, Artifact.load())
    passing: list[Answer] = [
        _rpc(error={"code": -32000, "message": "header not found"}),
        _rpc(error={"code": -32000, "message": "missing trie node 0xab (path )"}),
        _status(200, b""),
        _status(200, b'[{"jsonrpc":"2.0","id":1,"result":"0x'),
    ]
    for answer in passing:
        answers["eth_call"] = answer
        with pytest.raises(LedgerError) as caught:
            ledger.current_round()
        assert not isinstance(caught.value, ChainFault), caught.value
        answers["eth_getLogs"] = answer
        with pytest.raises(LedgerError) as caught:
            ledger.events("RoundOpened")
        assert not isinstance(caught.value, ChainFault), caught.value


def test_chain_read_error_keeps_a_ledger_error_and_calls_timeouts_outages() -> None:
    kept = ChainFault("already ours")
    assert chain_read_error(kept, "reading") is kept
    assert isinstance(chain_read_error(TimeoutError("timed out"), "reading"), ChainUnreachable)
    assert type(chain_read_error(ValueError("odd"), "reading")) is ChainFault


def test_the_daemons_stop_on_a_chain_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aggregator run retried every LedgerError but a revert or a missing contract: a
    ChainFault now ends it at once (the CLI prints it, exit 1) instead of 'will retry'
    forever."""
    import dataclasses

    from tests.auditor.test_verify import federation

    service = federation(tmp_path, rounds=0).service
    service.settings = dataclasses.replace(service.settings, poll_interval=0.01)
    steps: list[int] = []

    def refused(**_: object) -> None:
        steps.append(1)
        raise ChainFault("cannot read the chain's pending block: pending not supported")

    monkeypatch.setattr(service, "step", refused)
    with pytest.raises(ChainFault, match="pending not supported"):
        service.run(rounds=1)
    assert steps == [1]


@pytest.mark.usefixtures("one_torch_thread")
def test_the_node_daemon_stops_on_a_chain_fault(
    embedded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node run logged 'will retry' and polled again for any LedgerError but a revert or a
    missing contract; a ChainFault now ends it at its first poll."""
    from tests.node.test_daemon import World

    node = World(embedded, tmp_path).node(0, poll_interval=0.01)
    reads: list[int] = []

    def refused() -> int:
        reads.append(1)
        raise ChainFault("call to the ledger failed: an answer that does not decode")

    monkeypatch.setattr(node.ledger, "current_round", refused)
    with pytest.raises(ChainFault, match="does not decode"):
        node.run()
    assert reads == [1]


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from fedtrail.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_chain_fund_reads_the_balance_and_fees_through_the_clear_error_path(
    node: tuple[str, dict[str, Answer]],
) -> None:
    """`chain fund` read the signer's balance and the chain's fees raw: a refusal ended it
    with web3's traceback, and a chain whose blocks have no base fee with a KeyError. Now
    each is one `error:` line, exit 1, and nothing is sent."""
    url, answers = node
    sent: list[str] = []

    def send(request: dict[str, Any]) -> tuple[int, bytes]:
        sent.append(request["method"])
        return _rpc("0x" + "00" * 32)(request)

    answers["eth_sendRawTransaction"] = send
    target = "0x" + "12" * 20
    args = ("chain", "fund", target, "--eth", "1", "--rpc-url", url, "--dev-account", "0")
    answers["eth_getBalance"] = _rpc(error={"code": -32602, "message": "unknown block"})
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: cannot read the balance of 0x"), result.output
    assert "unknown block" in result.stderr and "not retried" in result.stderr
    answers["eth_getBalance"] = _rpc(hex(10**21))
    answers["eth_getTransactionCount"] = _rpc("0x0")
    answers["eth_getBlockByNumber"] = _rpc(BLOCK)  # no baseFeePerGas: a pre-London chain
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert "has no base fee" in result.stderr and "nothing was sent" in result.stderr
    answers["eth_getTransactionCount"] = _status(502, b"bad gateway")
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert "cannot read the nonce and the fees: no usable answer" in result.stderr
    assert sent == []


@pytest.mark.anvil
def test_node_register_reads_the_balance_through_the_clear_error_path(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`node register --fund`'s balance check read raw: a connection lost there ended it with
    requests' ConnectionError traceback. Now `error: cannot read the balance ...`, exit 1,
    before anything is registered."""
    import requests
    from web3.eth import Eth

    from fedtrail.chain import connect, dev_account

    ledger, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    site = "0x" + "34" * 20

    def lost(*_: Any, **__: Any) -> int:
        raise requests.exceptions.ConnectionError("connection reset by peer (simulated)")

    monkeypatch.setattr(Eth, "get_balance", lost)
    result = _cli(
        "node", "register", site, "--name", "St. Mary", "--max-samples", "600",
        "--rpc-url", anvil_url, "--contract", ledger.address, "--dev-account", "0",
        "--fund", "1",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: cannot read the balance of 0x"), result.output
    assert "no usable answer" in result.stderr
    assert ledger.get_site(site) is None
