"""The budgeted Monte-Carlo game (issue 18): ``budget_shapley``, ``aggregator run``'s opt-in
large game — bounded by its settings at any size, two-cycle Monte-Carlo Shapley up to 12 players,
stratified by coalition size above, recorded in the terms and replayed from the name."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources

import click
import numpy as np
import pytest

from fedtrail.aggregator.commands import aggregator
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.simulation.faults import scale_update, sign_flip
from fedtrail.valuation import (
    HISTORY_COMBINER,
    LARGE_GAME_SITES,
    LARGE_GAMES,
    Candidate,
    CoalitionUtility,
    History,
    ValuationContext,
    budget_shapley,
    budget_shapley2,
    budget_shapley3,
    exact_shapley,
    mc_shapley,
    value_round,
)
from fedtrail.valuation.limits import ThresholdLimits
from fedtrail.valuation.round import check_game
from fedtrail.valuation.shapley import (
    BUDGET3_FIT_SITES,
    BUDGET_CYCLES,
    BUDGET_EVALUATIONS,
    BUDGET_EXACT_SITES,
    BUDGET_MIN_SIZES,
    stratified_shapley,
)
from tests.fedtrail.valuation.real_sites import SPEC, real_sites
from tests.fedtrail.valuation.test_large_game import _many


def _players(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def _saturating(players: list[str]) -> dict[str, float]:
    return {p: (i % 7 + 1) / (10 * len(players)) for i, p in enumerate(players)}


def _noisy(coalition: frozenset[str]) -> float:
    """A utility no truncation tolerance ever reaches: a coalition's value is a hash of it."""
    digest = hashlib.sha256(",".join(sorted(coalition)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@pytest.mark.parametrize("n", [13, 22, 23, 50, 100, 150, 151, 301])
def test_the_budget_bounds_the_evaluations_whatever_the_utilities(n: int) -> None:
    ps = _players(n)
    game = budget_shapley(ps, _noisy, seed=5)
    sizes = max(n, 2 * BUDGET_EVALUATIONS) // n
    assert game.method == "budget_shapley"
    assert game.evaluations <= n * sizes + 2
    assert game.evaluations <= max(n, BUDGET_CYCLES * BUDGET_EVALUATIONS) + 2
    if sizes < BUDGET_MIN_SIZES:  # no room for a size between 0 and n - 1: each update alone
        assert game.evaluations == n + 2
    again = budget_shapley(ps, _noisy, seed=5)
    assert [v.hex() for v in game.values.values()] == [v.hex() for v in again.values.values()]
    other = budget_shapley(ps, _noisy, seed=6).values
    if sizes >= BUDGET_MIN_SIZES:  # the seed picks the circles, so the coalitions in between
        assert other != game.values
    else:  # each update alone: any circle
        assert other == game.values


def test_up_to_twelve_players_it_is_monte_carlo_with_two_cycles() -> None:
    """Up to BUDGET_EXACT_SITES players two full cycles fit the budget: the values are
    mc_shapley's (two cycles) bit for bit, and close to the exact ones."""
    assert BUDGET_EXACT_SITES * (BUDGET_EXACT_SITES - 1) * BUDGET_CYCLES <= 2 * BUDGET_EVALUATIONS
    ps = _players(8)
    q = _saturating(ps)

    def sat(c: frozenset[str]) -> float:
        return math.tanh(3 * sum(q[p] for p in c))

    game = budget_shapley(ps, sat, seed=3)
    mc = mc_shapley(ps, sat, seed=3, min_cycles=BUDGET_CYCLES, max_cycles=BUDGET_CYCLES)
    assert game.values == mc.values and game.evaluations == mc.evaluations
    exact = exact_shapley(ps, sat).values
    assert max(abs(game.values[p] - exact[p]) for p in ps) < 0.1 * max(exact.values())


@pytest.mark.parametrize("n", [13, 23, 100, 151])
def test_an_additive_game_gets_its_exact_values(n: int) -> None:
    """Each sampled marginal of an additive game is the player's weight: every size's mean is
    exact, so is the interpolation, and the values add up to v(all) - v(empty)."""
    ps = _players(n)
    w = {p: (i % 9 - 4) / 7 for i, p in enumerate(ps)}
    game = budget_shapley(ps, lambda c: 0.3 + sum(w[p] for p in c), seed=2)
    assert max(abs(game.values[p] - w[p]) for p in ps) < 1e-9


@pytest.mark.parametrize("n", [23, 50, 75])
def test_a_marginal_that_grows_with_the_coalition_is_not_cut(n: int) -> None:
    """What the first version (each permutation cut at depth 150 // n, the later marginals 0)
    got wrong: an update whose marginal grows with the coalition it joins (``a + c * |S|``,
    negative alone, Shapley value ``a + c * (n - 1) / 2 > 0``). The stratified game samples the
    sizes up to ``n - 1`` and weighs each as Shapley does: its value is exact (the marginal
    depends on the size alone), where the depth-cut walk at 23 players paid it -0.065 (README)."""
    ps = _players(n)
    late = ps[0]
    a, c = -0.5, 0.1

    def util(s: frozenset[str]) -> float:
        return (a + c * (len(s) - 1)) if late in s else 0.0

    game = budget_shapley(ps, util, seed=4)
    want_late = a + c * (n - 1) / 2
    assert math.isclose(game.values[late], want_late, rel_tol=1e-9)
    assert game.values[late] > 0


@pytest.mark.parametrize("n", [76, 100, 157])
def test_from_76_players_it_values_each_update_alone(n: int) -> None:
    """With no room for a size between 0 and n - 1 (max(n, 300) // n < BUDGET_MIN_SIZES) the
    game is each update alone against the global model, taken for every size: n + 2
    evaluations (the 100-site game's cost before the stratified one, issue 18's time bar)."""
    assert (2 * BUDGET_EVALUATIONS) // 75 >= BUDGET_MIN_SIZES > (2 * BUDGET_EVALUATIONS) // 76
    ps = _players(n)
    q = _saturating(ps)

    def util(c: frozenset[str]) -> float:
        return 0.5 + math.tanh(sum(q[p] for p in c) * len(ps))

    game = budget_shapley(ps, util, seed=1)
    assert game.evaluations == len(ps) + 2
    for p in ps:
        alone = util(frozenset({p})) - util(frozenset())
        assert math.isclose(game.values[p], alone, rel_tol=1e-12)


def test_stratified_shapley_refuses_sizes_below_one() -> None:
    with pytest.raises(ConfigError, match="sizes"):
        stratified_shapley(_players(3), _noisy, sizes=0)


def test_a_large_round_plays_the_budget_game_and_a_small_one_does_not_change() -> None:
    rs = real_sites()
    common = {
        "global_state": rs.global_state,
        "spec": SPEC,
        "validation": rs.validation,
        "method": "shapley",
        "metric": "balanced_loss",
        "seed": 1,
    }
    many = _many(LARGE_GAME_SITES + 2)
    big = value_round(candidates=many, large_game="budget_shapley", **common)  # type: ignore[arg-type]
    assert big.method == "budget_shapley"
    assert 2 < big.evaluations <= BUDGET_CYCLES * BUDGET_EVALUATIONS + 2
    assert sum(v.score > 0 for v in big.sites) >= LARGE_GAME_SITES
    again = value_round(candidates=many, large_game="budget_shapley", **common)  # type: ignore[arg-type]
    assert again == big
    small = _many(5)
    with_large = value_round(candidates=small, large_game="budget_shapley", **common)  # type: ignore[arg-type]
    without = value_round(candidates=small, **common)  # type: ignore[arg-type]
    assert with_large.method == without.method == "shapley"
    assert with_large == without


@pytest.mark.parametrize("seed", [1, 2])
def test_an_update_that_wrecks_small_coalitions_loses_under_budget_but_not_linear(
    seed: int,
) -> None:
    """Why the budget game is the stronger opt-in than the linear one: 20 honest updates, one
    sign-flipped, one x10 and one x40 of honest ones (the game alone: no screening). The x40
    points well, so the linear game's slope ranks it first, but the small coalitions it joins
    (with the x10 above all) make models far worse than the global one; the budget game,
    evaluating real coalition models at 7 coalition sizes from 0 to 22, gives it the lowest
    value, negative, as Monte-Carlo Shapley did (measured: -0.0020, last of 23, 4,478
    evaluations; the budget game -0.0413, last, 278; linear +0.0253, first), and the sign-flip
    a negative one (-0.0021 and -0.0029, 22nd, at seeds 1 and 2; the first, depth-cut version
    of the game ranked it 3rd, its marginals next to the x10 and x40 in small coalitions
    outweighing its negative ones)."""
    rs = real_sites()
    cands = _many(20)
    cands.append(Candidate("flip", rs.num_samples[0], sign_flip(rs.deltas[0])))
    cands.append(Candidate("x10", rs.num_samples[1], scale_update(rs.deltas[1], 10.0)))
    cands.append(Candidate("x40", rs.num_samples[2], scale_update(rs.deltas[2], 40.0)))
    ctx = ValuationContext(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=cands,
        validation=rs.validation,
        metric="balanced_loss",
    )
    budget = LARGE_GAMES["budget_shapley"](CoalitionUtility(ctx), seed)
    linear = LARGE_GAMES["linear_shapley"](CoalitionUtility(ctx), seed)
    assert linear.values["x40"] == max(linear.values.values()) > 0
    assert budget.values["x40"] == min(budget.values.values()) < 0
    assert budget.values["flip"] < 0
    assert budget.evaluations <= BUDGET_CYCLES * BUDGET_EVALUATIONS + 2


def test_the_budget_game_is_the_default_large_game_and_a_recorded_setting() -> None:
    """``aggregator run --large-game``'s default and the settings' (one pipeline: the CLI, the
    Flower app and the benches alike, session 61), Monte-Carlo still offered as ``none``; a
    ledger keeps its round 1's game (``test_terms_round_one_fixed.py``)."""
    [param] = [p for p in aggregator.commands["run"].params if p.name == "large_game"]
    assert isinstance(param, click.Option) and param.default == "budget_shapley"
    assert AggregatorSettings().large_game == "budget_shapley"
    assert isinstance(param.type, click.Choice) and "none" in param.type.choices
    terms = AggregatorSettings(large_game="budget_shapley").valuation_terms(
        3, quorum=None, probe=None
    )
    assert terms.large_game == "budget_shapley"
    doc = terms.to_json()
    assert doc["large_game"] == "budget_shapley"
    assert ValuationSettings.from_json(doc).large_game == "budget_shapley"
    schema = json.loads(
        resources.files("fedtrail").joinpath("schemas/round-terms.schema.json").read_text()
    )
    found: list[object] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "large_game" in node and isinstance(node["large_game"], dict):
                found.append(node["large_game"].get("enum"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert found == [list(LARGE_GAMES)]


def test_the_warm_up_game_takes_each_update_alone_from_the_harm_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warm-up round evaluates each update alone in its harm check; the game (of the updates
    that passed, fewer players than the check's) takes those values instead of evaluating them
    again: the same report bit for bit, one model evaluation fewer per passer."""
    rs = real_sites()
    cands = _many(LARGE_GAME_SITES + 2)
    cands.append(Candidate("x40", rs.num_samples[1], scale_update(rs.deltas[1], 40.0)))
    common = {
        "global_state": rs.global_state,
        "spec": SPEC,
        "validation": rs.validation,
        "candidates": cands,
        "method": "shapley",
        "metric": "balanced_loss",
        "seed": 2,
        "combiner": HISTORY_COMBINER,
        "history": History(),
        "large_game": "budget_shapley",
    }
    evaluate = CoalitionUtility._evaluate
    calls: list[frozenset[str]] = []

    def counted(self: CoalitionUtility, coalition: frozenset[str]) -> float:
        calls.append(coalition)
        return evaluate(self, coalition)

    monkeypatch.setattr(CoalitionUtility, "_evaluate", counted)
    reused = value_round(**common)  # type: ignore[arg-type]
    with_reuse = len(calls)
    calls.clear()
    monkeypatch.setattr(CoalitionUtility, "knowing_alone", lambda self, values: self)
    again = value_round(**common)  # type: ignore[arg-type]
    assert reused.method == "budget_shapley"
    x40 = next(v for v in reused.sites if v.site == "x40")
    assert x40.score == 0 and x40.value is None  # out before the game, after the harm check
    passers = sum(v.value is not None for v in reused.sites)
    assert passers == LARGE_GAME_SITES + 2
    assert reused == again
    assert len(calls) - with_reuse == passers


def test_the_budget_game_plays_under_any_metric_so_metric_never_sets_it() -> None:
    """It needs no gradient: a round under the AUC records it too (the linear game is dropped
    there), so ``--metric`` given at an upgraded aggregator never claims the large game (round
    1's is kept: ``tests/aggregator/test_round_one_settings.py``)."""
    check_game(method="shapley", metric="auc", large_game="budget_shapley")
    with pytest.raises(ConfigError, match="loss metric"):
        check_game(method="shapley", metric="auc", large_game="linear_shapley")
    for metric in ("auc", "loss", "balanced_loss"):
        terms = AggregatorSettings(large_game="budget_shapley", metric=metric).valuation_terms(
            2, quorum=None, probe=None
        )
        assert terms.large_game == "budget_shapley"
    linear = AggregatorSettings(large_game="linear_shapley", metric="auc")
    assert linear.valuation_terms(2, quorum=None, probe=None).large_game is None


def test_audit_verify_replays_the_budget_game_from_the_recorded_name() -> None:
    """A round's terms record ``valuation.large_game``; verify's replay (``_replay_valuation``
    with the settings read back from the terms' JSON) plays the same game on the same updates:
    the same report as the aggregator's, bit for bit, and ``mc_shapley`` where the name is
    absent (an older log)."""
    from fedtrail.auditor.verify import _replay_valuation
    from fedtrail.valuation.chained import combiner_from

    rs = real_sites()
    offered = AggregatorSettings(large_game="budget_shapley", standing=False).valuation_terms(
        4, quorum=None, probe=None
    )
    settings = ValuationSettings.from_json(json.loads(json.dumps(offered.to_json())))
    assert settings.large_game == "budget_shapley"
    cands = _many(LARGE_GAME_SITES + 1)
    aggregator_side = value_round(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=cands,
        validation=rs.validation,
        method=offered.method,
        metric=offered.metric,
        seed=offered.seed if offered.seed is not None else 0,
        combiner=combiner_from(offered),
        large_game=offered.large_game,
    )
    common = {
        "chain": None,
        "round_id": 4,
        "spec": SPEC,
        "start": rs.global_state,
        "candidates": cands,
        "validation": rs.validation,
        "seed": 0,
    }
    replayed, _ = _replay_valuation(settings, **common)  # type: ignore[arg-type]
    assert aggregator_side.method == replayed.method == "budget_shapley"
    assert replayed == aggregator_side
    older, _ = _replay_valuation(
        ValuationSettings.from_json({**settings.to_json(), "large_game": None}), **common
    )  # type: ignore[arg-type]
    assert older.method == "mc_shapley"


@pytest.mark.parametrize("n", [5, 12, 13, 17, 18, 23, 75, 76, 100, 150])
def test_budget_shapley2_is_bounded_and_deterministic(n: int) -> None:
    """``budget_shapley2`` (h-308) spends at most the budget's ``max(n, 300) + 2`` evaluations
    up to 150 players (2n + 2 at 76 and more: each update alone and in a pair), the same for a
    seed, others for another seed."""
    ps = _players(n)
    game = budget_shapley2(ps, _noisy, seed=5)
    assert game.method == "budget_shapley2"
    assert game.evaluations <= max(n, 2 * BUDGET_EVALUATIONS) + 2
    if n > 75:
        assert game.evaluations == 2 * n + 2
    assert budget_shapley2(ps, _noisy, seed=5) == game
    assert budget_shapley2(ps, _noisy, seed=6).values != game.values


@pytest.mark.parametrize("n", [11, 15])
def test_budget_shapley2_is_exact_on_an_additive_game_where_every_size_is_sampled(n: int) -> None:
    """Up to 17 players every size is sampled (Monte-Carlo without truncation to 12): an
    additive game's values are its weights exactly."""
    ps = _players(n)
    w = _saturating(ps)
    game = budget_shapley2(ps, lambda c: 0.3 + sum(w[p] for p in c), seed=2)
    for p in ps:
        assert math.isclose(game.values[p], w[p], rel_tol=1e-9)


def test_a_large_round_plays_budget_shapley2_when_named() -> None:
    """``large_game="budget_shapley2"`` is played above LARGE_GAME_SITES screened updates,
    replayable from the name (a second run gives the same report), a registered choice."""
    rs = real_sites()
    common = {
        "global_state": rs.global_state,
        "spec": SPEC,
        "validation": rs.validation,
        "method": "shapley",
        "metric": "balanced_loss",
        "seed": 1,
    }
    many = _many(LARGE_GAME_SITES + 2)
    big = value_round(candidates=many, large_game="budget_shapley2", **common)  # type: ignore[arg-type]
    assert big.method == "budget_shapley2"
    assert 2 < big.evaluations <= 2 * BUDGET_EVALUATIONS + 2
    assert value_round(candidates=many, large_game="budget_shapley2", **common) == big  # type: ignore[arg-type]
    check_game(method="mc_shapley", metric="auc", large_game="budget_shapley2")


def test_budget_shapley2_is_a_recorded_setting_sites_accept_by_default() -> None:
    """Terms naming ``budget_shapley2`` round-trip through the round log's settings (what
    ``audit verify`` replays ``value_round`` from), and a site's default ``[accept] methods``
    takes them; a site that lists its games explicitly must name it."""
    settings = ValuationSettings(
        method="mc_shapley", metric="balanced_loss", large_game="budget_shapley2", standing=True
    )
    assert ValuationSettings.from_json(settings.to_json()).large_game == "budget_shapley2"
    assert "budget_shapley2" in ThresholdLimits().methods
    assert ThresholdLimits().payment_breaches(AggregationRule(), settings) == []
    old = ThresholdLimits(methods=("shapley", "mc_shapley", "budget_shapley"))
    [breach] = old.payment_breaches(AggregationRule(), settings)
    assert "'budget_shapley2'" in breach


def _fit_inputs(players: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    """Seeded sample counts (5-60) and slopes for ``budget_shapley3``."""
    rng = np.random.default_rng(3)
    counts = {p: int(k) for p, k in zip(players, rng.integers(5, 61, len(players)), strict=True)}
    slopes = {p: float(x) for p, x in zip(players, rng.normal(0, 1e-3, len(players)), strict=True)}
    return counts, slopes


@pytest.mark.parametrize("n", [5, 12, 13, 75, 76, 100, 150])
def test_budget_shapley3_is_bounded_and_deterministic(n: int) -> None:
    """``budget_shapley3`` (h-313) is ``budget_shapley2`` (its values, its own name) below
    BUDGET3_FIT_SITES players and ``2 n + 2`` evaluations from there (each update alone and in a
    pair); the same for a seed, others for another seed."""
    ps = _players(n)
    counts, slopes = _fit_inputs(ps)
    game = budget_shapley3(ps, _noisy, seed=5, samples=counts, slopes=slopes)
    assert game.method == "budget_shapley3"
    assert game.evaluations <= max(n, 2 * BUDGET_EVALUATIONS) + 2
    if n < BUDGET3_FIT_SITES:
        assert game.values == budget_shapley2(ps, _noisy, seed=5).values
    else:
        assert game.evaluations == 2 * n + 2
    assert budget_shapley3(ps, _noisy, seed=5, samples=counts, slopes=slopes) == game
    assert budget_shapley3(ps, _noisy, seed=6, samples=counts, slopes=slopes).values != game.values


def test_budget_shapley3_needs_counts_and_slopes_from_76_players() -> None:
    ps = _players(BUDGET3_FIT_SITES)
    counts, slopes = _fit_inputs(ps)
    with pytest.raises(ConfigError, match="sample count and slope"):
        budget_shapley3(ps, _noisy, seed=1)
    with pytest.raises(ConfigError, match="finite slope"):
        budget_shapley3(ps, _noisy, seed=1, samples=counts, slopes={**slopes, ps[3]: math.nan})
    with pytest.raises(ConfigError, match="positive integer sample count"):
        budget_shapley3(ps, _noisy, seed=1, samples={**counts, ps[0]: 0}, slopes=slopes)


def test_a_large_round_plays_budget_shapley3_when_named() -> None:
    """``large_game="budget_shapley3"`` is played above LARGE_GAME_SITES screened updates (from
    76 with the slopes of ``CoalitionUtility.linearised``: 2 n + 2 evaluations), replayable from
    the name, a registered choice that needs a loss metric, accepted by default."""
    rs = real_sites()
    common = {
        "global_state": rs.global_state,
        "spec": SPEC,
        "validation": rs.validation,
        "method": "shapley",
        "metric": "balanced_loss",
        "seed": 1,
    }
    many = _many(BUDGET3_FIT_SITES)
    big = value_round(candidates=many, large_game="budget_shapley3", **common)  # type: ignore[arg-type]
    assert big.method == "budget_shapley3"
    assert big.evaluations == 2 * BUDGET3_FIT_SITES + 2
    assert value_round(candidates=many, large_game="budget_shapley3", **common) == big  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="loss metric"):
        check_game(method="mc_shapley", metric="auc", large_game="budget_shapley3")
    settings = ValuationSettings(
        method="mc_shapley", metric="balanced_loss", large_game="budget_shapley3", standing=True
    )
    assert ValuationSettings.from_json(settings.to_json()).large_game == "budget_shapley3"
    assert ThresholdLimits().payment_breaches(AggregationRule(), settings) == []
