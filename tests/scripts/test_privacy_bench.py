"""scripts/bench/privacy.py: the loss-threshold membership attack tells a model that memorises
its training images from one that does not, and is not fooled by a label-mix gap."""

from __future__ import annotations

import numpy as np
import torch

from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.training import TrainConfig, train_local
from scripts.bench import privacy as bench


def _random_images(n: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, 28, 28), dtype=np.float32)
    labels = np.tile([0, 1], n // 2)  # balanced, and unrelated to the images
    return ImageDataset(images, labels.astype(np.int64))


def test_the_attack_sees_a_model_that_memorises_and_not_one_that_does_not() -> None:
    torch.set_num_threads(1)
    spec = ModelSpec(in_channels=1, num_classes=2, image_size=28)
    members, held_out = _random_images(32, 1), _random_images(32, 2)
    init = {k: v.detach().clone() for k, v in federated_state(initial_model(spec, 0)).items()}
    # Random labels can only be fitted by memorising the images.
    trained = train_local(
        init, members, spec=spec, config=TrainConfig(epochs=80, lr=0.05, batch_size=8, seed=0)
    )
    assert trained.train_loss < 0.2  # it has fitted the random labels
    memorised = {k: init[k] + trained.delta[k] for k in init}

    def advantage(state: dict[str, torch.Tensor]) -> bench.Attack:
        return bench.attack(
            bench.per_image_loss(spec, state, members),
            bench.per_image_loss(spec, state, held_out),
            0,
            members.labels,
            held_out.labels,
        )

    leaky, fresh = advantage(memorised), advantage(init)
    assert leaky.advantage_auc > 0.8, leaky
    assert abs(fresh.advantage_auc) < 0.4, fresh  # the untrained model never saw either set
    assert leaky.advantage_auc > fresh.advantage_auc + 0.5
    assert leaky.members == 32 and leaky.nonmembers == 32


def test_the_attack_on_losses_separates_members_only_when_they_differ() -> None:
    rng = np.random.default_rng(0)
    same = bench.attack(rng.exponential(1.0, 400), rng.exponential(1.0, 400), 0)
    apart = bench.attack(rng.exponential(0.05, 400), 1 + rng.exponential(1.0, 400), 0)
    assert abs(same.advantage_auc) < 0.15 and abs(same.advantage_threshold) < 0.15
    assert apart.auc == 1.0 and apart.advantage_auc == 1.0
    assert apart.advantage_threshold == 1.0  # the fitted threshold holds on the other half


def test_a_class_loss_gap_is_not_taken_for_membership() -> None:
    # Both sets draw each class's loss from the same law, but the members are mostly of the
    # easy class: pooled, the attack finds a gap; per class, none.
    rng = np.random.default_rng(1)
    m_labels = np.array([0] * 360 + [1] * 40)
    n_labels = np.array([0] * 200 + [1] * 200)

    def losses(labels: np.ndarray) -> np.ndarray:
        return np.where(labels == 0, rng.exponential(0.1, len(labels)), 2 + rng.random(len(labels)))

    m, n = losses(m_labels), losses(n_labels)
    pooled = bench.attack(m, n, 0)
    per_class = bench.attack(m, n, 0, m_labels, n_labels)
    assert pooled.advantage_auc > 0.3
    assert abs(per_class.advantage_auc) < 0.15
    assert per_class.members == 400 and per_class.nonmembers == 400


def test_the_bar_compares_epsilon_8_with_non_private() -> None:
    rows = [{"epsilon": 8.0, "auc_mean": 0.87}, {"epsilon": float("inf"), "auc_mean": 0.91}]
    verdict = bench.bar(rows)
    assert verdict is not None and not verdict["passed"]
    rows[0]["auc_mean"] = 0.885
    verdict = bench.bar(rows)
    assert verdict is not None and verdict["passed"]
    assert bench.bar(rows[:1]) is None
