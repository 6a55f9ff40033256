"""The error table and the revert decoder, fed with revert data from real chains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError

from fedtrail import errors as error_tree
from fedtrail.errors import (
    CommitmentMismatch,
    ContractRevert,
    DuplicateSubmission,
    FedtrailError,
    InvalidValuation,
    RoundStateError,
    SampleLimitExceeded,
    SiteAlreadyRegistered,
)
from fedtrail.ledger import Artifact, Ledger
from fedtrail.ledger import errors as ledger_errors
from fedtrail.ledger.errors import ERRORS, PREFIX, RevertDecoder, revert_data
from tests.fixtures.chain import ChainEnv

SOURCE = Path(__file__).resolve().parents[3] / "contracts" / "FederationLedger.sol"
ALREADY = f"{PREFIX}SiteAlreadyRegistered"


def abi_errors() -> dict[str, list[str]]:
    return {
        item["name"]: [i["type"] for i in item["inputs"]]
        for item in Artifact.load().abi
        if item["type"] == "error"
    }


def selector(name: str) -> bytes:
    return keccak(text=f"{name}({','.join(abi_errors()[name])})")[:4]


def duplicate_registration(env: ChainEnv) -> tuple[Ledger, BaseException]:
    """What the provider raises, untouched, when a site is registered twice."""
    ledger = env.deploy()
    site = env.sites[0].address
    ledger.register_site(env.coordinator, site, "a", 100)
    contract = env.w3.eth.contract(
        address=Web3.to_checksum_address(ledger.address), abi=ledger.artifact.abi
    )
    with pytest.raises(Exception) as info:
        contract.functions.registerSite(site, "b", 100).estimate_gas(
            {"from": env.coordinator.address}
        )
    return ledger, info.value


# ------------------------------------------------------------------ the table


def test_every_custom_error_of_the_contract_has_exactly_one_rule() -> None:
    in_source = set(re.findall(r"\berror\s+(\w+)\s*\(", SOURCE.read_text(encoding="utf-8")))
    assert set(abi_errors()) == in_source
    assert set(ERRORS) == in_source
    for name, rule in ERRORS.items():
        assert name.startswith(PREFIX)
        assert issubclass(rule.cls, ContractRevert) and issubclass(rule.cls, FedtrailError)


def test_every_error_class_lives_in_the_one_exception_tree() -> None:
    for rule in ERRORS.values():
        assert rule.cls.__module__ == "fedtrail.errors"
        assert getattr(error_tree, rule.cls.__name__) is rule.cls
    defined_here = [
        value
        for value in vars(ledger_errors).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == ledger_errors.__name__
    ]
    assert defined_here == []


def test_commit_reveal_errors_map_to_their_own_classes() -> None:
    """The node tells these apart: a reveal that opens no commitment of its own, a sample
    count above its cap, and a second commit or reveal (already done: not a failure)."""
    assert ERRORS[f"{PREFIX}CommitmentMismatch"].cls is CommitmentMismatch
    assert ERRORS[f"{PREFIX}NotCommitted"].cls is CommitmentMismatch
    assert ERRORS[f"{PREFIX}TooManySamples"].cls is SampleLimitExceeded
    assert ERRORS[f"{PREFIX}AlreadyCommitted"].cls is DuplicateSubmission
    assert ERRORS[f"{PREFIX}AlreadyRevealed"].cls is DuplicateSubmission
    for name in ("InvalidReason", "ScoreReasonMismatch", "NotRevealed"):
        assert ERRORS[f"{PREFIX}{name}"].cls is InvalidValuation


def test_site_already_registered_has_its_own_class() -> None:
    assert ERRORS[ALREADY].cls is SiteAlreadyRegistered
    assert not issubclass(SiteAlreadyRegistered, DuplicateSubmission)
    assert [n for n, r in ERRORS.items() if r.cls is SiteAlreadyRegistered] == [ALREADY]


# ------------------------------------------------------------------ real revert data


def test_decoder_maps_revert_bytes_of_every_chain(any_chain: ChainEnv) -> None:
    """eth-tester (bytes in the exception chain), Anvil (``ContractCustomError.data``) and
    Ganache (``args[1]["result"]``) all yield the same bytes and the same error."""
    ledger, exc = duplicate_registration(any_chain)
    if any_chain.name == "anvil":
        assert isinstance(exc, ContractCustomError)
    if any_chain.name == "ganache":
        assert isinstance(exc.args[1], dict) and "result" in exc.args[1]
    data = revert_data(exc)
    assert data is not None and data[:4] == selector(ALREADY)
    err = RevertDecoder(ledger.artifact.abi).decode(data)
    assert type(err) is SiteAlreadyRegistered
    assert err.error == "SiteAlreadyRegistered"
    assert err.args_by_name == {"site": any_chain.sites[0].address}
    assert str(err) == f"{ALREADY}: {any_chain.sites[0].address} is already registered"


def test_unknown_selector_gives_a_generic_revert_naming_the_selector(embedded: ChainEnv) -> None:
    ledger, exc = duplicate_registration(embedded)
    data = revert_data(exc)
    assert data is not None
    abi = [item for item in ledger.artifact.abi if item.get("name") != ALREADY]
    err = RevertDecoder(abi).decode(data)
    hex_selector = "0x" + selector(ALREADY).hex()
    assert type(err) is ContractRevert
    assert err.error == hex_selector
    assert hex_selector in str(err)
    assert err.args_by_name == {"data": "0x" + data.hex()}


def test_revert_text_is_never_parsed_and_views_still_map(embedded: ChainEnv) -> None:
    """eth-tester's eth_call keeps the revert bytes only as text: the decoder finds nothing
    there, and the client recovers the error by replaying the call as a gas estimate."""
    ledger = embedded.deploy()
    contract = embedded.w3.eth.contract(
        address=Web3.to_checksum_address(ledger.address), abi=ledger.artifact.abi
    )
    with pytest.raises(Exception) as info:
        contract.functions.getRound(7).call()
    assert "execution reverted: b'" in str(info.value)
    assert revert_data(info.value) is None
    with pytest.raises(RoundStateError) as mapped:
        ledger.get_round(7)
    assert mapped.value.error == "UnknownRound"
    assert mapped.value.args_by_name == {"round": 7}


def test_panic_is_decoded_with_its_code() -> None:
    """The contract never panics on purpose, so these bytes are built by hand."""
    data = keccak(text="Panic(uint256)")[:4] + abi_encode(["uint256"], [0x11])
    err = RevertDecoder(Artifact.load().abi).decode(data)
    assert type(err) is ContractRevert
    assert (err.error, err.args_by_name) == ("Panic", {"code": 0x11})


def test_a_bare_revert_has_nothing_to_decode() -> None:
    assert RevertDecoder(Artifact.load().abi).decode(b"") is None
