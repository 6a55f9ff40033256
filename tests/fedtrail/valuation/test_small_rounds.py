"""Rounds where no majority can tell which update is odd: the standing's warm-up (values are not
accumulated yet) and rounds of two updates (the median of two is no consensus). Checks that need
no majority judge them: an update whose model alone is clearly worse than the global model is
LOW_GAIN in the warm-up, and a tiny update is FREE_RIDER next to the global model's norm or to
the site's own previous update, while honest updates keep their full score."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fedtrail.ml.aggregation import apply_delta
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation import value_round
from fedtrail.valuation.base import Candidate
from fedtrail.valuation.combine import SiteValuation
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.standing import History
from tests.fedtrail.valuation.real_sites import SPEC, real_sites

Delta = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainedRound:
    """A global model trained 3 epochs on 1,600 images, and two honest updates of 800 images
    (1 epoch) from it: a round after the first, where an update scaled x10 overshoots."""

    global_state: dict[str, torch.Tensor]
    deltas: tuple[Delta, Delta]
    num_samples: tuple[int, int]


@functools.cache
def trained_round() -> TrainedRound:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rs = real_sites()
        train = load_bundled().train
        pool = train.subset(np.random.default_rng(1).choice(len(train), 1600, replace=False))
        start = train_local(
            rs.global_state, pool, spec=SPEC, config=TrainConfig(epochs=3, seed=5)
        ).delta
        global_state = apply_delta(rs.global_state, start)
        a, b = (
            train_local(global_state, pool.subset(p), spec=SPEC, config=TrainConfig(seed=10 + i))
            for i, p in enumerate(partition_iid(pool.labels, 2, seed=1))
        )
    finally:
        torch.set_num_threads(threads)
    return TrainedRound(
        global_state=global_state,
        deltas=(a.delta, b.delta),
        num_samples=(a.num_samples, b.num_samples),
    )


def _scaled(delta: Delta, factor: float) -> Delta:
    return {k: factor * v for k, v in delta.items()}


def _two_sites(
    global_state: dict[str, torch.Tensor],
    a: tuple[Delta, int],
    b: tuple[Delta, int],
    history: History,
    method: str = "shapley",
) -> dict[str, SiteValuation]:
    report = value_round(
        global_state=global_state,
        spec=SPEC,
        candidates=[Candidate("site-a", a[1], a[0]), Candidate("site-b", b[1], b[0])],
        validation=real_sites().validation,
        method=method,
        metric="balanced_loss",
        seed=0,
        history=history,
    )
    return {v.site: v for v in report.sites}


@pytest.mark.parametrize("method", ["shapley", "linear_shapley"])
@pytest.mark.parametrize("factor", [10.0, -10.0, -1.0])
def test_in_a_two_site_warm_up_an_update_that_makes_the_model_worse_is_not_paid(
    factor: float, method: str
) -> None:
    """x10, sign-flipped x10 and sign-flipped: each model alone is worse than the global one
    (they were all paid in full: the warm-up accumulates nothing and two updates skip the
    robust screens); the honest site keeps its full score. The linearised game (a validator's)
    checks each model alone exactly too below the robust screens' minimum of updates: a first
    order check would pay the x10 update, whose slope is ten times the honest one's."""
    tr = trained_round()
    (da, db), (na, nb) = tr.deltas, tr.num_samples
    by_site = _two_sites(tr.global_state, (da, na), (_scaled(db, factor), nb), History(), method)
    bad, honest = by_site["site-b"], by_site["site-a"]
    assert (bad.score, bad.reason) == (0, Reason.LOW_GAIN)
    assert "warm-up round" in bad.detail and "alone" in bad.detail
    assert "first order" not in bad.detail
    assert (honest.score, honest.reason) == (SCORE_SCALE, Reason.OK)


def test_an_honest_two_site_round_pays_both_sites_in_full() -> None:
    """From the initial model and from a trained one, warm-up or not."""
    rs = real_sites()
    tr = trained_round()
    rounds = [
        (rs.global_state, (rs.deltas[0], rs.num_samples[0]), (rs.deltas[1], rs.num_samples[1])),
        (tr.global_state, *zip(tr.deltas, tr.num_samples, strict=True)),
    ]
    for global_state, a, b in rounds:
        for history in (History(), History(valued_rounds=1)):
            by_site = _two_sites(global_state, a, b, history)
            for v in by_site.values():
                assert (v.score, v.reason) == (SCORE_SCALE, Reason.OK), v.detail


def test_every_honest_update_of_a_seven_site_warm_up_passes_the_checks_without_majority() -> None:
    rs = real_sites()
    report = value_round(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=[
            Candidate(f"site-{i}", n, d)
            for i, (d, n) in enumerate(zip(rs.deltas, rs.num_samples, strict=True))
        ],
        validation=rs.validation,
        method="mc_shapley",
        metric="balanced_loss",
        seed=0,
        history=History(),
    )
    assert all((v.score, v.reason) == (SCORE_SCALE, Reason.OK) for v in report.sites)


@pytest.mark.parametrize("valued_rounds", [0, 1])
def test_a_tiny_update_in_a_two_update_round_is_a_free_rider(valued_rounds: int) -> None:
    """Noise at 0.5% of an honest update's norm: with two updates the lower median is the tiny
    one itself, so only the global model's norm shows it (it was paid in full before)."""
    rs = real_sites()
    honest = rs.deltas[0]
    gen = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in rs.deltas[1].items()}
    size = float(torch.cat([v.flatten() for v in rs.deltas[1].values()]).norm())
    scale = 0.005 * size / float(torch.cat([v.flatten() for v in noise.values()]).norm())
    tiny = _scaled(noise, scale)
    by_site = _two_sites(
        rs.global_state,
        (honest, rs.num_samples[0]),
        (tiny, rs.num_samples[1]),
        History(valued_rounds=valued_rounds),
    )
    assert (by_site["site-b"].score, by_site["site-b"].reason) == (0, Reason.FREE_RIDER)
    assert "of the global model's" in by_site["site-b"].detail
    assert (by_site["site-a"].score, by_site["site-a"].reason) == (SCORE_SCALE, Reason.OK)


def test_an_update_tiny_next_to_the_sites_own_previous_one_is_a_free_rider() -> None:
    """Without the model's norm as a scale, the site's own previous update is one; another
    site's earlier update is not the site's own."""
    rs = real_sites()
    honest, previous = rs.deltas[0], rs.deltas[1]
    small = _scaled(previous, 0.005)
    rule = {"min_norm_ratio": 0.01, "stale_cosine": 0.9999, "stale_distance": 0.01}
    riders = free_riders(
        {"a": honest, "b": small}, {"b's update of round 1": _scaled(previous, -1.0)}, **rule
    )
    assert list(riders) == ["b"] and "its own earlier update" in riders["b"]
    assert free_riders({"a": honest, "b": small}, {"a's update of round 1": previous}, **rule) == {}


def test_a_validator_warm_up_checks_exactly_what_the_robust_screens_no_longer_judge() -> None:
    """Three updates: honest, x10 and sign-flipped. The linearised game's first-order harm check
    flags the flip and passes the x10 one (its slope is ten times the honest one's); two updates
    are then left, too few for the robust norm screen, so the x10 one is checked exactly and is
    not paid, as under exact Shapley (it was paid in full)."""
    tr = trained_round()
    (da, db), (na, nb) = tr.deltas, tr.num_samples
    for method in ("shapley", "linear_shapley"):
        report = value_round(
            global_state=tr.global_state,
            spec=SPEC,
            candidates=[
                Candidate("site-a", na, da),
                Candidate("site-b", nb, _scaled(db, 10.0)),
                Candidate("site-c", na, _scaled(da, -1.0)),
            ],
            validation=real_sites().validation,
            method=method,
            metric="balanced_loss",
            seed=0,
            history=History(),
        )
        by_site = {v.site: v for v in report.sites}
        assert (by_site["site-a"].score, by_site["site-a"].reason) == (SCORE_SCALE, Reason.OK)
        for bad in ("site-b", "site-c"):
            assert (by_site[bad].score, by_site[bad].reason) == (0, Reason.LOW_GAIN), method
        if method == "linear_shapley":
            assert "first order" in by_site["site-c"].detail
            assert "first order" not in by_site["site-b"].detail
