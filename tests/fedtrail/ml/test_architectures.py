"""The MONAI architectures beside smallcnn: specs, federated state (the BatchNorm rule), codec and
aggregation round trips, Grad-CAM target layers."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.explain import Explainer
from fedtrail.ml.models import (
    ARCHS,
    ModelSpec,
    cam_layer,
    federated_state,
    initial_model,
    load_federated,
)
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.storage.codec import Compression, decode_update, encode_model, encode_update

MONAI_ARCHS = ("densenet121", "resnet10", "resnet18")
SMALLEST = {"smallcnn": 28, "densenet121": 32, "resnet10": 28, "resnet18": 28}
DEFAULT_HASH = "7add8323385005def79f99665fa5c88e2516bc9a49be651d67e5fa9713852a76"


@functools.cache
def _model(spec: ModelSpec) -> nn.Module:
    """One seeded model per spec for the whole module (DenseNet121 takes ~0.5 s to build)."""
    return initial_model(spec, seed=0).eval()


def _images(n: int, c: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, c, side, side), generator=torch.Generator().manual_seed(seed))


def test_registry_names_the_architectures() -> None:
    assert set(ARCHS) == {"smallcnn", "densenet121", "resnet10", "resnet18"}


@pytest.mark.parametrize("arch", sorted(SMALLEST))
@pytest.mark.parametrize(("channels", "classes"), [(1, 2), (3, 5)])
@pytest.mark.parametrize("large", [False, True])
def test_each_arch_builds_and_gives_one_logit_per_class(
    arch: str, channels: int, classes: int, large: bool
) -> None:
    side = 64 if large else SMALLEST[arch]
    spec = ModelSpec(arch=arch, in_channels=channels, num_classes=classes, image_size=side)
    model = _model(spec)
    with torch.no_grad():
        assert model(_images(2, channels, side)).shape == (2, classes)
    layout = spec.tensor_layout()
    assert layout == {k: (tuple(v.shape), "float32") for k, v in federated_state(model).items()}


def test_spec_hash_pins_the_default_and_separates_settings() -> None:
    # The default smallcnn hash is part of every committed blob and README output: unchanged.
    assert ModelSpec().spec_hash() == DEFAULT_HASH
    specs = [
        ModelSpec(),
        *(ModelSpec(arch=a, image_size=32) for a in MONAI_ARCHS),
        ModelSpec(arch="resnet10", image_size=64),
        ModelSpec(arch="resnet10", image_size=32, num_classes=5),
        ModelSpec(arch="densenet121", image_size=32, norm="group"),
    ]
    hashes = [s.spec_hash() for s in specs]
    assert len(set(hashes)) == len(hashes)
    # the image size enters the hash even where it does not change the layout
    assert specs[2].tensor_layout() == specs[4].tensor_layout()
    assert specs[2].spec_hash() == ModelSpec(arch="resnet10", image_size=32).spec_hash()


def test_a_specs_hash_builds_its_meta_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 18: each site's terms check and the aggregator's terms asked it, 8 meta models a
    # 5-site round; a spec is immutable, so its hash is kept (a spec no other test hashes)
    built: list[ModelSpec] = []
    layout = ModelSpec.tensor_layout

    def counted(self: ModelSpec) -> dict[str, tuple[tuple[int, ...], str]]:
        built.append(self)
        return layout(self)

    monkeypatch.setattr(ModelSpec, "tensor_layout", counted)
    spec = ModelSpec(width=24, hidden=40)
    first = spec.spec_hash()
    assert ModelSpec(width=24, hidden=40).spec_hash() == first  # an equal spec: the same
    assert spec.spec_hash() == first and built == [spec]
    assert ModelSpec(width=24, hidden=41).spec_hash() != first and len(built) == 2


def test_specs_an_arch_cannot_take_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"densenet121 needs image_size >= 32, got 28"):
        ModelSpec(arch="densenet121", image_size=28)
    with pytest.raises(ConfigError, match="resnet18 needs image_size >= 16"):
        ModelSpec(arch="resnet18", image_size=8)
    with pytest.raises(ConfigError, match="multiple of 4"):
        ModelSpec(image_size=30)
    with pytest.raises(ConfigError, match="width is a smallcnn setting"):
        ModelSpec(arch="resnet10", image_size=64, width=32)
    with pytest.raises(ConfigError, match="hidden is a smallcnn setting"):
        ModelSpec(arch="densenet121", image_size=64, hidden=8)
    with pytest.raises(ConfigError, match="no normalisation layers"):
        ModelSpec(norm="group")
    with pytest.raises(ConfigError, match="stem only"):
        ModelSpec(arch="resnet18", image_size=64, norm="group")
    with pytest.raises(ConfigError, match="norm must be one of"):
        ModelSpec(arch="resnet10", image_size=64, norm="instance")
    with pytest.raises(ConfigError, match="unknown model architecture"):
        ModelSpec(arch="vgg16")
    assert ModelSpec(arch="resnet10", image_size=100).image_size == 100  # any size above the min


def test_federated_state_is_the_float_tensors_and_leaves_the_step_counters() -> None:
    spec = ModelSpec(arch="resnet10", image_size=28)
    model = initial_model(spec, seed=0)
    full = model.state_dict()
    counters = [k for k, v in full.items() if not v.is_floating_point()]
    assert counters and all(k.endswith("num_batches_tracked") for k in counters)
    state = federated_state(model)
    assert list(state) == [k for k in full if k not in counters]  # state-dict order
    assert any(k.endswith("running_var") for k in state)
    assert list(spec.tensor_layout()) == list(state)
    group = ModelSpec(arch="densenet121", image_size=32, norm="group")
    assert not any("running" in k for k in group.tensor_layout())

    other = initial_model(spec, seed=1)
    other.get_buffer("net.bn1.num_batches_tracked").fill_(7)
    load_federated(other, state)
    for k, v in federated_state(other).items():
        assert torch.equal(v, state[k])
    assert int(other.get_buffer("net.bn1.num_batches_tracked")) == 7  # each copy keeps its own


def test_load_federated_names_missing_and_unexpected_tensors() -> None:
    spec = ModelSpec(arch="resnet10", image_size=28)
    model = initial_model(spec, seed=0)
    state = federated_state(model)
    partial = {k: v for k, v in state.items() if k != "net.fc.bias"}
    with pytest.raises(ConfigError, match=r"missing 1 tensor\(s\): net.fc.bias"):
        load_federated(model, partial)
    extra = {**state, "net.bn1.num_batches_tracked": torch.tensor(0)}
    with pytest.raises(ConfigError, match=r"unexpected 1 tensor.*num_batches_tracked"):
        load_federated(model, extra)
    wrong = {**state, "net.fc.bias": torch.zeros(3)}
    with pytest.raises(
        ConfigError,
        match=r"the update does not fit the model spec: 1 of another shape: "
        r"net.fc.bias is \(3,\) not \(2,\)",
    ):
        load_federated(model, wrong, what="the update")


def test_a_batchnorm_update_survives_the_codec_and_aggregates_bit_reproducibly() -> None:
    spec = ModelSpec(arch="resnet10", image_size=16)
    global_state = {k: v.clone() for k, v in federated_state(initial_model(spec, 0)).items()}
    gen = np.random.default_rng(0)
    deltas = []
    for site in range(2):
        # 9 images in batches of 4: the last single image joins the batch before (BatchNorm
        # cannot train on one value per channel, which layer4's 1x1 map of one image gives)
        ds = ImageDataset(
            gen.random((9, 1, 16, 16), dtype=np.float32), gen.integers(0, 2, 9).astype(np.int64)
        )
        config = TrainConfig(batch_size=4, lr=0.01, seed=site)
        result = train_local(global_state, ds, spec=spec, config=config)
        assert list(result.delta) == list(spec.tensor_layout())
        assert float(result.delta["net.bn1.running_mean"].abs().sum()) > 0  # stats move
        blob = encode_update(result.delta, spec=spec, round=1).blob
        decoded, _ = decode_update(blob, spec=spec, expected_round=1)
        for k, v in result.delta.items():
            assert torch.equal(decoded[k], v), k
        deltas.append(decoded)
    weights = [400_000_000_000_000_000, 600_000_000_000_000_000]
    rule = AggregationRule()
    first = apply_delta(global_state, aggregate(rule, deltas, weights))
    second = apply_delta(global_state, aggregate(rule, [dict(d) for d in deltas], weights))
    assert encode_model(first, spec=spec, round=1) == encode_model(second, spec=spec, round=1)
    model = initial_model(spec, seed=5)
    load_federated(model, first)  # the aggregate is a loadable model
    assert torch.equal(model.get_buffer("net.bn1.running_var"), first["net.bn1.running_var"])


def test_topk8_sends_the_running_statistics_whole() -> None:
    spec = ModelSpec(arch="resnet10", image_size=28)
    stats = spec.statistic_names()
    assert stats and all(k.endswith(("running_mean", "running_var")) for k in stats)
    assert ModelSpec().statistic_names() == ()
    delta = {
        k: torch.randn(shape, generator=torch.Generator().manual_seed(1))
        for k, (shape, _) in spec.tensor_layout().items()
    }
    enc = encode_update(delta, spec=spec, round=2, compression=Compression(method="topk8"))
    decoded, meta = decode_update(enc.blob, spec=spec, expected_round=2)
    assert list(decoded) == list(delta)
    assert meta.compression.method == "topk8"
    for k in stats:  # exact, nothing left behind
        assert torch.equal(decoded[k], delta[k]) and not enc.residual[k].any()
    weight = "net.layer1.0.conv1.weight"
    assert int((decoded[weight] != 0).sum()) < delta[weight].numel() // 10  # still top-k


@pytest.mark.parametrize(("arch", "side"), [("densenet121", 32), ("resnet18", 28)])
def test_grad_cam_uses_the_declared_layer_and_maps_at_the_image_size(arch: str, side: int) -> None:
    spec = ModelSpec(arch=arch, image_size=side, in_channels=3, num_classes=5)
    model = _model(spec)
    declared = cam_layer(model)
    assert declared is not None
    assert declared is model.get_submodule(
        "net.class_layers.relu" if arch == "densenet121" else "net.layer4"
    )
    explainer = Explainer(model, "grad_cam")
    assert explainer._layer is declared
    exp = explainer.explain(_images(2, 3, side), target=4)
    assert exp.heatmaps.shape == (2, side, side)
    assert np.all(exp.heatmaps >= 0)


def test_smallcnn_declares_its_second_convolution() -> None:
    model = _model(ModelSpec())
    assert cam_layer(model) is model.get_submodule("conv2")


def test_zscore_input_norm_is_monai_normalize_intensity_inside_the_model() -> None:
    from monai.transforms.intensity.array import NormalizeIntensity

    spec = ModelSpec(arch="resnet10", image_size=28, input_norm="zscore")
    model = initial_model(spec, seed=0).eval()
    x = _images(3, 1, 28)
    x[2] = 0.5  # a constant image: its mean goes, nothing is divided by zero
    ours = model.normalise(x)  # type: ignore[operator]
    monai = torch.stack(
        [
            torch.as_tensor(NormalizeIntensity(channel_wise=True)(img)).as_subclass(torch.Tensor)
            for img in x
        ]
    )
    torch.testing.assert_close(ours, monai, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # so the model ignores brightness and contrast
        torch.testing.assert_close(model(0.5 * x + 0.2), model(x), rtol=1e-4, atol=1e-4)
    assert spec.tensor_layout() == ModelSpec(arch="resnet10", image_size=28).tensor_layout()
    assert spec.spec_hash() != ModelSpec(arch="resnet10", image_size=28).spec_hash()
    assert ModelSpec(input_norm="zscore").spec_hash() != DEFAULT_HASH
    with pytest.raises(ConfigError, match="input_norm must be one of"):
        ModelSpec(input_norm="minmax")


def test_to_json_omits_later_settings_at_their_default_and_reads_back() -> None:
    assert set(ModelSpec().to_json()) == {
        "arch",
        "in_channels",
        "image_size",
        "num_classes",
        "width",
        "hidden",
    }
    spec = ModelSpec(arch="densenet121", image_size=64, norm="group", input_norm="zscore")
    doc = spec.to_json()
    assert doc["norm"] == "group" and doc["input_norm"] == "zscore"
    assert ModelSpec(**doc) == spec  # type: ignore[arg-type]


def test_a_negative_running_variance_loads_as_zero_and_the_model_stays_finite() -> None:
    # global + a sign-flipped update can push a running variance below zero; BatchNorm would
    # take its square root and every logit would be NaN for whoever evaluates that state
    spec = ModelSpec(arch="resnet10", image_size=16)
    state = {k: v.clone() for k, v in federated_state(initial_model(spec, 0)).items()}
    state["net.bn1.running_var"] = torch.full_like(state["net.bn1.running_var"], -0.5)
    model = initial_model(spec, 1)
    load_federated(model, state)
    assert float(model.get_buffer("net.bn1.running_var").max()) == 0.0
    assert float(state["net.bn1.running_var"].max()) == -0.5  # the caller's state is untouched
    with torch.no_grad():
        assert bool(torch.isfinite(model.eval()(_images(2, 1, 16))).all())
