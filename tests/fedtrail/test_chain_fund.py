"""``chain fund`` on a lost answer: a transfer the node took while its answer to the send was
lost (a timeout, a dropped connection) is waited for, not reported failed, so an operator does
not rerun it and pay twice; one the node does not hold is sent again as the same signed bytes,
and when that answer is lost too the outcome is reported unknown, never failed; a refusal the
node answered with is reported failed."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from eth_account import Account

from fedtrail.chain import connect, dev_account, fund
from fedtrail.errors import TransactionFailed

WEI = 12_345 * 10**9


def _losing(
    w3: Any, monkeypatch: pytest.MonkeyPatch, *, forward: bool, lose: int = 99
) -> list[bytes]:
    """The first ``lose`` sends' answers are lost; with ``forward`` after the node took the
    transaction; later sends go through."""
    sent: list[bytes] = []
    real = w3.eth.send_raw_transaction

    def lost(raw: Any) -> Any:
        sent.append(bytes(raw))
        if len(sent) > lose:
            return real(raw)
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
def test_a_lost_send_the_node_does_not_hold_is_sent_again_as_the_same_bytes(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3 = connect(anvil_url)
    source, target = dev_account(7), Account.create().address
    nonce = w3.eth.get_transaction_count(source.address)
    sent = _losing(w3, monkeypatch, forward=False, lose=1)
    fund(w3, source, target, WEI)
    assert len(sent) == 2 and sent[0] == sent[1]  # one signature, sent twice
    assert w3.eth.get_balance(target) == WEI
    assert w3.eth.get_transaction_count(source.address) == nonce + 1


@pytest.mark.anvil
def test_answers_lost_twice_leave_the_outcome_unknown_not_failed(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3 = connect(anvil_url)
    source, target = dev_account(7), Account.create().address
    nonce = w3.eth.get_transaction_count(source.address)
    sent = _losing(w3, monkeypatch, forward=False)
    with pytest.raises(TransactionFailed, match="outcome is unknown") as caught:
        fund(w3, source, target, WEI)
    assert "failed:" not in str(caught.value)
    assert len(sent) == 2 and sent[0] == sent[1]
    assert w3.eth.get_balance(target) == 0
    assert w3.eth.get_transaction_count(source.address) == nonce


@pytest.mark.anvil
def test_a_transfer_the_node_refuses_is_reported_failed(anvil_url: str) -> None:
    w3 = connect(anvil_url)
    poor = Account.create()  # no funds: the node answers with a refusal
    with pytest.raises(TransactionFailed, match="failed: "):
        fund(w3, poor, Account.create().address, WEI)
    assert w3.eth.get_transaction_count(poor.address) == 0
