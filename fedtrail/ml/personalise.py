"""Personalisation methods: what a site makes of a finalized global model for itself alone.

One registry (:data:`METHODS`), one call shape (:func:`personalise`): the node, the demo and
``scripts/bench/personalisation.py`` all go through it. Each method names the *personal part*
of the model, the federated tensors the site trains on its own data and keeps:

``finetune``
    The whole model, fine-tuned from each round's global model (nothing is carried from one
    round to the next: the personal model is this round's global model, adapted).
``fedbn``
    The normalisation layers (BatchNorm / GroupNorm / LayerNorm affine weights and BatchNorm's
    running statistics), FedBN-style (Li et al., ICLR 2021): the site's own statistics and
    scales, carried from round to round, over each new global model's other layers. Needs a
    model with normalisation layers (the MONAI nets; ``smallcnn`` has none).
``fedrep``
    The classifier head (the model's last linear layer), FedRep/FedPer-style (Collins et al.,
    ICML 2021; Arivazhagan et al. 2019): the site's own head, carried from round to round, on
    each new global model's shared representation.

For ``fedbn`` and ``fedrep`` the rest of the personal model is the round's global model bit for
bit and only the personal part trains (the other layers frozen and in eval mode). The shared
model is still trained and averaged whole, as before: the aggregator values, and the audit
replays, one global model, so its normalisation layers and head are federated too; the
personal part is a site-side overlay that never leaves the site and is never valued.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec, federated_state
from fedtrail.ml.training import FineTuned, TrainConfig, fine_tune

__all__ = ["METHODS", "Method", "personal_part", "personalise"]

_NORMS: Final = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Method:
    """A personalisation method: which federated tensors are personal (None: all, refreshed
    from each global model) and whether the site carries them from round to round."""

    name: str
    summary: str
    part: Callable[[nn.Module], frozenset[str]] | None
    carried: bool
    needs: str = ""
    """What the model must have for the method (for the error when it has none)."""


def _norm_tensors(model: nn.Module) -> frozenset[str]:
    names = set(federated_state(model))
    out: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, _NORMS):
            out.update(n for n in names if n.startswith(f"{prefix}."))
    return frozenset(out)


def _head_tensors(model: nn.Module) -> frozenset[str]:
    last = None
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = prefix
    if last is None:
        return frozenset()
    return frozenset(n for n in federated_state(model) if n.startswith(f"{last}."))


METHODS: Final[Mapping[str, Method]] = {
    m.name: m
    for m in (
        Method("finetune", "the whole model, fine-tuned from each global model", None, False),
        Method(
            "fedbn",
            "the normalisation layers, kept by the site",
            _norm_tensors,
            True,
            "normalisation layers",
        ),
        Method(
            "fedrep",
            "the classifier head, kept by the site",
            _head_tensors,
            True,
            "a linear classifier layer",
        ),
    )
}


def personal_part(method: str, spec: ModelSpec) -> frozenset[str] | None:
    """The federated tensors ``method`` keeps personal for models of ``spec`` (None: all).
    ConfigError for an unknown method or one the model cannot use (``fedbn`` without
    normalisation layers)."""
    if method not in METHODS:
        raise ConfigError(f"personalisation method must be one of {tuple(METHODS)}, not {method!r}")
    m = METHODS[method]
    if m.part is None:
        return None
    part = m.part(spec.build())
    if not part:
        raise ConfigError(
            f"personalisation {method!r} needs {m.needs}; a {spec.arch} model has none "
            f"(the others: {', '.join(n for n in METHODS if n != method)})"
        )
    return part


def personalise(
    global_state: Mapping[str, torch.Tensor],
    train: ImageDataset,
    *,
    method: str,
    spec: ModelSpec,
    config: TrainConfig,
    steps: int,
    previous: Mapping[str, torch.Tensor] | None = None,
    val: ImageDataset | None = None,
    val_bias: Sequence[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FineTuned:
    """The site's personalised model for ``global_state``: ``steps`` seeded SGD steps on
    ``train`` of the method's personal part, starting from the global model with the part of
    ``previous`` (the site's last personalised model, for a carried part) laid over it.

    ``previous`` must fit the spec (ConfigError otherwise); it is ignored by ``finetune``.
    Same reproducibility as :func:`~fedtrail.ml.training.fine_tune`."""
    part = personal_part(method, spec)
    start = dict(global_state)
    if part is not None and previous is not None and METHODS[method].carried:
        missing = sorted(n for n in part if n not in previous)
        if missing:
            raise ConfigError(
                f"the previous personalised model lacks {len(missing)} tensor(s) of the "
                f"{method} part, e.g. {missing[0]}"
            )
        for name in part:
            if tuple(previous[name].shape) != tuple(global_state[name].shape):
                raise ConfigError(
                    f"the previous personalised model's {name} is "
                    f"{tuple(previous[name].shape)}, not {tuple(global_state[name].shape)}"
                )
            start[name] = previous[name]
    return fine_tune(
        start,
        train,
        spec=spec,
        config=config,
        steps=steps,
        val=val,
        val_bias=val_bias,
        should_stop=should_stop,
        only=part,
    )
