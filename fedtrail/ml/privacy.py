"""Differentially private local training (DP-SGD with Opacus) and its accountant.

:func:`train_private` is :func:`~fedtrail.ml.training.train_local` with DP-SGD (Abadi et al.
2016): each step takes a Poisson sample of the site's training split (every image independently
with probability ``sample_rate = batch_size / n``, as the RDP analysis assumes), clips each
image's gradient to ``max_grad_norm`` (Opacus ``GradSampleModule``), adds Gaussian noise of
standard deviation ``noise_multiplier * max_grad_norm`` to their sum and divides by the expected
batch size (Opacus ``DPOptimizer``), ``steps = epochs * round(1 / sample_rate)`` times. It returns
the same update (``delta = new - global`` of the federated tensors) plus the :class:`DpParams`
that account for it; the update's epsilon is :func:`epsilon_spent` of those parameters alone.
What a site declares on chain for it follows the rule its parameters name
(:func:`declared_micro`: its own epsilon, or the increment of the site's RDP-composed total).

Reproducibility. Poisson masks come from a CPU generator seeded with ``config.seed``; the noise
from a second generator (on the training device) seeded from ``config.seed`` on a separate
stream; the rest as in ``train_local``. The same inputs give a bit-identical delta on one machine
and thread count. That is a property for testing and replay, not for privacy: the seed must stay
secret at the site (anyone holding it can subtract the noise). The accountant is pure arithmetic
(numpy, opacus' RDP analysis) and gives the same float everywhere, so an auditor recomputes the
declared spend exactly.

Models with BatchNorm are refused: a BatchNorm output mixes the images of a batch, so per-image
gradients (and the clipping that bounds each image's influence) do not exist.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.metrics import evaluate
from fedtrail.ml.models import ModelSpec, federated_state, has_batch_norm
from fedtrail.ml.training import (
    Augmenter,
    LocalResult,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    _start_model,
)
from fedtrail.protocol.privacy import (
    ACCOUNTING_RULES,
    COMPOSED,
    MAX_EPSILON_MICRO,
    SUMMED,
    DpParams,
    InvalidPrivacy,
    to_micro,
)

__all__ = [
    "DP_BATCH_SIZE",
    "DP_LR",
    "DP_MAX_GRAD_NORM",
    "DP_MOMENTUM",
    "DpSettings",
    "PrivateResult",
    "declared_micro",
    "epsilon_composed",
    "epsilon_composed_at",
    "epsilon_spent",
    "plan_privacy",
    "round_target",
    "train_private",
]

DP_BATCH_SIZE: Final = 128
"""The node's default expected batch under DP-SGD (``[privacy] batch_size``): 4x the
non-private 32. The noise is added once per step: at a given epsilon a larger Poisson batch
needs a noise multiplier that grows slower than sqrt(batch), so an epoch's noise variance at the
same expected progress falls (about 2x at 128 on the bundled data's sites)."""
DP_LR: Final = 0.5
"""The node's default learning rate under DP-SGD (``[privacy] lr``), with no momentum: at 128
the sites take a few steps a round (7 for a 912-image site), and a momentum buffer restarted
every round never builds up. 0.5 is below the 0.8 that matches [training]'s 0.02 with momentum
0.9 at batch 32 (about 0.02 / (1 - 0.9) * 4), trading progress, of which the bundled data has
plenty, for noise."""
DP_MOMENTUM: Final = 0.0
"""The node's default SGD momentum under DP-SGD (``[privacy] momentum``)."""
DP_MAX_GRAD_NORM: Final = 1.0
"""The node's default per-image clipping norm (``[privacy] max_grad_norm``)."""

_ALPHAS: Final = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
"""The RDP orders opacus' ``RDPAccountant`` converts at (its ``DEFAULT_ALPHAS``)."""
_NOISE_STREAM: Final = 0x6E6F6973  # separates the noise stream from the sampling one
_BATCH_NORM_FIX: Final = "--arch densenet121 --norm group"


@dataclass(frozen=True, kw_only=True)
class DpSettings:
    """A site's DP-SGD settings (the node's ``[privacy]`` section): either ``noise_multiplier``
    or ``target_epsilon`` (the epsilon of one round's update at the round's delta; the noise
    multiplier is then solved with opacus' ``get_noise_multiplier``), and the per-image clipping
    norm ``max_grad_norm``. The delta is the federation's, from the round terms."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = DP_MAX_GRAD_NORM
    batch_size: int | None = None
    """The expected Poisson batch under DP-SGD; None: the training config's."""
    lr: float | None = None
    """The learning rate under DP-SGD; None: the training config's."""
    momentum: float | None = None
    """The SGD momentum under DP-SGD; None: the training config's."""
    accounting: str = COMPOSED
    """The rule the site declares its spend by (``DpParams.accounting``): ``"composed"``, the
    increment of its RDP-composed total, or ``"summed"``, each update's own epsilon."""

    def __post_init__(self) -> None:
        if self.accounting not in ACCOUNTING_RULES:
            raise ConfigError(
                f"privacy: accounting must be one of {ACCOUNTING_RULES}, got {self.accounting!r}"
            )
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("privacy: set exactly one of noise_multiplier and target_epsilon")
        for name in ("noise_multiplier", "target_epsilon", "max_grad_norm", "lr"):
            value = getattr(self, name)
            if value is None:
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value > 0):
                raise ConfigError(f"privacy: {name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ConfigError(f"privacy: batch_size must be a positive integer, got {b!r}")
        m = self.momentum
        if m is not None:
            ok = isinstance(m, int | float) and not isinstance(m, bool)
            if not (ok and 0 <= m < 1):
                raise ConfigError(f"privacy: momentum must lie in [0, 1), got {m!r}")
            object.__setattr__(self, "momentum", float(m))

    def training(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the DP-SGD overrides (batch size, lr, momentum) that are set: what
        :func:`plan_privacy` and :func:`train_private` train under."""
        return replace(
            config,
            batch_size=config.batch_size if self.batch_size is None else self.batch_size,
            lr=config.lr if self.lr is None else self.lr,
            momentum=config.momentum if self.momentum is None else self.momentum,
        )


@dataclass
class PrivateResult:
    """What DP-SGD local training produced: the update as ``train_local`` gives it, the
    parameters that account for it and its epsilon at their delta."""

    local: LocalResult
    params: DpParams
    epsilon: float


def epsilon_spent(params: DpParams) -> float:
    """The epsilon of one update at ``params.delta``: opacus' RDP accountant over
    ``steps`` Poisson-sampled Gaussian steps. Deterministic (the audit recomputes it)."""
    return epsilon_composed([params])


def epsilon_composed(updates: Iterable[DpParams]) -> float:
    """The RDP-composed epsilon of several updates of one site (all at one delta): tighter than
    the sum of their epsilons (the chain's total under the ``"summed"`` rule). 0.0 for none."""
    params = list(updates)
    if not params:
        return 0.0
    deltas = sorted({p.delta for p in params})
    if len(deltas) != 1:
        raise InvalidPrivacy(f"updates composed at different deltas: {deltas}")
    return epsilon_composed_at(params, deltas[0])


def epsilon_composed_at(updates: Iterable[DpParams], delta: float) -> float:
    """The RDP-composed epsilon of ``updates`` at ``delta``, whatever delta each names: RDP
    composes independently of delta (it enters only at the conversion to epsilon), so this is a
    guarantee for all of them at ``delta``. 0.0 for none."""
    params = list(updates)
    if not params:
        return 0.0
    return _rdp_epsilon([(p.noise_multiplier, p.sample_rate, p.steps) for p in params], delta)


def declared_micro(update: DpParams, earlier: Sequence[DpParams], total_before: int) -> int:
    """The micro-epsilon a site declares at the reveal of ``update`` under the rule it names.

    ``"summed"``: the update's own epsilon rounded up (``earlier`` and ``total_before`` unused).
    ``"composed"``: ``max(1, ceil(SCALE * eps) - total_before)`` with ``eps`` the RDP
    composition of ``earlier`` (every earlier private update of the site, read back from the
    chain's ``PrivacySpent`` events and their blobs) and ``update`` at ``update.delta``, and
    ``total_before`` the site's spend on chain before this reveal: the chain's total after it is
    the composed epsilon rounded up (at least 1 more, since the contract refuses a zero spend).
    Deterministic: the node declares it and the auditor recomputes it with this function."""
    if update.accounting == SUMMED:
        return to_micro(epsilon_spent(update))
    if isinstance(total_before, bool) or not isinstance(total_before, int) or total_before < 0:
        raise InvalidPrivacy(f"the spend before must be a non-negative integer, not {total_before}")
    total = to_micro(epsilon_composed_at([*earlier, update], update.delta))
    micro = max(1, total - total_before)
    if micro > MAX_EPSILON_MICRO:
        raise InvalidPrivacy(f"a spend of {micro} micro-epsilon does not fit the chain's uint64")
    return micro


def round_target(
    n: int, config: TrainConfig, total: float, rounds: int, delta: float, dp: DpSettings
) -> float:
    """The per-round target epsilon whose ``rounds`` updates of a site of ``n`` images under
    ``config`` and ``dp`` compose (RDP) to ``total`` at ``delta``: the noise for the whole run
    is solved (identical rounds compose like one run of ``rounds * steps`` steps), and the
    per-round target is one round's epsilon at it (what ``[privacy] target_epsilon`` takes)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    base = plan_privacy(replace(dp, noise_multiplier=1.0, target_epsilon=None), n, config, delta)
    noise = _solve_noise(total, delta, base.sample_rate, base.steps * rounds, tolerance=0.001)
    return epsilon_spent(replace(base, noise_multiplier=noise))


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus' ``RDPAccountant.get_epsilon`` over ``history`` (same orders, same sum in the
    same order: the same float), with each entry's RDP curve computed once per process: the
    composed rule recomputes a site's whole history at every reveal, ~70 ms an entry."""
    from opacus.accountants.analysis import rdp as analysis

    try:
        with warnings.catch_warnings():  # "optimal order is the largest alpha": still a bound
            warnings.simplefilter("ignore", UserWarning)
            rdp = sum([_rdp_curve(*entry) for entry in history])
            eps, _ = analysis.get_privacy_spent(orders=_ALPHAS, rdp=rdp, delta=delta)
            eps = float(eps)
    except (ValueError, ArithmeticError) as e:
        raise InvalidPrivacy(f"the RDP accountant cannot account {history}: {e}") from None
    if math.isnan(eps) or eps < 0:
        raise InvalidPrivacy(f"the RDP accountant gave epsilon {eps} for {history}")
    return eps


@functools.lru_cache(maxsize=4096)
def _rdp_curve(noise: float, sample_rate: float, steps: int) -> np.ndarray:
    """One entry's RDP at every order (read-only: shared by every composition it is in)."""
    from opacus.accountants.analysis import rdp as analysis

    curve = np.asarray(
        analysis.compute_rdp(q=sample_rate, noise_multiplier=noise, steps=steps, orders=_ALPHAS)
    )
    curve.flags.writeable = False
    return curve


def plan_privacy(settings: DpSettings, n: int, config: TrainConfig, delta: float) -> DpParams:
    """The DP parameters a round's training of ``n`` images under ``config`` will have: known
    before training, so a node can check its budget first."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"DP-SGD needs at least one training image, got {n!r}")
    config = settings.training(config)
    sample_rate = min(1.0, config.batch_size / n)
    steps = config.epochs * max(1, round(1 / sample_rate))
    noise = settings.noise_multiplier
    if noise is None:
        assert settings.target_epsilon is not None
        noise = _solve_noise(settings.target_epsilon, delta, sample_rate, steps)
    try:
        return DpParams(
            noise_multiplier=noise,
            max_grad_norm=settings.max_grad_norm,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accounting=settings.accounting,
        )
    except InvalidPrivacy as e:
        raise ConfigError(f"privacy: {e}") from None


def _solve_noise(
    target: float, delta: float, sample_rate: float, steps: int, *, tolerance: float = 0.01
) -> float:
    """The noise multiplier opacus solves for ``target`` (to ``tolerance``, its default 0.01)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():  # "optimal order is the largest alpha": still a bound
            warnings.simplefilter("ignore", UserWarning)
            noise = get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
                epsilon_tolerance=tolerance,
            )
        return float(noise)
    except ValueError as e:
        raise ConfigError(f"privacy: no noise multiplier reaches epsilon {target}: {e}") from None


def train_private(
    global_state: Mapping[str, torch.Tensor],
    train: ImageDataset,
    *,
    spec: ModelSpec,
    config: TrainConfig,
    settings: DpSettings,
    delta: float,
    val: ImageDataset | None = None,
    val_bias: Sequence[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PrivateResult:
    """DP-SGD from ``global_state`` on ``train``; the update, its DP parameters and epsilon.

    Same inputs and update format as :func:`~fedtrail.ml.training.train_local` (``config``'s
    epochs, batch size as the expected Poisson batch, lr, momentum, weight decay, FedProx term,
    augmentation, seed, device), with the batch size, lr and momentum that ``settings`` sets
    in their place (:meth:`DpSettings.training`). Raises ConfigError for a model with BatchNorm
    or a layer Opacus cannot take per-image gradients of.
    """
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    started = time.perf_counter()
    config = settings.training(config)
    params = plan_privacy(settings, len(train), config, delta)
    epsilon = epsilon_spent(params)
    with _start_model(global_state, train, val, spec, config) as (model, device):
        if has_batch_norm(model):
            raise ConfigError(
                f"DP-SGD cannot train a model with BatchNorm (per-image gradients do not exist "
                f"when a layer mixes the images of a batch); use GroupNorm: {_BATCH_NORM_FIX}"
            )
        try:
            wrapped = GradSampleModule(model, loss_reduction="sum", strict=True)
        except NotImplementedError as e:
            raise ConfigError(f"DP-SGD cannot train this model: {e}") from None
        try:
            start = {
                k: v.detach().to(device, torch.float32, copy=True) for k, v in global_state.items()
            }
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            expected = max(1, round(params.sample_rate * len(train)))
            noise_gen = torch.Generator(device=device).manual_seed(_stream(config.seed))
            optimizer = DPOptimizer(
                torch.optim.SGD(
                    [p for _, p in trainable],
                    lr=config.lr,
                    momentum=config.momentum,
                    weight_decay=config.weight_decay,
                ),
                noise_multiplier=params.noise_multiplier,
                max_grad_norm=params.max_grad_norm,
                expected_batch_size=expected,
                loss_reduction="mean",
                generator=noise_gen,
            )
            anchors = [(p, start[n]) for n, p in trainable]
            with warnings.catch_warnings():  # the first layer's input needs no gradient
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                loss = _dp_steps(
                    wrapped, optimizer, anchors, train, config, params, device, should_stop
                )
        finally:
            wrapped.remove_hooks()
        for p in model.parameters():  # what Opacus hung on the parameters
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(p, attr):
                    delattr(p, attr)
        metrics = evaluate(model, val, bias=val_bias) if val is not None else None
        delta_state = {
            k: (v.detach().to(torch.float32) - start[k]).to("cpu")
            for k, v in federated_state(model).items()
        }
    local = LocalResult(
        delta=delta_state,
        num_samples=len(train),
        train_loss=loss,
        metrics=metrics,
        seconds=time.perf_counter() - started,
    )
    return PrivateResult(local=local, params=params, epsilon=epsilon)


def _stream(seed: int) -> int:
    return int(np.random.SeedSequence([seed, _NOISE_STREAM]).generate_state(1, np.uint64)[0] >> 1)


def _dp_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    anchors: list[tuple[nn.Parameter, torch.Tensor]],
    train: ImageDataset,
    config: TrainConfig,
    params: DpParams,
    device: torch.device,
    should_stop: Callable[[], bool] | None,
) -> float:
    """``params.steps`` DP-SGD steps, each on a fresh Poisson sample; returns the mean
    cross-entropy over the images of the last epoch's steps (as seen while training)."""
    from opacus.optimizers import DPOptimizer

    assert isinstance(optimizer, DPOptimizer)
    images = torch.tensor(train.images)
    labels = torch.tensor(train.labels)
    n = len(train)
    per_epoch = params.steps // config.epochs
    augment = Augmenter(config.seed, train.image_size[1]) if config.augment else None
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    prox = config.algorithm == "fedprox"
    model.train()
    total, seen = 0.0, 0
    for step in range(params.steps):
        epoch, b = divmod(step, per_epoch)
        if b == 0:
            total, seen = 0.0, 0
        if should_stop is not None and should_stop():
            raise TrainingInterrupted(epoch, b)
        idx = (torch.rand(n, generator=gen) < params.sample_rate).nonzero().flatten()
        x = images[idx] if augment is None else augment(images[idx])
        x = x.to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        data_loss = loss_fn(model(x), y)
        data_loss.backward()
        # Clip, sum, add noise, divide by the expected batch size; then the data-independent
        # FedProx gradient (no privacy cost) and the plain SGD step.
        if optimizer.pre_step():
            if prox:
                for p, g in anchors:
                    assert p.grad is not None
                    p.grad.add_(p.detach() - g, alpha=config.mu)
            optimizer.original_optimizer.step()
        batch_loss = float(data_loss.detach())
        if not math.isfinite(batch_loss):
            raise TrainingDiverged(
                f"training diverged (loss {batch_loss}) at epoch {epoch}, step {b}; "
                "lower the learning rate"
            )
        total += batch_loss
        seen += idx.numel()
    return total / seen if seen else math.nan
