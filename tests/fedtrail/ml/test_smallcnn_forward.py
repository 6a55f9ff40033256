"""SmallCNN's forward pools before its ReLU, and without autograd pools with strided maxima: the
outputs, and with autograd the gradients, are those of the written-out network
``pool(relu(conv))`` bit for bit (the valuation's numbers and every trained update depend on
them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedtrail.ml.models import ModelSpec, initial_model


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network as first written: ReLU, then ``max_pool2d``, in each conv block."""
    x = F.max_pool2d(torch.relu(model.conv1(x)), 2)
    x = F.max_pool2d(torch.relu(model.conv2(x)), 2)
    x = torch.relu(model.fc1(torch.flatten(x, 1)))
    return model.fc2(x)  # type: ignore[no-any-return]


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().numpy().tobytes()


def _images(n: int, side: int, seed: int) -> torch.Tensor:
    x = torch.randn((n, 1, side, side), generator=torch.Generator().manual_seed(seed))
    # ties and zeros inside pooling windows, on both sides of ReLU's kink
    x[0] = 0.0
    x[1, :, :, ::2] = x[1, :, :, 1::2]
    x[2] = -x[2].abs()
    return x


def _model(spec: ModelSpec, seed: int) -> nn.Module:
    model = initial_model(spec, seed=seed)
    with torch.no_grad():  # some negative biases: blocks whose windows are all negative
        for name in ("conv1", "conv2"):
            getattr(model, name).bias.sub_(0.1)
    return model


@pytest.mark.parametrize("side", [28, 32])
@pytest.mark.parametrize("mode", ["inference", "no_grad", "grad", "grad_channels_last"])
def test_outputs_are_those_of_relu_then_max_pool2d(side: int, mode: str) -> None:
    spec = ModelSpec(image_size=side, width=8, hidden=16)
    model = _model(spec, seed=1).eval()
    model.channels_last_pool = mode == "grad_channels_last"
    x = _images(300, side, seed=2)
    with torch.inference_mode():
        want = _reference(model, x)
    if mode == "inference":
        with torch.inference_mode():
            got = model(x)
    elif mode == "no_grad":
        with torch.no_grad():
            got = model(x)
    else:  # both autograd modes
        got = model(x)
        assert got.requires_grad
    assert _bits(got) == _bits(want)


def test_non_finite_values_propagate_as_before() -> None:
    spec = ModelSpec()
    model = _model(spec, seed=3).eval()
    x = _images(8, 28, seed=4)
    x[3, 0, 5, 5] = float("nan")
    x[4, 0, 7, 7] = float("inf")
    x[5, 0, 9, 9] = -float("inf")
    with torch.inference_mode():
        want, got = _reference(model, x), model(x)
    assert torch.equal(want.isnan(), got.isnan())
    finite = ~want.isnan()
    assert _bits(got[finite]) == _bits(want[finite])


@pytest.mark.parametrize("channels_last", [False, True])
def test_parameter_and_input_gradients_are_those_of_relu_then_max_pool2d(
    channels_last: bool,
) -> None:
    """Training and Grad-CAM/integrated gradients differentiate the network: max_pool2d's
    gradient goes to a window's first maximum, which pooling before ReLU keeps; pooling a
    channels-last copy (the valuation's gradient pass, ``channels_last_pool``) gives the same
    gradients."""
    spec = ModelSpec()
    grads = []
    for forward in (_reference, lambda m, x: m(x)):
        model = _model(spec, seed=5).train()
        model.channels_last_pool = channels_last
        x = _images(64, 28, seed=6).requires_grad_(True)
        labels = torch.arange(64) % 2
        F.cross_entropy(forward(model, x), labels).backward()
        assert x.grad is not None
        grads.append([_bits(p.grad) for p in model.parameters() if p.grad is not None])
        grads[-1].append(_bits(x.grad))
    assert len(grads[0]) == 9  # 8 parameters and the input
    assert grads[0] == grads[1]
