"""The data-free screens of a BatchNorm model judge its trainable parameters, not its running
statistics: those move with a site's data distribution and dominate the update's norm (measured,
resnet10 on the bundled data: statistics norms 72-1857, parameter norms 8.4-34; in
`fedtrail demo --arch resnet10 --sites 4 --rounds 1` an honest hospital's whole update was 149
times the initial model's norm), so an honest skewed site must not become a norm outlier, while
sign-flipped, scaled and oversized updates are still caught."""

from __future__ import annotations

import functools

import pytest
import torch

from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.codes import Reason
from fedtrail.simulation.faults import scale_update, sign_flip
from fedtrail.valuation import Candidate, value_round
from fedtrail.valuation.combine import HISTORY_COMBINER, Combiner, SiteValuation
from fedtrail.valuation.robust import robust_statistics

SPEC = ModelSpec(arch="resnet10")


@functools.cache
def _global() -> dict[str, torch.Tensor]:
    return federated_state(initial_model(SPEC, seed=0))


def _update(
    gen: torch.Generator, direction: dict[str, torch.Tensor], statistics_norm: float
) -> dict[str, torch.Tensor]:
    """A site's update: the shared parameter direction plus noise, and running statistics of
    the given total norm (their direction is the site's own: its data, not learning)."""
    stats = set(SPEC.statistic_names())
    out = {}
    for name, g in _global().items():
        if name in stats:
            out[name] = torch.randn(g.shape, generator=gen)
        else:
            out[name] = direction[name] + 0.5 * torch.randn(g.shape, generator=gen) * 1e-3
    s = torch.cat([out[n].flatten() for n in stats]).norm()
    for name in stats:
        out[name] = out[name] * (statistics_norm / s)
    return out


@functools.cache
def _round() -> dict[str, dict[str, torch.Tensor]]:
    """Four honest sites, one of them skewed: its statistics move 200x the others' (over 100
    times the global model's norm, as the demo's honest hospital measured)."""
    gen = torch.Generator().manual_seed(0)
    stats = set(SPEC.statistic_names())
    direction = {
        name: torch.randn(g.shape, generator=gen) * 1e-3
        for name, g in _global().items()
        if name not in stats
    }
    deltas = {f"site-{c}": _update(gen, direction, 75.0) for c in "ABC"}
    deltas["site-skewed"] = _update(gen, direction, 15000.0)
    return deltas


@functools.cache
def _report(history: bool) -> dict[str, SiteValuation]:
    """The round with a sign-flipper, an x10 and an x10^4 site (from site A's update) added, under
    the per-round thresholds or those for valuation with standing."""
    a = _round()["site-A"]
    sent = {
        **_round(),
        "site-flip": sign_flip(a),
        "site-x10": scale_update(a, 10.0),
        "site-huge": scale_update(a, 1e4),
    }
    report = value_round(
        global_state=_global(),
        spec=SPEC,
        candidates=[Candidate(site=s, num_samples=500, delta=d) for s, d in sent.items()],
        validation=None,
        method="shapley",
        metric="balanced_loss",
        seed=0,
        combiner=HISTORY_COMBINER if history else Combiner(),
    )
    return {v.site: v for v in report.sites}


def test_running_statistics_dominate_the_update_norm() -> None:
    """The premise: on the whole update, the honest skewed site is a norm outlier."""
    whole = robust_statistics(_round())
    assert whole["site-skewed"].norm_z > HISTORY_COMBINER.max_norm_z
    trained = robust_statistics(_round(), statistics=SPEC.statistic_names())
    assert abs(trained["site-skewed"].norm_z) < 3
    assert trained["site-skewed"].cosine > 0.9


@pytest.mark.parametrize("history", [False, True])
def test_an_honest_skewed_batch_norm_site_is_not_flagged(history: bool) -> None:
    by_site = _report(history)
    for site in ("site-A", "site-B", "site-C", "site-skewed"):
        assert by_site[site].reason is Reason.OK, by_site[site].detail
        assert by_site[site].score > 0


@pytest.mark.parametrize("history", [False, True])
def test_a_batch_norm_sign_flipper_is_still_caught(history: bool) -> None:
    flip = _report(history)["site-flip"]
    assert flip.reason is Reason.OUTLIER_DIRECTION
    assert flip.score == 0
    assert flip.cosine is not None and flip.cosine < -0.8


@pytest.mark.parametrize("history", [False, True])
def test_a_batch_norm_update_scaled_x10_is_still_caught(history: bool) -> None:
    x10 = _report(history)["site-x10"]
    assert x10.reason is Reason.OUTLIER_NORM
    assert x10.score == 0


@pytest.mark.parametrize("history", [False, True])
def test_a_batch_norm_update_far_above_the_model_is_oversized(history: bool) -> None:
    """The absolute bound (100x the global model's norm) holds on the trainable parameters."""
    huge = _report(history)["site-huge"]
    assert huge.reason is Reason.OUTLIER_NORM
    assert "trainable parameters" in huge.detail
    assert huge.score == 0


def test_without_running_statistics_the_screens_see_the_whole_update() -> None:
    """SmallCNN has no running statistics: naming none changes nothing, bit for bit."""
    assert ModelSpec().statistic_names() == ()
    gen = torch.Generator().manual_seed(1)
    deltas = {f"s{i}": {"w": torch.randn(50, generator=gen)} for i in range(4)}
    assert robust_statistics(deltas, statistics=()) == robust_statistics(deltas)
    assert robust_statistics(deltas, statistics=("not-there",)) == robust_statistics(deltas)
