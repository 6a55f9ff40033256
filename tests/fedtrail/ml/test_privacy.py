"""DP-SGD local training and its accountant: seeded, clipped, accounted, BatchNorm refused."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.privacy import (
    DpSettings,
    epsilon_composed,
    epsilon_spent,
    plan_privacy,
    train_private,
)
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.protocol.privacy import DpParams, InvalidPrivacy

SPEC = ModelSpec()
NOISY = DpSettings(noise_multiplier=1.0, max_grad_norm=1.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: bit-identical results rest on a fixed thread count (and it is faster
    beside other busy processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def site() -> ImageDataset:
    """120 random training images of the bundled data."""
    train = load_bundled().train
    return train.subset(np.random.default_rng(0).choice(len(train), 120, replace=False))


@pytest.fixture(scope="module")
def global_state() -> dict[str, torch.Tensor]:
    return initial_model(SPEC, seed=0).state_dict()


def _params(**changes: float | int) -> DpParams:
    base: dict[str, float | int] = {
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "sample_rate": 0.02,
        "steps": 100,
        "delta": 1e-5,
    }
    base.update(changes)
    return DpParams(**base)  # type: ignore[arg-type]


def test_epsilon_spent_is_opacus_rdp_accountant_stepped() -> None:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(100):
        accountant.step(noise_multiplier=1.0, sample_rate=0.02)
    assert epsilon_spent(_params()) == accountant.get_epsilon(delta=1e-5)


def test_epsilon_falls_with_noise_and_rises_with_steps() -> None:
    base = epsilon_spent(_params())
    assert 0 < epsilon_spent(_params(noise_multiplier=2.0)) < base
    assert epsilon_spent(_params(steps=400)) > base
    assert epsilon_spent(_params(delta=1e-3)) < base


def test_composed_epsilon_lies_between_max_and_sum() -> None:
    a, b = _params(), _params(noise_multiplier=1.5, steps=50)
    composed = epsilon_composed([a, b])
    assert max(epsilon_spent(a), epsilon_spent(b)) < composed < epsilon_spent(a) + epsilon_spent(b)
    assert epsilon_composed([]) == 0.0
    with pytest.raises(InvalidPrivacy, match="different deltas"):
        epsilon_composed([a, _params(delta=1e-6)])


def test_plan_uses_poisson_rate_and_steps_per_epoch() -> None:
    config = TrainConfig(epochs=3, batch_size=32)
    params = plan_privacy(NOISY, 500, config, 1e-5)
    assert params.sample_rate == 32 / 500
    assert params.steps == 3 * round(500 / 32)
    assert (params.noise_multiplier, params.max_grad_norm, params.delta) == (1.0, 1.0, 1e-5)
    assert plan_privacy(NOISY, 10, config, 1e-5).sample_rate == 1.0


def test_plan_solves_noise_for_a_target_epsilon() -> None:
    config = TrainConfig(epochs=2, batch_size=32)
    params = plan_privacy(DpSettings(target_epsilon=3.0), 500, config, 1e-5)
    assert 2.9 < epsilon_spent(params) <= 3.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"noise_multiplier": 1.0, "target_epsilon": 3.0},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.nan},
        {"target_epsilon": -1.0},
        {"noise_multiplier": 1.0, "max_grad_norm": 0.0},
        {"noise_multiplier": True},
        {"noise_multiplier": 1.0, "batch_size": 0},
        {"noise_multiplier": 1.0, "batch_size": True},
        {"noise_multiplier": 1.0, "batch_size": 32.0},
        {"noise_multiplier": 1.0, "lr": 0.0},
        {"noise_multiplier": 1.0, "lr": math.inf},
        {"noise_multiplier": 1.0, "momentum": 1.0},
        {"noise_multiplier": 1.0, "momentum": -0.1},
    ],
)
def test_settings_refuse_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        DpSettings(**kwargs)


def test_same_seed_same_delta_bit_for_bit(
    site: ImageDataset, global_state: dict[str, torch.Tensor]
) -> None:
    config = TrainConfig(epochs=1, batch_size=16, seed=7)
    a = train_private(global_state, site, spec=SPEC, config=config, settings=NOISY, delta=1e-5)
    b = train_private(global_state, site, spec=SPEC, config=config, settings=NOISY, delta=1e-5)
    assert list(a.local.delta) == list(global_state)
    assert all(torch.equal(a.local.delta[k], b.local.delta[k]) for k in a.local.delta)
    assert a.params == b.params and a.epsilon == b.epsilon == epsilon_spent(a.params)
    other = TrainConfig(epochs=1, batch_size=16, seed=8)
    c = train_private(global_state, site, spec=SPEC, config=other, settings=NOISY, delta=1e-5)
    assert not all(torch.equal(a.local.delta[k], c.local.delta[k]) for k in a.local.delta)


def test_update_has_train_locals_format(
    site: ImageDataset, global_state: dict[str, torch.Tensor]
) -> None:
    config = TrainConfig(epochs=1, batch_size=32, seed=1)
    plain = train_local(global_state, site, spec=SPEC, config=config)
    private = train_private(
        global_state, site, spec=SPEC, config=config, settings=NOISY, delta=1e-5
    )
    assert private.local.num_samples == plain.num_samples == len(site)
    for (k, v), (k2, v2) in zip(private.local.delta.items(), plain.delta.items(), strict=True):
        assert k == k2 and v.shape == v2.shape and v.dtype == v2.dtype == torch.float32
        assert v.device.type == "cpu" and bool(torch.isfinite(v).all())
    fresh = initial_model(SPEC, seed=0).state_dict()
    assert all(torch.equal(global_state[k], v) for k, v in fresh.items())  # read, not changed


def test_each_step_is_clipped(site: ImageDataset, global_state: dict[str, torch.Tensor]) -> None:
    """One full-batch step (sample rate 1) with next to no noise moves the model by at most
    lr * max_grad_norm: the mean of clipped per-image gradients; plain SGD moves it further."""
    config = TrainConfig(epochs=1, batch_size=len(site), lr=0.5, momentum=0.0, seed=2)
    clip = 1e-3
    settings = DpSettings(noise_multiplier=1e-6, max_grad_norm=clip)
    result = train_private(
        global_state, site, spec=SPEC, config=config, settings=settings, delta=1e-5
    )
    assert result.params.steps == 1 and result.params.sample_rate == 1.0
    norm = math.sqrt(sum(float(v.square().sum()) for v in result.local.delta.values()))
    assert 0 < norm <= config.lr * clip * (1 + 1e-3)
    plain = train_local(global_state, site, spec=SPEC, config=config)
    assert math.sqrt(sum(float(v.square().sum()) for v in plain.delta.values())) > 10 * norm


def test_dp_batch_lr_and_momentum_replace_the_training_configs(
    site: ImageDataset, global_state: dict[str, torch.Tensor]
) -> None:
    """The overrides set in DpSettings are what DP-SGD plans and trains under; unset ones keep
    the training config's."""
    node = TrainConfig(epochs=2, batch_size=16, lr=0.02, momentum=0.9, seed=3)
    settings = DpSettings(noise_multiplier=1.0, batch_size=60, lr=0.1, momentum=0.0)
    params = plan_privacy(settings, len(site), node, 1e-5)
    assert params.sample_rate == 60 / len(site) and params.steps == 2 * round(len(site) / 60)
    assert plan_privacy(DpSettings(noise_multiplier=1.0, lr=0.1), 500, node, 1e-5).steps == 2 * 31
    overridden = train_private(
        global_state, site, spec=SPEC, config=node, settings=settings, delta=1e-5
    )
    same = TrainConfig(epochs=2, batch_size=60, lr=0.1, momentum=0.0, seed=3)
    direct = train_private(global_state, site, spec=SPEC, config=same, settings=NOISY, delta=1e-5)
    assert overridden.params == direct.params
    assert all(
        torch.equal(overridden.local.delta[k], direct.local.delta[k]) for k in direct.local.delta
    )
    plain = train_private(global_state, site, spec=SPEC, config=node, settings=NOISY, delta=1e-5)
    assert plain.params.sample_rate == 16 / len(site)
    assert not all(
        torch.equal(plain.local.delta[k], direct.local.delta[k]) for k in direct.local.delta
    )


def test_batch_norm_model_is_refused_with_the_group_norm_fix(site: ImageDataset) -> None:
    spec = ModelSpec(arch="densenet121", in_channels=1, image_size=32)
    state = federated_state(initial_model(spec, seed=0))
    config = TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(ConfigError, match="--arch densenet121 --norm group"):
        train_private(state, site.resized(32), spec=spec, config=config, settings=NOISY, delta=1e-5)
