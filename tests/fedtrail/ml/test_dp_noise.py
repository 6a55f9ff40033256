"""The public DP noise check (attack a24): honest DP-SGD updates pass, a plain update under the
same declaration fails, and so does the right amount of "noise" placed in part of the model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedtrail.ml.datasets import ImageDataset, load_bundled
from fedtrail.ml.dp_noise import (
    CLAIMED_COUNT,
    CREDITED_COUNT,
    NOISE_COUNT,
    allowed_signal,
    check_noise,
    credited_samples,
    noise_breach,
)
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.privacy import (
    DP_BATCH_SIZE,
    DP_LR,
    DP_MOMENTUM,
    DpSettings,
    PrivateResult,
    train_private,
)
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.protocol.privacy import DpParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()
N = 150
SETTINGS = DpSettings(
    noise_multiplier=2.0, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM
)  # the node's [privacy] defaults, as attack a24 declares them
Delta = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def shard() -> ImageDataset:
    data = load_bundled()
    perm = np.random.default_rng(0).permutation(len(data.train.labels))
    return data.train.subset(perm[:N])


@pytest.fixture(scope="module")
def start() -> Delta:
    return federated_state(initial_model(SPEC, 0))


def _private(
    start: Delta, shard: ImageDataset, seed: int, settings: DpSettings = SETTINGS
) -> PrivateResult:
    return train_private(
        start, shard, spec=SPEC, config=TrainConfig(seed=seed), settings=settings, delta=1e-5
    )


@pytest.fixture(scope="module")
def honest(start: Delta, shard: ImageDataset) -> Iterator[PrivateResult]:
    yield _private(start, shard, 0)


@pytest.fixture(scope="module")
def plain(start: Delta, shard: ImageDataset) -> Delta:
    return train_local(start, shard, spec=SPEC, config=TrainConfig(seed=1)).delta


def _norm(delta: Delta) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in delta.values()))


@pytest.mark.parametrize("seed", range(12))
def test_honest_dp_sgd_updates_pass(start: Delta, shard: ImageDataset, seed: int) -> None:
    out = _private(start, shard, seed)
    verdict = check_noise(out.local.delta, out.params, N)
    assert verdict.ok, verdict.reason
    assert noise_breach(out.local.delta, out.params, N, "none") is None


@pytest.mark.parametrize("seed", range(3))
def test_honest_dp_sgd_passes_with_momentum_and_several_steps(
    start: Delta, shard: ImageDataset, seed: int
) -> None:
    """The bound holds for any data-independent SGD coefficients: momentum 0.9, batch 32
    (5 steps), as ``[training]``'s settings under DP."""
    out = _private(start, shard, seed, replace(SETTINGS, batch_size=32, lr=0.02, momentum=0.9))
    assert out.params.steps == 5
    verdict = check_noise(out.local.delta, out.params, N)
    assert verdict.ok, verdict.reason


def test_a_plain_update_under_the_same_declaration_fails(
    honest: PrivateResult, plain: Delta
) -> None:
    verdict = check_noise(plain, honest.params, N)
    assert not verdict.ok
    assert verdict.needed > verdict.allowed
    why = noise_breach(plain, honest.params, N, "none")
    assert why is not None and why.startswith("privacy noise MISSING")


def test_a_zero_update_fails(honest: PrivateResult) -> None:
    zero = {k: torch.zeros_like(v) for k, v in honest.local.delta.items()}
    assert not check_noise(zero, honest.params, N).ok


def test_noise_of_the_right_norm_in_half_the_model_fails(
    honest: PrivateResult, plain: Delta
) -> None:
    """The plain update plus Gaussian "noise" as long as the honest update, but only in the first
    half of the largest layer's rows: the other blocks carry no noise."""
    big = max(plain, key=lambda k: plain[k].numel())
    fake = {k: v.clone() for k, v in plain.items()}
    rows = fake[big].shape[0] // 2
    z = torch.randn(fake[big][:rows].shape, generator=torch.Generator().manual_seed(3))
    fake[big][:rows] += z * (_norm(honest.local.delta) / float(z.norm()))
    assert not check_noise(fake, honest.params, N).ok


def test_output_perturbation_of_the_declared_ratio_is_accepted(
    honest: PrivateResult, plain: Delta
) -> None:
    """Documented: a plain update with i.i.d. noise at least 1 / Lambda of its norm per
    coordinate carries the declared noise-to-signal ratio, and passes; less noise fails."""
    allowed = allowed_signal(honest.params, N)
    gen = torch.Generator().manual_seed(4)
    z = {k: torch.randn(v.shape, generator=gen) for k, v in plain.items()}
    s = _norm(plain) / allowed
    assert check_noise({k: v + s * z[k] for k, v in plain.items()}, honest.params, N).ok
    assert not check_noise({k: v + s / 10 * z[k] for k, v in plain.items()}, honest.params, N).ok


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 10.0])
def test_pure_gaussian_noise_of_any_scale_passes(honest: PrivateResult, scale: float) -> None:
    """The check has no unit (the learning rate is not declared): 200 draws of i.i.d. noise
    in the model's shapes pass at any scale, and so does the longest signal the parameters
    allow, all in one block."""
    gen = torch.Generator().manual_seed(5)
    shapes = {k: v.shape for k, v in honest.local.delta.items()}
    for _ in range(200):
        noise = {k: scale * torch.randn(s, generator=gen) for k, s in shapes.items()}
        assert check_noise(noise, honest.params, N).ok
    first = next(iter(shapes))
    signal = torch.zeros(shapes[first]).flatten()
    signal[0] = 0.99 * scale * allowed_signal(honest.params, N)
    noise[first] = noise[first] + signal.reshape(shapes[first])
    assert check_noise(noise, honest.params, N).ok
    signal[0] *= 3
    noise[first] = noise[first] + signal.reshape(shapes[first])
    assert not check_noise(noise, honest.params, N).ok


def test_the_allowed_signal_grows_with_steps_and_falls_with_noise() -> None:
    """Lambda = sqrt(T) * (largest Poisson batch) / sigma; the batch is capped at n."""
    base = DpParams(noise_multiplier=2.0, max_grad_norm=1.0, sample_rate=0.9, steps=1, delta=1e-5)
    assert allowed_signal(base, N) == pytest.approx(N / 2.0)  # 0.9 * 150 + margin > 150
    small = DpParams(noise_multiplier=2.0, max_grad_norm=1.0, sample_rate=0.01, steps=4, delta=1e-5)
    lam = allowed_signal(small, 10_000)
    assert 2 * 100 / 2.0 < lam < 2 * 200 / 2.0  # above the mean batch of 100, far below n


def test_compressed_or_plain_updates(honest: PrivateResult, plain: Delta) -> None:
    """A compressed DP update cannot be checked (top-k with error feedback): it fails; an
    update without DP parameters has nothing to check."""
    why = noise_breach(honest.local.delta, honest.params, N, "topk8")
    assert why is not None and "UNCHECKABLE" in why
    assert noise_breach(plain, None, N, "none") is None


# a68: the cheapest declaration whose allowance covered a plain update under the bound before
# (every step's batch bounded by the largest): expected batch 1, noise 5, 10 epochs, 0.19 epsilon
BATCH1 = DpParams(
    noise_multiplier=5.0, max_grad_norm=1.0, sample_rate=1 / N, steps=1500, delta=1e-5
)


def _largest_batch_bound(params: DpParams, n: int) -> float:
    """The bound before a68, ``sqrt(T) * L_max / sigma`` (written out here, not the product's)."""
    q, t = params.sample_rate, params.steps
    x = math.log(2 * t / 1e-9)
    mean = n * q
    batch = min(float(n), mean + math.sqrt(2 * mean * (1 - q) * x) + 2 * x / 3)
    return math.sqrt(t) * batch / params.noise_multiplier


def test_a_plain_update_under_a_batch_of_one_declaration_fails(plain: Delta) -> None:
    """a68: at an expected batch of one image, the largest of 1,500 batches (19.4 by its
    Bernstein bound) bounded every step, allowing 215 noise units, and the plain update (about
    200) passed; the steps' total and squares bound the signal at about 32."""
    assert _largest_batch_bound(BATCH1, N) > 200
    verdict = check_noise(plain, BATCH1, N)
    assert verdict.allowed < 40 < verdict.needed
    why = noise_breach(plain, BATCH1, N, "none")
    assert why is not None and why.startswith("privacy noise MISSING")


@pytest.mark.parametrize(
    ("q", "steps", "sigma", "n"),
    [
        (1 / N, 1500, 5.0, N),
        (1e-9, 300, 1.5, N),
        (0.9, 1, 2.0, N),
        (128 / 912, 7, 2.0, 912),
        (0.01, 4, 2.0, 10_000),
        (0.5, 2000, 0.7, 1000),
    ],
)
def test_the_allowed_signal_never_exceeds_the_largest_batch_bound(
    q: float, steps: int, sigma: float, n: int
) -> None:
    """The least of three bounds on ``sum_t L_t^2``, each at a sixth of the false-positive rate
    (the largest batch alone had half of it): never looser than the rule before, beyond the
    largest batch's own bound at the smaller share (at most 2% here)."""
    p = DpParams(noise_multiplier=sigma, max_grad_norm=1.0, sample_rate=q, steps=steps, delta=1e-5)
    assert allowed_signal(p, n) <= 1.02 * _largest_batch_bound(p, n)


@pytest.mark.parametrize("seed", range(3))
def test_honest_dp_sgd_with_batches_of_one_image_passes(
    start: Delta, shard: ImageDataset, seed: int
) -> None:
    """The bound a68 tightened most (expected batch 1) still passes honest DP-SGD there: batch
    1, one epoch of 150 steps, at noise 1.0 and 5.0 (under 1e-9 by construction)."""
    for sigma in (1.0, 5.0):
        settings = replace(SETTINGS, noise_multiplier=sigma, batch_size=1)
        out = _private(start, shard, seed, settings)
        assert (out.params.sample_rate, out.params.steps) == (1 / N, N)
        verdict = check_noise(out.local.delta, out.params, N)
        assert verdict.ok, verdict.reason


INFLATED = DpParams(  # a97's cheapest declaration at a claimed 1,500 under the claimed count
    noise_multiplier=2.0, max_grad_norm=1.0, sample_rate=1 / 1500, steps=45_000, delta=1e-5
)


def test_an_inflated_count_no_longer_loosens_the_check(plain: Delta) -> None:
    """a97: the plain update of 150 images passes under a declaration of 0.28 epsilon when the
    site claims 1,500 samples and the check reads the claim (``dp_noise_check`` 1); under 2 the
    check credits at most NOISE_COUNT samples, and any claim above it reads as that count."""
    assert noise_breach(plain, INFLATED, 1500, "none", CLAIMED_COUNT) is None
    why = noise_breach(plain, INFLATED, 1500, "none", CREDITED_COUNT)
    assert why is not None and why.startswith("privacy noise MISSING")
    for claim in (NOISE_COUNT, 150, 1500, 10**6):
        assert credited_samples(claim, CREDITED_COUNT) == NOISE_COUNT
        assert noise_breach(plain, INFLATED, claim, "none", CREDITED_COUNT) == why
    assert noise_breach(plain, INFLATED, 1500, "none") is None  # the default rule: 1, old terms
    assert credited_samples(7, CREDITED_COUNT) == 7
    assert credited_samples(1500, CLAIMED_COUNT) == 1500


def test_honest_dp_sgd_updates_pass_at_the_credited_count(
    start: Delta, shard: ImageDataset
) -> None:
    """An honest update of N images passes with its allowance at NOISE_COUNT samples, and
    needs well under it (noise 0.5, three epochs: the signal is largest at small noise)."""
    out = train_private(
        start,
        shard,
        spec=SPEC,
        config=TrainConfig(seed=0, epochs=3),
        settings=replace(SETTINGS, noise_multiplier=0.5),
        delta=1e-5,
    )
    verdict = check_noise(out.local.delta, out.params, NOISE_COUNT)
    assert verdict.ok and verdict.needed < verdict.allowed / 4
    assert noise_breach(out.local.delta, out.params, N, "none", CREDITED_COUNT) is None
