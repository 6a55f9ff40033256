"""Building a Ledger: the constructor makes no RPC call; ``connect`` checks the chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from fedtrail.errors import ChainUnreachable, ContractNotFound
from fedtrail.ledger import Artifact, Ledger
from tests.fixtures.chain import ChainEnv, free_port

BUILD = Path(__file__).resolve().parents[3] / "contracts" / "build" / "FederationLedger.json"
ADDRESS = "0x" + "12" * 20


def test_the_shipped_artifact_is_the_committed_build() -> None:
    assert Artifact.load() == Artifact.load(BUILD)


def test_constructing_a_ledger_makes_no_rpc_call() -> None:
    dead = Web3(HTTPProvider(f"http://127.0.0.1:{free_port()}", request_kwargs={"timeout": 2}))
    ledger = Ledger(dead, ADDRESS.lower(), 31337, Artifact.load())
    assert ledger.address == Web3.to_checksum_address(ADDRESS)
    with pytest.raises(ChainUnreachable):
        Ledger.connect(dead, ADDRESS)


def test_connect_checks_the_code_at_the_address(embedded: ChainEnv) -> None:
    deployed = embedded.deploy()
    ledger = Ledger.connect(embedded.w3, deployed.address, from_block=3)
    assert (ledger.address, ledger.chain_id, ledger.from_block) == (
        deployed.address,
        deployed.chain_id,
        3,
    )
    with pytest.raises(ContractNotFound, match="no contract"):
        Ledger.connect(embedded.w3, embedded.outsider.address)
