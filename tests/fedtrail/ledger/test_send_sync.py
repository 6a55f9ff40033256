"""Over HTTP a transaction is sent with ``eth_sendRawTransactionSync`` (EIP-7966), whose answer
is its receipt: no receipt poll after the send (issue 18). A node without the method, or one
that answers otherwise while holding the transaction, gets what it got before: the send through
web3 and the receipt waited for; never a second transaction."""

from __future__ import annotations

from typing import Any

import pytest
from web3.providers.rpc import HTTPProvider

import fedtrail.ledger.client as client_mod
from fedtrail.ledger import Ledger, commitment
from fedtrail.ledger.records import TxResult
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.anvil


def _asked(monkeypatch: pytest.MonkeyPatch, answer: Any = None) -> list[str]:
    """The JSON-RPC methods that reach the node (a batch's entries each; web3's own requests
    too, by the transport they all take); ``answer(provider, method, params, make_request)``,
    when given, answers the ledger's own requests (``make_request``) in their place."""
    asked: list[str] = []
    one, batch = HTTPProvider.make_request, HTTPProvider.make_batch_request
    transport = HTTPProvider._make_request

    def _make_request(provider: HTTPProvider, method: Any, data: bytes) -> bytes:
        asked.append(str(method))
        return transport(provider, method, data)

    def make_request(provider: HTTPProvider, method: Any, params: Any) -> Any:
        return answer(provider, method, params, one)

    def make_batch_request(provider: HTTPProvider, requests: Any) -> Any:
        asked.extend(str(m) for m, _ in requests)
        return batch(provider, requests)

    monkeypatch.setattr(HTTPProvider, "_make_request", _make_request)
    monkeypatch.setattr(HTTPProvider, "make_batch_request", make_batch_request)
    if answer is not None:
        monkeypatch.setattr(HTTPProvider, "make_request", make_request)
    return asked


def _open(ledger: Ledger, env: ChainEnv) -> int:
    ledger.register_site(env.coordinator, env.sites[0].address, "s", 100)
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


def _mined(env: ChainEnv, result: TxResult) -> dict[str, Any]:
    receipt = env.w3.eth.get_transaction_receipt(result.tx_hash)
    assert receipt["status"] == 1
    assert (result.block_number, result.gas_used) == (receipt["blockNumber"], receipt["gasUsed"])
    assert result.tx_hash == receipt["transactionHash"].hex()
    return dict(receipt)


def test_a_transaction_is_one_send_whose_answer_is_the_receipt_web3_reads(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil)
    call = ledger._fn.commitUpdate(
        round_id,
        bytes.fromhex(commitment(site.address, round_id, "ab" * 32, 7).removeprefix("0x")),
    )

    def no_wait(*a: Any, **k: Any) -> Any:
        raise AssertionError("waited for a receipt the send answered with")

    monkeypatch.setattr(anvil.w3.eth, "wait_for_transaction_receipt", no_wait)
    asked = _asked(monkeypatch)
    receipt = client_mod._send(
        anvil.w3,
        site,
        call,
        decoder=ledger._errors,
        poll_latency=0.01,
        timeout=30,
        contract=ledger._contract,
    )
    # the preflight batch, then the send: no eth_sendRawTransaction, no receipt request
    assert asked == [
        "eth_estimateGas",
        "eth_getTransactionCount",
        "eth_maxPriorityFeePerGas",
        "eth_getBlockByNumber",
        "eth_sendRawTransactionSync",
    ]
    assert dict(receipt) == dict(anvil.w3.eth.get_transaction_receipt(receipt["transactionHash"]))
    assert ledger.get_submission(round_id, site.address) is not None


def test_a_node_without_the_method_gets_the_send_and_the_receipt_poll(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil)

    def no_sync(provider: HTTPProvider, method: Any, params: Any, one: Any) -> Any:
        if method == "eth_sendRawTransactionSync":
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}}
        return one(provider, method, params)

    asked = _asked(monkeypatch, no_sync)
    try:
        first = ledger.commit_update(site, round_id, commitment(site.address, 1, "ab" * 32, 7))
        # the stub answered the sync send; the node does not hold the transaction, so it is
        # sent as before and its receipt polled for
        assert asked[4:7] == [
            "eth_getTransactionByHash",
            "eth_sendRawTransaction",
            "eth_getTransactionReceipt",
        ], asked
        _mined(anvil, first)
        asked.clear()
        second = ledger.set_max_samples(anvil.coordinator, site.address, 50)
        # the node said it has no such method: not asked again
        assert "eth_sendRawTransactionSync" not in asked
        assert asked.count("eth_sendRawTransaction") == 1
        _mined(anvil, second)
    finally:
        client_mod._NO_SYNC.discard(anvil.w3.provider)  # type: ignore[arg-type]


def test_an_answer_without_the_receipt_waits_for_the_transaction_the_node_holds(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync send that timed out (the transaction pooled, not yet mined): its receipt is
    waited for by hash; the transaction is not signed or sent a second time."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil)
    nonce = anvil.w3.eth.get_transaction_count(site.address)

    def timed_out(provider: HTTPProvider, method: Any, params: Any, one: Any) -> Any:
        if method == "eth_sendRawTransactionSync":
            one(provider, "eth_sendRawTransaction", params)  # the node takes it
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": 4, "message": "timeout"}}
        return one(provider, method, params)

    asked = _asked(monkeypatch, timed_out)
    result = ledger.commit_update(site, round_id, commitment(site.address, 1, "ab" * 32, 7))
    assert asked.count("eth_getTransactionByHash") == 1
    assert asked.count("eth_sendRawTransaction") == 1  # the node's own, in the stub above
    assert "eth_getTransactionReceipt" in asked
    _mined(anvil, result)
    assert anvil.w3.eth.get_transaction_count(site.address) == nonce + 1
    assert anvil.w3.provider not in client_mod._NO_SYNC
