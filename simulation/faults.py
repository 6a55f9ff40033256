"""Simulated site faults for demos and benchmarks of the valuation.

Data-level: :func:`label_noise` (a low-quality site). Update-level, applied to a site's delta
(``dict`` name -> Tensor, ``new - global``): poisoning by :func:`sign_flip`,
:func:`scale_update`, :func:`gaussian_update` and :func:`shift_statistics`; free-riding by
:func:`copy_update` (another site's delta) and :func:`random_update` (noise shaped like a real
update). :class:`SiteFault` configures one of them per site by name, e.g. from a demo's TOML
table, and
:meth:`SiteFault.hooks` turns it into the :class:`~fedtrail.node.daemon.NodeHooks` that make a
production :class:`~fedtrail.node.daemon.SiteNode` behave as that faulty site (the node itself
knows nothing of faults).

Every function returns new tensors and leaves its inputs untouched; every random choice comes
from an explicit seed.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np
import torch

from fedtrail.chain import next_block_timestamp
from fedtrail.errors import ConfigError
from fedtrail.ledger import Submission
from fedtrail.ml.datasets import ImageDataset
from fedtrail.node.daemon import NodeHooks, Reveal, UpdateContext
from fedtrail.storage.codec import decode_update, encode_update

__all__ = [
    "FAULT_KINDS",
    "SiteFault",
    "copied_submission",
    "copied_update",
    "copy_update",
    "gaussian_update",
    "label_noise",
    "label_noise_rate",
    "random_update",
    "scale_update",
    "shift_statistics",
    "sign_flip",
]

log = logging.getLogger(__name__)

Delta = Mapping[str, torch.Tensor]

FAULT_KINDS: Final = (
    "none",
    "label_noise",
    "sign_flip",
    "scale",
    "gaussian",
    "copy",
    "random",
    "statistics",
)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return v


def _seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _floats(delta: Delta, what: str) -> None:
    for name, t in delta.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ConfigError(f"{what}: tensor {name!r} is not a floating-point tensor")


# ---------------------------------------------------------------- data level


def label_noise(
    ds: ImageDataset, rate: float, seed: int, *, num_classes: int | None = None
) -> ImageDataset:
    """A copy of ``ds`` with ``round(rate * N)`` labels, chosen at random, changed to another
    class (uniformly among the others; for binary labels, flipped). The actual rate is therefore
    ``round(rate * N) / N``; it is logged and :func:`label_noise_rate` measures it.

    ``num_classes`` defaults to the largest label + 1, and at least 2.
    """
    r = _number("rate", rate)
    if not 0.0 <= r <= 1.0:
        raise ConfigError(f"label noise rate must lie in [0, 1], got {rate}")
    rng = np.random.default_rng(_seed(seed))
    n = len(ds)
    k = max(2, int(ds.labels.max()) + 1 if n else 2) if num_classes is None else num_classes
    if k < 2 or (n and int(ds.labels.max()) >= k):
        raise ConfigError(f"num_classes={num_classes} does not cover the labels")
    count = round(r * n)
    chosen = rng.choice(n, size=count, replace=False)
    labels = ds.labels.copy()
    labels[chosen] = (labels[chosen] + rng.integers(1, k, size=count)) % k
    log.info("label noise: changed %d of %d labels (actual rate %.4f)", count, n, count / max(n, 1))
    return ImageDataset(ds.images, labels)


def label_noise_rate(before: ImageDataset, after: ImageDataset) -> float:
    """Fraction of labels that differ between two datasets of the same samples."""
    if len(before) != len(after):
        raise ConfigError(f"datasets differ in size: {len(before)} vs {len(after)}")
    if len(before) == 0:
        return 0.0
    return float(np.mean(before.labels != after.labels))


# ---------------------------------------------------------------- update level


def sign_flip(delta: Delta, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Poisoning: ``-scale * delta`` (pushes the global model away from where it was going)."""
    s = _number("scale", scale)
    if s <= 0:
        raise ConfigError(f"sign_flip scale must be positive, got {scale}")
    _floats(delta, "sign_flip")
    return {k: v * -s for k, v in delta.items()}


def scale_update(delta: Delta, factor: float) -> dict[str, torch.Tensor]:
    """Poisoning (model replacement / boosting): ``factor * delta``."""
    f = _number("factor", factor)
    _floats(delta, "scale_update")
    return {k: v * f for k, v in delta.items()}


def gaussian_update(like: Delta, std: float, seed: int) -> dict[str, torch.Tensor]:
    """Poisoning: i.i.d. N(0, std^2) noise with the names, shapes and dtypes of ``like`` (its
    values are ignored); drawn in float32 on the CPU from a generator seeded with ``seed``, in
    ``like``'s key order."""
    s = _number("std", std)
    if s < 0:
        raise ConfigError(f"std must be non-negative, got {std}")
    _floats(like, "gaussian_update")
    gen = _generator(_seed(seed))
    return {
        k: (torch.randn(v.shape, generator=gen, dtype=torch.float32) * s).to(v.dtype)
        for k, v in like.items()
    }


def shift_statistics(delta: Delta, shift: float) -> dict[str, torch.Tensor]:
    """Poisoning of the running statistics only: ``shift`` added to every BatchNorm
    ``running_mean`` (found by its state-dict name), every weight left as trained. No screen on
    the weights sees it; a model whose statistics are averaged outputs a constant."""
    s = _number("shift", shift)
    _floats(delta, "shift_statistics")
    return {k: v + s if k.endswith("running_mean") else v.clone() for k, v in delta.items()}


def copy_update(other: Delta, *, noise_std: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Free-riding: a copy of another site's delta. An exact copy has the same bytes, which the
    ledger refuses as a duplicate submission; ``noise_std > 0`` adds N(0, noise_std^2) noise, as
    a free-rider hiding the copy would."""
    s = _number("noise_std", noise_std)
    if s < 0:
        raise ConfigError(f"noise_std must be non-negative, got {noise_std}")
    _floats(other, "copy_update")
    if s == 0:
        return {k: v.detach().clone() for k, v in other.items()}
    gen = _generator(_seed(seed))
    return {
        k: v.detach() + (torch.randn(v.shape, generator=gen, dtype=torch.float32) * s).to(v)
        for k, v in other.items()
    }


def random_update(like: Delta, seed: int, *, scale: float | None = None) -> dict[str, torch.Tensor]:
    """Free-riding: uniform noise instead of training. Each tensor is U(-a, a) with the names and
    shapes of ``like``; by default ``a`` matches the root-mean-square of ``like``'s tensor of the
    same name (``a = sqrt(3) * rms``), so the update has a plausible magnitude (a free-rider can
    take ``like`` from the previous round's change of the global model); with ``scale``, ``a =
    scale`` for every tensor."""
    if scale is not None and _number("scale", scale) < 0:
        raise ConfigError(f"scale must be non-negative, got {scale}")
    _floats(like, "random_update")
    gen = _generator(_seed(seed))
    out: dict[str, torch.Tensor] = {}
    for k, v in like.items():
        if scale is None:
            rms = (
                float(v.detach().to("cpu", torch.float64).square().mean().sqrt())
                if v.numel()
                else 0.0
            )
            a = math.sqrt(3.0) * rms
        else:
            a = float(scale)
        u = torch.rand(v.shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0
        out[k] = (u * a).to(v.dtype)
    return out


def copied_submission(context: UpdateContext, round_id: int) -> Submission | None:
    """The first other site's revealed update of ``round_id`` (a copier's source), waited for
    until the round's reveal deadline or the node's stop flag (None then). Under
    commit-then-reveal nothing is visible before the commit window closes, so a copier can
    only look after it: by then its own commitment is fixed."""
    ledger = context.ledger
    deadline = ledger.get_round(round_id).reveal_deadline
    while not context.stop_event.is_set() and next_block_timestamp(ledger.w3) <= deadline:
        for sub in ledger.get_submissions(round_id):
            if sub.site != context.address and sub.cid:
                return sub
        context.stop_event.wait(context.poll_interval)
    return None


def copied_update(context: UpdateContext, round_id: int) -> dict[str, torch.Tensor] | None:
    """The delta of :func:`copied_submission` (None when there is none)."""
    sub = copied_submission(context, round_id)
    if sub is None:
        return None
    blob = context.store.get(sub.cid, sub.sha256)
    delta, _ = decode_update(blob, spec=context.spec)
    return dict(delta)


# ---------------------------------------------------------------- per-site configuration

_PARAMS: Final[dict[str, frozenset[str]]] = {
    "none": frozenset(),
    "label_noise": frozenset({"rate"}),
    "sign_flip": frozenset({"factor"}),
    "scale": frozenset({"factor"}),
    "gaussian": frozenset({"std"}),
    "copy": frozenset({"std"}),
    "random": frozenset({"factor"}),
    "statistics": frozenset({"shift"}),
}
_DEFAULTS: Final = {"rate": 0.0, "factor": 1.0, "std": 0.0, "shift": 0.0}


@dataclass(frozen=True, kw_only=True)
class SiteFault:
    """One simulated fault of a site, by name.

    ==============  =========================================================================
    ``kind``        effect (settings it uses)
    ==============  =========================================================================
    ``none``        an honest site
    ``label_noise`` ``rate`` of its training labels changed (``0 < rate <= 1``)
    ``sign_flip``   sends ``-factor * delta`` (``factor > 0``, default 1)
    ``scale``       sends ``factor * delta`` (``factor != 1``)
    ``gaussian``    sends N(0, ``std``^2) noise instead of its delta (``std > 0``)
    ``copy``        commits to its own update, then reveals another site's revealed update
                    (+ N(0, ``std``^2) noise when ``std > 0``): too late, the reveal cannot
                    open its commitment and the ledger refuses it
    ``random``      sends uniform noise of its own delta's magnitude times ``factor``
                    (default 1) instead of training on it
    ``statistics``  adds ``shift`` (non-zero) to every BatchNorm ``running_mean`` of its
                    delta, the weights as trained (:func:`shift_statistics`)
    ==============  =========================================================================

    A setting the kind does not use must keep its default, so a misspelt configuration fails
    loudly. ``seed`` seeds every random choice; for update noise the round number is mixed in, so
    the noise differs between rounds.
    """

    kind: str = "none"
    rate: float = 0.0
    factor: float = 1.0
    std: float = 0.0
    shift: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _PARAMS:
            raise ConfigError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        used = _PARAMS[self.kind]
        for name, default in _DEFAULTS.items():
            value = _number(name, getattr(self, name))
            if name not in used and value != default:
                raise ConfigError(f"fault {self.kind!r} does not use {name} (got {value})")
        _seed(self.seed)
        if self.kind == "label_noise" and not 0.0 < self.rate <= 1.0:
            raise ConfigError(f"label_noise rate must lie in (0, 1], got {self.rate}")
        if self.kind in ("sign_flip", "random") and self.factor <= 0:
            raise ConfigError(f"{self.kind} factor must be positive, got {self.factor}")
        if self.kind == "scale" and self.factor == 1.0:
            raise ConfigError("scale fault needs a factor other than 1")
        if self.kind == "gaussian" and self.std <= 0:
            raise ConfigError(f"gaussian fault needs std > 0, got {self.std}")
        if self.kind == "statistics" and self.shift == 0:
            raise ConfigError("statistics fault needs a non-zero shift")
        if self.kind == "copy" and self.std < 0:
            raise ConfigError(f"copy fault std must be non-negative, got {self.std}")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> SiteFault:
        """From a config table such as ``{"kind": "scale", "factor": 10}``; unknown keys fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        return cls(**dict(table))

    @property
    def affects_data(self) -> bool:
        return self.kind == "label_noise"

    @property
    def affects_update(self) -> bool:
        return self.kind not in ("none", "label_noise")

    def _round_seed(self, round_id: int) -> int:
        r = _seed(round_id)
        return int(np.random.SeedSequence([self.seed, r]).generate_state(1, np.uint64)[0] >> 1)

    def apply_to_data(self, ds: ImageDataset) -> ImageDataset:
        """The training data the site actually uses (``ds`` itself unless ``label_noise``). The
        noisy labels depend on ``seed`` only, so they stay the same in every round, as a badly
        labelled archive would."""
        if self.kind != "label_noise":
            return ds
        return label_noise(ds, self.rate, self.seed)

    def apply_to_update(
        self, delta: Delta, *, round_id: int = 0, other: Delta | None = None
    ) -> dict[str, torch.Tensor]:
        """The update the site actually sends in round ``round_id`` instead of its honest
        ``delta``; ``other`` is the delta a ``copy`` site copies (required for it)."""
        seed = self._round_seed(round_id)
        match self.kind:
            case "none" | "label_noise":
                return dict(delta)
            case "sign_flip":
                return sign_flip(delta, self.factor)
            case "scale":
                return scale_update(delta, self.factor)
            case "gaussian":
                return gaussian_update(delta, self.std, seed)
            case "copy":
                if other is None:
                    raise ConfigError("a copy fault needs another site's update to copy")
                return copy_update(other, noise_std=self.std, seed=seed)
            case "random":
                noise = random_update(delta, seed)
                return noise if self.factor == 1.0 else scale_update(noise, self.factor)
            case "statistics":
                return shift_statistics(delta, self.shift)
        raise AssertionError(self.kind)  # pragma: no cover

    def hooks(self) -> NodeHooks:
        """The node hooks of this faulty site: its training data through :meth:`apply_to_data`,
        its update through :meth:`apply_to_update`; a ``copy`` site commits to its own update
        and at reveal time reveals another site's revealed one instead (its own when there is
        none before the reveal deadline)."""
        if self.kind == "copy":
            return NodeHooks(transform_train=self.apply_to_data, transform_reveal=self._copy)
        return NodeHooks(transform_train=self.apply_to_data, transform_update=self._node_update)

    def _copy(self, own: Reveal, round_id: int, context: UpdateContext) -> Reveal:
        sub = copied_submission(context, round_id)
        if sub is None:
            return own
        log.warning("round %d: simulated copy of %s's revealed update", round_id, sub.site)
        if self.std == 0:
            return Reveal(cid=sub.cid, sha256=sub.sha256, num_samples=own.num_samples)
        delta, _ = decode_update(context.store.get(sub.cid, sub.sha256), spec=context.spec)
        noisy = self.apply_to_update(delta, round_id=round_id, other=delta)
        blob = encode_update(noisy, spec=context.spec, round=round_id).blob
        cid = context.store.put(blob)
        return Reveal(cid=cid, sha256=hashlib.sha256(blob).hexdigest(), num_samples=own.num_samples)

    def _node_update(
        self, delta: dict[str, torch.Tensor], round_id: int, context: UpdateContext
    ) -> dict[str, torch.Tensor] | None:
        if not self.affects_update:
            return delta
        sent = self.apply_to_update(delta, round_id=round_id)
        log.warning("round %d: simulated fault %r applied to the update", round_id, self.kind)
        return sent
