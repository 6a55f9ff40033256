"""An independent chain reader, without fedtrail's ledger views: every number a round fixes
(who took part, sample counts, scores, reasons, weights, reputations, validator ratings, which
validators the reputation gate counted and which withheld their vectors, the start and global
model hashes) follows from the contract's events alone, in chain order, plus the one
constructor constant ``reputationAlpha()``; and the views say the same. A value that
lived only in storage, or an event emitted with a stale value, fails here."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from web3 import Web3

from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.peers import (
    PeerVote,
    address_key,
    cancelled_outcome,
    next_validator_reputation,
    peer_outcome,
)
from fedtrail.protocol.weights import (
    SCORE_SCALE,
    next_reputation,
    onchain_weights,
    withheld_reputation,
)
from tests.contracts.federation import MAX_SAMPLES, Fed, h
from tests.fixtures.chain import ChainEnv

S = SCORE_SCALE

NAMES = (
    "SiteRegistered",
    "SiteRemoved",
    "RoundOpened",
    "PeerScoringOpened",
    "UpdateCommitted",
    "UpdateSubmitted",
    "ScoresCommitted",
    "ScoresRevealed",
    "UpdateValued",
    "ValidatorRated",
    "RoundValued",
    "RoundFinalized",
    "RoundCancelled",
    "UpdateWithheld",
    "UpdateScreened",
    "UpdateReweighted",
)


def _stream(fed: Fed) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the kinds a reader needs, merged in chain order."""
    merged = [(e.block_number, e.log_index, n, e.args) for n in NAMES for e in fed.ledger.events(n)]
    return [(n, args) for _, _, n, args in sorted(merged, key=lambda x: (x[0], x[1]))]


def _replay(fed: Fed) -> dict[str, Any]:
    """A reader's state from the event stream alone, each derived number checked against the
    event that states it as it goes."""
    alpha = fed.ledger.reputation_alpha()
    registered: set[str] = set()
    active_from: dict[str, int] = {}
    current = 0
    rounds: dict[int, dict[str, Any]] = {}
    reputation: dict[str, tuple[int, int]] = {}
    validator_rep: dict[str, tuple[int, int]] = {}
    for name, a in _stream(fed):
        r = a.get("round")
        if name == "SiteRegistered":
            registered.add(a["site"])
            active_from[a["site"]] = current + 1
        elif name == "SiteRemoved":
            registered.discard(a["site"])
        elif name == "RoundOpened":
            current = r
            rounds[r] = {
                "start": a["modelSha256"],
                "active_at_open": sum(1 for s in registered if active_from[s] <= r),
                "samples": {},
                "commits": [],
                "votes": {},
                "score_commits": [],
                "quorum": 0,
                "phase": Phase.OPEN,
            }
        elif name == "UpdateCommitted":
            rounds[r]["commits"].append(a["site"])
        elif name == "UpdateSubmitted":
            rounds[r]["samples"][a["site"]] = a["numSamples"]
        elif name == "PeerScoringOpened":
            rounds[r]["quorum"] = a["quorum"]
        elif name == "ScoresCommitted":
            rounds[r]["score_commits"].append(a["validator"])
        elif name == "ScoresRevealed":
            rounds[r]["votes"][a["validator"]] = tuple(a["scores"])
        elif name == "UpdateValued":
            rd = rounds[r]
            if "valued" not in rd:  # the first UpdateValued of the round
                sites = sorted(rd["samples"], key=address_key)
                if rd["votes"]:
                    votes = [
                        PeerVote(validator=v, scores=rd["votes"][v])
                        for v in sorted(rd["votes"], key=address_key)
                    ]
                    withheld = sorted(set(rd["score_commits"]) - set(rd["votes"]), key=address_key)
                    # the gate reads the validator standing earlier rounds left: what the
                    # stream has rated so far
                    rd["outcome"] = peer_outcome(
                        sites,
                        votes,
                        standing=dict(validator_rep),
                        quorum=rd["quorum"],
                        withheld=withheld,
                    )
                rd["sites"] = sites
                rd["valued"] = {}
            rd["valued"][a["site"]] = (a["score"], a["reason"], a["weight"])
            rep, n = reputation.get(a["site"], (0, 0))
            expected = next_reputation(rep, a["score"], valued_rounds=n, alpha=alpha)
            assert a["reputation"] == expected, (a, expected)
            reputation[a["site"]] = (expected, n + 1)
        elif name == "ValidatorRated":
            rd = rounds[r]
            # a cancelled open peer round rates its withheld vectors only
            withheld = sorted(set(rd["score_commits"]) - set(rd["votes"]), key=address_key)
            outcome = rd.get("outcome") or cancelled_outcome(withheld)
            assert a["distance"] == outcome.distances[a["validator"]]
            rep, n = validator_rep.get(a["validator"], (0, 0))
            agreement = S - a["distance"]
            expected = next_validator_reputation(rep, agreement, rated_rounds=n, alpha=alpha)
            assert a["validatorReputation"] == expected
            validator_rep[a["validator"]] = (expected, n + 1)
        elif name == "RoundValued":
            rd = rounds[r]
            sites = rd["sites"]
            assert list(rd["valued"]) == sites  # every revealed update, in address order
            scores = [rd["valued"][s][0] for s in sites]
            samples = [rd["samples"][s] for s in sites]
            if "outcome" in rd:
                assert tuple(scores) == rd["outcome"].scores
                reasons = tuple(Reason(rd["valued"][s][1]) for s in sites)
                assert reasons == rd["outcome"].reasons
            weights = onchain_weights(samples, scores)
            assert [rd["valued"][s][2] for s in sites] == weights
            assert a["totalWeightBasis"] == sum(n * s for n, s in zip(samples, scores, strict=True))
            rd["phase"] = Phase.VALUED
        elif name in ("UpdateWithheld", "UpdateScreened"):
            # dropped as unreadable (Withheld) or as the public screen's free-rider (FreeRider)
            # from a valued peer round: score 0; dropWithheld, dropScreened or dropUpdates
            rd = rounds[r]
            assert rd["phase"] == Phase.VALUED and rd["valued"][a["site"]][2] > 0
            median = rd["valued"][a["site"]][0]
            assert median > 0  # dropped once: a second drop would find score 0
            why = Reason.WITHHELD if name == "UpdateWithheld" else Reason.FREE_RIDER
            rd["valued"][a["site"]] = (0, int(why), rd["valued"][a["site"]][2])
            rd.setdefault("dropped", []).append(a["site"])
            # the round's credit taken back from its reputation
            rep, n = reputation[a["site"]]
            expected = withheld_reputation(rep, median, valued_rounds=n, alpha=alpha)
            assert a["reputation"] == expected, (a, expected)
            reputation[a["site"]] = (expected, n)
        elif name == "UpdateReweighted":
            rd = rounds[r]
            score, reason, _ = rd["valued"][a["site"]]
            rd["valued"][a["site"]] = (score, reason, a["weight"])
            # the stated weights are the rule's over the scores left, once all are stated
            sites = rd["sites"]
            scores = [rd["valued"][s][0] for s in sites]
            rd["reweighted"] = onchain_weights([rd["samples"][s] for s in sites], scores)
        elif name == "RoundFinalized":
            rd = rounds[r]
            if "dropped" in rd:
                assert [rd["valued"][s][2] for s in rd["sites"]] == rd["reweighted"]
                assert all(rd["valued"][s][2] == 0 for s in rd["dropped"])
            rounds[r].update(phase=Phase.FINALIZED, global_sha=a["globalSha256"])
        elif name == "RoundCancelled":
            rounds[r]["phase"] = Phase.CANCELLED
    return {"rounds": rounds, "reputation": reputation, "validator_rep": validator_rep}


def _agrees_with_the_views(fed: Fed, seen: dict[str, Any]) -> None:
    """The views hold exactly what the reader derived."""
    for r, rd in seen["rounds"].items():
        info = fed.ledger.get_round(r)
        assert (info.phase, info.start_sha256, info.active_at_open) == (
            rd["phase"],
            rd["start"],
            rd["active_at_open"],
        )
        assert info.submission_count == len(rd["samples"])
        if rd["phase"] == Phase.FINALIZED:
            assert info.global_sha256 == rd["global_sha"]
        subs = fed.ledger.get_submissions(r, include_unrevealed=True)
        assert sorted(s.site for s in subs) == sorted(set(rd["commits"]))
        for sub in subs:
            assert sub.num_samples == rd["samples"].get(sub.site, 0)
            assert sub.commit_order == rd["commits"].index(sub.site) + 1
            if "valued" in rd and sub.revealed:
                assert (sub.score, sub.reason, sub.weight) == rd["valued"][sub.site]
    for site, (rep, n) in seen["reputation"].items():
        info = fed.ledger.get_site(site)
        assert info is not None and (info.reputation, info.valued_rounds) == (rep, n)
    for validator, (rep, n) in seen["validator_rep"].items():
        standing = fed.ledger.validator_standing(validator)
        assert (standing.reputation, standing.rated_rounds) == (rep, n)


def _every_path(fed: Fed) -> tuple[int, int, int, int]:
    """Four rounds with every path: an aggregator round (one site commits and never reveals),
    a cancelled round, a peer round with self-scores, a late registration and a weighted
    update dropped as unreadable, and another aggregator round after a removal."""
    a, b, c, d = fed.sites
    r1 = fed.open("g0")
    for site, n in ((a, 100), (b, 250), (c, 40)):
        fed.commit(r1, site, f"u1{site.address}", n)
    fed.commit(r1, d, "never revealed", 10)
    fed.past_commit(r1)
    for site, n in ((a, 100), (b, 250), (c, 40)):
        fed.reveal(r1, site, f"u1{site.address}", n)
    fed.past_reveal(r1)
    fed.raw_valuation(
        r1,
        sorted([a.address, b.address, c.address], key=address_key),
        [700_000, 333_333, 0],
        [0, 0, int(Reason.LOW_GAIN)],
    )
    fed.finalize(r1, "g1")

    r2 = fed.open("g1")
    fed.commit(r2, a, "u2", 77)
    fed.past_commit(r2)
    fed.reveal(r2, a, "u2", 77)
    fed.past_reveal(r2)
    fed.ledger.cancel_round(fed.agg, r2)

    r3 = fed.open_peer(quorum=2, model="g1")
    late = fed.env.sites[4]
    fed.ledger.register_site(fed.coord, late.address, "late", MAX_SAMPLES)  # from round 4
    sites = fed.submit(r3, [a, b, c], [10, 20, 30])
    vectors = {
        a.address: [S, S // 2, S // 3],
        b.address: [S // 4, S, 0],
        d.address: [S // 5, 3 * S // 5, 1],
    }
    vectors = {v: [vec[sites.index(s)] for s in sites] for v, vec in vectors.items()}
    votes = fed.score(r3, vectors)
    fed.past_score_reveal(r3)
    fed.ledger.record_peer_valuation(fed.env.outsider, r3, sites, votes)
    # the aggregator cannot read back the most weighted update: dropped, the rest re-weighted
    weighted = sorted(
        (s for s in fed.ledger.get_submissions(r3) if s.weight > 0), key=lambda s: -s.weight
    )
    assert len(weighted) >= 2
    fed.ledger.drop_withheld(fed.agg, r3, sites, [weighted[0].site])
    fed.finalize(r3, "g3")

    fed.ledger.remove_site(fed.coord, c.address)
    r4 = fed.open("g3")
    for site, n in ((a, 5), (late, 9)):
        fed.commit(r4, site, f"u4{site.address}", n)
    fed.past_commit(r4)
    for site, n in ((a, 5), (late, 9)):
        fed.reveal(r4, site, f"u4{site.address}", n)
    fed.past_reveal(r4)
    fed.raw_valuation(r4, sorted([a.address, late.address], key=address_key), [S, S], [0, 0])
    fed.finalize(r4, "g4")
    return r1, r2, r3, r4


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded, n_sites=4)


def test_every_number_of_valued_cancelled_and_peer_rounds_follows_from_the_events(
    fed: Fed,
) -> None:
    r1, r2, r3, r4 = _every_path(fed)
    seen = _replay(fed)
    assert [seen["rounds"][r]["phase"] for r in (r1, r2, r3, r4)] == [
        Phase.FINALIZED,
        Phase.CANCELLED,
        Phase.FINALIZED,
        Phase.FINALIZED,
    ]
    assert seen["rounds"][r3]["active_at_open"] == 4 and seen["rounds"][r4]["active_at_open"] == 4
    assert seen["rounds"][r4]["start"] == h("g3")
    _agrees_with_the_views(fed, seen)
    counts: dict[int, int] = defaultdict(int)
    for r, rd in seen["rounds"].items():
        counts[r] = len(rd.get("valued", {}))
    assert dict(counts) == {r1: 3, r2: 0, r3: 3, r4: 2}


@pytest.mark.parametrize("one_call", [True, False], ids=["dropUpdates", "two-calls"])
def test_withheld_and_screened_drops_follow_from_the_events_in_one_call_or_two(
    embedded: ChainEnv, one_call: bool
) -> None:
    """A valued peer round of four weighted updates: the most weighted is dropped as withheld
    and the next as screened, in one dropUpdates or as dropWithheld then dropScreened. The same
    reader (each site's last UpdateReweighted holds) derives every score, reason, weight and
    reputation either way, and the views agree; one call states each changed weight once."""
    fed = Fed(embedded, n_sites=4)
    r = fed.open_peer(quorum=2)
    sites = fed.submit(r, list(fed.sites), [10, 20, 30, 40])
    vectors = {s.address: [S // 2 + 1_000 * i for i in range(4)] for s in fed.sites}
    fed.score(r, vectors)
    fed.past_score_reveal(r)
    fed.ledger.record_peer_valuation(fed.env.outsider, r, sites, fed.ledger.peer_votes(r))
    weighted = sorted(fed.ledger.get_submissions(r), key=lambda s: -s.weight)
    assert all(s.weight > 0 for s in weighted)
    withheld, screened = [weighted[0].site], [weighted[1].site]
    if one_call:
        fed.ledger.drop_updates(fed.agg, r, sites, withheld=withheld, screened=screened)
    else:
        fed.ledger.drop_withheld(fed.agg, r, sites, withheld)
        fed.ledger.drop_screened(fed.agg, r, sites, screened)
    fed.finalize(r, "g1")
    seen = _replay(fed)
    assert seen["rounds"][r]["phase"] == Phase.FINALIZED
    assert seen["rounds"][r]["dropped"] == [*withheld, *screened]
    _agrees_with_the_views(fed, seen)
    reasons = {s: Reason(v[1]) for s, v in seen["rounds"][r]["valued"].items()}
    assert (reasons[withheld[0]], reasons[screened[0]]) == (Reason.WITHHELD, Reason.FREE_RIDER)
    stated = fed.ledger.events("UpdateReweighted", argument_filters={"round": r})
    assert len(stated) == (4 if one_call else 7)


def test_a_gated_liar_and_a_withheld_vector_follow_from_the_events(embedded: ChainEnv) -> None:
    """Round 1: validator d scores every update 0 where the others give full marks (its
    reputation falls below the gate). Round 2: d votes but is not counted, so its 0 for b does
    not set b's median; e commits a vector and never reveals it (rated at distance SCORE_SCALE).
    Round 3: c commits and withholds, the round misses its quorum and is cancelled, which rates
    c. A reader of the events alone derives all of it, and the views agree."""
    fed = Fed(embedded, n_sites=5)
    a, b, c, d, e = sorted(fed.sites, key=lambda s: address_key(s.address))
    r1 = fed.open_peer(quorum=3, model="g0")
    sites = fed.submit(r1, [a, b, c], [10, 20, 30])
    honest = {v.address: [0 if s == v.address else S for s in sites] for v in (a, b, c)}
    votes = fed.score(r1, {**honest, d.address: [0, 0, 0]})
    fed.past_score_reveal(r1)  # e did not vote
    fed.ledger.record_peer_valuation(fed.env.outsider, r1, sites, votes)
    fed.finalize(r1, "g1")

    r2 = fed.open_peer(quorum=3, model="g1")
    sites = fed.submit(r2, [a, b, c], [10, 20, 30])
    vectors = {
        a.address: [0, 400_000, S],
        b.address: [S, 0, S],
        c.address: [S, 600_000, 0],
        d.address: [S, 0, S],
    }
    fed.commit_scores(r2, e, [S, S, S])
    votes = fed.score(r2, vectors)
    fed.past_score_reveal(r2)
    fed.ledger.record_peer_valuation(fed.env.outsider, r2, sites, votes)
    fed.finalize(r2, "g2")

    r3 = fed.open_peer(quorum=5, model="g2")  # below quorum: c withholds, cancelled
    sites = fed.submit(r3, [a, b], [10, 20])
    fed.commit_scores(r3, c, [S, S])
    fed.score(r3, {a.address: [0, S], b.address: [S, 0]})
    fed.past_score_reveal(r3)
    fed.ledger.cancel_round(fed.agg, r3)

    seen = _replay(fed)
    _agrees_with_the_views(fed, seen)
    assert seen["rounds"][r3]["phase"] == Phase.CANCELLED
    assert seen["validator_rep"][c.address][1] == 3  # rated in rounds 1, 2 and at the cancel
    outcome = seen["rounds"][r2]["outcome"]
    assert outcome.counted == (a.address, b.address, c.address)
    assert outcome.withheld == (e.address,)
    assert seen["rounds"][r2]["valued"][b.address][0] == 600_000  # d's 0 not counted
    assert outcome.distances[e.address] == S
    assert seen["validator_rep"][e.address] == (0, 1)


def test_ratings_of_a_valued_then_cancelled_round_gate_the_next_one_from_the_events(
    embedded: ChainEnv,
) -> None:
    """Round 1 is valued (d scores every update 0, its reputation falls below the gate; e
    commits and withholds) and then cancelled, as the aggregator may when a weighted update
    cannot be read back: its ratings stand, are not given again at the cancel, and gate d in
    round 2 (three of four pass: a majority). The events alone say all of it."""
    fed = Fed(embedded, n_sites=5)
    a, b, c, d, e = sorted(fed.sites, key=lambda s: address_key(s.address))
    r1 = fed.open_peer(quorum=2, model="g0")
    sites = fed.submit(r1, [a, b, c], [10, 20, 30])
    honest = {v.address: [0 if s == v.address else S for s in sites] for v in (a, b, c)}
    fed.commit_scores(r1, e, [S, S, S])
    votes = fed.score(r1, {**honest, d.address: [0, 0, 0]})
    fed.past_score_reveal(r1)
    fed.ledger.record_peer_valuation(fed.env.outsider, r1, sites, votes)
    fed.ledger.cancel_round(fed.agg, r1)

    r2 = fed.open_peer(quorum=2, model="g0")
    sites = fed.submit(r2, [a, b, c], [10, 20, 30])
    votes = fed.score(
        r2,
        {
            a.address: [0, 400_000, S],
            b.address: [S, 0, S],
            c.address: [S, 600_000, 0],
            d.address: [S, 0, S],
        },
    )
    fed.past_score_reveal(r2)
    fed.ledger.record_peer_valuation(fed.env.outsider, r2, sites, votes)

    seen = _replay(fed)
    _agrees_with_the_views(fed, seen)
    assert seen["rounds"][r1]["phase"] == Phase.CANCELLED
    assert seen["validator_rep"][e.address][1] == 1  # rated at the valuation, not again
    assert seen["rounds"][r2]["outcome"].counted == (a.address, b.address, c.address)
    assert seen["rounds"][r2]["valued"][b.address][0] == 600_000  # d's 0 not counted
    assert fed.ledger.peer_outcome(r2).counted == (a.address, b.address, c.address)


def _as_web3_reads(args: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """web3's decoded arguments as the ledger's events carry them: by their ABI type, addresses
    checksummed, bytes as hex, arrays as lists, strings as written."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, bytes | bytearray):
            value = bytes(value).hex()
        elif types[key] == "address":
            value = Web3.to_checksum_address(value)
        elif isinstance(value, list | tuple):
            value = list(value)
        out[key] = value
    return out


def test_the_ledgers_event_decoder_reads_what_web3_reads(fed: Fed) -> None:
    """``Ledger.events`` decodes the raw logs itself (web3's formatters were most of a
    100-site audit's event reading); every event of every kind the contract declares, with and
    without filters on its indexed arguments, must read as web3's own decoder reads it."""
    a, b, *_ = fed.sites
    fed.ledger.set_max_samples(fed.coord, a.address, 999)
    r1, _, r3, _ = _every_path(fed)
    fed.ledger.set_privacy_budget(fed.coord, b.address, 8_000_000)
    names = [e["name"] for e in fed.ledger.artifact.abi if e.get("type") == "event"]
    seen = 0
    for name in names:
        event = getattr(fed.ledger._contract.events, name)
        indexed = [i["name"] for i in event.abi["inputs"] if i["indexed"]]
        types = {i["name"]: i["type"] for i in event.abi["inputs"]}
        cases: list[dict[str, Any]] = [{}]
        if "round" in indexed:
            cases += [{"round": r1}, {"round": r3}]
        if "site" in indexed:
            cases += [{"site": a.address}]
        if "validator" in indexed:
            cases += [{"validator": b.address}]
        for filters in cases:
            theirs = event.get_logs(from_block=0, argument_filters=filters or None)
            want = sorted(
                (
                    int(x["blockNumber"]),
                    int(x["logIndex"]),
                    bytes(x["transactionHash"]).hex(),
                    _as_web3_reads(dict(x["args"]), types),
                )
                for x in theirs
            )
            got = [
                (e.block_number, e.log_index, e.tx_hash, e.args)
                for e in fed.ledger.events(name, from_block=0, argument_filters=filters or None)
            ]
            assert got == [tuple(w) for w in want], (name, filters)
            seen += len(got)
    assert seen > 40
