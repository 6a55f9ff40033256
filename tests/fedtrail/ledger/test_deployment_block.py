"""A deployment file's ``block_number`` and ``tx_hash`` are checked against the chain: every
event read starts at ``block_number``, so a later one would hide registrations or whole rounds
from ``audit verify``, ``audit privacy`` and the report (attack a56)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fedtrail.auditor.privacy import audit_privacy
from fedtrail.auditor.report import collect
from fedtrail.auditor.verify import verify_all
from fedtrail.errors import DeploymentMismatch
from fedtrail.ledger import Deployment, Ledger
from fedtrail.storage.store import LocalStore
from tests.fixtures.chain import ChainEnv


def _deployed(env: ChainEnv) -> tuple[Ledger, Deployment]:
    ledger, deployment = Ledger.deploy(env.w3, env.coordinator, aggregator=env.aggregator.address)
    for i, site in enumerate(env.sites[:3]):  # three registrations after the creation
        ledger.register_site(env.coordinator, site.address, f"site-{i}", 100)
    return ledger, deployment


def test_the_true_deployment_file_opens(any_chain: ChainEnv) -> None:
    _, deployment = _deployed(any_chain)
    ledger = Ledger.at(any_chain.w3, deployment)
    assert ledger.from_block == deployment.block_number == ledger.creation_block()
    assert sorted(ledger.names_at_finalize(1).values()) == ["site-0", "site-1", "site-2"]


@pytest.mark.parametrize("shift", [1, 2, 3, -1])
def test_a_shifted_block_number_is_refused(any_chain: ChainEnv, shift: int) -> None:
    """``shift`` 1..3: the file hides 1..3 registrations (the names would fall back to the
    registry's latest); -1 hides nothing but is not the creation either."""
    _, deployment = _deployed(any_chain)
    shifted = dataclasses.replace(deployment, block_number=deployment.block_number + shift)
    with pytest.raises(
        DeploymentMismatch, match=f"chain created it in block {deployment.block_number} "
    ):
        Ledger.at(any_chain.w3, shifted)


def test_a_foreign_tx_hash_is_refused(any_chain: ChainEnv) -> None:
    """The hash of a transaction that did not create this contract (a registration), and that
    of another deployment of the same bytecode."""
    ledger, deployment = _deployed(any_chain)
    registration = ledger.register_site(any_chain.coordinator, any_chain.sites[4].address, "x", 1)
    _, twin = Ledger.deploy(any_chain.w3, any_chain.coordinator)
    for tx in (registration.tx_hash, twin.tx_hash):
        with pytest.raises(DeploymentMismatch, match="not the transaction that created"):
            Ledger.at(any_chain.w3, dataclasses.replace(deployment, tx_hash=tx))


def test_the_twin_of_another_deployment_opens_as_itself(any_chain: ChainEnv) -> None:
    """Two deployments of one bytecode: each file opens its own contract, and one's address with
    the other's block (or transaction) is refused."""
    _, first = _deployed(any_chain)
    _, second = Ledger.deploy(any_chain.w3, any_chain.coordinator)
    assert Ledger.at(any_chain.w3, second).address == second.address
    mixed = dataclasses.replace(first, block_number=second.block_number, tx_hash=second.tx_hash)
    with pytest.raises(DeploymentMismatch):
        Ledger.at(any_chain.w3, mixed)


def test_creation_block_without_a_receipt_searches_the_code(embedded: ChainEnv) -> None:
    """No transaction hash (or a wrong one): the first block with code, by binary search."""
    _, deployment = _deployed(embedded)
    for _ in range(5):
        embedded.w3.eth.send_transaction(
            {"from": embedded.outsider.address, "to": embedded.outsider.address, "value": 1}
        )
    for tx in ("", "00" * 32):
        fresh = Ledger.connect(embedded.w3, deployment.address)
        assert fresh.creation_block(tx) == deployment.block_number


def test_readers_refuse_a_ledger_reading_events_after_the_creation(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """The library route around ``Ledger.at``: a ledger connected with a later ``from_block``
    is refused by ``verify_all``, ``audit_privacy`` and the report's ``collect``."""
    _, deployment = _deployed(embedded)
    late = Ledger.connect(embedded.w3, deployment.address, from_block=deployment.block_number + 2)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DeploymentMismatch, match="would be hidden"):
        verify_all(late, store)
    with pytest.raises(DeploymentMismatch, match="would be hidden"):
        audit_privacy(late, store)
    with pytest.raises(DeploymentMismatch, match="would be hidden"):
        collect(late, store, [])
    honest = Ledger.connect(embedded.w3, deployment.address, from_block=deployment.block_number)
    assert verify_all(honest, store) == []
