"""a37: `recordPeerValuation` (issue 14, packed vectors and caller-supplied medians) probed by
an outsider on a real Anvil node: vectors packed to another byte length or re-packed with an
entry the reveal never allowed, a median above SCORE_SCALE, and a front-runner's second try.
Each is refused with the contract's own error and nothing is stored. Last, two open edges of
the reputation gate: a gated cartel that is half of the revealed validators counts again, and a
gated minority counts again when the ungated majority is below the round's quorum."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount

from fedtrail.errors import InvalidValuation, RoundStateError
from fedtrail.ledger import pack_scores
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import REPUTATION_GATE, PeerVote, peer_outcome
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


def test_a_gated_cartel_that_is_half_of_the_revealed_validators_counts_again(
    anvil: ChainEnv,
) -> None:
    """Open (peer mode, documented trade-off): five sites, default quorum 3. Round 1, all five
    vote; a cartel of two zeroes everyone else: half of each honest jury of four, so the high
    median keeps the honest scores, and both fall to validator reputation 0 (gated). Round 2,
    one honest site submits nothing and abstains from scoring: four reveal, two pass the gate,
    fewer than the quorum (3) and not a majority, so everyone counts and each remaining honest
    site's jury of three holds two cartel zeros: both honest submitters are PEER_REJECTED and
    the cartel takes all the weight. With the gate in force they would keep their scores."""
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
    outcome = fed.ledger.peer_outcome(r2, sites=sites, votes=votes)
    assert outcome.counted == tuple(by_address([v.address for v in present]))
    fed.ledger.record_peer_valuation(fed.env.outsider, r2, sites, votes)
    subs = {s.site: s for s in fed.ledger.get_submissions(r2)}
    for h in (h1, h2):
        assert (subs[h.address].score, subs[h.address].reason) == (0, Reason.PEER_REJECTED)
    assert sum(subs[c.address].weight for c in cartel) == sum(s.weight for s in subs.values())
    # the same round with the cartel left out, as a strict-majority gate would do
    kept = [v for v in votes if v.validator in {h1.address, h2.address}]
    gated = peer_outcome(sites, kept, standing={}, quorum=1).scores
    assert [gated[sites.index(h.address)] for h in (h1, h2)] == [S, S]
    assert h3.address not in sites


def test_a_gated_pair_of_stampers_pays_a_poisoner_in_full_below_the_quorum(
    anvil: ChainEnv,
) -> None:
    """Open (peer mode): the gate's quorum term re-admits a gated minority. Seven sites, the
    default quorum 4. Round 1, all seven vote; two stampers score every other site 0 (distance
    SCORE_SCALE: validator reputation 0, gated). Round 2, two honest sites abstain; five reveal:
    the poisoner (validates honestly), the two stampers (full marks for everyone) and two honest
    validators (0 for the poisoner). Three pass the gate, a majority of the five, but fewer
    than the quorum: everyone counts and the poisoner's jury of four splits two against two, so
    the high median pays it in full. With the gate at a strict majority alone, its jury is the
    two honest validators and its score 0."""
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

    r2 = fed.open_peer(quorum=4, model="g1")
    present = [poisoner, s1, s2, h1, h2]  # h3 and h4 abstain
    sites = fed.submit(r2, present, [100] * 5)
    second: dict[str, list[int]] = {
        v.address: [
            0 if s == poisoner.address and v.address in {h1.address, h2.address} else S
            for s in sites
        ]
        for v in present
    }
    votes = fed.score(r2, second)
    fed.past_score_reveal(r2)
    fed.ledger.record_peer_valuation(fed.env.outsider, r2, sites, votes)
    subs = {s.site: s for s in fed.ledger.get_submissions(r2)}
    assert subs[poisoner.address].score == S
    assert subs[poisoner.address].weight > 0
    # the Python rule agrees; at quorum 3 (three pass: a majority and the quorum) the stampers
    # are left out and the poisoner's median is its honest jury's 0
    standing = fed.ledger.validator_ratings_before(r2)
    at_quorum = peer_outcome(sites, votes, standing=standing, quorum=4)
    assert at_quorum.scores[sites.index(poisoner.address)] == S
    majority_only = peer_outcome(sites, votes, standing=standing, quorum=3)
    assert majority_only.counted == tuple(by_address([poisoner.address, h1.address, h2.address]))
    assert majority_only.scores[sites.index(poisoner.address)] == 0
    assert h3.address not in sites and h4.address not in sites
