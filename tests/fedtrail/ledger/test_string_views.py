"""Strings read from the contract's views: the contract stores whatever bytes a sender gave for
a ``string`` (a site's name), and views decode them as events do (``_text``: each invalid UTF-8
byte as ``\\xNN``), so one registration cannot make every ``getSites`` reader raise (a58)."""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from web3 import Web3

from fedtrail.ledger import Ledger
from tests.fixtures.chain import ChainEnv


def _register_raw(ledger: Ledger, env: ChainEnv, site: str, name: bytes) -> None:
    """``registerSite(site, name, 100)`` with ``name`` as raw bytes, signed by the coordinator
    without fedtrail's client (which only sends text)."""
    data = Web3.keccak(text="registerSite(address,string,uint64)")[:4] + abi_encode(
        ["address", "bytes", "uint64"], [site, name, 100]
    )
    w3 = env.w3
    tx = {
        "to": ledger.address,
        "data": data,
        "gas": 1_000_000,
        "gasPrice": int(w3.eth.gas_price) * 2,
        "nonce": w3.eth.get_transaction_count(env.coordinator.address),
        "chainId": ledger.chain_id,
        "value": 0,
    }
    signed = env.coordinator.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1  # the contract does not check a string's bytes


def test_a_name_that_is_not_utf8_reads_as_the_events_read_it(any_chain: ChainEnv) -> None:
    ledger = any_chain.deploy()
    odd, plain = any_chain.sites[0].address, any_chain.sites[1].address
    _register_raw(ledger, any_chain, odd, b"St \xffMary\xc3")
    ledger.register_site(any_chain.coordinator, plain, "plain", 100)
    names = {s.address: s.name for s in ledger.get_sites()}  # raised on the parent commit
    assert names == {odd: "St \\xffMary\\xc3", plain: "plain"}
    site = ledger.get_site(odd)
    assert site is not None and site.name == "St \\xffMary\\xc3"
    assert ledger.names_at_finalize(1) == names  # the events' reading, the same text
