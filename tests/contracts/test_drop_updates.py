"""FederationLedger.dropUpdates (issue 14's gas bar): dropWithheld and dropScreened of one valued
peer round in one call, with one re-weighting. The same final state and the same per-site
events as the two calls in that order (checked against the two calls on a twin ledger), one
``UpdateReweighted`` per weight that changed from the valuation's to the final one, and every
requirement with its exact custom error."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount

from fedtrail.chain import block_timestamp
from fedtrail.errors import InvalidArgument, InvalidValuation, RoundStateError, Unauthorized
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights
from tests.contracts.federation import Fed, by_address, expect
from tests.contracts.test_peer_scoring import _valued_peer_round, accounts_by_address, round_events
from tests.fixtures.chain import ChainEnv

S2 = SCORE_SCALE // 2


def _raw(fed: Fed, caller: LocalAccount, round_id: int, *lists: list[str]) -> Any:
    """Bypasses the client's sorting and checks, to reach the contract's own."""
    return fed.ledger._transact(caller, fed.ledger._fn.dropUpdates(round_id, *lists))


def _state(fed: Fed, round_id: int) -> dict[str, Any]:
    """Everything a drop can change, as the views and the drop events state it."""
    subs = fed.ledger.get_submissions(round_id)
    last: dict[str, int] = {}
    for e in round_events(fed, "UpdateReweighted", round_id):
        last[str(e["site"])] = int(e["weight"])  # type: ignore[call-overload]
    return {
        "subs": [(s.site, s.score, s.reason, s.weight) for s in subs],
        "reputations": {s.site: fed.ledger.get_site(s.site).reputation for s in subs},  # type: ignore[union-attr]
        "withheld": round_events(fed, "UpdateWithheld", round_id),
        "screened": round_events(fed, "UpdateScreened", round_id),
        "last_reweighted": last,
        "outcome": fed.ledger.peer_outcome(round_id),
    }


def test_drop_updates_is_the_two_calls_with_one_reweighting(embedded: ChainEnv) -> None:
    """On twin ledgers (same sites, samples and votes), dropUpdates(withheld=[C],
    screened=[A]) leaves exactly what dropWithheld([C]) then dropScreened([A]) leave: scores,
    reasons, weights, reputations, the UpdateWithheld and UpdateScreened events and the last
    UpdateReweighted of each site (what chain readers take), and the outcome the client
    rebuilds from the events. It announces each changed weight once (3 events where the two
    calls emit 5), per-site drop events first, withheld before screened, and costs less gas."""
    one, two = Fed(embedded), Fed(embedded)
    r1, sites = _valued_peer_round(one)
    r2, sites2 = _valued_peer_round(two)
    assert sites == sites2
    valued = {s.site: s for s in one.ledger.get_submissions(r1)}
    for fed, r in ((one, r1), (two, r2)):
        fed.past_score_reveal(r)
    withheld, screened = [sites[2]], [sites[0]]
    (combined,) = one.ledger.drop_updates(one.agg, r1, sites, withheld=withheld, screened=screened)
    first = two.ledger.drop_withheld(two.agg, r2, sites, withheld)
    second = two.ledger.drop_screened(two.agg, r2, sites, screened)
    a, b = _state(one, r1), _state(two, r2)
    for key in a:
        assert a[key] == b[key], key
    scores = [0, valued[sites[1]].score, 0]
    want = onchain_weights([valued[s].num_samples for s in sites], scores)
    assert [w for *_, w in a["subs"]] == want == [0, 10**18, 0]
    assert [(site, reason) for site, _, reason, _ in a["subs"]] == [
        (sites[0], Reason.FREE_RIDER),
        (sites[1], Reason.OK),
        (sites[2], Reason.WITHHELD),
    ]
    assert a["outcome"].dropped == (sites[2],) and a["outcome"].screened == (sites[0],)
    # one announcement per changed weight in one call; two calls re-announce A and B
    assert len(round_events(one, "UpdateReweighted", r1)) == 3
    assert len(round_events(two, "UpdateReweighted", r2)) == 5
    # the receipt's own order: UpdateWithheld, UpdateScreened, then the re-weighting
    mined = sorted(
        (e.log_index, e.name)
        for name in ("UpdateWithheld", "UpdateScreened", "UpdateReweighted")
        for e in one.ledger.events(name)
        if e.block_number == combined.block_number
    )
    assert [n for _, n in mined] == ["UpdateWithheld", "UpdateScreened"] + ["UpdateReweighted"] * 3
    assert combined.gas_used < first.gas_used + second.gas_used
    one.finalize(r1, "g1")
    assert one.ledger.get_round(r1).phase == Phase.FINALIZED


def test_drop_updates_with_one_list_is_that_drop(embedded: ChainEnv) -> None:
    """One list only: the state and events of dropWithheld (or dropScreened) of it; a
    screened-only call needs no score reveal deadline (RoundStillOpen for a withheld one before
    it: the next test)."""
    one, two = Fed(embedded), Fed(embedded)
    r1, sites = _valued_peer_round(one)
    r2, _ = _valued_peer_round(two)  # opened last: its score reveal deadline is still ahead
    peer = two.ledger.get_peer_round(r2)
    assert peer is not None and block_timestamp(two.w3) < peer.score_reveal_deadline
    _raw(two, two.agg, r2, sites, [], [sites[1]])
    one.ledger.drop_screened(one.agg, r1, sites, [sites[1]])
    a, b = _state(two, r2), _state(one, r1)
    assert a == b and a["screened"] and not a["withheld"]
    two.past_score_reveal(r2)
    _raw(two, two.agg, r2, sites, [sites[2]], [])
    one.ledger.drop_withheld(one.agg, r1, sites, [sites[2]])
    a, b = _state(two, r2), _state(one, r1)
    assert a == b and a["withheld"] == [{"round": r2, "site": sites[2], "reputation": 0}]


def test_drop_updates_refuses_what_the_contract_requires(embedded: ChainEnv) -> None:
    """Every requirement of dropUpdates, each with its exact custom error, and nothing changed
    by a refused call."""
    fed = Fed(embedded)
    round_id, sites = _valued_peer_round(fed)
    site0 = next(a for a in fed.sites if a.address == sites[0])
    before = _state(fed, round_id)
    with expect(RoundStateError, "RoundStillOpen", round=round_id):
        _raw(fed, fed.agg, round_id, sites, [sites[2]], [sites[0]])
    fed.past_score_reveal(round_id)
    with expect(Unauthorized, "NotAggregator", caller=site0.address):
        _raw(fed, site0, round_id, sites, [sites[2]], [sites[0]])
    with expect(InvalidArgument, "InvalidParameter", what="dropped"):
        _raw(fed, fed.agg, round_id, sites, [], [])
    with expect(InvalidValuation, "MissingScores", round=round_id):
        _raw(fed, fed.agg, round_id, sites[:2], [sites[2]], [sites[0]])
    # a site in both lists: the screened pass finds it already zeroed by the withheld one
    with expect(InvalidValuation, "DroppedTwice", round=round_id, site=sites[1]):
        _raw(fed, fed.agg, round_id, sites, [sites[1]], [sites[1]])
    with expect(InvalidValuation, "DroppedTwice", round=round_id, site=sites[1]):
        _raw(fed, fed.agg, round_id, sites, [sites[1]], [sites[0], sites[1]])
    # a duplicate inside one list, or a list out of order
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        _raw(fed, fed.agg, round_id, sites, [sites[2], sites[2]], [])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        _raw(fed, fed.agg, round_id, sites, [sites[2]], [sites[0], sites[0]])
    with expect(InvalidValuation, "SitesNotSorted", index=1):
        _raw(fed, fed.agg, round_id, sites, [], [sites[1], sites[0]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=fed.coord.address):
        _raw(fed, fed.agg, round_id, sites, [sites[2]], [fed.coord.address])
    with expect(InvalidValuation, "ZeroTotalWeight", round=round_id):
        _raw(fed, fed.agg, round_id, sites, [sites[2]], sites[:2])
    assert _state(fed, round_id) == before  # every refusal left the round as valued
    # an update dropped before (by any of the three) is not weighted any more
    fed.ledger.drop_withheld(fed.agg, round_id, sites, [sites[2]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=sites[2]):
        _raw(fed, fed.agg, round_id, sites, [], [sites[2]])
    with expect(InvalidValuation, "NotWeighted", round=round_id, site=sites[2]):
        _raw(fed, fed.agg, round_id, sites, [sites[2]], [sites[0]])
    fed.ledger.cancel_round(fed.agg, round_id)
    with expect(RoundStateError, "WrongPhase", round=round_id):
        _raw(fed, fed.agg, round_id, sites, [sites[1]], [sites[0]])

    aggregator_round = fed.open("g0")
    fed.submit_all(aggregator_round)
    fed.past_reveal(aggregator_round)
    fed.value(aggregator_round, [S2, S2, S2])
    everyone = by_address([s.address for s in fed.sites])
    with expect(RoundStateError, "NotPeerRound", round=aggregator_round):
        _raw(fed, fed.agg, aggregator_round, everyone, [everyone[0]], [everyone[1]])
    with expect(RoundStateError, "UnknownRound", round=99):
        _raw(fed, fed.agg, 99, everyone, [everyone[0]], [everyone[1]])


def _rounding_round(fed: Fed) -> tuple[int, list[str]]:
    """A valued peer round at the weight rule's rounding: samples (2**48 - 1, 2, 2**48 - 1)
    and medians (1e6, 1, 1) in address order give weights (~1e18 - 1e6, 1, ~1e6); without the
    third update the second's share is below one unit and the leftover goes to the first."""
    ordered = [accounts_by_address(fed)[a] for a in by_address([s.address for s in fed.sites])]
    big = 2**48 - 1
    for site in (ordered[0], ordered[2]):
        fed.ledger.set_max_samples(fed.coord, site.address, big)
    round_id = fed.open_peer(quorum=2)
    sites = fed.submit(round_id, ordered, [big, 2, big])
    vector = [SCORE_SCALE, 1, 1]
    votes = fed.score(round_id, {v.address: vector for v in ordered})
    fed.ledger.record_peer_valuation(ordered[0], round_id, sites, votes)
    fed.past_score_reveal(round_id)
    return round_id, sites


def test_drop_updates_checks_every_drop_against_the_weights_before_the_call(
    embedded: ChainEnv,
) -> None:
    """README *The contract*: the one difference from the two calls. The screened update has
    weight 1 as valued and 0 once the withheld one is dropped: dropScreened after
    dropWithheld refuses it (NotWeighted), dropUpdates takes it (score 0, FREE_RIDER); the
    weights left are the same either way."""
    one, two = Fed(embedded), Fed(embedded)
    r1, sites = _rounding_round(one)
    r2, _ = _rounding_round(two)
    valued = [s.weight for s in by_site(one.ledger.get_submissions(r1), sites)]
    assert valued[1] == 1 and valued[2] > 0
    two.ledger.drop_withheld(two.agg, r2, sites, [sites[2]])
    assert [s.weight for s in by_site(two.ledger.get_submissions(r2), sites)] == [10**18, 0, 0]
    with expect(InvalidValuation, "NotWeighted", round=r2, site=sites[1]):
        two.ledger.drop_screened(two.agg, r2, sites, [sites[1]])
    one.ledger.drop_updates(one.agg, r1, sites, withheld=[sites[2]], screened=[sites[1]])
    subs = by_site(one.ledger.get_submissions(r1), sites)
    assert [(s.score, s.reason, s.weight) for s in subs] == [
        (SCORE_SCALE, Reason.OK, 10**18),
        (0, Reason.FREE_RIDER, 0),
        (0, Reason.WITHHELD, 0),
    ]


def by_site(subs: Any, sites: list[str]) -> list[Any]:
    """The submissions in the order of ``sites``."""
    index = {s.site: s for s in subs}
    return [index[s] for s in sites]
