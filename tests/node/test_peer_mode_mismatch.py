"""The reverse of attack a133: a round opened on chain as a peer round (``openPeerRound``, score
windows on chain) under terms that say the aggregator values it (no score windows). The terms
promised valuation on the aggregator's split and no score windows; the chain runs the sites'
votes under windows nobody agreed to. Before, the node compared score windows only when the
terms named some, so it trained and committed, and its validator scored the round. Now the
node declines it on chain (``windows``) before training and its validator does not score it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedtrail.ledger import Ledger, read_decline
from fedtrail.protocol.codes import Decline
from tests.aggregator.peer_setup import pass_deadline
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_peer_round_on_chain_under_aggregator_terms_is_declined_and_not_scored(
    embedded: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def as_peer_round(self: Ledger, signer: Any, model_cid: str, model_sha256: str, **kw: Any):
        return self.open_peer_round(
            signer,
            model_cid=model_cid,
            model_sha256=model_sha256,
            score_commit_seconds=600,
            score_reveal_seconds=600,
            quorum=1,
            **kw,
        )

    monkeypatch.setattr(Ledger, "open_round", as_peer_round)
    world = World(embedded, tmp_path)  # the aggregator's own terms: aggregator valuation
    monkeypatch.undo()
    r, ledger = world.round, world.ledger
    assert ledger.get_peer_round(r) is not None
    terms = world.fed.service.round_terms(r)
    assert terms.score_commit_seconds is None and terms.valuation.get("mode") != "peers"

    node = world.node(0)
    record = node.participate(r)
    assert record is not None and record.phase == "skipped", record
    # the a139 case, valuation_mode_difference's wording
    assert "the terms name no" in record.note, record.note
    on_chain = ledger.get_submission(r, node.address)
    assert on_chain is not None
    info = ledger.get_round(r)
    assert read_decline(on_chain.commitment, node.address, r, info.terms_sha256) is Decline.WINDOWS

    pass_deadline(ledger, info.reveal_deadline)
    vote = node.scorer.score(r)
    assert vote is not None and vote.phase == "skipped", vote
    assert "the terms name none" in vote.note, vote.note
    # one home for the check (valuation_mode_difference): it was also a branch of the score
    # window comparison, and the validator's note stated it twice
    assert vote.note.count("opened a peer round") == 1, vote.note
    assert int(ledger.score_vote(r, node.address)[0], 16) == 0  # no vote lent
