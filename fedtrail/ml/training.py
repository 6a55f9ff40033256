"""Local training of one site: FedAvg local SGD or FedProx, seeded and reproducible.

:func:`train_local` starts from the round's global model, runs ``epochs`` passes of mini-batch SGD
over the site's training data and returns the update ``delta = new - global`` of the model's
federated tensors (:func:`~fedtrail.ml.models.federated_state`: parameters and BatchNorm running
statistics; float32, on the CPU, in state-dict order) with the sample count, the training loss
and, when a validation split is given, its metrics. With ``TrainConfig.augment`` every training
image passes through seeded MONAI augmentations first (:class:`Augmenter`).

Reproducibility. The same global state, data, spec and config give a bit-identical delta on the
CPU. That rests on: a ``torch.Generator`` seeded with ``config.seed`` for the batch order; the
global torch RNG forked and seeded with ``config.seed`` for anything else random in the model
(restored afterwards, so callers' RNG streams are untouched); and PyTorch's CPU kernels being
deterministic for a given torch build, CPU instruction set and ``torch.get_num_threads()``. A
different thread count changes the last bits (measured: 1 vs 2 threads, 5 epochs on 500 images,
max |difference| 4e-4 in the delta), so deltas are reproducible, not portable; the audit replays
aggregation from the stored deltas, never training. ``torch.use_deterministic_algorithms`` is not
switched on (the CPU ops used here are deterministic without it). On CUDA, cuDNN is put in
deterministic, non-benchmark mode for the call and restored; two runs on one H100 gave identical
deltas, which differ from the CPU's (max 7e-3 after 5 epochs).

Threads. Thread settings are left as the caller set them. On a CPU shared with other busy
processes, torch's default of one thread per core can slow training many times over (measured on
2 cores beside a busy process: 0.11 s/epoch for 500 images became 0.6 to 13 s); a daemon on a
shared machine may want ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError, FedtrailError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.metrics import Metrics, evaluate
from fedtrail.ml.models import ModelSpec, federated_state, has_batch_norm, load_federated
from fedtrail.ml.task import check_fits

__all__ = [
    "ALGORITHMS",
    "DEVICES",
    "FineTuned",
    "LocalResult",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "fine_tune",
    "resolve_device",
    "train_local",
]

ALGORITHMS = ("fedavg", "fedprox")
DEVICES = ("auto", "cpu", "cuda")


class TrainingDiverged(FedtrailError):
    """The training loss became NaN or infinite (usually: the learning rate is too high)."""


class TrainingInterrupted(FedtrailError):
    """``should_stop`` asked local training to stop; nothing was produced."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__(f"local training stopped on request at epoch {epoch}, batch {batch}")
        self.epoch = epoch
        self.batch = batch


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of a site's local training.

    ``algorithm="fedprox"`` adds ``mu/2 * ||w - w_global||^2`` to the loss (Li et al. 2020) and
    needs ``mu > 0``; ``"fedavg"`` is plain local SGD and needs ``mu == 0``. ``device="auto"``
    trains on CUDA when available, else on the CPU.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    algorithm: str = "fedavg"
    mu: float = 0.0
    seed: int = 0
    device: str = "cpu"
    augment: bool = False
    """Random flips, small affine warps, intensity scaling and Gaussian noise (MONAI
    transforms) on every training image, drawn from a stream seeded with ``seed``: the same
    inputs give the same update. Off by default."""

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not _is_number(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be non-negative, got {self.weight_decay!r}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if not _is_number(self.mu) or self.mu < 0:
            raise ConfigError(f"mu must be a non-negative number, got {self.mu!r}")
        if self.algorithm == "fedprox" and self.mu == 0:
            raise ConfigError("fedprox needs a proximal term mu > 0")
        if self.algorithm == "fedavg" and self.mu != 0:
            raise ConfigError("mu is the FedProx proximal term; fedavg needs mu = 0")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {self.augment!r}")


@dataclass
class LocalResult:
    """What one site's local training produced."""

    delta: dict[str, torch.Tensor]
    """``new - global`` per federated tensor, float32 on the CPU, in state-dict order."""
    num_samples: int
    """Training samples used (the weight the ledger multiplies by the score)."""
    train_loss: float
    """Mean cross-entropy over the samples of the last epoch, as seen while training (without
    the FedProx term)."""
    metrics: Metrics | None
    """Metrics of the trained model on the site's validation split; None without one."""
    seconds: float
    """Wall-clock time of the call, training and validation."""


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (ConfigError when there is none) or ``"auto"`` (CUDA if available)."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if name == "auto":
            return torch.device("cpu")
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    raise ConfigError(f"device must be one of {DEVICES}, got {name!r}")


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNGs (CPU, and the CUDA device when used), seed them, restore after; on
    CUDA also make cuDNN deterministic for the duration."""
    devices = (
        [torch.cuda.current_device() if device.index is None else device.index]
        if (device.type == "cuda")
        else []
    )
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if device.type == "cuda":
            cudnn.deterministic, cudnn.benchmark = True, False
        try:
            yield
        finally:
            cudnn.deterministic, cudnn.benchmark = saved


@contextmanager
def _start_model(
    start: Mapping[str, torch.Tensor],
    train: ImageDataset,
    val: ImageDataset | None,
    spec: ModelSpec,
    config: TrainConfig,
) -> Iterator[tuple[nn.Module, torch.device]]:
    """The model both training entry points start from: the data checked against the spec,
    then, inside :func:`_seeded`, the spec's model holding ``start`` on the config's device."""
    check_fits(train, spec, "the training split")
    if val is not None:
        check_fits(val, spec, "the validation split")
    device = resolve_device(config.device)
    with _seeded(config.seed, device):
        model = spec.build()
        load_federated(model, start, what="the global model")
        model.to(device)
        yield model, device


def train_local(
    global_state: Mapping[str, torch.Tensor],
    train: ImageDataset,
    *,
    spec: ModelSpec,
    config: TrainConfig,
    val: ImageDataset | None = None,
    val_bias: Sequence[float] | None = None,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> LocalResult:
    """Train the global model on ``train`` and return the update.

    ``global_state`` is read, never modified. The batch order is a fresh random permutation per
    epoch from a generator seeded with ``config.seed``; the last batch of an epoch may be smaller
    (for a model with BatchNorm, a last batch of one sample joins the one before).
    ``should_stop`` is called before every batch; when it returns true, TrainingInterrupted is
    raised. ``progress`` shows a tqdm bar on stderr. ``val_bias``: the per-class intercept of
    the calibrated decision the validation metrics also report (see
    :func:`~fedtrail.ml.metrics.evaluate`).
    """
    started = time.perf_counter()
    with _start_model(global_state, train, val, spec, config) as (model, device):
        start = {
            k: v.detach().to(device, torch.float32, copy=True) for k, v in global_state.items()
        }
        anchors = [(p, start[name]) for name, p in model.named_parameters() if p.requires_grad]
        train_loss = _run_epochs(model, anchors, train, config, device, progress, should_stop)
        metrics = evaluate(model, val, bias=val_bias) if val is not None else None
        delta = {
            k: (v.detach().to(torch.float32) - start[k]).to("cpu")
            for k, v in federated_state(model).items()
        }
    return LocalResult(
        delta=delta,
        num_samples=len(train),
        train_loss=train_loss,
        metrics=metrics,
        seconds=time.perf_counter() - started,
    )


@dataclass
class FineTuned:
    """A model fine-tuned on a site's own data (:func:`fine_tune`)."""

    state: dict[str, torch.Tensor]
    """The fine-tuned federated tensors, float32 on the CPU, in state-dict order."""
    steps: int
    train_loss: float
    """Mean cross-entropy over the samples of the last (possibly partial) pass."""
    metrics: Metrics | None
    """Metrics of the fine-tuned model on the validation split; None without one."""
    seconds: float


def fine_tune(
    global_state: Mapping[str, torch.Tensor],
    train: ImageDataset,
    *,
    spec: ModelSpec,
    config: TrainConfig,
    steps: int,
    val: ImageDataset | None = None,
    val_bias: Sequence[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
    only: Collection[str] | None = None,
) -> FineTuned:
    """``steps`` mini-batch SGD steps from ``global_state`` on ``train``: personalisation by
    local fine-tuning. Same batching, seeding and reproducibility as :func:`train_local`
    (``config.epochs`` is ignored: passes repeat until ``steps`` batches are done); returns the
    whole fine-tuned state, not a delta, since it is kept by the site, never aggregated.

    ``only``: the federated tensors to train (None: all). The others stay exactly as given:
    their parameters are frozen and every layer holding none of ``only`` runs in eval mode,
    so no BatchNorm statistics outside ``only`` move either."""
    if not _is_int(steps) or steps < 1:
        raise ConfigError(f"fine-tuning steps must be a positive integer, got {steps!r}")
    if only is not None:
        unknown = sorted(set(only) - set(global_state))
        if unknown or not only:
            raise ConfigError(
                f"fine-tuning: no such tensors in the model: {unknown[:5]}"
                if unknown
                else "fine-tuning: nothing to train (empty tensor set)"
            )
    started = time.perf_counter()
    with _start_model(global_state, train, val, spec, config) as (model, device):
        if only is not None:
            for name, p in model.named_parameters():
                p.requires_grad_(name in only)
        anchors = [
            (p, global_state[name].detach().to(device, torch.float32, copy=True))
            for name, p in model.named_parameters()
            if p.requires_grad
        ]
        loss = _run_epochs(
            model, anchors, train, config, device, False, should_stop, steps, only=only
        )
        metrics = evaluate(model, val, bias=val_bias) if val is not None else None
        state = {
            k: v.detach().to(torch.float32).to("cpu", copy=True)
            for k, v in federated_state(model).items()
        }
        if only is not None:  # bit-exact: what was not trained is what was given
            for k in state:
                if k not in only:
                    state[k] = global_state[k].detach().to(torch.float32).to("cpu", copy=True)
    return FineTuned(
        state=state,
        steps=steps,
        train_loss=loss,
        metrics=metrics,
        seconds=time.perf_counter() - started,
    )


def _run_epochs(
    model: nn.Module,
    anchors: list[tuple[nn.Parameter, torch.Tensor]],
    train: ImageDataset,
    config: TrainConfig,
    device: torch.device,
    progress: bool,
    should_stop: Callable[[], bool] | None,
    max_steps: int | None = None,
    *,
    only: Collection[str] | None = None,
) -> float:
    """``config.epochs`` passes over ``train``; with ``max_steps``, as many passes as it takes
    to run exactly that many batches (the last pass cut short). ``only``: layers holding none
    of these state-dict names run in eval mode (see :func:`fine_tune`)."""
    images = torch.tensor(train.images)
    labels = torch.tensor(train.labels)
    n = len(train)
    starts = _batch_starts(n, config.batch_size, has_batch_norm(model))
    batches = len(starts) - 1
    epochs = config.epochs if max_steps is None else -(-max_steps // batches)
    left = math.inf if max_steps is None else max_steps
    augment = Augmenter(config.seed, train.image_size[1]) if config.augment else None
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss()
    prox = config.algorithm == "fedprox"
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs * batches, desc="local training", unit="batch")
    model.train()
    if only is not None:
        _freeze_layers(model, only)
    epoch_loss = math.nan
    try:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            for b in range(batches):
                if left <= 0:
                    break
                left -= 1
                if should_stop is not None and should_stop():
                    raise TrainingInterrupted(epoch, b)
                idx = order[starts[b] : starts[b + 1]]
                x = images[idx] if augment is None else augment(images[idx])
                x = x.to(device, non_blocking=True)
                y = labels[idx].to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                data_loss = loss_fn(model(x), y)
                loss = data_loss
                if prox:
                    sq = torch.stack([(p - g).square().sum() for p, g in anchors]).sum()
                    loss = data_loss + (config.mu / 2.0) * sq
                loss.backward()
                optimizer.step()
                batch_loss = float(data_loss.detach())
                if not math.isfinite(batch_loss):
                    raise TrainingDiverged(
                        f"training diverged (loss {batch_loss}) at epoch {epoch}, batch {b}; "
                        "lower the learning rate"
                    )
                total += batch_loss * idx.numel()
                seen += idx.numel()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{batch_loss:.4f}", refresh=False)
            epoch_loss = total / seen
    finally:
        if bar is not None:
            bar.close()
    return epoch_loss


def _freeze_layers(model: nn.Module, only: Collection[str]) -> None:
    """Eval mode for every layer none of whose own tensors is in ``only``."""
    for prefix, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        own = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)]
        own += [f"{prefix}.{n}" if prefix else n for n, _ in module.named_buffers(recurse=False)]
        if not any(n in only for n in own):
            module.eval()


def _batch_starts(n: int, batch_size: int, batch_norm: bool) -> list[int]:
    """Batch boundaries of an epoch: ``batch_size`` samples each, the last one smaller. With
    BatchNorm a last batch of a single sample joins the one before (BatchNorm cannot train on
    one value per channel, which a 1x1 feature map of one image gives)."""
    starts = [*range(0, n, batch_size), n]
    if batch_norm and len(starts) > 2 and starts[-1] - starts[-2] == 1:
        del starts[-2]
    return starts


class Augmenter:
    """Site-side augmentation with MONAI transforms, reproducible from a seed (off unless
    :attr:`TrainConfig.augment`).

    Per image, each with probability 1/2: a left-right flip; an affine warp (rotation up to 15
    degrees, shift up to 1/16 of the side, scale within 10%, zero padding); intensity scaled by
    a factor in [0.9, 1.1]; Gaussian noise of a standard deviation drawn from [0, 0.02]; then
    clipped to [0, 1]. Intensity normalisation is not done here but in the model
    (``ModelSpec.input_norm``), so evaluation sees it too.
    The random stream is numpy's, seeded from ``seed`` alone, so the same seed and the same
    batches in the same order give the same images; call it on CPU tensors ``(N, C, H, W)``.
    """

    def __init__(self, seed: int, image_size: int) -> None:
        from monai.transforms.compose import Compose
        from monai.transforms.intensity.array import RandGaussianNoise, RandScaleIntensity
        from monai.transforms.spatial.array import RandAffine, RandFlip

        self._transform = Compose(
            [
                RandFlip(prob=0.5, spatial_axis=1),
                RandAffine(
                    prob=0.5,
                    rotate_range=math.radians(15),
                    translate_range=(image_size / 16, image_size / 16),
                    scale_range=(0.1, 0.1),
                    padding_mode="zeros",
                ),
                RandScaleIntensity(factors=0.1, prob=0.5),
                RandGaussianNoise(prob=0.5, mean=0.0, std=0.02),
            ]
        )
        state = int(np.random.SeedSequence([seed, _AUGMENT_STREAM]).generate_state(1)[0])
        self._transform.set_random_state(seed=state)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from monai.utils.type_conversion import convert_to_tensor

        out = [
            convert_to_tensor(self._transform(image), dtype=torch.float32, track_meta=False)
            for image in images
        ]
        batch = torch.stack(out) if out else images.clone()
        return batch.clamp_(0.0, 1.0)


_AUGMENT_STREAM = 0x61756720  # separates the augmentation stream from other uses of the seed
