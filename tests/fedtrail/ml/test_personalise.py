"""Personalisation methods: which part of the model a site makes its own, that nothing else
moves, that a carried part really comes from the site's previous personalised model, and that
a model without the part is refused with a clear error."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.personalise import METHODS, personal_part, personalise
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol.terms import PERSONALISATION_METHODS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

State = dict[str, torch.Tensor]
SMALL = ModelSpec(in_channels=1, num_classes=2, image_size=28)
RESNET = ModelSpec(arch="resnet10", in_channels=1, num_classes=2, image_size=28)


@pytest.fixture(scope="module")
def data() -> Splits:
    return load_bundled()


@pytest.fixture(scope="module")
def skewed(data: Splits) -> ImageDataset:
    """A site that sees mostly one class, so a personal part has something to learn."""
    labels = data.train.labels
    pos, neg = np.flatnonzero(labels == 1)[:90], np.flatnonzero(labels == 0)[:10]
    return data.train.subset(np.sort(np.concatenate([pos, neg])))


def _state(spec: ModelSpec, seed: int = 0) -> State:
    return {k: v.clone() for k, v in federated_state(initial_model(spec, seed)).items()}


def _changed(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_the_registry_is_the_terms_list() -> None:
    assert tuple(METHODS) == PERSONALISATION_METHODS


def test_fedrep_trains_the_head_alone_and_leaves_the_rest_bit_identical(
    skewed: ImageDataset,
) -> None:
    g = _state(SMALL)
    assert personal_part("fedrep", SMALL) == {"fc2.weight", "fc2.bias"}
    out = personalise(
        g, skewed, method="fedrep", spec=SMALL, config=TrainConfig(lr=0.05, seed=3), steps=8
    )
    assert _changed(g, out.state) == {"fc2.weight", "fc2.bias"}
    again = personalise(
        g, skewed, method="fedrep", spec=SMALL, config=TrainConfig(lr=0.05, seed=3), steps=8
    )
    assert all(torch.equal(out.state[k], again.state[k]) for k in g)


def test_a_carried_part_starts_from_the_previous_personal_model(skewed: ImageDataset) -> None:
    g = _state(SMALL)
    cfg = TrainConfig(lr=0.05, seed=3)
    first = personalise(g, skewed, method="fedrep", spec=SMALL, config=cfg, steps=8).state
    new_global = _state(SMALL, seed=1)  # the next round's global model
    carried = personalise(
        new_global, skewed, method="fedrep", spec=SMALL, config=cfg, steps=1, previous=first
    ).state
    fresh = personalise(new_global, skewed, method="fedrep", spec=SMALL, config=cfg, steps=1).state
    # The body is the new global model's; the head went on from the previous head.
    assert _changed(new_global, carried) == {"fc2.weight", "fc2.bias"}
    assert not torch.equal(carried["fc2.weight"], fresh["fc2.weight"])
    step_from_previous = (carried["fc2.weight"] - first["fc2.weight"]).norm()
    step_from_global = (carried["fc2.weight"] - new_global["fc2.weight"]).norm()
    assert step_from_previous < step_from_global
    # finetune carries nothing: the previous model makes no difference.
    ft = personalise(
        new_global, skewed, method="finetune", spec=SMALL, config=cfg, steps=1, previous=first
    ).state
    ft0 = personalise(new_global, skewed, method="finetune", spec=SMALL, config=cfg, steps=1).state
    assert all(torch.equal(ft[k], ft0[k]) for k in ft)


def test_fedbn_moves_only_normalisation_layers_and_their_statistics(
    skewed: ImageDataset,
) -> None:
    g = _state(RESNET)
    part = personal_part("fedbn", RESNET)
    assert part is not None and "net.bn1.running_mean" in part and "net.fc.weight" not in part
    out = personalise(
        g, skewed, method="fedbn", spec=RESNET, config=TrainConfig(lr=0.05, seed=1), steps=2
    )
    moved = _changed(g, out.state)
    assert moved and moved <= part
    assert any(k.endswith("running_mean") for k in moved)  # the site's own statistics


def test_a_model_without_the_part_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"fedbn.*normalisation layers.*smallcnn"):
        personal_part("fedbn", SMALL)
    with pytest.raises(ConfigError, match="one of"):
        personal_part("fedavg", SMALL)


def test_a_previous_model_of_another_shape_is_refused(skewed: ImageDataset) -> None:
    g = _state(SMALL)
    other = _state(ModelSpec(in_channels=1, num_classes=2, image_size=28, hidden=16))
    with pytest.raises(ConfigError, match="previous personalised model"):
        personalise(
            g, skewed, method="fedrep", spec=SMALL, config=TrainConfig(), steps=1, previous=other
        )
