"""Peer rounds in the protocol documents: the terms' score windows, the log's valuation mode and
quorum, and the log's block of revealed score vectors (older documents keep their bytes)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from fedtrail.protocol.peers import PeerVote
from fedtrail.protocol.roundlog import InvalidLog, RoundLog, ValuationSettings
from fedtrail.protocol.terms import InvalidTerms, RoundTerms
from tests.fedtrail.protocol.test_roundlog import _record

ZERO = "0" * 64
PEERS = {"method": "shapley", "metric": "balanced_loss", "mode": "peers", "quorum": 3}


def _terms(**changes: Any) -> RoundTerms:
    base: dict[str, Any] = {
        "round": 1,
        "aggregation_rule": {"name": "weighted"},
        "valuation": {"method": "shapley"},
        "model_spec": {"arch": "smallcnn"},
        "spec_hash": ZERO,
        "seed": 0,
        "validation_sha256": ZERO,
        "validation_images": 10,
        "commit_seconds": 60,
        "reveal_seconds": 60,
    }
    base.update(changes)
    return RoundTerms(**base)


def test_aggregator_round_terms_keep_their_windows_bytes() -> None:
    doc = json.loads(_terms().to_bytes())
    assert doc["windows"] == {"commit_seconds": 60, "reveal_seconds": 60}


def test_peer_round_terms_round_trip_their_score_windows() -> None:
    terms = _terms(valuation=PEERS, score_commit_seconds=30, score_reveal_seconds=40)
    blob = terms.to_bytes()
    assert json.loads(blob)["windows"]["score_reveal_seconds"] == 40
    back = RoundTerms.from_bytes(blob)
    assert back == terms and back.to_bytes() == blob


@pytest.mark.parametrize(
    ("valuation", "windows"),
    [(PEERS, (None, None)), (PEERS, (30, 0)), ({"method": "shapley"}, (30, 30))],
)
def test_score_windows_belong_to_peer_rounds_only(
    valuation: dict[str, Any], windows: tuple[int | None, int | None]
) -> None:
    with pytest.raises(InvalidTerms, match="score windows"):
        _terms(
            valuation=valuation, score_commit_seconds=windows[0], score_reveal_seconds=windows[1]
        )


def test_valuation_mode_and_quorum_are_checked_and_optional() -> None:
    plain = ValuationSettings(method="shapley", metric="loss")
    assert "mode" not in plain.to_json() and not plain.peers
    peers = ValuationSettings.from_json(PEERS)
    assert peers.peers and peers.quorum == 3 and peers.to_json() == PEERS
    with pytest.raises(InvalidLog, match="quorum"):
        ValuationSettings(method="shapley", metric="loss", mode="peers")
    with pytest.raises(InvalidLog, match="quorum"):
        ValuationSettings(method="shapley", metric="loss", quorum=2)
    with pytest.raises(InvalidLog, match="mode"):
        ValuationSettings.from_json({**PEERS, "mode": "committee"})


def test_the_log_carries_the_revealed_vectors_only_in_peer_rounds() -> None:
    base = _record()
    assert "peers" not in base.to_json()
    votes = (
        PeerVote(validator="0x" + "11" * 20, scores=(0, 1_000_000)),
        PeerVote(validator="0x" + "22" * 20, scores=(900_000, 0)),
    )
    log = dataclasses.replace(base, peer_votes=votes)
    back = RoundLog.from_bytes(log.to_bytes())
    assert back.peer_votes == votes
    assert RoundLog.from_bytes(base.to_bytes()).peer_votes is None
    bad = log.to_json()
    bad["peers"]["votes"][0]["scores"][0] = 1_000_001
    with pytest.raises(InvalidLog, match="peers"):
        RoundLog.from_json(bad)


def test_the_validator_game_round_trips_and_belongs_to_peer_rounds_only() -> None:
    doc = {**PEERS, "validator_game": "linear_shapley"}
    settings = ValuationSettings.from_json(doc)
    assert settings.validator_game == "linear_shapley" and settings.to_json() == doc
    # absent (every peer log written before it): the round's method, and no key written
    assert ValuationSettings.from_json(PEERS).validator_game is None
    assert "validator_game" not in ValuationSettings.from_json(PEERS).to_json()
    with pytest.raises(InvalidLog, match="validator game is set only for peer"):
        ValuationSettings(method="shapley", metric="loss", validator_game="loo")
    with pytest.raises(InvalidLog, match="validator_game"):
        ValuationSettings.from_json({**PEERS, "validator_game": 3})
    terms = _terms(valuation=doc, score_commit_seconds=30, score_reveal_seconds=30)
    blob = terms.to_bytes()
    back = RoundTerms.from_bytes(blob)
    assert back == terms and back.to_bytes() == blob
    assert ValuationSettings.from_json(back.valuation).validator_game == "linear_shapley"


@pytest.mark.parametrize(
    ("game", "metric", "why"),
    [
        ("exact_shapley", "balanced_loss", "one of"),  # a name no validator plays
        ("linear_shapley", "auc", "loss metric"),  # needs a gradient: none for the AUC
    ],
)
def test_a_validator_game_no_honest_validator_can_play_is_refused(
    game: str, metric: str, why: str
) -> None:
    # Every honest validator abstains under such terms (peer_vector/value_round refuse them),
    # so only sites that vote without playing it would meet the quorum: the terms and the log
    # must not carry it (verify then fails the log, and nodes skip before fetching updates).
    doc = {**PEERS, "metric": metric, "validator_game": game}
    with pytest.raises(InvalidLog, match=why):
        ValuationSettings.from_json(doc)
    # the playable ones stay accepted
    assert ValuationSettings.from_json({**PEERS, "validator_game": "loo", "metric": "auc"})
