"""Simulated faults: label noise, poisoned and free-riding updates, SiteFault configuration."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, load_bundled
from fedtrail.simulation.faults import (
    FAULT_KINDS,
    SiteFault,
    copy_update,
    gaussian_update,
    label_noise,
    label_noise_rate,
    random_update,
    scale_update,
    sign_flip,
)


def _delta(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=g) * 0.01,
        "conv.bias": torch.randn(4, generator=g) * 0.01,
        "fc.weight": torch.randn(2, 36, generator=g) * 0.02,
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- label noise


def test_label_noise_rate_is_exact_and_seeded(caplog: pytest.LogCaptureFixture) -> None:
    train = load_bundled().train
    with caplog.at_level(logging.INFO, logger="fedtrail.simulation.faults"):
        noisy = label_noise(train, 0.3, seed=7)
    assert label_noise_rate(train, noisy) == round(0.3 * 2428) / 2428
    assert "changed 728 of 2428 labels" in caplog.text
    np.testing.assert_array_equal(noisy.images, train.images)
    assert label_noise(train, 0.3, seed=7).content_sha256() == noisy.content_sha256()
    assert label_noise(train, 0.3, seed=8).content_sha256() != noisy.content_sha256()
    assert label_noise_rate(train, label_noise(train, 0.0, 1)) == 0.0
    assert label_noise_rate(train, label_noise(train, 1.0, 1)) == 1.0
    np.testing.assert_array_equal(label_noise(train, 1.0, 1).labels, 1 - train.labels)
    assert train.class_counts().tolist() == [1214, 1214]  # original untouched


def test_label_noise_multiclass_changes_to_another_class() -> None:
    ds = ImageDataset(np.zeros((300, 1, 2, 2), np.float32), np.arange(300) % 3)
    noisy = label_noise(ds, 0.5, seed=0)
    changed = noisy.labels != ds.labels
    assert changed.sum() == 150
    assert set(np.unique(noisy.labels[changed])) == {0, 1, 2}
    wider = label_noise(ds, 1.0, seed=0, num_classes=5)
    assert wider.labels.max() > 2 and (wider.labels != ds.labels).all()


def test_label_noise_errors() -> None:
    ds = load_bundled().val
    for rate in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="rate"):
            label_noise(ds, rate, 0)
    with pytest.raises(ConfigError, match="seed"):
        label_noise(ds, 0.1, -1)
    with pytest.raises(ConfigError, match="num_classes"):
        label_noise(ds, 0.1, 0, num_classes=1)
    with pytest.raises(ConfigError, match="size"):
        label_noise_rate(ds, ds.subset([0, 1]))


# ---------------------------------------------------------------- update level


def test_sign_flip_and_scale() -> None:
    d = _delta()
    before = {k: v.clone() for k, v in d.items()}
    flipped = sign_flip(d)
    assert _same(flipped, {k: -v for k, v in d.items()})
    assert _same(sign_flip(d, scale=3.0), {k: v * -3.0 for k, v in d.items()})
    assert _same(scale_update(d, 10.0), {k: v * 10.0 for k, v in d.items()})
    assert _same(d, before)  # inputs untouched
    with pytest.raises(ConfigError, match="positive"):
        sign_flip(d, scale=0.0)
    with pytest.raises(ConfigError, match="finite"):
        scale_update(d, float("inf"))
    with pytest.raises(ConfigError, match="floating-point"):
        scale_update({"n": torch.tensor([1, 2])}, 2.0)


def test_gaussian_update() -> None:
    like = _delta()
    g = gaussian_update(like, std=0.5, seed=3)
    assert {k: v.shape for k, v in g.items()} == {k: v.shape for k, v in like.items()}
    assert all(v.dtype == torch.float32 for v in g.values())
    flat = torch.cat([v.flatten() for v in g.values()])
    assert flat.std().item() == pytest.approx(0.5, rel=0.15)  # 121 values
    assert _same(g, gaussian_update(like, 0.5, 3))
    assert not _same(g, gaussian_update(like, 0.5, 4))
    half = gaussian_update({"x": torch.zeros(10, dtype=torch.float64)}, 1.0, 0)
    assert half["x"].dtype == torch.float64
    with pytest.raises(ConfigError, match="std"):
        gaussian_update(like, -1.0, 0)


def test_copy_update() -> None:
    other = _delta(5)
    copied = copy_update(other)
    assert _same(copied, other)
    assert all(copied[k].data_ptr() != other[k].data_ptr() for k in other)
    disguised = copy_update(other, noise_std=1e-4, seed=1)
    assert not _same(disguised, other)
    diff = torch.cat([(disguised[k] - other[k]).flatten() for k in other])
    assert diff.abs().max().item() < 1e-3
    assert _same(disguised, copy_update(other, noise_std=1e-4, seed=1))
    with pytest.raises(ConfigError, match="noise_std"):
        copy_update(other, noise_std=-1.0)


def test_random_update_matches_magnitude() -> None:
    like = _delta()
    r = random_update(like, seed=0)
    for k, v in like.items():
        rms_like = v.square().mean().sqrt().item()
        assert r[k].abs().max().item() <= math.sqrt(3) * rms_like + 1e-9
        if v.numel() > 30:
            assert r[k].square().mean().sqrt().item() == pytest.approx(rms_like, rel=0.3)
    assert _same(r, random_update(like, 0))
    assert not _same(r, random_update(like, 1))
    fixed = random_update(like, 0, scale=0.25)
    assert all(v.abs().max().item() <= 0.25 for v in fixed.values())
    assert random_update({"z": torch.zeros(3)}, 0)["z"].abs().sum().item() == 0.0
    with pytest.raises(ConfigError, match="scale"):
        random_update(like, 0, scale=-1.0)


# ---------------------------------------------------------------- SiteFault


def test_site_fault_applies_by_kind() -> None:
    d, other = _delta(0), _delta(1)
    val = load_bundled().val
    assert SiteFault().kind == "none" and set(FAULT_KINDS) >= {"none", "copy"}
    assert SiteFault().apply_to_data(val) is val
    assert _same(SiteFault().apply_to_update(d), d)

    noisy = SiteFault(kind="label_noise", rate=0.2, seed=4)
    assert noisy.affects_data and not noisy.affects_update
    out = noisy.apply_to_data(val)
    assert label_noise_rate(val, out) == 54 / 270
    assert noisy.apply_to_data(val).content_sha256() == out.content_sha256()  # same every round
    assert _same(noisy.apply_to_update(d), d)

    assert _same(SiteFault(kind="sign_flip").apply_to_update(d), sign_flip(d))
    assert _same(SiteFault(kind="sign_flip", factor=2).apply_to_update(d), sign_flip(d, 2))
    assert _same(SiteFault(kind="scale", factor=10).apply_to_update(d), scale_update(d, 10))
    gauss = SiteFault(kind="gaussian", std=0.1, seed=9)
    assert gauss.affects_update
    r0, r1 = gauss.apply_to_update(d, round_id=0), gauss.apply_to_update(d, round_id=1)
    assert not _same(r0, r1)  # fresh noise each round
    assert _same(r0, gauss.apply_to_update(d, round_id=0))
    assert _same(SiteFault(kind="copy").apply_to_update(d, other=other), other)
    assert not _same(SiteFault(kind="copy", std=1e-5).apply_to_update(d, other=other), other)
    rand = SiteFault(kind="random").apply_to_update(d, round_id=2)
    assert rand.keys() == d.keys() and not _same(rand, d)
    big = SiteFault(kind="random", factor=4).apply_to_update(d, round_id=2)
    assert _same(big, scale_update(rand, 4))
    with pytest.raises(ConfigError, match="another site's update"):
        SiteFault(kind="copy").apply_to_update(d)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "bogus"}, "unknown fault kind"),
        ({"kind": "label_noise"}, r"rate must lie in \(0, 1\]"),
        ({"kind": "label_noise", "rate": 1.5}, "rate"),
        ({"kind": "sign_flip", "rate": 0.3}, "does not use rate"),
        ({"kind": "sign_flip", "factor": -1}, "positive"),
        ({"kind": "scale"}, "other than 1"),
        ({"kind": "gaussian"}, "std > 0"),
        ({"kind": "gaussian", "std": 1.0, "factor": 2}, "does not use factor"),
        ({"kind": "copy", "std": -1.0}, "non-negative"),
        ({"kind": "none", "std": 1.0}, "does not use std"),
        ({"kind": "scale", "factor": float("nan")}, "finite"),
        ({"kind": "scale", "factor": "2"}, "number"),
        ({"kind": "random", "seed": -3}, "seed"),
    ],
)
def test_site_fault_validation(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SiteFault.from_mapping(settings)


def test_site_fault_from_mapping() -> None:
    assert SiteFault.from_mapping({"kind": "scale", "factor": 10}) == SiteFault(
        kind="scale", factor=10
    )
    with pytest.raises(ConfigError, match=r"unknown fault settings \['facter'\]"):
        SiteFault.from_mapping({"kind": "scale", "facter": 10})


def test_a_statistics_fault_shifts_only_the_running_means() -> None:
    delta = {
        "conv.weight": torch.tensor([0.5, -0.5]),
        "bn.running_mean": torch.tensor([0.1, 0.2]),
        "bn.running_var": torch.tensor([1.0, 2.0]),
    }
    sent = SiteFault(kind="statistics", shift=100.0).apply_to_update(delta, round_id=3)
    assert sent["bn.running_mean"].tolist() == pytest.approx([100.1, 100.2])
    assert torch.equal(sent["conv.weight"], delta["conv.weight"])
    assert torch.equal(sent["bn.running_var"], delta["bn.running_var"])
    assert sent["conv.weight"] is not delta["conv.weight"]
    with pytest.raises(ConfigError, match="non-zero shift"):
        SiteFault(kind="statistics")
    with pytest.raises(ConfigError, match="does not use shift"):
        SiteFault(kind="sign_flip", shift=1.0)
