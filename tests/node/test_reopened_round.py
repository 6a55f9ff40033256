"""Attack a142: a round whose opening a chain reorganisation dropped and the chain then mined
again (the aggregator's same ``openRound`` re-sent, or the same signed transaction taken into a
later block) has another commit deadline: ``openRound`` sets it from the block's time. A node
that had started the round recorded the first opening's key (:meth:`RoundInfo.key`: ledger,
commit deadline, terms' sha256) and, before, refused its own state at its next poll
(``NodeStateError``, "this folder's state is not this ledger's"): the daemon stopped, and the
site missed the round and every later one until its operator moved state.json aside. No one
need act in bad faith: a shallow reorg of the opening block is enough; a chain controller can do
it at will to every node that had started. Now a node sees the same ledger reopening a round
that holds nothing of its own: under the same terms it commits (and reveals) the update it
had trained again; under other terms it starts over, checking those terms (consent) before
training; an update it had already published under other terms is not trained again (no
second release of its data for the round): it sits the round out, noted.

The reorganisation is played on Anvil with ``evm_snapshot`` / ``evm_revert`` (as in
``tests/node/test_reorg.py``)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.chain import advance_time
from fedtrail.ledger import Ledger, read_decline
from fedtrail.node.daemon import NodeState
from fedtrail.protocol.codes import Decline
from tests.aggregator.peer_setup import pass_deadline, peer_federation
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World
from tests.node.test_reorg import _reorg, _snapshot

pytestmark = [pytest.mark.anvil, pytest.mark.usefixtures("one_torch_thread")]


class Reopenable:
    """A :class:`World` whose round 1 opening can be dropped by a reorganisation and mined
    again, later (another commit deadline), with the same or with other terms."""

    def __init__(self, env: ChainEnv, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        original = Ledger.open_round
        self.call: dict[str, Any] = {}

        def spy(ledger: Ledger, signer: Any, *args: Any, **kwargs: Any) -> Any:
            self.call.update(snapshot=_snapshot(ledger.w3), signer=signer, args=args, kw=kwargs)
            return original(ledger, signer, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(Ledger, "open_round", spy)
            self.world = World(env, tmp)
        self.first = self.world.ledger.get_round(self.world.round)

    def reopen(self, *, terms: bytes | None = None, commit_seconds: int | None = None) -> None:
        """Drops the opening (and all after it), lets 7 s of chain time pass, opens again."""
        world, call = self.world, self.call
        _reorg(world.env.w3, call["snapshot"])
        assert world.ledger.current_round() == 0  # the opening is gone
        advance_time(world.env.w3, 7)
        kw = dict(call["kw"])
        if terms is not None:
            kw.update(
                terms_cid=world.store.put(terms), terms_sha256=hashlib.sha256(terms).hexdigest()
            )
        if commit_seconds is not None:
            kw["commit_seconds"] = commit_seconds
        r, _ = world.ledger.open_round(call["signer"], *call["args"], **kw)
        assert r == world.round
        again = world.ledger.get_round(r)
        assert again.commit_deadline != self.first.commit_deadline  # another key


@pytest.fixture
def reopenable(anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Reopenable:
    return Reopenable(anvil, tmp_path, monkeypatch)


def test_a142_a_committed_site_survives_its_rounds_opening_mined_again(
    reopenable: Reopenable,
) -> None:
    world = reopenable.world
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "committed"
    reopenable.reopen()  # same terms, later block: another commit deadline
    assert world.ledger.get_submission(world.round, node.address) is None
    # before: NodeStateError ("this folder's state is not this ledger's"); the daemon stopped
    again = node.participate(world.round)
    assert again is not None and again.phase == "committed", again
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None and on_chain.commitment.removeprefix("0x")  # committed again
    saved = NodeState.load(world.folder(0) / "state.json").rounds[world.round]
    assert saved.opened == world.ledger.get_round(world.round).key(world.ledger.address)
    world.close_commits()
    done = world.node(0).participate(world.round)  # a restarted node reads the same state
    assert done is not None and done.phase == "revealed", done and done.note
    revealed = world.ledger.get_submission(world.round, node.address)
    assert revealed is not None and revealed.revealed and revealed.sha256 == record.sha256


def test_a142_a_published_update_is_not_committed_again_after_its_round_reopens(
    reopenable: Reopenable,
) -> None:
    """The update was revealed in the dropped opening: its bytes are public, so anyone may
    commit a copy of it first in the new opening, and the duplicate rule decides by commit
    order (the site would be marked the copy). The node sits the round out, noted, and does
    not stop; it does not train again either (a second release of its data for the round)."""
    world = reopenable.world
    node = world.node(0)
    record = world.full(node)
    assert record is not None and record.phase == "revealed"
    reopenable.reopen()
    again = node.participate(world.round)
    assert again is not None and again.phase == "skipped", again
    assert "not committed again" in again.note and "nor trained again" in again.note
    assert world.ledger.get_submission(world.round, node.address) is None
    world.close_commits()
    assert world.node(0).participate(world.round) == again  # settled: a restart changes nothing
    assert world.ledger.get_submission(world.round, node.address) is None


def test_a142_a_round_reopened_with_other_windows_is_judged_again_before_anything_is_sent(
    reopenable: Reopenable,
) -> None:
    """The opening is mined again under the same terms with a 45-s commit window where they say
    60 s (the terms' hash does not pin the windows: ``openRound`` sets them): the node must not
    commit the update it trained under the first opening; it judges the round again and
    declines it (``windows``), as it declines such a round opened so from the start."""
    world = reopenable.world
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "committed"
    reopenable.reopen(commit_seconds=45)
    again = node.participate(world.round)
    assert again is not None and again.phase == "skipped", again
    assert again.declined == Decline.WINDOWS, again.note
    on_chain = world.ledger.get_submission(world.round, node.address)
    assert on_chain is not None
    info = world.ledger.get_round(world.round)
    assert read_decline(on_chain.commitment, node.address, world.round, info.terms_sha256) is (
        Decline.WINDOWS
    )
    assert not (world.folder(0) / "pending" / f"update-{world.round}.safetensors").exists()


def _other_terms(world: World) -> bytes:
    own = world.fed.service.round_terms(world.round)
    return replace(own, commit_seconds=60, reveal_seconds=3600, seed=own.seed + 1).to_bytes()


def test_a142_a_round_reopened_under_other_terms_starts_over(reopenable: Reopenable) -> None:
    """Nothing published yet: the node trains again under the new terms (judged first)."""
    world = reopenable.world
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "committed"
    reopenable.reopen(terms=_other_terms(world))
    again = node.participate(world.round)
    assert again is not None and again.phase == "committed", again
    info = world.ledger.get_round(world.round)
    assert again.opened == info.key(world.ledger.address)
    assert "opened again" not in again.note  # a new record, not the old one carried over
    assert world.ledger.get_submission(world.round, node.address) is not None


def test_a142_an_update_published_before_its_round_reopened_under_other_terms_is_not_retrained(
    reopenable: Reopenable,
) -> None:
    """A second training would be a second release of the site's data for the round: the node
    sits the round out, noted, and does not stop."""
    world = reopenable.world
    node = world.node(0)
    record = world.full(node)
    assert record is not None and record.phase == "revealed"
    reopenable.reopen(terms=_other_terms(world))
    again = node.participate(world.round)
    assert again is not None and again.phase == "skipped", again
    assert "nor trained again" in again.note, again.note
    assert world.ledger.get_submission(world.round, node.address) is None
    assert world.node(0).participate(world.round) == again  # settled: a restart changes nothing


def test_a142_the_run_loop_does_not_stop_on_a_reopened_round(reopenable: Reopenable) -> None:
    """Through ``node run``: before, the loop raised NodeStateError out of the daemon."""
    world = reopenable.world
    node = world.node(0)
    seen: list[str | None] = []

    def after_poll() -> None:
        record = node.state.rounds.get(world.round)
        seen.append(None if record is None else record.phase)
        if len(seen) == 1:
            reopenable.reopen()
        if len(seen) == 3:
            node.stop_event.set()

    node.run(on_idle=after_poll)
    assert seen == ["committed"] * 3, seen
    assert world.ledger.get_submission(world.round, node.address) is not None


def test_a142_a_reopened_round_closed_while_the_node_was_away_is_skipped_not_fatal(
    reopenable: Reopenable,
) -> None:
    """The node committed, then was away while the opening was mined again and the round
    closed (here cancelled): on its return the record is of an opening the chain does not
    hold and nothing can be sent; before, the node stopped (``NodeStateError``)."""
    world = reopenable.world
    node = world.node(0)
    record = node.participate(world.round)
    assert record is not None and record.phase == "committed"
    reopenable.reopen()
    info = world.ledger.get_round(world.round)
    advance_time(world.env.w3, info.reveal_deadline - info.opened_at + 60)
    world.ledger.cancel_round(world.env.aggregator, world.round)
    back = world.node(0)  # a restarted node
    again = back.participate(world.round)
    assert again is not None and again.phase == "skipped", again
    assert "closed before this node saw it" in again.note, again.note
    assert back.participate(world.round) == again


@pytest.mark.ipfs
@pytest.mark.slow
def test_a143_a_validator_does_not_stamp_its_vote_with_a_dropped_opening(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Attack a143 (a142's validator side): the validator read a peer round's key once per
    round (issue 18) and stamped its scores.json record with it. After the round's opening
    was mined again (a shallow reorg of the opening block, before any update) the running
    node scored and voted in the new opening but recorded the dropped one's key: at its next
    restart it refused its own state (``FedtrailError``, "not this ledger's") and stopped."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger
    before = _snapshot(ledger.w3)
    r = fed.service.open_next()
    scorer = fed.nodes[0].scorer
    assert scorer.score(r) is None  # too early: the updates' windows are open; the key read
    _reorg(ledger.w3, before)
    advance_time(ledger.w3, 7)
    assert fed.service.open_next() == r  # the same round, opened again: another deadline
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    committed = scorer.score(r)
    assert committed is not None and committed.phase == "committed"
    assert committed.opened == info.key(ledger.address), "stamped with the dropped opening"
    restarted = fed.node(0).scorer  # before: FedtrailError, the node stopped
    pass_deadline(ledger, peer.score_commit_deadline)
    revealed = restarted.score(r)
    assert revealed is not None and revealed.phase == "revealed"
    assert ledger.score_vote(r, fed.nodes[0].address)[1]


@pytest.mark.ipfs
@pytest.mark.slow
def test_a143_a_validator_restarted_after_its_whole_round_was_reopened_scores_it_again(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """A deeper reorganisation (a chain controller's): the validator had committed its vote
    when the round's opening, and everything after it, was dropped and the round opened
    again. Restarted, it finds a record of an opening the chain does not hold and no vote of
    its own on chain: it scores the new opening's updates (before: ``FedtrailError``, the node
    stopped)."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger
    before = _snapshot(ledger.w3)

    def one_opening(nodes: list[Any]) -> tuple[int, Any]:
        r = fed.service.open_next()
        info = ledger.get_round(r)
        for n in nodes:
            n.participate(r)
        pass_deadline(ledger, info.commit_deadline)
        for n in nodes:
            n.participate(r)
        pass_deadline(ledger, info.reveal_deadline)
        return r, info

    r, first = one_opening(list(fed.nodes))
    committed = fed.nodes[0].scorer.score(r)
    assert committed is not None and committed.phase == "committed"
    assert committed.opened == first.key(ledger.address)
    _reorg(ledger.w3, before)
    advance_time(ledger.w3, 7)
    for i in range(3):  # the sites' own records would sit the reopened round out (their
        # updates were published: a142); the validator's scores.json is what is tested here
        (tmp_path / "nodes" / f"site-{i}" / "state.json").unlink()
    nodes = [fed.node(i) for i in range(3)]  # restarted nodes read their state again
    assert one_opening(nodes)[0] == r
    info = ledger.get_round(r)
    assert info.key(ledger.address) != committed.opened
    again = nodes[0].scorer.score(r)
    assert again is not None and again.phase == "committed", again
    assert again.opened == info.key(ledger.address)
    assert int(ledger.score_vote(r, nodes[0].address)[0], 16)


@pytest.mark.ipfs
@pytest.mark.slow
def test_a145_a_validator_scores_a_round_reopened_as_a_peer_round(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """Attack a145: the validator cached whether a round is a peer round for the life of its
    process. A round opened as an aggregator round, dropped by a reorganisation and opened
    again as a peer round (the aggregator and a chain controller together) was never scored by
    a running honest node: it lent the round no vote, leaving the medians to the others."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, valuation_mode="aggregator")
    ledger, service = fed.ledger, fed.service
    before = _snapshot(ledger.w3)
    r = service.open_next()
    assert ledger.get_peer_round(r) is None
    for n in fed.nodes:
        n.participate(r)
        assert n.scorer.score(r) is None  # not a peer round: nothing to score (cached)
    _reorg(ledger.w3, before)
    advance_time(ledger.w3, 7)
    service.settings = replace(service.settings, valuation_mode="peers")
    assert service.open_next() == r
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    for n in fed.nodes:  # the same processes
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes:
        assert (n.participate(r) or n.state.rounds[r]).phase == "revealed"
    pass_deadline(ledger, info.reveal_deadline)
    voted = [n.scorer.score(r) for n in fed.nodes]
    assert all(v is not None and v.phase == "committed" for v in voted), voted
