"""A send whose answer is lost (a dropped connection, a client timeout) or refused with a nonce
error after the node took it never leads to a second signature of the same call: the client
asks the node whether it holds any transaction it signed for the call, and waits for that one.

Each test puts a fault-injecting JSON-RPC proxy (a thread on 127.0.0.1) between the client and
the test's Anvil. The proxy forwards everything, except that it drops or delays the answer to a
send, holds a send back until the next one, or refuses a resend, and it records every signed
transaction that reaches it."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3

from fedtrail.chain import connect
from fedtrail.errors import LedgerError, Unauthorized
from fedtrail.ledger import Ledger, commitment
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.anvil

_SENDS = ("eth_sendRawTransaction", "eth_sendRawTransactionSync")
_DROP = object()
"""A fault's answer: close the connection without answering."""

Fault = Callable[["_Proxy", dict[str, Any]], Any]


class _Proxy:
    """Forwards JSON-RPC over HTTP to ``upstream``; a single request (not a batch) is first
    shown to ``fault``, whose return is the answer (a dict), or ``_DROP``. ``sends``: the
    method and transaction hash of every signed transaction that reached the proxy."""

    def __init__(self, upstream: str, fault: Fault) -> None:
        self.upstream = upstream
        self.fault = fault
        self.sends: list[tuple[str, str]] = []
        """(method, transaction hash as bare hex, as ``TxResult.tx_hash``) of each send."""
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                if isinstance(request, dict) and request.get("method") in _SENDS:
                    raw = HexBytes(request["params"][0])
                    with proxy.lock:
                        proxy.sends.append((request["method"], Web3.keccak(raw).hex()))
                if isinstance(request, dict):
                    answer = proxy.fault(proxy, request)
                else:
                    answer = proxy.forward(request)
                if answer is _DROP:
                    self.close_connection = True
                    return
                data = json.dumps(answer).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client stopped waiting (its timeout)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forward(self, request: Any) -> Any:
        """``request`` sent to the node as it is; the node's answer."""
        post = urllib.request.Request(
            self.upstream,
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=30) as reply:
            return json.loads(reply.read())

    def signed(self) -> list[str]:
        """The distinct transactions that reached the proxy, in order."""
        return list(dict.fromkeys(tx for _, tx in self.sends))


@contextmanager
def _proxy(anvil: ChainEnv, fault: Fault) -> Iterator[_Proxy]:
    proxy = _Proxy(str(anvil.w3.provider.endpoint_uri), fault)  # type: ignore[attr-defined]
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()


def _through(proxy: _Proxy, ledger: Ledger, timeout: float = 30.0) -> Ledger:
    """``ledger`` reached through ``proxy`` (HTTP timeout ``timeout`` s)."""
    w3 = connect(proxy.url, timeout=timeout)
    return Ledger(w3=w3, address=ledger.address, chain_id=ledger.chain_id, artifact=ledger.artifact)


def _open(ledger: Ledger, env: ChainEnv, site: LocalAccount) -> int:
    ledger.register_site(env.coordinator, site.address, "s", 100)
    round_id, _ = ledger.open_round(
        env.aggregator,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=600,
        reveal_seconds=600,
    )
    return round_id


def _error(message: str, request: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32000, "message": message}}


def _no_sync(request: dict[str, Any]) -> dict[str, Any]:
    """A node without ``eth_sendRawTransactionSync`` (Ganache)."""
    return {
        "jsonrpc": "2.0",
        "id": request["id"],
        "error": {"code": -32601, "message": "the method does not exist"},
    }


def _commits(ledger: Ledger, round_id: int, site: str) -> list[str]:
    """The transactions of ``site``'s ``UpdateCommitted`` events in ``round_id``."""
    events = ledger.events("UpdateCommitted", argument_filters={"round": round_id, "site": site})
    return [e.tx_hash.removeprefix("0x") for e in events]


@pytest.mark.parametrize("refusal", ["node", "already known"])
def test_a_lost_sync_answer_whose_transaction_lands_during_the_resend_is_waited_for(
    anvil: ChainEnv, refusal: str
) -> None:
    """The sync send's connection drops before the node has the transaction (it is still on
    its way); the client finds it not held and sends the same bytes again, but the original
    lands first, so the resend is refused (Anvil: "nonce too low"; geth: "already known").
    The call's answer is the original's receipt: one transaction, one signature."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)
    held: list[dict[str, Any]] = []  # the first sync send, on its way to the node

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if (
            request["method"] == "eth_sendRawTransactionSync" and len(proxy.sends) == 1
        ):  # the first send
            held.append(request)
            return _DROP
        if request["method"] == "eth_sendRawTransaction" and held:
            proxy.forward(held.pop())  # the original lands just before the resend
            answer = proxy.forward(request)
            return answer if refusal == "node" else _error(refusal, request)
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy:
        result = _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    assert proxy.signed() == [result.tx_hash]
    assert [m for m, _ in proxy.sends] == ["eth_sendRawTransactionSync", "eth_sendRawTransaction"]
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    assert _commits(ledger, round_id, site.address) == [result.tx_hash]
    receipt = anvil.w3.eth.get_transaction_receipt(HexBytes(result.tx_hash))
    assert (receipt["status"], receipt["blockNumber"]) == (1, result.block_number)


def test_a_send_whose_connection_drops_after_the_node_took_it_returns_its_receipt(
    anvil: ChainEnv,
) -> None:
    """A node without the sync method: the send reaches the node, its answer is lost (the
    connection closes). The transaction is mined; the call returns its receipt, it does not
    report a failure, and nothing is sent again."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] == "eth_sendRawTransactionSync":
            return _no_sync(request)
        if request["method"] == "eth_sendRawTransaction":
            proxy.forward(request)
            return _DROP
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy:
        result = _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    assert proxy.signed() == [result.tx_hash]
    assert [m for m, _ in proxy.sends] == ["eth_sendRawTransactionSync", "eth_sendRawTransaction"]
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    assert _commits(ledger, round_id, site.address) == [result.tx_hash]


def test_a_timed_out_send_retried_by_web3_into_nonce_too_low_is_not_signed_again(
    anvil: ChainEnv,
) -> None:
    """A node without the sync method answers the send after the client's HTTP timeout; web3
    sends the same bytes again (its retry of ``eth_sendRawTransaction`` on a timeout), which the
    node refuses with "nonce too low": its own transaction took the nonce. The call returns
    that transaction's receipt; there is no second signature."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)
    slow: list[bool] = []

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] == "eth_sendRawTransactionSync":
            return _no_sync(request)
        answer = proxy.forward(request)
        if request["method"] == "eth_sendRawTransaction" and not slow:
            slow.append(True)
            time.sleep(4.0)  # past the client's 3 s
        return answer

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy:
        result = _through(proxy, ledger, timeout=3.0).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    assert proxy.signed() == [result.tx_hash]
    # the sync probe, the timed-out send and web3's resend of the same bytes
    assert [m for m, _ in proxy.sends] == [
        "eth_sendRawTransactionSync",
        "eth_sendRawTransaction",
        "eth_sendRawTransaction",
    ]
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    assert _commits(ledger, round_id, site.address) == [result.tx_hash]


def test_an_original_that_reverted_raises_its_error_without_a_second_signature(
    anvil: ChainEnv,
) -> None:
    """As the first test, but the coordinator removes the site before the held-back original
    lands, so it reverts: the call raises the contract's error read from that transaction
    (UnknownSite -> Unauthorized) and signs nothing else."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)
    coordinator = anvil.coordinator
    removal = coordinator.sign_transaction(
        ledger._fn.removeSite(site.address).build_transaction(
            {
                "from": coordinator.address,
                "nonce": anvil.w3.eth.get_transaction_count(coordinator.address),
            }
        )
    )
    held: list[dict[str, Any]] = []

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if (
            request["method"] == "eth_sendRawTransactionSync" and len(proxy.sends) == 1
        ):  # the first send
            held.append(request)
            return _DROP
        if request["method"] == "eth_sendRawTransaction" and held:
            remove = [removal.raw_transaction.to_0x_hex()]
            proxy.forward(
                {"jsonrpc": "2.0", "id": 0, "method": request["method"], "params": remove}
            )
            proxy.forward(held.pop())
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with (
        _proxy(anvil, fault) as proxy,
        pytest.raises(Unauthorized, match="is not a registered site"),
    ):
        _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    assert len(proxy.signed()) == 1
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    receipt = anvil.w3.eth.get_transaction_receipt(HexBytes(proxy.signed()[0]))
    assert receipt["status"] == 0
    assert _commits(ledger, round_id, site.address) == []


def test_a_nonce_another_process_took_is_signed_again_with_the_next(anvil: ChainEnv) -> None:
    """Another process with the same key takes the nonce just before the send (the node says
    "nonce too low" and holds none of the call's transactions): the call is signed again with
    the next nonce, once, and lands."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)
    other: list[str] = []

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] == "eth_sendRawTransactionSync" and not other:
            pending = anvil.w3.eth.get_transaction_count(site.address, "pending")
            tx: dict[str, Any] = {
                "to": site.address,
                "value": 0,
                "gas": 21_000,
                "nonce": pending,
                "chainId": anvil.w3.eth.chain_id,
                "maxFeePerGas": 10**11,
                "maxPriorityFeePerGas": 10**9,
            }
            signed = site.sign_transaction(tx)
            other.append(signed.hash.hex())
            raw = [signed.raw_transaction.to_0x_hex()]
            sent = {"jsonrpc": "2.0", "id": 0, "method": "eth_sendRawTransaction", "params": raw}
            assert "result" in proxy.forward(sent)
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy:
        result = _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    first, second = proxy.signed()
    assert second == result.tx_hash and first != second
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 2
    assert anvil.w3.eth.get_transaction(HexBytes(other[0]))["nonce"] == nonce
    assert anvil.w3.eth.get_transaction(HexBytes(result.tx_hash))["nonce"] == nonce + 1
    assert _commits(ledger, round_id, site.address) == [result.tx_hash]


def test_a_failed_look_up_raises_and_sends_nothing_more(anvil: ChainEnv) -> None:
    """The sync send's answer is lost and so is the answer to the look-up: the client cannot
    tell whether the node holds the transaction, so it raises a LedgerError that says so
    (naming the transaction), and neither resends nor signs again. The transaction landed."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] == "eth_sendRawTransactionSync":
            proxy.forward(request)
            return _DROP
        if request["method"] == "eth_getTransactionByHash":
            return _DROP
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy, pytest.raises(LedgerError) as raised:
        _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    (tx,) = proxy.signed()
    assert tx in str(raised.value) and "not signed again" in str(raised.value)
    assert [m for m, _ in proxy.sends] == ["eth_sendRawTransactionSync"]
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    assert _commits(ledger, round_id, site.address) == [tx]


def test_a_node_that_says_it_holds_a_transaction_it_does_not_return_gets_no_second(
    anvil: ChainEnv,
) -> None:
    """The sync send's answer is lost (the node never got it) and the resend is refused with
    "already known", yet the node does not return the transaction: the client does not guess,
    it raises naming the transaction and signs nothing else."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] == "eth_sendRawTransactionSync":
            return _DROP
        if request["method"] == "eth_sendRawTransaction":
            return _error("already known", request)
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy, pytest.raises(LedgerError, match="does not return it"):
        _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    assert len(proxy.signed()) == 1
    assert [m for m, _ in proxy.sends] == ["eth_sendRawTransactionSync", "eth_sendRawTransaction"]
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce
    assert _commits(ledger, round_id, site.address) == []


def test_a_held_transaction_a_lagging_back_end_does_not_return_at_once_is_waited_for(
    anvil: ChainEnv,
) -> None:
    """Behind a balancer the back end that answers a look-up can lag the one that pooled the
    transaction: the resend is refused "already known" and the first two look-ups find nothing.
    The client asks again before giving up, finds it and returns its receipt, one signature."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)
    lookups: list[int] = []

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] == "eth_sendRawTransactionSync":
            return _DROP  # never reached the node
        if request["method"] == "eth_sendRawTransaction":
            proxy.forward(request)  # the node takes it, the answer says it already had it
            return _error("already known", request)
        if request["method"] == "eth_getTransactionByHash" and len(lookups) < 3:
            lookups.append(1)  # the first look-ups (after the drop, after the refusal) lag
            return {"jsonrpc": "2.0", "id": request["id"], "result": None}
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy:
        result = _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    (tx,) = proxy.signed()
    assert result.tx_hash == tx
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    assert _commits(ledger, round_id, site.address) == [tx]


def test_answers_lost_on_every_attempt_leave_the_outcome_unknown_with_one_signature(
    anvil: ChainEnv,
) -> None:
    """No send's answer ever comes back and the node never holds the transaction: the same bytes
    are sent on every attempt, and the error says the outcome is unknown (the transaction named,
    the nonce to compare), not that it failed."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil, site)

    def fault(proxy: _Proxy, request: dict[str, Any]) -> Any:
        if request["method"] in _SENDS:
            return _DROP
        return proxy.forward(request)

    nonce = anvil.w3.eth.get_transaction_count(site.address)
    with _proxy(anvil, fault) as proxy, pytest.raises(LedgerError, match="is unknown") as raised:
        _through(proxy, ledger).commit_update(
            site, round_id, commitment(site.address, round_id, "ab" * 32, 7)
        )
    (tx,) = proxy.signed()
    assert tx in str(raised.value) and "nonce" in str(raised.value)
    assert len(proxy.sends) > 1
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce
