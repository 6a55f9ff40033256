"""The validator game's shortcuts (issue 14's scoring time) give the bits of the long way:
the gradient pass's own forward pass as the coalition model's outputs, and the warm-up harm
check's global-model utility reused as the game's empty coalition, never another model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedtrail.valuation.utility as utility_mod
from fedtrail.valuation import Candidate, CoalitionUtility, History, value_round
from fedtrail.valuation.base import ValuationContext
from tests.fedtrail.valuation.real_sites import SPEC, real_sites


def _candidates(n: int) -> list[Candidate]:
    rs = real_sites()
    return [Candidate(f"site-{i}", rs.num_samples[i], rs.deltas[i]) for i in range(n)]


def _context(
    metric: str, images: int, global_state: dict[str, torch.Tensor] | None = None
) -> ValuationContext:
    rs = real_sites()
    rng = np.random.default_rng(0)  # the split is sorted by class
    return ValuationContext(
        global_state=rs.global_state if global_state is None else global_state,
        spec=SPEC,
        candidates=_candidates(5),
        validation=rs.validation.subset(np.sort(rng.choice(len(rs.validation), images, False))),
        metric=metric,  # type: ignore[arg-type]
    )


def _bits(value: float, slopes: dict[str, float]) -> list[str]:
    return [value.hex(), *(f"{k}={v.hex()}" for k, v in slopes.items())]


@pytest.mark.parametrize("metric", ["balanced_loss", "loss"])
@pytest.mark.parametrize("images", [74, 270])  # one batch of 256 and two
def test_the_fused_gradient_pass_gives_the_two_pass_bits(
    metric: str, images: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    util = CoalitionUtility(_context(metric, images))
    ats = (None, frozenset(), frozenset(util.players[1:3]))
    fused = [_bits(*util.linearised(at)) for at in ats]
    monkeypatch.setattr(utility_mod, "FUSED_IMAGES", 0)  # a forward pass, then another
    two_pass = [_bits(*util.linearised(at)) for at in ats]
    assert fused == two_pass
    assert len({f[0] for f in fused}) == 3  # three models, three utilities


def test_a_given_global_value_stands_for_the_empty_coalition_only() -> None:
    ctx = _context("balanced_loss", 74)
    util = CoalitionUtility(ctx, global_value=-123.0)
    assert util(frozenset()) == -123.0
    one = frozenset(util.players[:1])
    assert util(one) == CoalitionUtility(ctx)(one)


def test_the_warm_up_game_starts_from_the_rounds_own_global_model() -> None:
    """The warm-up's harm check evaluates the global model; the game reuses that value as its
    empty coalition: each round's report holds its own global model's utility."""
    rs = real_sites()
    moved = {
        k: v + 0.5 * d
        for (k, v), d in zip(rs.global_state.items(), rs.deltas[6].values(), strict=True)
    }
    seen = []
    for global_state in (rs.global_state, moved, rs.global_state):
        ctx = _context("balanced_loss", 74, global_state)
        report = value_round(
            global_state=global_state,
            spec=SPEC,
            candidates=ctx.candidates,
            validation=ctx.validation,
            method="linear_shapley",
            metric="balanced_loss",
            seed=1,
            history=History(),
        )
        assert report.method == "linear_shapley"
        assert report.v_empty == CoalitionUtility(ctx)(frozenset())
        seen.append(report.v_empty)
    assert seen[0] != seen[1] and seen[0] == seen[2]


def test_the_warm_up_game_reuses_the_harm_checks_utility_only_for_the_same_players() -> None:
    """The harm check's utility serves as the game's when every update it judged passes; an
    update screened out (here a sign-flipped one) leaves the game's grand coalition."""
    rs = real_sites()
    honest = _candidates(4)
    flipped = Candidate("site-9", rs.num_samples[5], {k: -3.0 * v for k, v in rs.deltas[5].items()})
    for cands in (honest, [*honest, flipped]):
        ctx = _context("balanced_loss", 74)
        report = value_round(
            global_state=rs.global_state,
            spec=SPEC,
            candidates=cands,
            validation=ctx.validation,
            method="linear_shapley",
            metric="balanced_loss",
            seed=1,
            history=History(),
        )
        passed = [c for c, v in zip(cands, report.sites, strict=True) if v.reason.name == "OK"]
        assert [c.site for c in passed] == [c.site for c in honest]
        fresh = CoalitionUtility(_context("balanced_loss", 74), passed)
        assert report.v_full == fresh(frozenset(fresh.players))
        assert report.v_empty == fresh(frozenset())
