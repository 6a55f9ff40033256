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


def test_a_byte_and_its_escape_text_read_apart(any_chain: ChainEnv) -> None:
    """The byte 0xff and the four characters ``\\xff`` were one text (a58's left-over): a
    reader could not tell the two names apart. Backslashes now read doubled, escapes single."""
    ledger = any_chain.deploy()
    byte, text, both = (s.address for s in any_chain.sites[:3])
    _register_raw(ledger, any_chain, byte, b"h\xff")
    _register_raw(ledger, any_chain, text, b"h\\xff")
    _register_raw(ledger, any_chain, both, b"\\\xc3\xa9\xff")
    names = {s.address: s.name for s in ledger.get_sites()}
    assert names[byte] == "h\\xff"
    assert names[text] == "h\\\\xff"
    assert names[both] == "\\\\\u00e9\\xff"  # UTF-8 é kept, the bare byte escaped
    assert len(set(names.values())) == 3
    assert ledger.names_at_finalize(1) == names  # events read the same


def test_the_independent_reader_reads_names_as_the_ledger_does(anvil: ChainEnv) -> None:
    """``scripts/independent/reader.py`` took names from web3's event decoder, which raises on a
    name that is not UTF-8 (a58's registration stopped it); it now decodes the raw logs by the
    README's *Strings* rule, and reads every name as fedtrail's client does."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "scripts" / "independent" / "reader.py"
    spec = importlib.util.spec_from_file_location("independent_reader", path)
    assert spec is not None and spec.loader is not None
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    ledger = anvil.deploy()
    names = [b"h\xff", b"h\\xff", b"\\\xc3\xa9\xff", "Klinikum S\u00fcd".encode()]
    for site, name in zip(anvil.sites, names, strict=False):
        _register_raw(ledger, anvil, site.address, name)
    independent = reader.registered_names(anvil.w3, ledger.address, 0)
    assert {k.lower(): v for k, v in ledger.names_at_finalize(1).items()} == independent
    assert len(set(independent.values())) == len(names)
