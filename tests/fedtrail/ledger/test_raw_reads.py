"""Over HTTP the ledger reads views and block timestamps as the node sends them, and builds a
transaction's fields itself (issue 18: web3's middleware, formatters and ``build_transaction``
cost about as much as the requests). The values, the transactions and the errors are web3's: an
error answer is asked again through web3, which raises it as before."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from fedtrail.chain import block_timestamp, next_block_timestamp
from fedtrail.errors import RoundStateError
from fedtrail.ledger import Ledger, commitment
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.anvil


def test_a_view_is_read_as_sent_and_a_reverting_one_raises_the_contracts_error(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = anvil.deploy()
    asked: list[Any] = []
    call = anvil.w3.eth.call
    monkeypatch.setattr(anvil.w3.eth, "call", lambda *a, **k: asked.append(a) or call(*a, **k))
    assert ledger.current_round() == 0
    assert ledger.coordinator() == anvil.coordinator.address
    assert asked == []  # both answers read as the node sent them
    _open(ledger, anvil)
    assert ledger.get_peer_round(1) is None
    with pytest.raises(RoundStateError) as raised:
        ledger.get_peer_round(2)  # the contract reverts: UnknownRound(2)
    assert raised.value.error == "UnknownRound"
    assert raised.value.args_by_name["round"] == 2
    assert len(asked) == 1  # the error answer, asked again through web3


def _open(ledger: Ledger, env: ChainEnv) -> int:
    """Round 1 with ``env``'s first site registered."""
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


def test_block_timestamps_are_web3s(anvil: ChainEnv) -> None:
    w3 = anvil.w3
    assert block_timestamp(w3) == w3.eth.get_block("latest")["timestamp"]
    # the pending block's clock runs with the wall's: equal, or a second on
    before = w3.eth.get_block("pending")["timestamp"]
    assert before <= next_block_timestamp(w3) <= w3.eth.get_block("pending")["timestamp"]


def _captured_signing(
    signer: LocalAccount, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    signed: list[dict[str, Any]] = []
    sign = type(signer).sign_transaction

    def spy(self: LocalAccount, tx: dict[str, Any], *a: Any, **k: Any) -> Any:
        if self is signer:
            signed.append(dict(tx))
        return sign(self, tx, *a, **k)

    monkeypatch.setattr(type(signer), "sign_transaction", spy)
    return signed


def test_a_transaction_signs_the_bytes_web3s_build_transaction_gives(
    anvil: ChainEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signed bytes of a commitment and a reveal equal those of web3's ``build_transaction``
    with the same nonce, gas and fees; the result is the mined receipt's."""
    ledger = anvil.deploy()
    site = anvil.sites[0]
    round_id = _open(ledger, anvil)
    promised = commitment(site.address, round_id, "ab" * 32, 7)
    signed = _captured_signing(site, monkeypatch)
    result = ledger.commit_update(site, round_id, promised)
    (tx,) = signed
    call = ledger._fn.commitUpdate(round_id, bytes.fromhex(promised.removeprefix("0x")))
    keys = ("from", "nonce", "gas", "chainId", "maxFeePerGas", "maxPriorityFeePerGas")
    built = call.build_transaction({k: tx[k] for k in keys})
    assert site.sign_transaction(tx).raw_transaction == site.sign_transaction(built).raw_transaction
    receipt = anvil.w3.eth.get_transaction_receipt(result.tx_hash)
    assert (result.block_number, result.gas_used) == (receipt["blockNumber"], receipt["gasUsed"])
    assert result.tx_hash == receipt["transactionHash"].hex()


def test_a_deployment_reads_its_address_from_the_receipt(anvil: ChainEnv) -> None:
    ledger, deployment = Ledger.deploy(anvil.w3, anvil.coordinator)
    receipt = anvil.w3.eth.get_transaction_receipt(deployment.tx_hash)
    assert ledger.address == deployment.address == receipt["contractAddress"]
    assert deployment.block_number == receipt["blockNumber"]
