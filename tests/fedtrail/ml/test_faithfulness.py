"""Deletion / insertion faithfulness: the areas by hand, and that a map which points where a
model reads beats a random ordering while one that points elsewhere does not."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.explain import METHODS, Explainer, measure_faithfulness
from fedtrail.ml.explain.faithfulness import area, perturbation_curves, pixel_order

SIDE = 16


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PatchReader(nn.Module):
    """Class 1's logit is 8 x (mean brightness of the top-left 4x4 patch) - 2; class 0's is 0.
    Nothing else in the image matters, so the faithful map is the patch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = self.conv(x)[:, 0, :4, :4].mean(dim=(1, 2))
        one = 8.0 * patch - 2.0
        return torch.stack([torch.zeros_like(one), one], dim=1)


def _images(n: int) -> torch.Tensor:
    return 0.5 + 0.5 * torch.rand((n, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(2))


def _patch_map(n: int) -> np.ndarray:
    heat = np.zeros((n, SIDE, SIDE))
    heat[:, :4, :4] = 1.0
    return heat


def test_area_by_hand() -> None:
    np.testing.assert_allclose(area(np.array([[1.0, 0.0], [1.0, 1.0]])), [0.5, 1.0])
    np.testing.assert_allclose(area(np.array([[1.0, 0.5, 0.0]])), [0.5])
    with pytest.raises(ConfigError):
        area(np.ones((2, 1)))


def test_pixel_order_ranks_by_attribution_and_breaks_ties_by_seed() -> None:
    heat = np.array([[[0.0, 3.0], [-5.0, 0.0]]])
    order = pixel_order(heat, seed=0)
    assert list(order[0, :2]) == [2, 1]  # |-5| first, then 3
    assert sorted(order[0, 2:]) == [0, 3]
    flat = np.zeros((1, 8, 8))
    a, b = pixel_order(flat, seed=1), pixel_order(flat, seed=2)
    np.testing.assert_array_equal(a, pixel_order(flat, seed=1))
    assert not np.array_equal(a, b)  # a blank map is scored as a random one, not by position
    assert not np.array_equal(a[0], np.arange(64))


def test_curves_start_on_the_image_and_end_on_the_baseline() -> None:
    model, x = PatchReader(), _images(3)
    targets = np.ones(3, dtype=np.int64)
    with torch.no_grad():
        p_image = torch.softmax(model(x).double(), 1)[:, 1].numpy()
        p_blank = torch.softmax(model(torch.zeros_like(x)).double(), 1)[:, 1].numpy()
    dele = perturbation_curves(model, x, _patch_map(3), targets, mode="deletion", steps=4)
    ins = perturbation_curves(model, x, _patch_map(3), targets, mode="insertion", steps=4)
    assert dele.shape == ins.shape == (3, 5)
    np.testing.assert_allclose(dele[:, 0], p_image, rtol=1e-6)
    np.testing.assert_allclose(dele[:, -1], p_blank, rtol=1e-6)
    np.testing.assert_allclose(ins[:, 0], p_blank, rtol=1e-6)
    np.testing.assert_allclose(ins[:, -1], p_image, rtol=1e-6)
    # the patch is the first 16 of 256 pixels: gone (back) after the first 25% step
    np.testing.assert_allclose(dele[:, 1:], np.broadcast_to(p_blank[:, None], (3, 4)), rtol=1e-6)
    # a bias shifts the probabilities the curve reads
    shifted = perturbation_curves(model, x, _patch_map(3), targets, steps=4, bias=[0.0, -1.0])
    assert (shifted < dele).all()


def test_a_map_of_where_the_model_reads_beats_random_and_a_wrong_map_does_not() -> None:
    model, x = PatchReader(), _images(6)
    targets = np.ones(6, dtype=np.int64)
    true = measure_faithfulness(model, x, _patch_map(6), targets, seed=3)
    assert true.images == 6 and true.steps == 10
    assert true.deletion_auc < true.random_deletion_auc - 0.2
    assert true.insertion_auc > true.random_insertion_auc + 0.2
    wrong = measure_faithfulness(model, x, _patch_map(6)[:, ::-1, ::-1].copy(), targets, seed=3)
    assert wrong.deletion_auc > true.random_deletion_auc - 0.05
    assert wrong.insertion_auc < true.insertion_auc - 0.2
    again = measure_faithfulness(model, x, _patch_map(6), targets, seed=3)
    assert again == true
    assert set(true.to_json()) == {
        "deletion_auc",
        "insertion_auc",
        "random_deletion_auc",
        "random_insertion_auc",
        "images",
        "steps",
    }


def _measured(method: str) -> tuple[float, float]:
    model, x = PatchReader(), _images(4)
    settings = {"n_samples": 32} if method == "lime" else {}
    exp = Explainer(model, method, **settings).explain(x)
    measured = measure_faithfulness(model, x, exp.heatmaps, exp.targets)
    return measured.deletion_auc, measured.random_deletion_auc


@pytest.mark.parametrize("method", [m for m in METHODS if m != "grad_cam"])
def test_pixel_methods_beat_random_deletion_on_the_patch_reader(method: str) -> None:
    deletion, random = _measured(method)
    assert deletion < random - 0.2


def test_the_measure_exposes_grad_cam_on_a_one_channel_layer() -> None:
    # Grad-CAM weighs the layer's channels by their mean gradient; the patch reader's only
    # channel spans the whole image, so its map is the brightness everywhere, not the patch.
    deletion, random = _measured("grad_cam")
    assert deletion > random - 0.2
    assert deletion > _measured("integrated_gradients")[0] + 0.1


def test_bad_arguments_are_refused() -> None:
    model, x = PatchReader(), _images(2)
    t = np.ones(2, dtype=np.int64)
    with pytest.raises(ConfigError, match="do not fit"):
        perturbation_curves(model, x, np.zeros((2, 4, 4)), t)
    with pytest.raises(ConfigError, match="mode"):
        perturbation_curves(model, x, _patch_map(2), t, mode="erase")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="steps"):
        perturbation_curves(model, x, _patch_map(2), t, steps=0)
    with pytest.raises(ConfigError, match="targets"):
        perturbation_curves(model, x, _patch_map(2), np.array([0, 2]))
    with pytest.raises(ConfigError, match="NaN"):
        perturbation_curves(model, x, np.full((2, SIDE, SIDE), np.nan), t)
