"""The explanation registry against direct captum calls with the same baselines and seeds, and
against Integrated Gradients and Grad-CAM written here from their papers (Sundararajan et al.
2017, Selvaraju et al. 2017) with plain autograd. fedtrail's heatmap is ``|attribution|`` summed
over channels and divided by its total; the references are normalised the same way here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import (
    GradientShap,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Lime,
    Occlusion,
)
from torch.nn import functional as F

from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.explain import Explainer, grid_mask
from fedtrail.ml.models import ModelSpec, initial_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 6


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = initial_model(ModelSpec(), 3).eval()
    x = torch.tensor(np.array(load_bundled().val.images[:N], dtype=np.float32))
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    return model, x, pred


def _heat(attr: torch.Tensor) -> np.ndarray:
    h = attr.detach().to(torch.float64).abs().sum(dim=1)
    return (h / h.sum(dim=(1, 2), keepdim=True)).numpy().astype(np.float32)


def test_integrated_gradients(setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, pred = setup
    got = Explainer(model, "integrated_gradients").explain(x)
    assert np.array_equal(got.targets, pred.numpy())
    direct = IntegratedGradients(model).attribute(
        x, baselines=0.0, target=pred, n_steps=50, method="gausslegendre"
    )
    np.testing.assert_array_equal(got.heatmaps, _heat(direct))
    # from the paper: (x - x') * integral_0^1 grad f(x' + a (x - x')) da, Gauss-Legendre on
    # [0, 1] with 50 nodes; the same sum in another order: float32 rounding only
    nodes, weights = np.polynomial.legendre.leggauss(50)
    total = torch.zeros_like(x)
    for a, w in zip((nodes + 1) / 2, weights / 2, strict=True):
        xi = (float(a) * x).requires_grad_(True)
        out = model(xi).gather(1, pred[:, None]).sum()
        (g,) = torch.autograd.grad(out, xi)
        total += float(w) * g
    np.testing.assert_allclose(got.heatmaps, _heat(x * total), rtol=1e-4, atol=1e-7)


def test_grad_cam(setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, _ = setup
    target = torch.tensor([0, 1, 0, 1, 1, 0])
    got = Explainer(model, "grad_cam").explain(x, target)
    layer = model.conv2  # the layer the model declares (cam_layer): conv2's output, pre-ReLU
    direct = LayerAttribution.interpolate(
        LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True),
        (28, 28),
        interpolate_mode="bilinear",
    )
    np.testing.assert_array_equal(got.heatmaps, _heat(direct))
    # from the paper: alpha_k = spatial mean of dy/dA_k, map = ReLU(sum_k alpha_k A_k), then
    # bilinear upsampling to the input
    acts: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: acts.append(out))
    try:
        y = model(x).gather(1, target[:, None]).sum()
    finally:
        hook.remove()
    (grads,) = torch.autograd.grad(y, acts[0])
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((alpha * acts[0]).sum(dim=1, keepdim=True))
    up = F.interpolate(cam, size=(28, 28), mode="bilinear")
    np.testing.assert_allclose(got.heatmaps, _heat(up), rtol=1e-5, atol=1e-8)


def test_occlusion(setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, pred = setup
    got = Explainer(model, "occlusion").explain(x)
    direct = Occlusion(model).attribute(
        x,
        sliding_window_shapes=(1, 4, 4),
        strides=(1, 2, 2),
        baselines=0.0,
        target=pred,
        perturbations_per_eval=16,
    )
    np.testing.assert_array_equal(got.heatmaps, _heat(direct))


def test_gradient_shap(setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, pred = setup
    seed = 11
    got = Explainer(model, "gradient_shap", seed=seed).explain(x)
    # the documented default references: one black image, seven uniform noise images from a
    # generator seeded with the seed; the global RNGs seeded with it for captum's draws
    gen = torch.Generator().manual_seed(seed)
    refs = torch.cat([torch.zeros(1, 1, 28, 28), torch.rand((7, 1, 28, 28), generator=gen)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        direct = GradientShap(model).attribute(
            x, baselines=refs, n_samples=20, stdevs=0.0, target=pred
        )
    np.testing.assert_array_equal(got.heatmaps, _heat(direct))


class _QuietRidge(SkLearnRidge):  # type: ignore[misc]
    """scikit-learn's Ridge through captum, without touching torch's global RNG while it builds
    its ``nn.Linear`` (whose random init would shift every later image's LIME draws): the data
    loader is read once, as any surrogate reads it, and the rest runs on a forked RNG."""

    def fit(self, train_data: Any, **kwargs: Any) -> Any:
        batches = list(train_data)
        with torch.random.fork_rng(devices=[]):
            return super().fit(batches, **kwargs)


def test_lime_matches_captum_with_sklearn_ridge(
    setup: tuple[torch.nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    """captum's Lime with the same grid, draws and kernel, and scikit-learn's weighted Ridge
    (alpha 0.01, intercept) as the surrogate in place of fedtrail's closed-form one."""
    model, x, pred = setup
    seed = 5
    got = Explainer(model, "lime", seed=seed).explain(x)
    mask = torch.as_tensor(grid_mask(28, 28, 4)).expand(1, 1, 28, 28)
    lime = Lime(model, interpretable_model=_QuietRidge(alpha=0.01))
    maps = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        for j in range(N):
            maps.append(
                lime.attribute(
                    x[j : j + 1],
                    target=int(pred[j]),
                    baselines=0.0,
                    feature_mask=mask,
                    n_samples=128,
                    perturbations_per_eval=64,
                    return_input_shape=True,
                )
            )
    want = _heat(torch.cat(maps))
    # the same surrogate solved two ways (float64 closed form vs scikit-learn's solver on
    # captum's float32 arrays): coefficients agree to float32 precision
    np.testing.assert_allclose(got.heatmaps, want, rtol=1e-4, atol=1e-6)
