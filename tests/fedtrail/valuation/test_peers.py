"""peer_vector: a validator site's scoring of a peer round (issue 14), on real SmallCNN updates.

Five sites (addresses 0x..01 to 0x..05) send real updates; each validator scores the others on
its own shard of the bundled validation split, as a site does in a peer round."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, partition_iid
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import PeerVote, peer_outcome
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation import (
    HISTORY_COMBINER,
    Candidate,
    History,
    PeerVector,
    UnfitValidation,
    peer_vector,
    value_round,
)
from fedtrail.valuation.round import WARM_UP_ALONE
from tests.fedtrail.valuation.real_sites import SPEC, RealSites, real_sites

Delta = dict[str, torch.Tensor]
ADDRESSES = [f"0x{i + 1:040x}" for i in range(5)]


@pytest.fixture(scope="module")
def sites() -> RealSites:
    return real_sites()


@pytest.fixture(scope="module")
def shards(sites: RealSites) -> list[ImageDataset]:
    """Each site's own validation split: an IID fifth of the bundled one (54 images)."""
    return [sites.validation.subset(p) for p in partition_iid(sites.validation.labels, 5, seed=1)]


def _candidates(sites: RealSites, deltas: list[Delta] | None = None) -> list[Candidate]:
    ds = sites.deltas[:5] if deltas is None else deltas
    return [
        Candidate(site=a, num_samples=n, delta=d)
        for a, n, d in zip(ADDRESSES, sites.num_samples[:5], ds, strict=True)
    ]


def _vector(
    sites: RealSites,
    validator: int,
    validation: ImageDataset,
    candidates: list[Candidate],
    *,
    history: History | None = None,
    round_id: int = 1,
    global_state: dict[str, torch.Tensor] | None = None,
) -> PeerVector:
    return peer_vector(
        validator=ADDRESSES[validator],
        round_id=round_id,
        global_state=sites.global_state if global_state is None else global_state,
        spec=SPEC,
        candidates=candidates,
        validation=validation,
        method="shapley",
        metric="balanced_loss",
        seed=7,
        combiner=HISTORY_COMBINER if history is not None else None,
        history=history,
    )


def test_own_update_is_left_out_of_the_game_and_scored_zero(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    pv = _vector(sites, 2, shards[2], _candidates(sites))
    assert pv.scores[2] == 0
    assert [v.site for v in pv.report.sites] == [a for i, a in enumerate(ADDRESSES) if i != 2]
    # exact Shapley over the four others: 2**4 coalitions (2**5 with its own update in the game)
    assert pv.report.method == "shapley" and pv.report.evaluations == 16
    assert all(s > 0 for i, s in enumerate(pv.scores) if i != 2)  # honest IID updates
    assert pv.vote.validator == ADDRESSES[2] and pv.vote.scores == pv.scores


def test_vector_is_aligned_to_the_revealed_sites_in_address_order(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    cands = _candidates(sites)
    # site 3's blob was unusable: its entry, and only its, is 0 besides the validator's own
    cands[3] = Candidate(site=ADDRESSES[3], num_samples=1, delta=None, status=Reason.TAMPERED)
    pv = _vector(sites, 1, shards[1], cands)
    assert pv.sites == tuple(ADDRESSES)
    assert len(pv.scores) == len(ADDRESSES)
    assert pv.scores[1] == 0 and pv.scores[3] == 0
    assert all(pv.scores[i] > 0 for i in (0, 2, 4))
    by_site = {v.site: v for v in pv.report.sites}
    assert by_site[ADDRESSES[3]].reason is Reason.TAMPERED
    for i in (0, 2, 4):
        assert pv.scores[i] == by_site[ADDRESSES[i]].score
    with pytest.raises(ConfigError, match="ascending address order"):
        _vector(sites, 1, shards[1], list(reversed(_candidates(sites))))
    with pytest.raises(ConfigError, match="hex address"):
        _vector(
            sites,
            1,
            shards[1],
            [Candidate(site="site-00", num_samples=1, delta=None, status=Reason.TAMPERED)],
        )


def test_a_validator_outside_the_round_scores_every_update(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """A registered site that sent no update still validates: nothing is left out."""
    cands = _candidates(sites)[1:]
    pv = _vector(sites, 0, shards[0], cands)
    assert pv.sites == tuple(ADDRESSES[1:])
    assert all(s > 0 for s in pv.scores) and pv.report.evaluations == 16


def test_peer_vector_is_deterministic(sites: RealSites, shards: list[ImageDataset]) -> None:
    a = _vector(sites, 4, shards[4], _candidates(sites), history=History())
    b = _vector(sites, 4, shards[4], _candidates(sites), history=History())
    assert a.scores == b.scores
    assert [(v.score, v.reason, v.value) for v in a.report.sites] == [
        (v.score, v.reason, v.value) for v in b.report.sites
    ]


def test_a_split_of_one_class_abstains(sites: RealSites) -> None:
    one = sites.validation.subset(np.flatnonzero(sites.validation.labels == 0)[:20])
    with pytest.raises(UnfitValidation, match="one class"):
        _vector(sites, 0, one, _candidates(sites))


def test_an_inverted_validator_cannot_zero_an_honest_site(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """A 5-site in-process peer round: validator 0 reports SCORE_SCALE minus its honest vector
    (its best-valued site gets its lowest score); the median of the others still pays every
    honest site, and the inverter is the validator farthest from the medians."""
    cands = _candidates(sites)
    honest = [_vector(sites, v, shards[v], cands).vote for v in range(5)]
    inverted = honest[0].scores
    lying = PeerVote(
        validator=ADDRESSES[0],
        scores=tuple(0 if i == 0 else SCORE_SCALE - s for i, s in enumerate(inverted)),
    )
    assert min(lying.scores[1:]) < SCORE_SCALE // 10  # the lie does try to zero someone
    out = peer_outcome(ADDRESSES, [lying, *honest[1:]], standing={}, quorum=3)
    assert all(s > 0 for s in out.scores)
    assert all(r is Reason.OK for r in out.reasons)
    assert max(out.distances, key=lambda v: out.distances[v]) == ADDRESSES[0]


def test_history_chains_from_the_previous_vector(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """Round 1 (warm-up) gives the validator's next history; in round 2, chained from it, a site
    resending its round-1 update and one resending the round's global delta are free-riders."""
    cands = _candidates(sites)
    first = _vector(sites, 0, shards[0], cands, history=History())
    assert first.history is not None
    assert first.history.valued_rounds == 1
    assert set(first.history.accumulated) <= set(ADDRESSES[1:])  # never its own site
    global_delta = {
        k: sum(d[k] for d in sites.deltas[:5]) / 5 for k in sites.deltas[0]
    }  # what the round applied (any delta serves)
    chained = first.next_history(global_delta)
    assert chained is not None
    assert "the global delta of round 1" in chained.references
    assert f"{ADDRESSES[2]}'s update of round 1" in chained.references
    state2 = {k: v + global_delta[k] for k, v in sites.global_state.items()}
    fresh5, fresh6 = sites.deltas[5], sites.deltas[6]
    mixed = {k: (sites.deltas[0][k] + fresh6[k]) / 2 for k in fresh6}
    round2 = _candidates(sites, [fresh5, fresh6, sites.deltas[2], global_delta, mixed])
    second = _vector(sites, 0, shards[0], round2, history=chained, round_id=2, global_state=state2)
    by_site = {v.site: v for v in second.report.sites}
    assert by_site[ADDRESSES[2]].reason is Reason.FREE_RIDER and second.scores[2] == 0
    assert by_site[ADDRESSES[3]].reason is Reason.FREE_RIDER and second.scores[3] == 0
    assert second.scores[1] > 0 and second.scores[4] > 0
    assert second.history is not None and second.history.valued_rounds == 2
    # the next history holds both rounds (stale_rounds 3), newest first: a site resending an
    # update of round 1 in round 3 is still caught
    third = second.next_history({k: v * 0.5 for k, v in global_delta.items()})
    assert third is not None
    labels = list(third.references)
    newest = [f"{ADDRESSES[1]}'s update of round 2", "the global delta of round 2"]
    older = [f"{ADDRESSES[2]}'s update of round 1", "the global delta of round 1"]
    assert all(labels.index(n) < labels.index(o) for n in newest for o in older)
    # the same round without the chained history does not know the resent updates
    unchained = _vector(
        sites, 0, shards[0], round2, history=History(), round_id=2, global_state=state2
    )
    reasons = {v.site: v.reason for v in unchained.report.sites}
    assert reasons[ADDRESSES[2]] is not Reason.FREE_RIDER
    assert reasons[ADDRESSES[3]] is not Reason.FREE_RIDER


def test_the_chained_history_carries_the_screens_squares_of_its_references(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """A validator's next history holds, for each other site's update of the round, the partial
    sums of squares the free-rider screen computed (a later round's screen takes them instead
    of reading the reference again); its own update and the global delta have none, and the
    next round scores the same bits as with every one computed again."""
    cands = _candidates(sites)
    first = _vector(sites, 0, shards[0], cands, history=History())
    assert first.history is not None
    global_delta = {k: sum(d[k] for d in sites.deltas[:5]) / 5 for k in sites.deltas[0]}
    chained = first.next_history(global_delta)
    assert chained is not None
    carried = chained.reference_squares
    assert set(carried) == {f"{a}'s update of round 1" for a in ADDRESSES[1:]}
    for label, parts in carried.items():  # each one the update's own squares, by group
        flat = torch.cat(
            [t.to(torch.float64).reshape(-1) for t in chained.references[label].values()]
        )
        padded = torch.zeros(-(-flat.numel() // 1024) * 1024, dtype=torch.float64)
        padded[: flat.numel()] = flat
        groups = (padded.reshape(-1, 1024) ** 2).sum(dim=0).numpy()
        assert parts.shape == (1024,)
        np.testing.assert_allclose(parts, groups, rtol=1e-12, atol=0.0)
    state2 = {k: v + global_delta[k] for k, v in sites.global_state.items()}
    round2 = _candidates(
        sites, [sites.deltas[5], sites.deltas[6], *sites.deltas[2:4], global_delta]
    )
    with_squares = _vector(
        sites, 0, shards[0], round2, history=chained, round_id=2, global_state=state2
    )
    recomputed = _vector(
        sites,
        0,
        shards[0],
        round2,
        history=replace(chained, reference_squares={}),
        round_id=2,
        global_state=state2,
    )
    assert repr(with_squares.report) == repr(recomputed.report)
    assert with_squares.scores == recomputed.scores
    by_site = {v.site: v for v in with_squares.report.sites}
    assert by_site[ADDRESSES[2]].reason is Reason.FREE_RIDER  # resent: the screen decided
    # round 1's stay with their references, round 2's join them, the same either way
    assert with_squares.history is not None and recomputed.history is not None
    later = with_squares.history.reference_squares
    assert all(later[k] is carried[k] for k in carried)
    fresh = recomputed.history.reference_squares
    assert fresh and all(np.array_equal(later[k], fresh[k]) for k in fresh)


@pytest.mark.parametrize(
    ("game", "method", "evaluations"),
    [("linear_shapley", "linear_shapley", 3), ("loo", "loo", 6), (None, "shapley", 16)],
)
def test_the_terms_validator_game_is_the_game_peer_vector_plays(
    sites: RealSites, shards: list[ImageDataset], game: str | None, method: str, evaluations: int
) -> None:
    """The node reads the round's valuation settings from the terms and passes them on: the
    game those name is the one the vector comes from (absent: the round's method)."""
    terms = ValuationSettings(
        method="shapley", metric="balanced_loss", mode="peers", quorum=3, validator_game=game
    )
    valuation = ValuationSettings.from_json(json.loads(json.dumps(terms.to_json())))
    assert valuation.validator_game == game
    pv = peer_vector(
        validator=ADDRESSES[2],
        round_id=1,
        global_state=sites.global_state,
        spec=SPEC,
        candidates=_candidates(sites),
        validation=shards[2],
        method=valuation.method,
        metric=valuation.metric,
        seed=7,
        large_game=valuation.large_game,
        validator_game=valuation.validator_game,
    )
    # four other updates: linearised (2 models + a gradient pass), leave-one-out (4 + 2),
    # exact Shapley (2**4)
    assert pv.report.method == method and pv.report.evaluations == evaluations
    assert pv.scores[2] == 0 and len(pv.scores) == 5
    if game != "loo":  # leave-one-out values near-redundant IID updates near 0 (loo.py)
        assert all(s > 0 for i, s in enumerate(pv.scores) if i != 2)


@pytest.mark.parametrize("game", ["mc_shapley", "shapley", "linear", ""])
def test_an_unknown_validator_game_is_refused_by_name(
    sites: RealSites, shards: list[ImageDataset], game: str
) -> None:
    with pytest.raises(ConfigError, match=r"validator_game must be one of \('linear_shapley'"):
        peer_vector(
            validator=ADDRESSES[0],
            round_id=1,
            global_state=sites.global_state,
            spec=SPEC,
            candidates=_candidates(sites),
            validation=shards[0],
            method="shapley",
            metric="balanced_loss",
            seed=7,
            validator_game=game,
        )


def test_the_linear_warm_up_check_rejects_an_uphill_update_to_first_order(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """With the linearised game the warm-up's harm check is first order (one gradient pass
    instead of one model per update): a sign-flipped x10 update among four points uphill and
    is LOW_GAIN; the honest ones pass it and are paid."""
    deltas = list(sites.deltas[:5])
    deltas[3] = {k: -10.0 * v for k, v in deltas[3].items()}
    pv = peer_vector(
        validator=ADDRESSES[4],
        round_id=1,
        global_state=sites.global_state,
        spec=SPEC,
        candidates=_candidates(sites, deltas),
        validation=shards[4],
        method="shapley",
        metric="balanced_loss",
        seed=7,
        combiner=HISTORY_COMBINER,
        history=History(),
        validator_game="linear_shapley",
    )
    by_site = {v.site: v for v in pv.report.sites}
    bad = by_site[ADDRESSES[3]]
    assert bad.reason is Reason.LOW_GAIN and "to first order" in bad.detail, bad.detail
    assert pv.scores[3] == 0
    for i in (0, 1, 2):
        assert by_site[ADDRESSES[i]].reason is Reason.OK and pv.scores[i] > 0


@pytest.mark.parametrize("game", ["linear_shapley", None])
def test_the_warm_up_vote_is_the_one_the_game_would_give(
    sites: RealSites, shards: list[ImageDataset], game: str | None
) -> None:
    """A validator plays no game in its warm-up round (value_round's warm_up_game False): its
    scores, reasons, accumulated values and next history are those of the round valued with
    the game, its values each update alone's gain from the harm check, and the next round,
    chained from either, scores the same bits."""
    deltas = list(sites.deltas[:5])
    deltas[3] = {k: -10.0 * v for k, v in deltas[3].items()}  # rejected in the warm-up
    cands = _candidates(sites, deltas)
    kwargs = {
        "global_state": sites.global_state,
        "spec": SPEC,
        "validation": shards[0],
        "metric": "balanced_loss",
        "seed": 7,
        "combiner": HISTORY_COMBINER,
        "history": History(),
    }
    pv = peer_vector(
        validator=ADDRESSES[0],
        round_id=1,
        candidates=cands,
        method="shapley",
        validator_game=game,
        **kwargs,  # type: ignore[arg-type]
    )
    played = value_round(
        candidates=cands[1:], method=game or "shapley", warm_up_game=True, **kwargs
    )
    assert pv.report.method == WARM_UP_ALONE and played.method == (game or "shapley")
    assert pv.report.v_full is None and pv.report.v_empty == played.v_empty
    got = {v.site: v for v in pv.report.sites}
    want = {v.site: v for v in played.sites}
    assert set(got) == set(want) == set(ADDRESSES[1:])
    for site, v in want.items():
        assert (got[site].score, got[site].reason, got[site].status) == (
            v.score,
            v.reason,
            v.status,
        )
        assert (got[site].value is None) == (v.value is None)
    assert got[ADDRESSES[3]].score == 0 and got[ADDRESSES[3]].reason is not Reason.OK
    assert any(v.value is not None and v.value != got[s].value for s, v in want.items())
    assert pv.report.accumulated == played.accumulated
    # round 2, chained from the vector and from the round valued with the game
    global_delta = {k: sum(d[k] for d in sites.deltas[:5]) / 5 for k in sites.deltas[0]}
    state2 = {k: v + global_delta[k] for k, v in sites.global_state.items()}
    round2 = _candidates(sites, [sites.deltas[5], sites.deltas[6], *sites.deltas[2:5]])
    assert pv.history is not None
    chained = pv.next_history(global_delta)
    from_game = replace(pv.history, accumulated=dict(played.accumulated or {}))
    seconds = [
        peer_vector(
            validator=ADDRESSES[0],
            round_id=2,
            global_state=state2,
            spec=SPEC,
            candidates=round2,
            validation=shards[0],
            method="shapley",
            metric="balanced_loss",
            seed=7,
            combiner=HISTORY_COMBINER,
            history=h,
            validator_game=game,
        )
        for h in (chained, PeerVector.next_history(replace(pv, history=from_game), global_delta))
    ]
    assert seconds[0].report.method == (game or "shapley")
    assert repr(seconds[0].report) == repr(seconds[1].report)
    assert seconds[0].scores == seconds[1].scores


def test_a_validators_warm_up_scores_its_alone_gains_under_warm_up_floor(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """With ``warm_up_floor`` 0.5 and ``warm_up_scope`` 0 a validator's warm-up vote (no game:
    each update's alone-gain) accumulates those gains' shares (credited, as a game's values
    would be: the standing's first) and scores every accepted update from them against the
    median share, floored at half the full score (a half sign-flipped update is demoted).
    Honest updates' alone-gains over the initial model are all positive, so only an update
    that makes the model worse alone is demoted in a validator's warm-up."""
    from fedtrail.valuation.standing import (
        credited,
        demoted_score,
        demotion_reference,
        floored_score,
        normalised_values,
    )

    deltas = list(sites.deltas[:5])
    deltas[4] = {k: -0.5 * v for k, v in deltas[4].items()}  # harmful, within the harm check
    cands = _candidates(sites, deltas)
    combiner = replace(HISTORY_COMBINER, warm_up_floor=0.5, warm_up_scope=0)
    pv = peer_vector(
        validator=ADDRESSES[0],
        round_id=1,
        candidates=cands,
        method="shapley",
        global_state=sites.global_state,
        spec=SPEC,
        validation=shards[0],
        metric="balanced_loss",
        seed=7,
        combiner=combiner,
        history=History(),
    )
    assert pv.report.method == WARM_UP_ALONE
    ok = [v for v in pv.report.sites if v.reason is Reason.OK and v.value is not None]
    assert len(ok) >= 3
    shares = normalised_values({v.site: v.value for v in ok if v.value is not None})
    assert shares is not None
    cosines = {v.site: v.cosine for v in ok if v.cosine is not None}
    want_acc = credited(shares, cosines, credit_cosine=combiner.credit_cosine)
    assert pv.report.normalised == want_acc and pv.report.accumulated == want_acc
    ref = demotion_reference(want_acc.values())
    for v in ok:
        want = floored_score(demoted_score(want_acc[v.site] - ref, demote_scale=0.5), 0.5)
        assert v.score == want
    assert any(v.score < SCORE_SCALE for v in ok), [(v.value, v.score) for v in ok]


def test_the_public_screen_marks_what_a_validator_would_and_validators_skip_it(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """Round terms ``valuation.public_screen``: :func:`fedtrail.valuation.public_screen` marks,
    from public data only, the free-riders a validator's own screen marks (here a site resending
    its previous round's update, a stale copy, and one sending a tiny update), with the same
    reasons; a validator told to skip the screen gives them no FREE_RIDER verdict and values
    them (so the aggregator's drop is what zeroes them), and nothing else changes verdict. One
    difference by design: a validator screens the others' updates only (its own is left out),
    the public screen every revealed update, so a test against the round's median (the tiny
    update's) reads another median."""
    from fedtrail.valuation import public_screen
    from fedtrail.valuation.standing import reference_label

    deltas = list(sites.deltas[:5])
    previous = sites.deltas[5]
    deltas[1] = {k: v.clone() for k, v in previous.items()}  # the stale resend
    deltas[3] = {k: 1e-9 * v for k, v in deltas[3].items()}  # tiny
    history = History(
        accumulated={a: 0.1 for a in ADDRESSES},
        valued_rounds=2,
        references={reference_label(ADDRESSES[1], 1): previous},
    )
    candidates = _candidates(sites, deltas)
    marked = public_screen(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=candidates,
        history=history,
        combiner=HISTORY_COMBINER,
    )
    assert list(marked) == [ADDRESSES[1], ADDRESSES[3]]
    assert "stale" in marked[ADDRESSES[1]] or "previous" in marked[ADDRESSES[1]], marked

    def vector(public: bool) -> PeerVector:
        return peer_vector(
            validator=ADDRESSES[0],
            round_id=2,
            global_state=sites.global_state,
            spec=SPEC,
            candidates=candidates,
            validation=shards[0],
            method="shapley",
            metric="balanced_loss",
            seed=7,
            combiner=HISTORY_COMBINER,
            history=history,
            validator_game="linear_shapley",
            public_screen=public,
        )

    screening, skipping = vector(False), vector(True)
    own = {v.site: v for v in screening.report.sites}
    riders = {s: v.detail for s, v in own.items() if v.reason is Reason.FREE_RIDER}
    assert list(riders) == list(marked)  # the same sites
    assert riders[ADDRESSES[1]] == marked[ADDRESSES[1]]  # the stale test reads no median
    assert "of the median" in riders[ADDRESSES[3]] and "of the median" in marked[ADDRESSES[3]]
    skipped = {v.site: v for v in skipping.report.sites}
    assert all(v.reason is not Reason.FREE_RIDER for v in skipped.values())
    assert skipped[ADDRESSES[1]].reason is Reason.OK and skipping.scores[1] > 0
    for s in ADDRESSES[1:]:
        if s not in marked:
            assert skipped[s].reason is own[s].reason, s


def test_a_site_the_public_screen_dropped_gains_no_validator_standing_from_the_round(
    sites: RealSites, shards: list[ImageDataset]
) -> None:
    """Under ``valuation.public_screen`` a validator values a stale resend like any other update,
    so its share enters the validator's accumulated values; once the aggregator dropped it
    (``UpdateScreened``), :meth:`PeerVector.next_history` puts the site's accumulated value
    back to the one the round was scored with (one it had none of is left out), and every
    other site keeps its share. Without screened sites the history is the one it was."""
    from fedtrail.valuation.standing import reference_label

    deltas = list(sites.deltas[:5])
    previous = sites.deltas[5]
    deltas[1] = {k: v.clone() for k, v in previous.items()}  # the stale resend
    carried_in = {a: 0.1 * (i + 1) for i, a in enumerate(ADDRESSES[:3])}  # none for 3, 4
    history = History(
        accumulated=carried_in,
        valued_rounds=2,
        references={reference_label(ADDRESSES[1], 1): previous},
    )
    pv = peer_vector(
        validator=ADDRESSES[0],
        round_id=2,
        global_state=sites.global_state,
        spec=SPEC,
        candidates=_candidates(sites, deltas),
        validation=shards[0],
        method="shapley",
        metric="balanced_loss",
        seed=7,
        combiner=HISTORY_COMBINER,
        history=history,
        validator_game="linear_shapley",
        public_screen=True,
    )
    assert pv.history is not None
    after = dict(pv.history.accumulated)
    gained = {s: after[s] - carried_in.get(s, 0.0) for s in ADDRESSES[1:]}
    assert all(v != 0.0 for v in gained.values()), gained  # every other update was valued
    global_delta = {k: sum(d[k] for d in deltas) / 5 for k in deltas[0]}
    dropped = [ADDRESSES[1], ADDRESSES[4]]
    for delta in (global_delta, None):
        chained = pv.next_history(delta, dropped)
        assert chained is not None
        expected = {s: v for s, v in after.items() if s != ADDRESSES[4]}
        expected[ADDRESSES[1]] = carried_in[ADDRESSES[1]]
        assert dict(chained.accumulated) == expected
        assert list(chained.accumulated) == [s for s in after if s != ADDRESSES[4]]
        unchanged = pv.next_history(delta)
        assert unchanged is not None and dict(unchanged.accumulated) == after
    chained = pv.next_history(global_delta, dropped)
    assert chained is not None and chained.valued_rounds == pv.history.valued_rounds
    assert list(chained.references) == list(pv.next_history(global_delta).references)  # type: ignore[union-attr]
