"""Resizing a dataset to a model's image size, the data check against the spec, and the seeded
site-side augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, Splits
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.training import Augmenter, TrainConfig, _batch_starts, train_local


def _data(n: int, c: int, side: int, seed: int = 0, classes: int = 2) -> ImageDataset:
    gen = np.random.default_rng(seed)
    return ImageDataset(
        gen.random((n, c, side, side), dtype=np.float32),
        gen.integers(0, classes, n).astype(np.int64),
    )


def test_resized_gives_the_size_and_the_same_bits_every_run() -> None:
    ds = _data(5, 3, 28)
    up = ds.resized(64)
    assert up.images.shape == (5, 3, 64, 64) and up.images.dtype == np.float32
    np.testing.assert_array_equal(up.labels, ds.labels)
    assert float(up.images.min()) >= 0.0 and float(up.images.max()) <= 1.0
    assert up.content_sha256() == ds.resized(64).content_sha256()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert ds.resized(64).content_sha256() == up.content_sha256()
    finally:
        torch.set_num_threads(threads)
    ramp = np.linspace(0.0, 1.0, 28, dtype=np.float32)
    smooth = ImageDataset(np.broadcast_to(ramp, (1, 1, 28, 28)), np.zeros(1, np.int64))
    back = smooth.resized(64).resized(28)
    assert back.image_size == (28, 28)
    assert float(np.abs(back.images - smooth.images).max()) < 0.03  # a smooth image comes back
    assert ds.resized(28) is ds
    flat = ImageDataset(np.full((2, 1, 28, 28), 0.25, np.float32), np.zeros(2, np.int64))
    np.testing.assert_allclose(flat.resized(32).images, 0.25, atol=1e-6)  # constant stays
    assert ds.subset([]).resized(64).images.shape == (0, 3, 64, 64)


def test_resized_refuses_a_size_that_is_not_a_positive_integer() -> None:
    ds = _data(2, 1, 28)
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            ds.resized(bad)  # type: ignore[arg-type]


def test_splits_resized_resizes_every_split() -> None:
    splits = Splits(_data(4, 1, 28, 0), _data(3, 1, 28, 1), _data(2, 1, 28, 2))
    out = splits.resized(32)
    assert [s.images.shape for s in (out.train, out.val, out.test)] == [
        (4, 1, 32, 32),
        (3, 1, 32, 32),
        (2, 1, 32, 32),
    ]


def test_training_data_that_does_not_fit_the_spec_names_both_sides() -> None:
    spec = ModelSpec(arch="resnet10", image_size=64, in_channels=3, num_classes=5)
    state = federated_state(initial_model(spec, 0))
    config = TrainConfig()
    with pytest.raises(ConfigError, match=r"3x28x28 .* resnet10 model expects 3x64x64; resize"):
        train_local(state, _data(4, 3, 28), spec=spec, config=config)
    with pytest.raises(ConfigError, match=r"1x64x64 .* expects 3x64x64$"):
        train_local(state, _data(4, 1, 64), spec=spec, config=config)
    with pytest.raises(ConfigError, match=r"labels go up to 6 .* has 5 classes"):
        train_local(state, _data(20, 3, 64, classes=7), spec=spec, config=config)


def test_batch_starts_join_a_single_last_sample_only_for_batch_norm() -> None:
    assert _batch_starts(9, 4, batch_norm=False) == [0, 4, 8, 9]
    assert _batch_starts(9, 4, batch_norm=True) == [0, 4, 9]
    assert _batch_starts(10, 4, batch_norm=True) == [0, 4, 8, 10]
    assert _batch_starts(1, 4, batch_norm=True) == [0, 1]


def test_augmentation_is_reproducible_from_its_seed() -> None:
    images = torch.tensor(_data(6, 1, 28).images)
    a = Augmenter(seed=3, image_size=28)
    b = Augmenter(seed=3, image_size=28)
    first, again = a(images), b(images)
    assert torch.equal(first, again)
    assert not torch.equal(first, images)
    assert not torch.equal(a(images), first)  # the stream moves on between batches
    other = Augmenter(seed=4, image_size=28)(images)
    assert not torch.equal(other, first)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert type(first) is torch.Tensor  # no MONAI MetaTensor leaks into training


def test_train_local_with_augmentation_is_reproducible_and_off_by_default() -> None:
    spec = ModelSpec(image_size=28, width=4, hidden=8)
    state = federated_state(initial_model(spec, 0))
    ds = _data(12, 1, 28)

    def delta(**settings: object) -> dict[str, torch.Tensor]:
        config = TrainConfig(batch_size=4, **settings)  # type: ignore[arg-type]
        return train_local(state, ds, spec=spec, config=config).delta

    assert TrainConfig().augment is False
    same = delta(augment=True, seed=1), delta(augment=True, seed=1)
    assert all(torch.equal(same[0][k], same[1][k]) for k in state)
    plain = delta(seed=1)
    assert any(not torch.equal(plain[k], same[0][k]) for k in state)
    reseeded = delta(augment=True, seed=2)
    assert any(not torch.equal(reseeded[k], same[0][k]) for k in state)
    with pytest.raises(ConfigError, match="augment must be true or false"):
        TrainConfig(augment=1)  # type: ignore[arg-type]


def test_the_node_config_carries_augment(tmp_path: object) -> None:
    from pathlib import Path

    from fedtrail.node.config import load_node_config

    path = Path(str(tmp_path)) / "node.toml"
    path.write_text("[training]\naugment = true\n", encoding="utf-8")
    assert load_node_config(path).training.augment is True
