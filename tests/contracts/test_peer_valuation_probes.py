"""a37: `recordPeerValuation` (issue 14, packed vectors and caller-supplied medians) probed by
an outsider on a real Anvil node: vectors packed to another byte length or re-packed with an
entry the reveal never allowed, a median above SCORE_SCALE, and a front-runner's second try.
Each is refused with the contract's own error and nothing is stored. Last, two edges of the
reputation gate that paid a cartel before the GateUndecided rule: a gated cartel that is half
of the revealed validators (it counted again and took every honest jury), and a gated minority
re-admitted to reach the quorum (it paid a poisoner in full); both rounds are now refused and
cancelled."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount

from fedtrail.errors import InvalidValuation, RoundStateError
from fedtrail.ledger import pack_scores
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import REPUTATION_GATE, GateUndecided, PeerVote, peer_outcome
from fedtrail.protocol.weights import SCORE_SCALE
from tests.contracts.federation import Fed, by_address, expect
from tests.fixtures.chain import ChainEnv

pytestmark = pytest.mark.anvil

S = SCORE_SCALE


def send(
    fed: Fed,
    round_id: int,
    sites: list[str],
    votes: list[PeerVote],
    packed: list[bytes],
    medians: list[int] | None = None,
) -> None:
    """Exactly these packed vectors and medians (the rule's, unless given), from an outsider."""
    if medians is None:
        medians = fed.ledger.peer_medians(round_id, sites, votes)
    call = fed.ledger._fn.recordPeerValuation(
        round_id, sites, [v.validator for v in votes], packed, medians, []
    )
    fed.ledger._transact(fed.env.outsider, call)


def two_site_round(fed: Fed) -> tuple[int, list[str], list[PeerVote]]:
    a, b, _ = fed.sites
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, [a, b], [10, 20])
    votes = fed.score(round_id, {a.address: [S, 600_000], b.address: [700_000, S]})
    fed.past_score_reveal(round_id)
    return round_id, sites, votes


def test_a_vector_packed_to_another_byte_length_is_refused(anvil: ChainEnv) -> None:
    """The contract reads `count` 4-byte entries; a vector one byte short or long, one entry
    short or long, or the same entries as 32-byte ABI words, is refused (VoteMismatch), even
    where the first `count` entries read back right."""
    fed = Fed(anvil)
    round_id, sites, votes = two_site_round(fed)
    good = [pack_scores(v.scores) for v in votes]
    victim = votes[1].validator
    for bad in (
        good[1] + b"\x00",
        good[1][:-1],
        good[1] + pack_scores([0]),
        good[1][:4],
        b"".join(x.to_bytes(32, "big") for x in votes[1].scores),
    ):
        with expect(InvalidValuation, "VoteMismatch", round=round_id, validator=victim):
            send(fed, round_id, sites, votes, [good[0], bad])
    assert fed.ledger.get_round(round_id).phase == Phase.OPEN
    send(fed, round_id, sites, votes, good)
    assert fed.ledger.get_round(round_id).phase == Phase.VALUED


def test_a_vector_repacked_with_other_entries_than_revealed_is_refused(anvil: ChainEnv) -> None:
    """A poster cannot swap a validator's entries, nor put an entry above SCORE_SCALE (the
    4-byte field holds up to 2**32 - 1) that would pull a median up: the packed vector must
    hash to what the reveal stored (VoteMismatch). Nor can it supply a median above SCORE_SCALE
    when the entries are right (WrongMedian: the high median is one of the entries)."""
    fed = Fed(anvil)
    round_id, sites, votes = two_site_round(fed)
    good = [pack_scores(v.scores) for v in votes]
    a_vote = votes[0]
    swapped = b"".join(x.to_bytes(4, "big") for x in reversed(a_vote.scores))
    huge = b"".join(x.to_bytes(4, "big") for x in (a_vote.scores[0], 2**32 - 1))
    for bad in (swapped, huge):
        with expect(InvalidValuation, "VoteMismatch", round=round_id, validator=a_vote.validator):
            send(fed, round_id, sites, votes, [bad, good[1]])
    right = fed.ledger.peer_medians(round_id, sites, votes)
    b_site = sites[1]
    with expect(InvalidValuation, "WrongMedian", round=round_id, site=b_site, supplied=2**32 - 1):
        send(fed, round_id, sites, votes, good, [right[0], 2**32 - 1])
    with expect(InvalidValuation, "WrongMedian", round=round_id, site=b_site, supplied=S + 1):
        send(fed, round_id, sites, votes, good, [right[0], S + 1])
    send(fed, round_id, sites, votes, good)
    scores = {s.site: s.score for s in fed.ledger.get_submissions(round_id)}
    assert [scores[s] for s in sites] == right


def test_a_front_runner_records_the_only_valuation_and_no_second_post_lands(
    anvil: ChainEnv,
) -> None:
    """Anyone may record; the inputs are fixed by the chain (exact sites, validators, vectors,
    withheld list; each high median unique), so an outsider that posts first posts the
    aggregator's valuation, and the aggregator's own post then reverts on the phase."""
    fed = Fed(anvil)
    round_id, sites, votes = two_site_round(fed)
    fed.ledger.record_peer_valuation(fed.env.outsider, round_id, sites, votes)
    first = {(s.site, s.score, s.weight) for s in fed.ledger.get_submissions(round_id)}
    with expect(RoundStateError, "WrongPhase", round=round_id):
        fed.ledger.record_peer_valuation(fed.agg, round_id, sites, votes)
    assert {(s.site, s.score, s.weight) for s in fed.ledger.get_submissions(round_id)} == first


def test_a_gated_cartel_that_is_half_of_the_revealed_validators_gets_the_round_refused(
    anvil: ChainEnv,
) -> None:
    """Five sites, default quorum 3. Round 1, all five vote; a cartel of two zeroes everyone
    else: half of each honest jury of four, so the high median keeps the honest scores, and
    both fall to validator reputation 0 (gated). Round 2, one honest site submits nothing and
    abstains from scoring: four reveal, two pass the gate, exactly half. Counting everyone (the
    rule before) gave each honest submitter a jury of three with two cartel zeros: both
    PEER_REJECTED, the cartel took all the weight. Now the round cannot be valued
    (GateUndecided, nothing stored, nobody rated) and the aggregator cancels it; once the
    abstainer votes again (round 3: three of five pass) the gate holds and every honest site
    keeps its full score."""
    fed = Fed(anvil, n_sites=5)
    c1, c2, h1, h2, h3 = sorted(fed.sites, key=lambda s: int(s.address, 16))
    cartel = [c1, c2]

    def vectors(sites: list[str], voters: list[LocalAccount]) -> dict[str, list[int]]:
        """Honest validators give everyone full marks; the cartel zeroes every honest site."""
        liars = {c.address for c in cartel}
        return {
            v.address: [0 if v.address in liars and s not in liars else S for s in sites]
            for v in voters
        }

    r1 = fed.open_peer(quorum=3)
    sites = fed.submit(r1, fed.sites, [100] * 5)
    votes = fed.score(r1, vectors(sites, fed.sites))
    fed.ledger.record_peer_valuation(fed.env.outsider, r1, sites, votes)
    assert {s.site: s.score for s in fed.ledger.get_submissions(r1)} == dict.fromkeys(sites, S)
    for c in cartel:
        assert fed.ledger.validator_standing(c.address).reputation < REPUTATION_GATE
    fed.finalize(r1, "g1")

    r2 = fed.open_peer(quorum=3, model="g1")
    present = [c1, c2, h1, h2]  # h3 neither submits nor scores
    sites = fed.submit(r2, present, [100] * 4)
    votes = fed.score(r2, vectors(sites, present))
    fed.past_score_reveal(r2)
    with pytest.raises(GateUndecided) as undecided:
        fed.ledger.peer_outcome(r2, sites=sites, votes=votes)
    assert (undecided.value.passed, undecided.value.votes, undecided.value.quorum) == (2, 4, 3)
    standing = {c.address: fed.ledger.validator_standing(c.address) for c in present}
    # whatever medians the poster supplies, the gate refuses before any of them is read
    everyone = peer_outcome(sites, votes, standing={}, quorum=3).scores
    for medians in (None, list(everyone)):
        with expect(RoundStateError, "GateUndecided", round=r2, passed=2, votes=4, quorum=3):
            send(fed, r2, sites, votes, [pack_scores(v.scores) for v in votes], medians)
    assert fed.ledger.get_round(r2).phase == Phase.OPEN
    assert all((s.score, s.weight) == (0, 0) for s in fed.ledger.get_submissions(r2))
    assert {c.address: fed.ledger.validator_standing(c.address) for c in present} == standing
    # the existing cancel path unsticks it (the aggregator, after the score reveal deadline)
    fed.ledger.cancel_round(fed.agg, r2)
    assert fed.ledger.get_round(r2).phase == Phase.CANCELLED
    assert fed.ledger.events("ValidatorRated", argument_filters={"round": r2}) == []

    r3 = fed.open_peer(quorum=3, model="g1")
    sites = fed.submit(r3, fed.sites, [100] * 5)
    votes = fed.score(r3, vectors(sites, fed.sites))
    fed.ledger.record_peer_valuation(fed.env.outsider, r3, sites, votes)
    assert fed.ledger.peer_outcome(r3).counted == tuple(
        by_address([h1.address, h2.address, h3.address])
    )
    subs = {s.site: s for s in fed.ledger.get_submissions(r3)}
    for h in (h1, h2, h3):
        assert (subs[h.address].score, subs[h.address].reason) == (S, Reason.OK)
    assert sum(subs[c.address].weight for c in cartel) < sum(s.weight for s in subs.values()) // 2


def test_gated_stampers_do_not_make_the_quorum_that_pays_a_poisoner(anvil: ChainEnv) -> None:
    """Seven sites, the default quorum 4. Round 1, all seven vote; two stampers score every
    other site 0 (distance SCORE_SCALE: validator reputation 0, gated). Round 2, two honest
    sites abstain; five reveal: the poisoner (validates honestly), the two stampers (full marks
    for everyone) and two honest validators (0 for the poisoner). Three pass the gate, a
    majority of the five but fewer than the quorum. Re-admitting the stampers to reach it (the
    rule before) split the poisoner's jury two against two and the high median paid it in
    full. Now a gated vote is no vote towards the quorum: the round cannot be valued
    (GateUndecided) and is cancelled, the poisoner unpaid. The same votes in a round at quorum
    3 are valued with the stampers left out: the poisoner's jury is the two honest validators,
    its score 0."""
    fed = Fed(anvil, n_sites=7)
    ordered = sorted(fed.sites, key=lambda s: int(s.address, 16))
    poisoner, s1, s2, h1, h2, h3, h4 = ordered
    stampers = {s1.address, s2.address}

    r1 = fed.open_peer(quorum=4)
    sites = fed.submit(r1, fed.sites, [100] * 7)
    first: dict[str, list[int]] = {
        v.address: [0 if v.address in stampers else S for _ in sites] for v in fed.sites
    }
    votes = fed.score(r1, first)
    fed.ledger.record_peer_valuation(fed.env.outsider, r1, sites, votes)
    assert {s.site: s.score for s in fed.ledger.get_submissions(r1)} == dict.fromkeys(sites, S)
    for s in (s1, s2):
        assert fed.ledger.validator_standing(s.address).reputation < REPUTATION_GATE
    fed.finalize(r1, "g1")

    present = [poisoner, s1, s2, h1, h2]  # h3 and h4 abstain

    def second(sites: list[str]) -> dict[str, list[int]]:
        return {
            v.address: [
                0 if s == poisoner.address and v.address in {h1.address, h2.address} else S
                for s in sites
            ]
            for v in present
        }

    r2 = fed.open_peer(quorum=4, model="g1")
    sites = fed.submit(r2, present, [100] * 5)
    votes = fed.score(r2, second(sites))
    fed.past_score_reveal(r2)
    with expect(RoundStateError, "GateUndecided", round=r2, passed=3, votes=5, quorum=4):
        fed.ledger.record_peer_valuation(fed.env.outsider, r2, sites, votes)
    standing = fed.ledger.validator_ratings_before(r2)
    with pytest.raises(GateUndecided, match="a majority below the quorum 4"):
        peer_outcome(sites, votes, standing=standing, quorum=4)
    assert all(s.weight == 0 for s in fed.ledger.get_submissions(r2))
    fed.ledger.cancel_round(fed.agg, r2)
    assert fed.ledger.get_round(r2).phase == Phase.CANCELLED

    r3 = fed.open_peer(quorum=3, model="g1")
    sites = fed.submit(r3, present, [100] * 5)
    votes = fed.score(r3, second(sites))
    fed.past_score_reveal(r3)
    fed.ledger.record_peer_valuation(fed.env.outsider, r3, sites, votes)
    subs = {s.site: s for s in fed.ledger.get_submissions(r3)}
    assert (subs[poisoner.address].score, subs[poisoner.address].weight) == (0, 0)
    assert subs[poisoner.address].reason == Reason.PEER_REJECTED
    outcome = fed.ledger.peer_outcome(r3)
    assert outcome.counted == tuple(by_address([poisoner.address, h1.address, h2.address]))
    assert h3.address not in sites and h4.address not in sites
