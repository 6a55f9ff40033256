"""``project_shift`` (round terms ``valuation.project_shift``): the validation game values each
update with its first-order uniform logit shift removed, the large label-prior shift a DP-SGD
update carries (README, *Valuation under DP*). Terms without the key value as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.models import initial_model
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import value_round
from fedtrail.valuation.base import Candidate, ValuationContext
from fedtrail.valuation.limits import ThresholdLimits, limits_from, payment_refusal
from fedtrail.valuation.utility import CoalitionUtility
from tests.fedtrail.valuation.real_sites import SPEC, RealSites, real_sites


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sites() -> RealSites:
    return real_sites()


def _mean_logit_difference(state: dict[str, torch.Tensor], sites: RealSites) -> float:
    model = initial_model(SPEC, seed=1)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        z = model(torch.tensor(np.asarray(sites.validation.images))).to(torch.float64)
    return float((z[:, 1] - z[:, 0]).mean())


def _uniform_shift(sites: RealSites, target: float) -> dict[str, torch.Tensor]:
    """An update that raises every validation image's logit difference by about ``target``
    to first order: ``target / |g|^2`` times ``g``, the gradient at the global model of the
    mean logit difference (computed here, in one batch, not by the code under test)."""
    model = initial_model(SPEC, seed=1)
    model.load_state_dict(sites.global_state)
    model.eval()
    z = model(torch.tensor(np.asarray(sites.validation.images))).to(torch.float64)
    (z[:, 1] - z[:, 0]).mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    squared = sum(float(g.to(torch.float64).pow(2).sum()) for g in grads.values())
    return {
        name: (grads[name] * (target / squared)).to(t.dtype)
        if name in grads
        else torch.zeros_like(t)
        for name, t in sites.global_state.items()
    }


def _plus(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: a[k] + b[k] for k in a}


def _context(sites: RealSites, first: dict[str, torch.Tensor]) -> ValuationContext:
    deltas = [first, sites.deltas[1], sites.deltas[2]]
    return ValuationContext(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=[Candidate(f"s{i}", sites.num_samples[i], d) for i, d in enumerate(deltas)],
        validation=sites.validation,
        metric="balanced_loss",
    )


def test_a_uniform_logit_shift_is_projected_out(sites: RealSites) -> None:
    """An honest update plus a uniform shift of +2 in every image's logit difference (what a
    skewed site's DP-SGD update mostly carries, to first order): without the option its
    coalition model moves the mean logit difference by over 1 more than the honest update's;
    with it, the coalition model is the honest update's
    own projected model (the shift removed to rounding)."""
    shift = _uniform_shift(sites, 2.0)
    shifted, honest = (
        _context(sites, _plus(sites.deltas[0], shift)),
        _context(sites, sites.deltas[0]),
    )
    base = _mean_logit_difference(sites.global_state, sites)
    s0 = frozenset({"s0"})

    plain = CoalitionUtility(shifted)
    plain_move = _mean_logit_difference(plain.state(s0), sites) - base
    honest_move = _mean_logit_difference(CoalitionUtility(honest).state(s0), sites) - base
    # 1.46 measured: first order only, the network bends it
    assert 1.0 < plain_move - honest_move < 3.0, (plain_move, honest_move)

    on = CoalitionUtility(shifted, project_shift=True)
    on_honest = CoalitionUtility(honest, project_shift=True)
    assert on.project_shift and not plain.project_shift
    got, want = on.state(s0), on_honest.state(s0)
    assert all(torch.allclose(got[k], want[k], rtol=0, atol=1e-6) for k in want)
    projected_move = _mean_logit_difference(got, sites) - base
    assert abs(projected_move) < 0.1 * abs(plain_move), (projected_move, plain_move)
    # without the projection the shifted update's model is another model
    assert not all(torch.allclose(plain.state(s0)[k], want[k], rtol=0, atol=1e-6) for k in want)


def test_the_round_values_the_shift_at_nothing_only_with_the_option(sites: RealSites) -> None:
    """value_round with ``project_shift``: an honest update plus a uniform shift of +0.5 (to
    first order) gets the honest update's value and score (to rounding). Without the option
    the same shift turns its Shapley value negative: LOW_GAIN, score 0 (measured -0.0007
    against the honest update's +0.0021)."""
    shift = _uniform_shift(sites, 0.5)

    def valued(first: dict[str, torch.Tensor], project: bool) -> list[tuple[str, float, int]]:
        ctx = _context(sites, first)
        report = value_round(
            global_state=ctx.global_state,
            spec=SPEC,
            candidates=ctx.candidates,
            validation=sites.validation,
            method="shapley",
            metric="balanced_loss",
            seed=0,
            project_shift=project,
        )
        out = [(v.reason.name, v.value, v.score) for v in report.sites]
        assert all(value is not None for _, value, _ in out), out
        return [(reason, float(value or 0.0), score) for reason, value, score in out]

    honest_on = valued(sites.deltas[0], True)
    shifted_on = valued(_plus(sites.deltas[0], shift), True)
    assert [r for r, _, _ in honest_on] == [r for r, _, _ in shifted_on] == ["OK"] * 3
    scale = max(abs(v) for _, v, _ in honest_on)
    for (_, a, sa), (_, b, sb) in zip(honest_on, shifted_on, strict=True):
        assert abs(a - b) < 1e-4 * scale and abs(sa - sb) <= 10, (honest_on, shifted_on)
    honest_off = valued(sites.deltas[0], False)
    shifted_off = valued(_plus(sites.deltas[0], shift), False)
    assert honest_off[0][0] == "OK" and honest_off[0][1] > 0 and honest_off[0][2] > 0
    assert shifted_off[0][0] == "LOW_GAIN" and shifted_off[0][1] < 0 and shifted_off[0][2] == 0
    # the option changes the values of plain updates too (why it is an opt-in)
    assert [v for _, v, _ in honest_on] != [v for _, v, _ in honest_off]


def test_the_default_is_the_valuation_of_terms_without_the_key(sites: RealSites) -> None:
    """Leaving the option out is exactly ``project_shift=False``: the same values, bit for bit."""
    ctx = _context(sites, sites.deltas[0])
    kwargs = {
        "global_state": ctx.global_state,
        "spec": SPEC,
        "candidates": ctx.candidates,
        "validation": sites.validation,
        "method": "loo",
        "metric": "balanced_loss",
        "seed": 0,
    }
    default = value_round(**kwargs)  # type: ignore[arg-type]
    off = value_round(**kwargs, project_shift=False)  # type: ignore[arg-type]
    assert [v.value for v in default.sites] == [v.value for v in off.sites]
    assert [v.score for v in default.sites] == [v.score for v in off.sites]


def test_terms_write_the_key_only_when_the_option_is_on() -> None:
    """Valuation settings without ``project_shift`` keep their bytes; an aggregator writes it
    only when ``project_shift`` is on (so its default terms are unchanged), and a non-boolean
    is refused."""
    doc = {"method": "shapley", "metric": "balanced_loss", "seed": 3, "standing": True}
    parsed = ValuationSettings.from_json(doc)
    assert parsed.project_shift is None and parsed.to_json() == doc
    on = ValuationSettings.from_json({**doc, "project_shift": True})
    assert on.project_shift is True and on.to_json() == {**doc, "project_shift": True}
    with pytest.raises(Exception, match="project_shift: not a bool"):
        ValuationSettings.from_json({**doc, "project_shift": 1})
    plain = AggregatorSettings().valuation_terms(1, quorum=None, probe=None).to_json()
    assert "project_shift" not in plain
    opted = AggregatorSettings(project_shift=True).valuation_terms(1, quorum=None, probe=None)
    assert opted.to_json() == {**plain, "project_shift": True}


def test_the_shift_directions_do_not_depend_on_the_callers_thread_count(sites: RealSites) -> None:
    """An auditor with other cores than the aggregator's must project out the same directions:
    the backward passes that give them run on one torch thread whatever the caller set (with
    two threads torch splits the gradient sums differently and their last bits move)."""
    ctx = ValuationContext(
        global_state=sites.global_state,
        spec=SPEC,
        candidates=[
            Candidate(site=f"0x{i + 1:040x}", num_samples=n, delta=d)
            for i, (d, n) in enumerate(zip(sites.deltas, sites.num_samples, strict=True))
        ],
        validation=sites.validation,
        metric="balanced_loss",
    )
    threads = torch.get_num_threads()
    bases = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            bases.append(CoalitionUtility(ctx, project_shift=True).shift_basis())
            assert torch.get_num_threads() == count  # the caller's count is restored
    finally:
        torch.set_num_threads(threads)
    ((u1, uu1),) = bases[0]
    for basis in bases[1:]:
        ((u, uu),) = basis
        assert u.tobytes() == u1.tobytes()
        assert uu == uu1


def test_terms_that_require_dp_carry_project_shift_by_default() -> None:
    """Session 52: an aggregator left at its default writes ``project_shift`` into the terms
    of rounds that require DP, and only those; ``project_shift`` False turns it off there,
    True on everywhere."""

    def shift(**kw: Any) -> bool | None:
        return AggregatorSettings(**kw).valuation_terms(1, quorum=None, probe=None).project_shift

    assert shift(dp_delta=1e-5, dp_required=True) is True
    assert shift(dp_delta=1e-5) is None  # DP offered, not required
    assert shift() is None
    assert shift(dp_delta=1e-5, dp_required=True, project_shift=False) is None
    assert shift(project_shift=True) is True


def test_a_site_refuses_project_shift_settings_it_did_not_accept() -> None:
    """``[accept] project_shift`` (default both): a site listing only ``"off"`` refuses terms
    that carry it, one listing only ``"on"`` terms that omit it; an unknown setting is a
    ConfigError."""
    doc = {"method": "shapley", "metric": "balanced_loss", "seed": 3, "standing": True}
    plain = ValuationSettings.from_json(doc)
    on = ValuationSettings.from_json({**doc, "project_shift": True})
    rule = AggregationRule()
    assert ThresholdLimits().payment_breaches(rule, on) == []
    assert ThresholdLimits().payment_breaches(rule, plain) == []
    off_only = limits_from({"project_shift": ["off"]})
    assert off_only.payment_breaches(rule, on) == [
        "valuation.project_shift on (accepted: project_shift = ['off'])"
    ]
    assert off_only.payment_breaches(rule, plain) == []
    on_only = limits_from({"project_shift": ["on"]})
    assert on_only.payment_breaches(rule, plain) == [
        "valuation.project_shift off (accepted: project_shift = ['on'])"
    ]
    refusal = payment_refusal(off_only, rule, on)
    assert refusal is not None and "project_shift" in refusal
    assert off_only.taking_terms(rule, on).payment_breaches(rule, on) == []  # consenting
    assert off_only.taking_terms(rule, plain).project_shift == ("off",)
    with pytest.raises(ConfigError, match="project_shift names unknown setting"):
        limits_from({"project_shift": ["maybe"]})
