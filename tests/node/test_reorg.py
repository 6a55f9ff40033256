"""A site's commitment or reveal undone by a chain reorganisation while its window is still open
(attacks a129, a130): the node must see from the chain that its transaction is gone and send it
again, not trust its own record of a transaction the chain no longer holds.

A reorganisation is played on Anvil with ``evm_snapshot`` / ``evm_revert``: the blocks mined
after the snapshot (the site's transaction among them) are dropped, as a reorg that leaves a
transaction out of the new branch does (on a public chain: a shallow reorg whose new branch's
miner never saw or chose not to include it; on a coordinator's own chain node, at will).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.types import RPCEndpoint

from fedtrail.node.daemon import NodeState
from tests.aggregator.peer_setup import pass_deadline, peer_federation
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = [pytest.mark.anvil, pytest.mark.usefixtures("one_torch_thread")]


def _snapshot(w3: Web3) -> Any:
    return w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]


def _reorg(w3: Web3, snapshot: Any) -> None:
    """Drops every block mined since ``snapshot`` and mines one empty block in their place."""
    assert w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot])["result"] is True
    w3.provider.make_request(RPCEndpoint("evm_mine"), [])


@pytest.fixture
def world(anvil: ChainEnv, tmp_path: Path) -> World:
    return World(anvil, tmp_path)


def test_a129_a_commitment_dropped_by_a_reorg_is_sent_again_while_the_window_is_open(
    world: World,
) -> None:
    node = world.node(0)
    before = _snapshot(world.env.w3)
    record = node.participate(world.round)
    assert record is not None and record.phase == "committed"
    assert world.ledger.get_submission(world.round, node.address) is not None
    _reorg(world.env.w3, before)
    assert world.ledger.get_submission(world.round, node.address) is None  # the commit is gone
    # the node's next poll, inside the commit window: it sees its commitment missing
    again = node.participate(world.round)
    assert again is not None and again.phase == "committed"
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None, "the node trusted its record of a commit the chain dropped"
    world.close_commits()
    done = node.participate(world.round)
    assert done is not None and done.phase == "revealed", done and done.note
    revealed = world.ledger.get_submission(world.round, node.address)
    assert revealed is not None and revealed.revealed and revealed.sha256 == record.sha256


def test_a130_a_reveal_dropped_by_a_reorg_is_sent_again_while_the_window_is_open(
    world: World,
) -> None:
    node = world.node(0)
    node.participate(world.round)
    world.close_commits()
    before = _snapshot(world.env.w3)
    record = node.participate(world.round)
    assert record is not None and record.phase == "revealed"
    _reorg(world.env.w3, before)
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None and not on_chain.revealed  # committed, the reveal gone
    # the next poll, inside the reveal window (a restarted node reads the same state.json)
    for fresh in (node, world.node(0)):
        again = fresh.participate(world.round)
        assert again is not None and again.phase == "revealed"
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None and on_chain.revealed, (
        "the node trusted its record of a reveal the chain dropped: the update reads as withheld"
    )
    assert on_chain.sha256 == record.sha256
    assert NodeState.load(world.folder(0) / "state.json").rounds[world.round].phase == "revealed"


@pytest.mark.ipfs
@pytest.mark.slow
def test_a131_a_validators_score_commit_and_reveal_dropped_by_a_reorg_are_sent_again(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Peer round: a validator whose score reveal a reorg dropped read as withheld (rated at the
    largest distance: two such rounds take its reputation below the gate); one whose score
    commitment was dropped waited to reveal a commitment the chain did not hold."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger
    r = fed.service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    scorer = fed.nodes[0].scorer
    address = fed.nodes[0].address

    before = _snapshot(ledger.w3)
    committed = scorer.score(r)
    assert committed is not None and committed.phase == "committed"
    _reorg(ledger.w3, before)
    assert int(ledger.score_vote(r, address)[0], 16) == 0  # the commitment is gone
    again = scorer.score(r)
    assert again is not None and again.phase == "committed"
    stored, _ = ledger.score_vote(r, address)
    assert int(stored, 16), "the validator trusted its record of a commitment the chain dropped"
    assert (again.scores, again.salt) == (committed.scores, committed.salt)  # the same vector

    pass_deadline(ledger, peer.score_commit_deadline)
    before = _snapshot(ledger.w3)
    revealed = scorer.score(r)
    assert revealed is not None and revealed.phase == "revealed"
    assert ledger.score_vote(r, address)[1]
    _reorg(ledger.w3, before)
    assert not ledger.score_vote(r, address)[1]  # the reveal is gone, the commitment kept
    for validator in (scorer, fed.node(0).scorer):  # the same process, or a restarted one
        record = validator.score(r)
        assert record is not None and record.phase == "revealed"
    assert ledger.score_vote(r, address)[1], (
        "the validator trusted its record of a reveal the chain dropped: its vote reads withheld"
    )
    votes = {v.validator: v.scores for v in ledger.peer_votes(r)}
    assert list(votes[address]) == committed.scores
