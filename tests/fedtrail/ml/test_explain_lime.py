"""LIME in the explainer registry: superpixel grid, seeded draws, normalised maps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.explain import Explainer, grid_mask
from fedtrail.ml.models import ModelSpec, initial_model

SIDE = 28


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int) -> torch.Tensor:
    return torch.rand((n, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(1))


def test_grid_mask_numbers_square_cells_row_by_row() -> None:
    ids = grid_mask(6, 5, 2)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(
        ids,
        [
            [0, 0, 1, 1, 2],
            [0, 0, 1, 1, 2],
            [3, 3, 4, 4, 5],
            [3, 3, 4, 4, 5],
            [6, 6, 7, 7, 8],
            [6, 6, 7, 7, 8],
        ],
    )
    assert grid_mask(SIDE, SIDE, 4).max() == 48
    with pytest.raises(ConfigError, match="cell_size"):
        grid_mask(4, 4, 0)


def test_lime_is_seeded_normalised_and_leaves_global_rngs_alone() -> None:
    model, x = initial_model(ModelSpec(), seed=0), _images(3)
    torch.manual_seed(123)
    np.random.seed(123)
    a = Explainer(model, "lime", seed=7, n_samples=32).explain(x)
    b = Explainer(model, "lime", seed=7, n_samples=32).explain(x)
    c = Explainer(model, "lime", seed=8, n_samples=32).explain(x)
    np.testing.assert_array_equal(a.heatmaps, b.heatmaps)
    assert not np.array_equal(a.heatmaps, c.heatmaps)
    assert a.heatmaps.shape == (3, SIDE, SIDE) and (a.heatmaps >= 0).all()
    np.testing.assert_allclose(a.heatmaps.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(123)))
    assert np.random.random() == np.random.RandomState(123).random()


def test_lime_maps_are_constant_on_each_cell() -> None:
    model = initial_model(ModelSpec(), seed=0)
    heat = Explainer(model, "lime", n_samples=32, cell_size=7).explain(_images(1)).heatmaps[0]
    cells = heat.reshape(4, 7, 4, 7)
    assert np.ptp(cells, axis=(1, 3)).max() < 1e-7  # one value per 7x7 cell
    assert len(np.unique(cells[:, 0, :, 0])) > 1  # and not one value for the whole image


def test_lime_settings_are_checked() -> None:
    model = initial_model(ModelSpec(), seed=0)
    with pytest.raises(ConfigError, match="does not take"):
        Explainer(model, "lime", n_steps=4)
    with pytest.raises(ConfigError, match="n_samples"):
        Explainer(model, "lime", n_samples=0).explain(_images(1))
    with pytest.raises(ConfigError, match="cell_size"):
        Explainer(model, "lime", cell_size=-1).explain(_images(1))
