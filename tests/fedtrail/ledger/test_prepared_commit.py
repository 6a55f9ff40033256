"""`Ledger.prepare_commit`: a commitment's preflight and the chain's clock in one JSON-RPC batch
(issue 18: a site reads the clock for its chain-time measure right before it commits), used by
`commit_update` for that commitment only; what it cannot read is None, read the usual way."""

from __future__ import annotations

import pytest

from fedtrail.chain import next_block_timestamp
from fedtrail.errors import DuplicateSubmission
from fedtrail.ledger import Ledger, commitment
from tests.fedtrail.ledger.test_batch_reads import _sent
from tests.fixtures.chain import ChainEnv


def _open(env: ChainEnv) -> tuple[Ledger, int]:
    ledger = env.deploy()
    ledger.register_site(env.coordinator, env.sites[0].address, "s0", 100)
    r, _ = ledger.open_round(
        env.aggregator,
        "QmM",
        "11" * 32,
        terms_cid="QmT",
        terms_sha256="22" * 32,
        commit_seconds=300,
        reveal_seconds=300,
    )
    return ledger, r


@pytest.mark.anvil
def test_the_preflight_and_the_clock_are_one_batch_and_the_commit_uses_it(
    anvil: ChainEnv,
) -> None:
    ledger, r = _open(anvil)
    site = anvil.sites[0]
    ours = commitment(site.address, r, "33" * 32, 10)
    sent = _sent(anvil.w3)
    before = next_block_timestamp(anvil.w3)
    prepared = ledger.prepare_commit(site, r, ours)
    after = next_block_timestamp(anvil.w3)
    assert prepared.clock is not None and before <= prepared.clock <= after
    assert prepared.preflight is not None
    sent.clear()
    tx = ledger.commit_update(site, r, ours, prepared=prepared)
    assert sent == ["eth_sendRawTransactionSync"]  # no preflight asked again
    on_chain = ledger.get_submission(r, site.address)
    assert tx.gas_used > 0 and on_chain is not None
    assert on_chain.commitment.removeprefix("0x") == ours


@pytest.mark.anvil
def test_a_preparation_for_another_commitment_is_not_used(anvil: ChainEnv) -> None:
    ledger, r = _open(anvil)
    site = anvil.sites[0]
    other = ledger.prepare_commit(site, r, commitment(site.address, r, "44" * 32, 10))
    ours = commitment(site.address, r, "33" * 32, 10)
    sent = _sent(anvil.w3)
    ledger.commit_update(site, r, ours, prepared=other)
    assert sent == ["batch:4", "eth_sendRawTransactionSync"]  # its own preflight
    on_chain = ledger.get_submission(r, site.address)
    assert on_chain is not None and on_chain.commitment.removeprefix("0x") == ours


@pytest.mark.anvil
def test_a_reverting_preflight_keeps_the_clock_and_the_commit_raises_as_before(
    anvil: ChainEnv,
) -> None:
    ledger, r = _open(anvil)
    site = anvil.sites[0]
    ours = commitment(site.address, r, "33" * 32, 10)
    ledger.commit_update(site, r, ours)
    prepared = ledger.prepare_commit(site, r, ours)  # AlreadyCommitted in the estimate
    assert prepared.preflight is None and prepared.clock is not None
    with pytest.raises(DuplicateSubmission):
        ledger.commit_update(site, r, ours, prepared=prepared)


def test_the_embedded_chain_reads_nothing_ahead(embedded: ChainEnv) -> None:
    ledger, r = _open(embedded)
    site = embedded.sites[0]
    ours = commitment(site.address, r, "33" * 32, 10)
    prepared = ledger.prepare_commit(site, r, ours)
    assert prepared.clock is None and prepared.preflight is None
    ledger.commit_update(site, r, ours, prepared=prepared)
    assert ledger.get_submission(r, site.address) is not None
