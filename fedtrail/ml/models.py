"""The federation's model, its federated state and its spec hash.

Every update carries the spec hash of the model it was trained for; a decoder refuses an update
whose hash differs, so sites with different architectures can never be averaged together.

Architectures (``ModelSpec.arch``, a registry, :data:`ARCHS`):

``smallcnn``
    Two conv blocks and two dense layers (``width``, ``hidden``); ``image_size`` a multiple of 4.
    No normalisation layers. Trains on 28 px grayscale in seconds per epoch on two CPU cores.
``densenet121``
    MONAI's ``DenseNet121`` (2-D). It halves the image five times, so ``image_size >= 32`` (a
    28 px MedMNIST set is resized, :meth:`~fedtrail.ml.datasets.ImageDataset.resized`).
``resnet10``, ``resnet18``
    MONAI's ``resnet10``/``resnet18`` (2-D) with the ImageNet stem (7x7 convolution of stride 2,
    then max pooling): ``image_size >= 16``.

The MONAI networks take no ``width``/``hidden`` (a value other than the default is refused).
``densenet121`` accepts ``norm="batch"`` (default) or ``norm="group"`` (GroupNorm with 32 groups:
no running statistics, nothing batch-dependent); the others take only the default ``norm``
(``smallcnn`` has no normalisation layers; MONAI 1.6.1's ResNet would apply the setting to its
stem only). ``input_norm="zscore"`` (every architecture; default ``"none"``) normalises each
input image's intensities inside the model (:class:`Classifier`), so every party evaluates on
the inputs the sites trained on. Every architecture declares the layer Grad-CAM attributes to
as its ``cam_layer`` (:func:`cam_layer`): ``smallcnn`` its second convolution, ``densenet121``
the ReLU over its final features (after the last dense block and ``norm5``), the ResNets
``layer4``.

BatchNorm rule. The federated state of a model (:func:`federated_state`) is its floating-point
state-dict tensors: the parameters *and* BatchNorm's ``running_mean``/``running_var``. Sites
train and send deltas of all of them; the aggregator combines the running statistics by their
coordinate median over the weighted updates (``AggregationRule.statistics``: a shifted statistic
changes no weight, so no screen sees it), deterministically, and the audit replays that.
Integer buffers (BatchNorm's ``num_batches_tracked``) are not federated: each copy keeps its
own count, and it is unused because every BatchNorm layer has a fixed ``momentum``.
:meth:`ModelSpec.tensor_layout`, the codec, aggregation and the spec hash see federated tensors
only; :func:`load_federated` loads them (strict on their names and shapes; a negative running
variance, which only a state with a hostile delta added holds, loads as zero). Statistics are
not kept local (as FedBN would): the aggregator, the audit and every site evaluate one global
model, which needs one set of statistics. ``norm="group"`` (densenet121) avoids running statistics
altogether. Training joins a last batch of a single image to the one before, since BatchNorm
cannot train on one value per channel.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.protocol.terms import MAX_IMAGE_SIZE

__all__ = [
    "ARCHS",
    "INPUT_NORMS",
    "NORMS",
    "ModelSpec",
    "cam_layer",
    "federated_state",
    "has_batch_norm",
    "initial_model",
    "load_federated",
]

NORMS = ("batch", "group")
"""Normalisation layers of the MONAI architectures (``ModelSpec.norm``)."""

INPUT_NORMS = ("none", "zscore")
"""Intensity normalisation of every input image inside the model (``ModelSpec.input_norm``)."""

_GROUPS = 32  # GroupNorm groups; every channel count of the MONAI nets is a multiple of 32

MAX_SPEC_DIMENSION = 1 << 20
"""Largest ``in_channels``, ``num_classes``, ``width`` or ``hidden`` a spec may name. The spec is
the aggregator's choice (the round terms), and a value beyond a 64-bit integer (``1e30``
channels) made torch's layout raise ``TypeError`` inside ``audit verify`` (``terms.limits``)
instead of a named failure (attack review a35); sizes far below it are refused by bytes already
(``read_limit``: ``hidden`` 2**16 is a 786 MiB model)."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Architecture and hyper-parameters that fix the tensor layout of a model.

    ``width``/``hidden`` are ``smallcnn`` settings, ``norm`` one of the MONAI nets,
    ``input_norm`` one of every architecture (see the module docstring for what each accepts).
    """

    arch: str = "smallcnn"
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 2
    width: int = 16
    hidden: int = 64
    norm: str = "batch"
    input_norm: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCHS:
            raise ConfigError(f"unknown model architecture {self.arch!r}; known: {sorted(ARCHS)}")
        for name in ("in_channels", "image_size", "num_classes", "width", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {name} must be a positive integer, got {value!r}")
            if name != "image_size" and value > MAX_SPEC_DIMENSION:
                raise ConfigError(f"model {name} must be at most {MAX_SPEC_DIMENSION}, got {value}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(
                f"model image_size must be at most {MAX_IMAGE_SIZE}, got {self.image_size}"
            )
        if self.norm not in NORMS:
            raise ConfigError(f"model norm must be one of {NORMS}, got {self.norm!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(
                f"model input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}"
            )
        ARCHS[self.arch].check(self)

    def build(self) -> nn.Module:
        """A fresh, untrained model (seed torch before calling for reproducible weights)."""
        return ARCHS[self.arch].build(self)

    def tensor_layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Name -> (shape, dtype) of every federated tensor (:func:`federated_state`), in
        state-dict order."""
        with torch.device("meta"):
            model = self.build()
        return {
            name: (tuple(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in federated_state(model).items()
        }

    def statistic_names(self) -> tuple[str, ...]:
        """The federated tensors that are running statistics (BatchNorm's mean and variance:
        buffers, not parameters), in state-dict order. A compressed update sends them whole:
        top-k of a per-channel statistic leaves the global statistics out of step with the
        weights (measured: resnet10, 3 sites, topk8 at 0.05 on everything, validation AUC
        0.67, 0.50, 0.37 over three rounds; with the statistics dense 0.85, 0.97, 0.98).
        Computed once per spec (a spec is immutable): building even a meta model took 3.5 ms,
        called three times in every valuation of a round."""
        return _statistic_names(self)

    def to_json(self) -> dict[str, object]:
        """The settings as a JSON object. Settings added after the first release (``norm``,
        ``input_norm``) appear only when they differ from their default, so documents (and
        hashes) of earlier specs are unchanged; ``ModelSpec(**doc)`` reads it back."""
        spec = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if spec[name] == default:
                del spec[name]
        return spec

    def spec_hash(self) -> str:
        """sha256 (hex) of the settings (:meth:`to_json`) and the tensor layout, canonically
        encoded. Computed once per spec (a spec is immutable): its meta model took ~1-2 ms,
        asked 8 times in a 5-site round (each site's terms check, the aggregator's terms)."""
        return _spec_hash(self)


_LATER_FIELDS = {"norm": "batch", "input_norm": "none"}


# ---------------------------------------------------------------- federated state


def _is_federated(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point()


def federated_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's federated tensors: its floating-point state-dict entries (parameters and
    BatchNorm running statistics), in state-dict order; integer buffers stay with the copy.

    The tensors are the state dict's (detached, sharing memory with the model): clone them
    before the model trains further if the values are to be kept."""
    return {k: v for k, v in model.state_dict().items() if _is_federated(v)}


def load_federated(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, what: str = "the state"
) -> None:
    """Copy ``state`` into the model's federated tensors; its integer buffers are left as they
    are. ConfigError (``what`` names the state) when a name is missing or unexpected, or a
    shape differs.

    A BatchNorm running variance below zero is loaded as zero: a state that adds an untrusted
    update can hold one (a sign-flipped variance delta), and every party loads through here, so
    all evaluate the same model and none takes the square root of a negative number."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if _is_federated(v)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [
        f"{k} is {tuple(state[k].shape)} not {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if missing or unexpected or resized:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        if resized:
            parts.append(f"{len(resized)} of another shape: {', '.join(resized[:5])}")
        raise ConfigError(f"{what} does not fit the model spec: {'; '.join(parts)}")
    try:
        model.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:
        raise ConfigError(f"{what} does not fit the model spec: {exc}") from exc
    with torch.no_grad():
        for module in model.modules():
            var = getattr(module, "running_var", None)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and var is not None:
                var.clamp_(min=0.0)


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} tensor(s): {shown}{more}"


def cam_layer(model: nn.Module) -> nn.Module | None:
    """The layer Grad-CAM attributes to, as the model declares it (``cam_layer``, or the older
    name ``last_conv``); None when it declares none."""
    for attr in ("cam_layer", "last_conv"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Module):
            return layer
    return None


# ---------------------------------------------------------------- architectures


class Classifier(nn.Module):
    """Base of fedtrail's models: the spec's intensity normalisation of the input.

    ``input_norm="zscore"`` scales each image, channel by channel, to zero mean and unit standard
    deviation over its pixels (MONAI's ``NormalizeIntensity(channel_wise=True)``; a constant
    channel only loses its mean). It is part of the model, not of the data, so training,
    validation, the aggregator, the audit and the heatmaps all see the same inputs; it holds no
    tensors, so the layout is that of the architecture alone.
    """

    autograd_outputs_exact: ClassVar[bool] = False
    """Whether a forward pass with autograd gives the same outputs, bit for bit, as one without
    (the valuation's gradient pass then also gives the coalition model's outputs); False where
    not shown."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.input_norm = spec.input_norm

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the network sees it."""
        if self.input_norm == "none":
            return x
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True, correction=0)
        return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))

    def activation_bound(
        self, row_bound: Callable[[str], npt.NDArray[np.float64] | None], x_bound: float
    ) -> float:
        """An upper bound on the absolute value of every activation of the network (after the
        input normalisation) for inputs bounded by ``x_bound``, given ``row_bound(name)``: a 1-D
        array, per output unit of that parameter (its first dimension), an upper bound on the
        sum of the absolute values of the unit's weights (for a bias: on its absolute value);
        None: not known. ``math.inf`` where the architecture gives no such bound (the
        default)."""
        return math.inf


class SmallCNN(Classifier):
    """Two conv blocks and two dense layers: trains on 28x28 grayscale in seconds per epoch on
    two CPU cores. No batch norm, so the state dict holds only parameters that average cleanly.
    """

    autograd_outputs_exact: ClassVar[bool] = True
    """:meth:`_pooled`'s two paths give the same values (``tests/fedtrail/ml/``)."""

    channels_last_pool: bool = False
    """With autograd, pool a channels-last copy of the activations (then back to contiguous):
    torch's ``max_pool2d`` gives the same values and the same input gradient, bit for bit, and
    both ways took about half the time of its contiguous NCHW kernel (measured on 39 images,
    one thread: 0.75 against 1.46 ms for the first block, 0.45 against 0.75 ms for the second).
    Set on the valuation's scratch model (:func:`~fedtrail.valuation.utility.scratch_model`,
    the gradient pass of a validator's game), where every validator and auditor runs the same
    path; local training keeps the contiguous kernel. Not bit-identical for every input: with
    it in local training too, ``fedtrail demo`` matched in rounds 1-3 and differed from round 4
    (stop 45), most likely a tie inside a pooling window routed to another position."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        w = spec.width
        self.conv1 = nn.Conv2d(spec.in_channels, w, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        side = spec.image_size // 4
        self.fc1 = nn.Linear(2 * w * side * side, spec.hidden)
        self.fc2 = nn.Linear(spec.hidden, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pooled(self.conv1(self.normalise(x)))
        x = self._pooled(self.conv2(x))
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(x))
        return self.fc2(x)  # type: ignore[no-any-return]

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``pool(relu(x))``, computed as ``relu(pool(x))``: the same values bit for bit (max
        pooling only picks values and ReLU is monotone; NaN wins both), with ReLU on a quarter
        of them. Without autograd (validation, the coalition evaluations of the valuation) the
        2x2 pooling is element-wise maxima of strided views, then ReLU in place: torch's
        ``max_pool2d`` on contiguous NCHW also builds int64 indices and took longer than the
        convolution before it (measured: 10.7 ms against 1.7 ms for the first block on 256
        images, one thread). With autograd it is ``max_pool2d`` (on a channels-last copy when
        :attr:`channels_last_pool`), whose gradient goes to the
        first maximum of each window (``torch.maximum``'s splits ties): training and input
        gradients (Grad-CAM) are unchanged, since a window's first maximum is the same before
        and after ReLU whenever it is positive, and the gradient is zero otherwise."""
        n, c, h, w = x.shape
        if x.requires_grad and self.channels_last_pool and not (h % 2 or w % 2):
            pooled = self.pool(x.contiguous(memory_format=torch.channels_last))
            return self.act(pooled).contiguous()  # type: ignore[no-any-return]
        if x.requires_grad or h % 2 or w % 2 or not x.is_contiguous():
            return self.act(self.pool(x))  # type: ignore[no-any-return]
        rows = x.view(n, c, h // 2, 2, w)
        pairs = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1]).view(n, c, h // 2, w // 2, 2)
        return torch.maximum(pairs[..., 0], pairs[..., 1]).relu_()

    def activation_bound(
        self, row_bound: Callable[[str], npt.NDArray[np.float64] | None], x_bound: float
    ) -> float:
        """Layer by layer in :meth:`forward`'s order: a convolution or dense layer's outputs are
        at most (its largest row bound) x (the bound on its inputs) + (its largest bias bound)
        in absolute value; ReLU and max pooling never raise the largest absolute value."""
        bound, largest = x_bound, 0.0
        for layer in ("conv1", "conv2", "fc1", "fc2"):
            w, b = row_bound(f"{layer}.weight"), row_bound(f"{layer}.bias")
            if w is None or b is None:
                return math.inf
            bound = float(w.max()) * bound + float(b.max())
            if not bound < math.inf:  # also NaN
                return math.inf
            largest = max(largest, bound)
        return largest

    @property
    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM attributes to: the second convolution."""
        return self.conv2

    @property
    def last_conv(self) -> nn.Module:
        """The older name of :attr:`cam_layer`."""
        return self.conv2


def _monai_norm(spec: ModelSpec) -> str | tuple[str, dict[str, int]]:
    return "batch" if spec.norm == "batch" else ("group", {"num_groups": _GROUPS})


class DenseNet121(Classifier):
    """MONAI's 2-D DenseNet121 (``self.net``) behind fedtrail's model interface."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        from monai.networks.nets.densenet import DenseNet121 as Net

        self.net = Net(
            spatial_dims=2,
            in_channels=spec.in_channels,
            out_channels=spec.num_classes,
            norm=_monai_norm(spec),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(x))  # type: ignore[no-any-return]

    @property
    def cam_layer(self) -> nn.Module:
        """The ReLU over the final features (last dense block, then ``norm5``)."""
        return self.net.get_submodule("class_layers.relu")


class ResNet(Classifier):
    """MONAI's 2-D ResNet (``self.net``) with the ImageNet stem, behind fedtrail's interface."""

    def __init__(self, spec: ModelSpec, depth: int) -> None:
        super().__init__(spec)
        from monai.networks.nets.resnet import resnet10, resnet18

        factory = {10: resnet10, 18: resnet18}[depth]
        self.net = factory(
            spatial_dims=2,
            n_input_channels=spec.in_channels,
            num_classes=spec.num_classes,
            conv1_t_size=7,
            conv1_t_stride=2,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(x))  # type: ignore[no-any-return]

    @property
    def cam_layer(self) -> nn.Module:
        """The last residual stage, ``layer4``."""
        return self.net.get_submodule("layer4")


_RES = " (MONAI 1.6.1's ResNet applies its norm setting to the stem only)"


@dataclass(frozen=True)
class Arch:
    """One architecture of the registry: how to build it and which specs it accepts."""

    build: Callable[[ModelSpec], nn.Module]
    min_image_size: int
    monai: bool
    """A MONAI network: no ``width``/``hidden``, ``norm`` chosen by the spec."""
    size_rule: str = ""
    multiple_of: int = 1
    norms: tuple[str, ...] = ("batch",)
    """The ``norm`` settings it takes."""
    norm_rule: str = ""

    def check(self, spec: ModelSpec) -> None:
        """ConfigError naming the setting when the spec does not suit this architecture."""
        if spec.image_size < self.min_image_size:
            raise ConfigError(
                f"{spec.arch} needs image_size >= {self.min_image_size}, got {spec.image_size}"
                f"{self.size_rule}; resize the data (ImageDataset.resized) to a size it takes"
            )
        default = ModelSpec.__dataclass_fields__
        if self.monai:
            for name in ("width", "hidden"):
                if getattr(spec, name) != default[name].default:
                    raise ConfigError(
                        f"model {name} is a smallcnn setting; {spec.arch} takes none "
                        f"(leave it at {default[name].default}, got {getattr(spec, name)})"
                    )
        if spec.norm not in self.norms:
            raise ConfigError(
                f"{spec.arch} takes norm {' or '.join(map(repr, self.norms))}, not "
                f"{spec.norm!r}{self.norm_rule}"
            )
        if spec.image_size % self.multiple_of:
            raise ConfigError(
                f"{spec.arch} needs an image_size that is a multiple of {self.multiple_of}, "
                f"got {spec.image_size}"
            )


ARCHS: dict[str, Arch] = {
    "smallcnn": Arch(
        SmallCNN,
        min_image_size=4,
        monai=False,
        multiple_of=4,
        norm_rule=" (it has no normalisation layers)",
    ),
    "densenet121": Arch(
        DenseNet121,
        min_image_size=32,
        monai=True,
        size_rule=" (it halves the image five times)",
        norms=NORMS,
    ),
    "resnet10": Arch(lambda s: ResNet(s, 10), min_image_size=16, monai=True, norm_rule=_RES),
    "resnet18": Arch(lambda s: ResNet(s, 18), min_image_size=16, monai=True, norm_rule=_RES),
}
"""The architectures a spec may name."""


@functools.lru_cache(maxsize=64)
def _spec_hash(spec: ModelSpec) -> str:
    layout = [[name, list(shape), dtype] for name, (shape, dtype) in spec.tensor_layout().items()]
    doc = {"spec": spec.to_json(), "tensors": layout}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


@functools.lru_cache(maxsize=64)
def _statistic_names(spec: ModelSpec) -> tuple[str, ...]:
    with torch.device("meta"):
        model = spec.build()
    params = {name for name, _ in model.named_parameters()}
    return tuple(name for name in federated_state(model) if name not in params)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether the model holds a BatchNorm layer (whose training needs two values per channel)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def initial_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The seeded initial global model of a federation."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return spec.build()
    finally:
        torch.random.set_rng_state(gen_state)
