"""Valuation of many sites (issue 18): the linearised game above LARGE_GAME_SITES players, the
forward-pass-free finiteness certificate, and rounds of up to 10 sites valued as before."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fedtrail.valuation.round as round_mod
from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import _BLOCK, deterministic_sum
from fedtrail.ml.models import Classifier
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import (
    LARGE_GAME_SITES,
    Candidate,
    CoalitionUtility,
    linear_shapley,
    value_round,
)
from fedtrail.valuation.utility import CoalitionUtility as UtilityClass
from tests.fedtrail.valuation.real_sites import SPEC, real_sites


def _many(n: int) -> list[Candidate]:
    """``n`` candidates: the seven real updates and seeded noisy copies of them."""
    rs = real_sites()
    gen = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        base = rs.deltas[i % len(rs.deltas)]
        delta = base
        if i >= len(rs.deltas):
            delta = {
                k: v + 0.3 * v.std() * torch.randn(v.shape, generator=gen) for k, v in base.items()
            }
        out.append(Candidate(f"site-{i:02d}", rs.num_samples[i % len(rs.num_samples)], delta))
    return out


def test_linear_shapley_is_efficient_deterministic_and_orders_by_slope() -> None:
    players = ["a", "b", "c", "d"]
    kwargs = {
        "v_empty": -0.7,
        "v_full": -0.5,
        "slopes": [0.3, 0.1, 0.1, -0.2],
        "samples": [100, 100, 100, 100],
        "seed": 3,
        "permutations": 500,
    }
    game = linear_shapley(players, **kwargs)  # type: ignore[arg-type]
    again = linear_shapley(players, **kwargs)  # type: ignore[arg-type]
    assert game.values == again.values
    assert math.isclose(sum(game.values.values()), -0.5 - -0.7, abs_tol=1e-12)
    v = game.values
    assert v["a"] > v["b"] > v["d"]
    assert math.isclose(v["b"], v["c"], rel_tol=0.15)  # symmetric players, sampled
    assert game.method == "linear_shapley" and game.permutations == 1000
    with pytest.raises(ConfigError):
        linear_shapley(players, v_empty=0.0, v_full=1.0, slopes=[1.0], samples=[1, 1, 1, 1])


def test_a_large_round_plays_the_linear_game_and_a_small_one_does_not_change() -> None:
    rs = real_sites()
    common = {
        "global_state": rs.global_state,
        "spec": SPEC,
        "validation": rs.validation,
        "method": "shapley",
        "metric": "balanced_loss",
        "seed": 1,
    }
    big = value_round(candidates=_many(LARGE_GAME_SITES + 2), large_game="linear_shapley", **common)  # type: ignore[arg-type]
    assert big.method == "linear_shapley"
    assert big.evaluations == 3
    assert sum(v.score > 0 for v in big.sites) >= LARGE_GAME_SITES
    small = _many(5)
    with_large = value_round(candidates=small, large_game="linear_shapley", **common)  # type: ignore[arg-type]
    without = value_round(candidates=small, **common)  # type: ignore[arg-type]
    assert with_large.method == without.method == "shapley"
    assert [(v.score, v.reason, v.value, v.detail) for v in with_large.sites] == [
        (v.score, v.reason, v.value, v.detail) for v in without.sites
    ]
    with pytest.raises(ConfigError, match="loss metric"):
        value_round(candidates=small, large_game="linear_shapley", **{**common, "metric": "auc"})  # type: ignore[arg-type]


def test_slopes_match_a_finite_difference_of_the_utility() -> None:
    """The slope of a player is the derivative of the utility along its update: compare with
    a central difference of the loss along the same direction from the full coalition."""
    rs = real_sites()
    from fedtrail.valuation.base import ValuationContext

    cands = _many(3)
    ctx = ValuationContext(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=cands,
        validation=rs.validation,
        metric="loss",
    )
    util = CoalitionUtility(ctx)
    slopes = util.slopes()
    full = util.state(frozenset(util.players))
    eps = 1e-2
    site = util.players[0]
    delta = cands[0].delta
    assert delta is not None

    def at(step: float) -> float:
        moved = {k: (full[k].double() + step * delta[k].double()).float() for k in full}
        shifted = CoalitionUtility(
            ValuationContext(
                global_state=moved,
                spec=SPEC,
                candidates=[Candidate("z", 1, {k: torch.zeros_like(v) for k, v in moved.items()})],
                validation=rs.validation,
                metric="loss",
            )
        )
        return shifted(frozenset())

    numeric = (at(eps) - at(-eps)) / (2 * eps)
    assert math.isclose(slopes[site], numeric, rel_tol=0.05, abs_tol=1e-5)


def test_honest_updates_are_certified_finite_without_a_forward_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = UtilityClass.outputs

    def counting(self: UtilityClass, coalition: frozenset[str]) -> np.ndarray:
        calls.append(coalition)
        return original(self, coalition)

    monkeypatch.setattr(UtilityClass, "outputs", counting)
    rs = real_sites()
    cands = _many(4)
    ctx = round_mod.ValuationContext(
        global_state=rs.global_state, spec=SPEC, candidates=cands, validation=rs.validation
    )
    out = round_mod._broken(ctx, cands)
    assert calls == []
    assert all(c.status is Reason.OK for c in out)
    # an update that overflows is not certified: the forward pass runs and finds it
    bad = dict(cands[1].delta or {})
    bad["fc2.weight"] = bad["fc2.weight"] + 3e38
    cands[1] = Candidate(cands[1].site, cands[1].num_samples, bad)
    out = round_mod._broken(round_mod.replace(ctx, candidates=cands), cands)
    assert len(calls) == 1
    assert out[1].status is Reason.OUTLIER_NORM


def test_the_certificate_never_passes_a_model_whose_outputs_are_not_finite() -> None:
    """Scale real updates until their models overflow: wherever the certificate says finite,
    the forward pass agrees."""
    rs = real_sites()
    cands = _many(2)
    ctx = round_mod.ValuationContext(
        global_state=rs.global_state, spec=SPEC, candidates=cands, validation=rs.validation
    )
    model = SPEC.build()
    assert isinstance(model, Classifier)
    bound = round_mod._input_bound(model, rs.validation)
    certified = 0
    for scale in (1.0, 1e3, 1e6, 1e8, 1e9, 1e10, 1e12):
        delta = {k: v * scale for k, v in (cands[0].delta or {}).items()}
        util = CoalitionUtility(
            round_mod.replace(ctx, candidates=[Candidate("x", 10, delta)]),
        )
        finite = bool(np.isfinite(util.outputs(frozenset({"x"}))).all())
        if round_mod._certainly_finite(model, rs.global_state, delta, bound):
            certified += 1
            assert finite
    assert certified >= 2


def _elementwise_bound(
    global_state: dict[str, torch.Tensor], delta: dict[str, torch.Tensor], x_bound: float
) -> float:
    """SmallCNN's layer-by-layer bound from the float64 element-wise ``|global| + |delta|``,
    each row summed in float64 (the certificate's bound before its row sums)."""
    bound, largest = x_bound, 0.0
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        mags = [
            global_state[n].to(torch.float64).abs() + delta[n].to(torch.float64).abs()
            for n in (f"{layer}.weight", f"{layer}.bias")
        ]
        rows = mags[0].reshape(mags[0].shape[0], -1).sum(dim=1)
        bound = float(rows.max()) * bound + float(mags[1].max())
        largest = max(largest, bound)
    return largest


def test_the_certificates_row_bound_covers_the_element_wise_bound_and_stays_close() -> None:
    """The row-sum bound (float32 sums of ``|delta|`` raised by ROW_SUM_MARGIN, plus the global
    model's) is never below the bound of the element-wise float64 magnitudes, and within the
    margin (compounded over the four layers) of it: it certifies what that one certified, over
    real updates scaled up to overflow, float16 and float64 copies of them, and a round's
    shared global rows."""
    rs = real_sites()
    model = SPEC.build()
    assert isinstance(model, Classifier)
    x_bound = round_mod._input_bound(model, rs.validation)
    shared: dict[str, np.ndarray] = {}
    checked = 0
    for cand in _many(9):
        for scale in (1.0, 1e4, 1e9, 1e15):
            for dtype in (torch.float32, torch.float16, torch.float64):
                delta = {k: (v * scale).to(dtype) for k, v in (cand.delta or {}).items()}
                reference = _elementwise_bound(rs.global_state, delta, x_bound)
                got = round_mod._activation_bound(
                    model, rs.global_state, delta, x_bound, global_rows=shared
                )
                if not math.isfinite(reference):
                    assert got == math.inf
                    continue
                assert got >= reference
                # the margin compounds over SmallCNN's four layers, at most
                assert got <= reference * round_mod.ROW_SUM_MARGIN**4 * (1.0 + 1e-6)
                checked += 1
    assert checked >= 27


def test_deterministic_sum_matches_the_block_by_block_loop() -> None:
    """The one-call reduction adds the same numbers in the same order as a loop over the
    zero-padded 1024-wide blocks (signed zeros included)."""

    def loop(a: np.ndarray) -> float:
        rows = -(-a.size // _BLOCK)
        padded = np.zeros(rows * _BLOCK)
        padded[: a.size] = a
        blocks = padded.reshape(rows, _BLOCK)
        acc = blocks[0].copy()
        for r in range(1, rows):
            acc += blocks[r]
        return math.fsum(acc.tolist())

    rng = np.random.default_rng(5)
    for size in (1, 1023, 1024, 1025, 5000, 105_346, 300_001):
        x = rng.standard_normal(size) * 10.0 ** rng.integers(-20, 20, size)
        x[rng.random(size) < 0.2] = -0.0
        got, want = deterministic_sum(x), loop(x)
        assert got == want and math.copysign(1, got) == math.copysign(1, want)
    for size in (3000, 5, 1):
        zeros = -np.zeros(size)
        assert math.copysign(1, deterministic_sum(zeros)) == math.copysign(1, loop(zeros))
    # below one block the values are summed without their padding: the same sum, cancellations,
    # infinities and NaN included
    for size in range(1, 1024, 7):
        x = rng.standard_normal(size) * 10.0 ** rng.integers(-300, 300, size)
        x[rng.random(size) < 0.3] = -0.0
        x = np.concatenate([x, -x[: size // 3]])  # exact cancellations
        got, want = deterministic_sum(x), loop(x)
        assert got == want and math.copysign(1, got) == math.copysign(1, want)
    special = np.array([1.0, np.inf, -2.0])
    assert deterministic_sum(special) == loop(special) == np.inf
    assert math.isnan(deterministic_sum(np.array([1.0, np.nan])))


def test_valuation_settings_record_the_large_game_and_old_logs_have_none() -> None:
    doc = ValuationSettings(method="shapley", metric="loss", large_game="linear_shapley").to_json()
    assert doc["large_game"] == "linear_shapley"
    assert ValuationSettings.from_json(doc).large_game == "linear_shapley"
    assert ValuationSettings.from_json({"method": "shapley", "metric": "loss"}).large_game is None


_SLOPES_SCRIPT = """
import torch
torch.set_num_threads(1)
from tests.fedtrail.valuation.test_large_game import _slopes_bits
print(" ".join(_slopes_bits()))
"""


def _slopes_bits() -> list[str]:
    rs = real_sites()
    from fedtrail.valuation.base import ValuationContext

    ctx = ValuationContext(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=_many(4),
        validation=rs.validation,
        metric="balanced_loss",
    )
    return [float(v).hex() for v in CoalitionUtility(ctx).slopes().values()]


def test_slopes_do_not_depend_on_the_blas_thread_count() -> None:
    """The linearised game's slopes are the same bits whatever OpenBLAS's own thread pool (it
    splits long dot products across threads; torch's thread setting does not pin it), so a
    large round replays the same on a machine with another core count: a subprocess with one
    OpenBLAS thread against this process's pool (one per core)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", _SLOPES_SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = _slopes_bits()
    finally:
        torch.set_num_threads(threads)
    assert len(here) == 4
    assert done.stdout.split() == here


@pytest.mark.parametrize("metric", ["balanced_loss", "loss"])
def test_linearised_gives_the_utility_itself_and_the_slopes(metric: str) -> None:
    """One evaluation gives both: the value is bit for bit the utility's (the linear game's
    v_full and the first-order warm-up check's base), the slopes are those of slopes()."""
    rs = real_sites()
    from fedtrail.valuation.base import ValuationContext

    ctx = ValuationContext(
        global_state=rs.global_state,
        spec=SPEC,
        candidates=_many(4),
        validation=rs.validation,
        metric=metric,  # type: ignore[arg-type]
    )
    util = CoalitionUtility(ctx)
    for at in (None, frozenset(), frozenset(util.players[:2])):
        value, slopes = util.linearised(at)
        where = frozenset(util.players) if at is None else at
        assert value == util(where)
        assert slopes == util.slopes(at)
    assert util.linearised(frozenset())[0] != util.linearised()[0]


def test_the_linear_game_can_be_played_at_every_size_as_a_method() -> None:
    """A validator's game (peer rounds' ``validator_game``) reaches value_round as its method:
    played at five sites, where ``large_game`` would leave Monte-Carlo or exact Shapley."""
    rs = real_sites()
    common = {
        "global_state": rs.global_state,
        "spec": SPEC,
        "validation": rs.validation,
        "metric": "balanced_loss",
        "seed": 1,
        "candidates": _many(5),
    }
    report = value_round(method="linear_shapley", **common)  # type: ignore[arg-type]
    assert report.method == "linear_shapley" and report.evaluations == 3
    assert all(v.score > 0 for v in report.sites)
    with pytest.raises(ConfigError, match="loss metric"):
        value_round(method="linear_shapley", **{**common, "metric": "auc"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="valuation method must be one of"):
        value_round(method="linear", **common)  # type: ignore[arg-type]
