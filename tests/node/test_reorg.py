"""A site's commitment, reveal or decline undone by a chain reorganisation while its window is
still open (attacks a129, a130, and the decline left open there): the node must see from the
chain that its transaction is gone and send it again, not trust its own record of a transaction
the chain no longer holds; its run loop must look (it never polled a finished record again).

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

from fedtrail.ledger import read_decline
from fedtrail.node.daemon import NodeState, SiteNode
from fedtrail.protocol.codes import Decline
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


def _declined(world: World, node: SiteNode) -> Decline | None:
    on_chain = world.ledger.get_submission(world.round, node.address)
    if on_chain is None:
        return None
    terms_sha = world.ledger.get_round(world.round).terms_sha256
    return read_decline(on_chain.commitment, node.address, world.round, terms_sha)


@pytest.fixture
def declining(anvil: ChainEnv, tmp_path: Path) -> World:
    """Round 1 opened on chain with a 45-s commit window where its terms say 60 s: an honest
    node declines it (``windows``) before training."""
    return World(anvil, tmp_path, windows=(45, 3600))


def test_a_decline_dropped_by_a_reorg_is_sent_again_while_the_commit_window_is_open(
    declining: World,
) -> None:
    """Before, the reason of a decline lived only in the record's note: a decline the chain
    dropped left the site with no commitment, read as absent (``terms.declined`` named
    nobody), while the node's record said it had declined."""
    world = declining
    node = world.node(0)
    before = _snapshot(world.env.w3)
    record = node.participate(world.round)
    assert record is not None and record.phase == "skipped", record
    assert record.declined == Decline.WINDOWS
    assert _declined(world, node) is Decline.WINDOWS
    _reorg(world.env.w3, before)
    assert world.ledger.get_submission(world.round, node.address) is None  # the decline is gone
    restarted = world.node(0)  # reads the reason back from state.json
    again = restarted.participate(world.round)
    assert again is not None and again.phase == "skipped"
    assert _declined(world, node) is Decline.WINDOWS, "the dropped decline was not sent again"
    # the same signed bytes may be sent again (a decline carries no salt, the nonce is the
    # same after the reorg), so the hash may repeat: the note and the chain say it was resent
    assert "declined again" in again.note, again.note
    saved = NodeState.load(world.folder(0) / "state.json").rounds[world.round]
    assert (saved.declined, saved.tx_hash) == (Decline.WINDOWS, again.tx_hash)
    # the next poll: the chain holds it, nothing more is sent
    assert restarted.participate(world.round) == again
    assert _declined(world, node) is Decline.WINDOWS


def test_the_run_loop_sends_a_dropped_decline_again(declining: World) -> None:
    """Through ``node run``'s loop, which before never polled a finished (skipped) record."""
    world = declining
    node = world.node(0)
    before = _snapshot(world.env.w3)
    seen: list[Decline | None] = []

    def after_poll() -> None:
        seen.append(_declined(world, node))
        if len(seen) == 1:
            _reorg(world.env.w3, before)  # drops the decline the first poll sent
        if len(seen) == 3:
            node.stop_event.set()

    node.run(on_idle=after_poll)
    assert seen == [Decline.WINDOWS] * 3, seen


def test_the_run_loop_sends_a_dropped_reveal_again(world: World) -> None:
    """a130 through ``node run``'s loop: it never polled a revealed record again, so the
    re-reveal a direct ``participate`` call made never ran in the daemon."""
    node = world.node(0)
    node.participate(world.round)
    world.close_commits()
    before = _snapshot(world.env.w3)
    seen: list[bool | None] = []

    def after_poll() -> None:
        on_chain = world.ledger.get_submission(world.round, node.address)
        seen.append(None if on_chain is None else on_chain.revealed)
        if len(seen) == 1:
            _reorg(world.env.w3, before)  # drops the reveal the first poll sent
        if len(seen) == 3:
            node.stop_event.set()

    assert node.run(on_idle=after_poll) == 1  # one round taken part in, polled three times
    assert seen == [True, True, True], seen
