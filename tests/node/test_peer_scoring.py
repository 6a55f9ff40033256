"""A site as a validator of peer rounds (issue 14) on Anvil + IPFS: its score vector and salt are
on disk before the commitment is sent, a restart between any two steps commits and reveals that
same vector (a commitment or reveal the chain holds is never sent again), a validator that
misses the score commit window is recorded as skipped with the reason and excluded, and the
round still finalizes when the quorum holds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.errors import FedtrailError
from fedtrail.keys import create_keystore
from fedtrail.ledger import score_commitment
from fedtrail.node.config import CONFIG_NAME, NodeConfig, write_node_config
from fedtrail.node.daemon import NodeHooks
from fedtrail.node.scoring import SCORES_NAME, ScoreState
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation.chained import round_references
from tests.aggregator.peer_setup import pass_deadline, peer_federation

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]


class Crash(FedtrailError):
    """Stands for the process dying at a step (raised by the step hook)."""


def crash_at(step: str) -> NodeHooks:
    def at_step(name: str) -> None:
        if name == step:
            raise Crash(f"crashed at {name}")

    return NodeHooks(at_step=at_step)


def test_restarts_commit_and_reveal_the_recorded_vector_and_a_late_validator_is_excluded(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)  # quorum: 2 of 3
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None and peer.quorum == 2
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)

    # site 0 dies right after writing its vector, before the commitment is sent
    with pytest.raises(Crash):
        fed.node(0, hooks=crash_at("scored")).scorer.score(r)
    on_disk = ScoreState.load(fed.nodes[0].folder / SCORES_NAME).rounds[r]
    assert on_disk.phase == "scored" and len(on_disk.scores) == 3 and len(on_disk.salt) == 64
    assert int(ledger.score_vote(r, fed.nodes[0].address)[0], 16) == 0
    # restarted: it commits that vector with that salt, not a new scoring
    again = fed.node(0).scorer.score(r)
    assert again is not None and again.phase == "committed"
    assert (again.scores, again.salt) == (on_disk.scores, on_disk.salt)
    stored, revealed = ledger.score_vote(r, fed.nodes[0].address)
    expected = score_commitment(
        fed.nodes[0].address, r, on_disk.scores, bytes.fromhex(on_disk.salt)
    )
    assert stored.lower().removeprefix("0x") == expected.lower().removeprefix("0x")
    assert not revealed
    # a restart before the reveal recognises the commitment on chain and sends no second one
    assert fed.node(0).scorer.score(r).phase == "committed"  # type: ignore[union-attr]
    fed.nodes[1].scorer.score(r)

    pass_deadline(ledger, peer.score_commit_deadline)
    # site 2 wakes up after the score commit window: skipped with the reason, nothing sent
    late = fed.nodes[2].scorer.score(r)
    assert late is not None and late.phase == "skipped"
    assert "score commit window closed" in late.note
    # a fresh process reveals the same vector; a second reveal attempt is recognised
    assert fed.node(0).scorer.score(r).phase == "revealed"  # type: ignore[union-attr]
    assert fed.nodes[1].scorer.score(r).phase == "revealed"  # type: ignore[union-attr]
    commits = ledger.events("ScoresCommitted", argument_filters={"round": r})
    assert sorted(e.args["validator"] for e in commits) == sorted(
        n.address for n in fed.nodes[:2]
    )  # one commitment each, none from the late validator
    votes = ledger.peer_votes(r)
    assert [v.validator for v in votes] == sorted(
        (n.address for n in fed.nodes[:2]), key=lambda a: int(a, 16)
    )
    assert list(next(v for v in votes if v.validator == fed.nodes[0].address).scores) == (
        on_disk.scores
    )

    # the quorum holds without the late validator: the round is valued and finalized
    pass_deadline(ledger, peer.score_reveal_deadline)
    assert service.step() is None and ledger.get_round(r).phase == Phase.VALUED
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    subs = ledger.get_submissions(r)
    assert [s.score for s in subs] == list(ledger.peer_outcome(r).scores)
    # site 2 validated nothing, yet its update was scored by the two others
    assert len(subs) == 3


def _wait(what: str, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_daemon_loop_scores_a_peer_round_and_keeps_its_standing(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """`node run --once` (SiteNode.run) submits, then scores, and returns only once its vote is
    revealed; with standing in the terms each validator keeps its accumulated values, which
    the next round's history is built from (with the public references of the round)."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3, standing=True)
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    info, peer = ledger.get_round(r), ledger.get_peer_round(r)
    assert peer is not None
    nodes = [fed.node(i) for i in range(3)]
    threads = [threading.Thread(target=n.run, kwargs={"once": True}) for n in nodes]
    for t in threads:
        t.start()
    try:
        _wait(
            "the commitments",
            lambda: len(ledger.get_submissions(r, include_unrevealed=True)) == 3,
        )
        pass_deadline(ledger, info.commit_deadline)
        _wait("the reveals", lambda: ledger.get_round(r).submission_count == 3)
        pass_deadline(ledger, info.reveal_deadline)
        _wait("the score commitments", lambda: ledger.get_peer_round(r).commit_count == 3)  # type: ignore[union-attr]
        assert all(t.is_alive() for t in threads)  # the update is done, the scoring is not
        pass_deadline(ledger, peer.score_commit_deadline)
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        for n in nodes:
            n.stop_event.set()
    assert ledger.get_peer_round(r).vote_count == 3  # type: ignore[union-attr]
    # a site records the peer valuation itself (anyone may): the aggregator just goes on
    sites = [s.site for s in ledger.get_submissions(r)]
    ledger.record_peer_valuation(nodes[0].account, r, sites, ledger.peer_votes(r))
    assert service.combine(r) is None
    outcome = service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    # `node status` shows the site's part as a validator: its scoring and its standing
    folder = nodes[0].folder
    create_keystore(folder / "keystore.json", "pw", account=nodes[0].account, kdf_n=2)
    write_node_config(folder / CONFIG_NAME, NodeConfig(rpc_url=anvil_url, contract=ledger.address))
    shown = CliRunner().invoke(cli, ["node", "status", str(folder), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    (row,) = doc["rounds"]
    assert row["scoring"] == "revealed" and row["scoring_note"] == ""
    assert row["scores_given"] == [s / SCORE_SCALE for s in nodes[0].scorer.state.rounds[r].scores]
    assert doc["validator_rated_rounds"] == 1 and 0 < doc["validator_reputation"] <= 1
    for n in nodes:
        saved = json.loads((n.folder / "validator" / f"history-{r}.json").read_text())
        assert saved["round"] == r and saved["valued_rounds"] == 1  # round 1 was its warm-up
        history = n.scorer.history_for(r + 1)
        assert history.valued_rounds == 1
        assert dict(history.accumulated) == saved["accumulated"]
        assert f"the global delta of round {r}" in history.references
        others = [s.site for s in ledger.get_submissions(r)]
        assert all(f"{s}'s update of round {r}" in history.references for s in others)
        # the round's updates and start model it scored with were kept, not read again, and
        # are the references a fresh read gives, bit for bit
        kept = n.scorer._decoded.updates
        assert all((r, s.sha256) in kept for s in ledger.get_submissions(r))
        fresh = round_references(ledger, n.scorer.store, r, n.scorer.spec, skip_unreadable=True)
        assert list(fresh) == list(history.references)
        for label, delta in fresh.items():
            assert list(history.references[label]) == list(delta)
            assert all(torch.equal(history.references[label][k], v) for k, v in delta.items())


class _PinLog:
    """The node's store, recording every pin."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.pins: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def pin(self, cid: str) -> None:
        self.pins.append(cid)
        self._store.pin(cid)  # type: ignore[attr-defined]


def test_a_validator_pins_every_update_it_scores(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    """A validator keeps what it scored: an update its peers weighted then stays retrievable
    from them, whatever its site or the aggregator does with their copies (so a valued round
    cannot be cancelled as "unreadable" while a validator still serves the blob)."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger, service = fed.ledger, fed.service
    r = service.open_next()
    info = ledger.get_round(r)
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for n in fed.nodes:
        n.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    scorer = fed.nodes[0].scorer
    pins = _PinLog(scorer.store)
    scorer.store = pins  # type: ignore[assignment]
    record = scorer.score(r)
    assert record is not None and record.phase == "committed"
    assert sorted(pins.pins) == sorted(s.cid for s in ledger.get_submissions(r))
