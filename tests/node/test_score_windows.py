"""A peer round whose score windows on chain are not its terms' (attack a132): the aggregator
writes terms whose score windows pass every site's ``[accept]`` floors and opens the round on
chain with the contract's 10-s minimum. Before, the node checked only the update windows
against the chain (a40): it trained and committed, and as a validator it scored under a score
reveal window too short for it, where a vote committed and not revealed is rated at the largest
distance. Now the node declines the round on chain (``windows``) before training, and its
validator does not score it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedtrail.ledger import read_decline
from fedtrail.protocol.codes import Decline
from tests.aggregator.peer_setup import pass_deadline, peer_federation

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]

SHORT = 10  # the contract's minimum window


def test_a132_score_windows_on_chain_shorter_than_the_terms_are_declined_before_training(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger
    real = ledger.open_peer_round

    def short_score_windows(*args: Any, **kwargs: Any) -> Any:
        kwargs["score_commit_seconds"] = SHORT
        kwargs["score_reveal_seconds"] = SHORT
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, "open_peer_round", short_score_windows)
    r = fed.service.open_next()
    monkeypatch.undo()
    terms = fed.service.round_terms(r)
    peer = ledger.get_peer_round(r)
    info = ledger.get_round(r)
    assert peer is not None and terms.score_reveal_seconds is not None
    assert terms.score_reveal_seconds > SHORT  # the terms pass the sites' floors
    assert peer.score_reveal_deadline - peer.score_commit_deadline == SHORT

    node = fed.nodes[0]
    record = node.participate(r)
    assert record is not None and record.phase == "skipped", record
    assert "score" in record.note and "window" in record.note, record.note
    on_chain = ledger.get_submission(r, node.address)
    assert on_chain is not None
    declined = read_decline(on_chain.commitment, node.address, r, info.terms_sha256)
    assert declined is Decline.WINDOWS
    for other in fed.nodes[1:]:
        other.participate(r)
    pass_deadline(ledger, info.commit_deadline)
    for other in fed.nodes[1:]:
        other.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    vote = node.scorer.score(r)
    assert vote is not None and vote.phase == "skipped", vote
    assert "window" in vote.note, vote.note
    assert int(ledger.score_vote(r, node.address)[0], 16) == 0  # no vote lent


def test_a133_terms_promising_peer_scoring_on_an_aggregator_round_are_declined(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terms that say the round's peers score it (``mode`` peers, score windows) under a round
    opened on chain as an aggregator round (``openRound``): the aggregator would value alone
    what its sites took part in because their peers would score it. Before, the node read the
    chain's peer record only as a validator, after the reveal deadline, and trained; ``audit
    verify``'s ``peers.quorum`` failed the round only afterwards."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger

    def aggregator_round(signer: Any, **kwargs: Any) -> Any:
        for peer_only in ("score_commit_seconds", "score_reveal_seconds", "quorum"):
            del kwargs[peer_only]
        model_cid, model_sha256 = kwargs.pop("model_cid"), kwargs.pop("model_sha256")
        return ledger.open_round(signer, model_cid, model_sha256, **kwargs)

    monkeypatch.setattr(ledger, "open_peer_round", aggregator_round)
    r = fed.service.open_next()
    monkeypatch.undo()
    assert ledger.get_peer_round(r) is None
    assert fed.service.round_terms(r).valuation.get("mode") == "peers"
    node = fed.nodes[0]
    record = node.participate(r)
    assert record is not None and record.phase == "skipped", record
    assert "no peer round" in record.note, record.note
    on_chain = ledger.get_submission(r, node.address)
    assert on_chain is not None
    info = ledger.get_round(r)
    assert read_decline(on_chain.commitment, node.address, r, info.terms_sha256) is Decline.WINDOWS
