"""The ledger client's peer-round methods (issue 14): score commitments the contract accepts,
refusals before anything is sent, and peer_votes decoded from events and checked against state.
The contract's own rules are in tests/contracts/test_peer_scoring.py."""

from __future__ import annotations

import pytest

from fedtrail.errors import CommitmentMismatch, ConfigError, LedgerError
from fedtrail.ledger import PeerRoundInfo, ValidatorStanding, pack_scores, score_commitment
from fedtrail.protocol.peers import PeerVote
from tests.contracts.federation import Fed, by_address
from tests.fixtures.chain import ChainEnv

SALT = b"\x5a" * 32
VALIDATOR = "0x" + "ab" * 20


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


def test_score_commitment_depends_on_every_input() -> None:
    base = score_commitment(VALIDATOR, 1, [1, 2, 3], SALT)
    assert len(bytes.fromhex(base)) == 32
    variants = {
        score_commitment("0x" + "cd" * 20, 1, [1, 2, 3], SALT),
        score_commitment(VALIDATOR, 2, [1, 2, 3], SALT),
        score_commitment(VALIDATOR, 1, [1, 2, 4], SALT),
        score_commitment(VALIDATOR, 1, [1, 2, 3, 0], SALT),
        score_commitment(VALIDATOR, 1, [1, 2, 3], b"\x00" * 32),
    }
    assert base not in variants and len(variants) == 5


def test_pack_scores_is_four_big_endian_bytes_an_entry_and_refuses_out_of_range() -> None:
    """What recordPeerValuation takes for a vector: abi.encodePacked of its uint32 entries."""
    scores = [0, 1, 256, 1_000_000]
    packed = pack_scores(scores)
    assert [int.from_bytes(packed[4 * i : 4 * i + 4], "big") for i in range(4)] == scores
    assert len(packed) == 16 and packed[4:8] == b"\x00\x00\x00\x01"
    for bad in ([1_000_001], [-1]):
        with pytest.raises(ConfigError):
            pack_scores(bad)


@pytest.mark.parametrize(
    ("round_id", "scores", "salt"),
    [(0, [1], SALT), (1, [1_000_001], SALT), (1, [-1], SALT), (1, [1], b"\x00" * 31)],
)
def test_score_commitment_refuses_what_the_contract_cannot_open(
    round_id: int, scores: list[int], salt: bytes
) -> None:
    with pytest.raises(ConfigError):
        score_commitment(VALIDATOR, round_id, scores, salt)


def test_the_contract_opens_a_client_commitment_and_nothing_else(fed: Fed) -> None:
    a, b, _ = fed.sites
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, [a], [100])
    fed.ledger.commit_scores(b, round_id, score_commitment(b.address, round_id, [700_000], SALT))
    fed.past_score_commit(round_id)
    with pytest.raises(CommitmentMismatch):  # another vector does not open it
        fed.ledger.reveal_scores(b, round_id, [700_001], SALT)
    fed.ledger.reveal_scores(b, round_id, [700_000], SALT)
    assert fed.ledger.score_vote(round_id, b.address)[1] is True


def test_reveal_and_open_refuse_bad_input_before_sending(fed: Fed) -> None:
    a = fed.sites[0]
    nonce = fed.w3.eth.get_transaction_count(a.address)
    with pytest.raises(ConfigError, match="outside"):
        fed.ledger.reveal_scores(a, 1, [1_000_001], SALT)
    with pytest.raises(ConfigError, match="32 bytes"):
        fed.ledger.reveal_scores(a, 1, [1], b"short")
    with pytest.raises(ConfigError, match="quorum"):
        fed.open_peer(quorum=0)
    with pytest.raises(ConfigError, match="outside"):
        fed.ledger.record_peer_valuation(
            a, 1, [a.address], [PeerVote(validator=a.address, scores=(2_000_000,))]
        )
    assert fed.w3.eth.get_transaction_count(a.address) == nonce


def test_views_peer_round_scoring_record_and_validator_standing(fed: Fed) -> None:
    a, b, c = fed.sites
    aggregator_round = fed.open()
    assert fed.ledger.get_peer_round(aggregator_round) is None
    assert fed.ledger.peer_votes(aggregator_round) == []
    fed.past_reveal(aggregator_round)
    fed.ledger.cancel_round(fed.agg, aggregator_round)

    round_id = fed.open_peer(quorum=2)
    info = fed.ledger.get_peer_round(round_id)
    assert isinstance(info, PeerRoundInfo)
    assert (info.quorum, info.commit_count, info.vote_count) == (2, 0, 0)
    assert info.score_reveal_deadline - info.score_commit_deadline == 600
    assert fed.ledger.validator_standing(a.address) == ValidatorStanding(0, 0)
    assert fed.ledger.validator_standing("0x" + "77" * 20) == ValidatorStanding(0, 0)
    assert fed.ledger.score_vote(round_id, a.address) == ("00" * 32, False)

    sites = fed.submit(round_id, [a, b, c], [10, 20, 30])
    vectors = {
        a.address: [100_000, 200_000, 300_000],
        b.address: [400_000, 500_000, 600_000],
        c.address: [700_000, 800_000, 900_000],
    }
    # commit and reveal in descending address order: peer_votes still returns ascending order
    descending = sorted(fed.sites, key=lambda s: -int(s.address, 16))
    for v in descending:
        fed.commit_scores(round_id, v, vectors[v.address])
    fed.past_score_commit(round_id)
    for v in descending:
        fed.reveal_scores(round_id, v, vectors[v.address])
    votes = fed.ledger.peer_votes(round_id)
    assert [v.validator for v in votes] == by_address(list(vectors))
    assert all(v.scores == tuple(vectors[v.validator]) for v in votes)
    assert all(type(x) is int for v in votes for x in v.scores)
    info = fed.ledger.get_peer_round(round_id)
    assert info is not None and (info.commit_count, info.vote_count) == (3, 3)

    # the client sorts sites and votes itself
    fed.ledger.record_peer_valuation(a, round_id, sites[::-1], votes[::-1])
    rated = fed.ledger.events("ValidatorRated", argument_filters={"round": round_id})
    for event in rated:
        standing = fed.ledger.validator_standing(event.args["validator"])
        assert standing == ValidatorStanding(event.args["validatorReputation"], 1)
    assert len(rated) == 3


def test_peer_votes_refuses_an_event_that_does_not_match_the_stored_vote(
    fed: Fed, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = fed.sites
    round_id = fed.open_peer(quorum=1)
    fed.submit(round_id, [a], [100])
    fed.score(round_id, {b.address: [300_000]})
    assert fed.ledger.peer_votes(round_id) == [PeerVote(validator=b.address, scores=(300_000,))]
    real = fed.ledger.score_vote

    def tampered(round_id: int, validator: str) -> tuple[str, bool]:
        stored, revealed = real(round_id, validator)
        return "ff" + stored[2:], revealed

    monkeypatch.setattr(fed.ledger, "score_vote", tampered)
    with pytest.raises(LedgerError, match="does not match"):
        fed.ledger.peer_votes(round_id)


def test_peer_votes_of_an_earlier_round_survive_the_validators_next_reveal(fed: Fed) -> None:
    a, b, _ = fed.sites
    first = fed.open_peer(quorum=1)
    fed.submit(first, [a], [100])
    fed.score(first, {b.address: [300_000]})
    fed.past_score_reveal(first)
    fed.ledger.record_peer_valuation(b, first, [a.address], fed.ledger.peer_votes(first))
    fed.finalize(first, "g1")
    second = fed.open_peer(quorum=1, model="g1")
    fed.submit(second, [a], [100])
    fed.score(second, {b.address: [800_000]})
    assert fed.ledger.score_vote(second, b.address)[1] is True
    assert fed.ledger.score_vote(first, b.address)[1] is False  # revealed: the latest round only
    assert fed.ledger.peer_votes(first) == [PeerVote(validator=b.address, scores=(300_000,))]
    assert fed.ledger.peer_votes(second) == [PeerVote(validator=b.address, scores=(800_000,))]
