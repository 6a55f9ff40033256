"""Attack a139, the mirror of a133, on real Anvil + IPFS: the aggregator opens a peer round on
chain (``openPeerRound``, quorum 1) under terms that name no peer scoring (no ``mode``, no
``quorum``, no score windows: the aggregator's valuation on its split, what the sites'
``[accept]`` consented to). ``audit verify``'s ``peers.quorum`` fails such a round once
valued ("the chain holds a peer round, the terms do not say mode 'peers'"), as does the
independent reader's ``peers.windows`` (the terms name no score windows; not run here: the
round would need validators and a finalize). Terms that name score windows without
``mode`` ``"peers"`` no fedtrail parser reads (``RoundTerms``: "score windows belong to peer
rounds only"), which the reader now holds too (``terms.canonical``,
``tests/scripts/test_reader_terms_fields.py``; it read a missing quorum as 1). The node trained
and committed in such a round, and its validator scored it: both read the chain's peer record
only against terms that name score windows (a132, a133). Now the node declines it on chain
(``windows``) before training and its validator lends it no vote."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedtrail.aggregator.service import AggregatorService
from fedtrail.auditor.verify import verify_round
from fedtrail.ledger import read_decline
from fedtrail.protocol.codes import Decline, Phase
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.federation import Federation
from tests.aggregator.peer_setup import pass_deadline, peer_federation
from tests.scripts.test_huge_reveal_cid import _reader

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.slow,
]

PEER_ONLY = ("mode", "quorum", "validator_game", "public_screen")


def _open_unnamed(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> int:
    """Opens the next round as a peer round on chain (quorum 1, the score windows the honest
    terms would have named) under terms that do not say so."""
    ledger = fed.ledger
    honest = AggregatorService.round_terms
    said: dict[str, RoundTerms] = {}

    def unnamed(self: AggregatorService, round_id: int) -> RoundTerms:
        terms = honest(self, round_id)
        valuation = {k: v for k, v in terms.valuation.items() if k not in PEER_ONLY}
        said["terms"] = terms
        return replace(
            terms, valuation=valuation, score_commit_seconds=None, score_reveal_seconds=None
        )

    def peer_round(signer: Any, model_cid: str, model_sha256: str, **kwargs: Any) -> Any:
        terms = said["terms"]
        return ledger.open_peer_round(
            signer,
            model_cid=model_cid,
            model_sha256=model_sha256,
            score_commit_seconds=terms.score_commit_seconds,
            score_reveal_seconds=terms.score_reveal_seconds,
            quorum=1,
            **kwargs,
        )

    with monkeypatch.context() as patch:
        patch.setattr(AggregatorService, "round_terms", unnamed)
        patch.setattr(ledger, "open_round", peer_round)
        r = fed.service.open_next()
    assert ledger.get_peer_round(r) is not None
    assert fed.service.terms(r)[0].valuation.get("mode") is None
    assert fed.service.terms(r)[0].score_commit_seconds is None
    return r


def test_a139_a_node_declines_a_peer_round_its_terms_do_not_name(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    r = _open_unnamed(fed, monkeypatch)
    node = fed.nodes[0]
    record = node.participate(r)
    assert record is not None and record.phase == "skipped", record
    assert "name no score windows" in record.note, record.note
    info = fed.ledger.get_round(r)
    on_chain = fed.ledger.get_submission(r, node.address)
    assert on_chain is not None
    assert read_decline(on_chain.commitment, node.address, r, info.terms_sha256) is Decline.WINDOWS
    # nor does its validator lend the round a vote
    for other in fed.nodes[1:]:
        other.participate(r)
    pass_deadline(fed.ledger, info.commit_deadline)
    for other in fed.nodes[1:]:
        other.participate(r)
    pass_deadline(fed.ledger, info.reveal_deadline)
    vote = node.scorer.score(r)
    assert vote is not None and vote.phase == "skipped", vote
    assert "name no score windows" in vote.note, vote.note


def test_a140_a_peer_round_the_chain_never_opened_fails_both_readers(
    anvil_url: str, ipfs_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a140, a133's round carried to the end: terms that say the sites score the round
    (``mode`` peers, quorum, score windows) under a round opened on chain as an aggregator
    round, taken by the aggregator's own nodes (honest ones decline it since a133), valued by
    the aggregator alone and finalized by the service as it stands. ``audit verify`` fails it
    (``peers.quorum``: "the chain holds an aggregator round"); the independent reader checked a
    peer round's terms against the chain only when the chain had opened one, and passed every
    check. Now it fails ``peers.windows`` when the terms say ``mode`` ``"peers"`` and the chain
    holds no ``PeerScoringOpened``."""
    fed = peer_federation(tmp_path, anvil_url, ipfs_api, sites=3)
    ledger = fed.ledger

    def aggregator_round(signer: Any, **kwargs: Any) -> Any:
        for peer_only in ("score_commit_seconds", "score_reveal_seconds", "quorum"):
            del kwargs[peer_only]
        model_cid, model_sha256 = kwargs.pop("model_cid"), kwargs.pop("model_sha256")
        return ledger.open_round(signer, model_cid, model_sha256, **kwargs)

    monkeypatch.setattr(ledger, "open_peer_round", aggregator_round)
    # the aggregator's own nodes: they take the round (a133's check skipped)
    monkeypatch.setattr(
        "fedtrail.node.daemon.valuation_mode_difference", lambda terms, *, peer_round: None
    )
    r = fed.service.open_next()
    assert ledger.get_peer_round(r) is None
    for node in fed.nodes:
        node.participate(r)
    info = ledger.get_round(r)
    pass_deadline(ledger, info.commit_deadline)
    for node in fed.nodes:
        node.participate(r)
    pass_deadline(ledger, info.reveal_deadline)
    for _ in range(5):
        fed.service.step()
        if ledger.get_round(r).phase == Phase.FINALIZED:
            break
    assert ledger.get_round(r).phase == Phase.FINALIZED
    audit = verify_round(ledger, fed.store, r)
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert "aggregator round" in failed.get("peers.quorum", ""), failed
    reader = _reader()
    deployment = tmp_path / "deployment.json"
    deployment.write_text(fed.deployment.to_json())
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(
            ["--rpc-url", anvil_url, "--deployment", str(deployment), "--ipfs", "ipfs:" + ipfs_api]
        )
    bad = {x["check"] for x in reader.RESULTS if x["round"] == r and x["result"] == "FAIL"}
    assert "peers.windows" in bad, bad
