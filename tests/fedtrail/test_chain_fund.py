"""``chain fund`` on a lost answer: a transfer the node took while its answer to the send was
lost (a timeout, a dropped connection) is waited for, not reported failed, so an operator does
not rerun it and pay twice; a transfer the node never took is still reported failed."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from eth_account import Account

from fedtrail.chain import connect, dev_account, fund
from fedtrail.errors import TransactionFailed

WEI = 12_345 * 10**9


def _losing(w3: Any, monkeypatch: pytest.MonkeyPatch, *, forward: bool) -> list[bytes]:
    """The send's answer is lost; with ``forward`` after the node took the transaction."""
    sent: list[bytes] = []
    real = w3.eth.send_raw_transaction

    def lost(raw: Any) -> Any:
        sent.append(bytes(raw))
        if forward:
            real(raw)
        raise requests.exceptions.ConnectionError("connection reset by peer (simulated)")

    monkeypatch.setattr(w3.eth, "send_raw_transaction", lost)
    return sent


@pytest.mark.anvil
def test_a_transfer_whose_answer_was_lost_is_waited_for_not_failed(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3 = connect(anvil_url)
    source, target = dev_account(7), Account.create().address
    nonce = w3.eth.get_transaction_count(source.address)
    sent = _losing(w3, monkeypatch, forward=True)
    fund(w3, source, target, WEI)
    assert len(sent) == 1
    assert w3.eth.get_balance(target) == WEI
    assert w3.eth.get_transaction_count(source.address) == nonce + 1


@pytest.mark.anvil
def test_a_transfer_the_node_never_took_is_reported_failed(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3 = connect(anvil_url)
    source, target = dev_account(7), Account.create().address
    nonce = w3.eth.get_transaction_count(source.address)
    _losing(w3, monkeypatch, forward=False)
    with pytest.raises(TransactionFailed, match="failed: connection reset"):
        fund(w3, source, target, WEI)
    assert w3.eth.get_balance(target) == 0
    assert w3.eth.get_transaction_count(source.address) == nonce
