"""Explanation-aware valuation: does a site's update move the model's evidence to places that
carry no clinical signal?

For every candidate, the scorer builds the site-updated model ``global + delta`` and explains it
and the current global model on one fixed probe set with the same :class:`~fedtrail.ml.explain.
Explainer` method and seed (each model explains its own predicted class). Per site it reports:

``rank_correlation``
    mean over the probe images of Spearman's rank correlation between the site model's and the
    global model's heatmaps (average ranks for ties, computed in numpy; 0 for a constant map).
``top_k_overlap``
    mean over the probe images of ``|top_k(site) & top_k(global)| / k``, the top ``top_k``
    fraction of pixels by attribution mass (ties broken by pixel position).
``region_share`` / ``global_region_share``
    mean share of the attribution mass inside the "no clinical signal" region (default: the four
    ``corner_size`` = 6 pixel corner squares, where scanners and hospitals burn in labels; pass
    ``region=frame_mask(h, w, 4)`` for the whole outer frame) for the site model and for the
    global model.
``excess_share``
    ``max(0, region_share - global_region_share)``: mass the update moved into the region.

``shifted`` is ``excess_share > shift_threshold`` (default 0.10). The score (higher = better, in
[0, 1]) is ``1 - excess_share / (1 - global_region_share)``: the fraction of the global model's
evidence outside the region that the update kept there. It depends only on the region shares; the
rank correlation and top-k overlap are diagnostics (a model that learns legitimately also changes
its maps, so a low correlation alone is no fault).

Measured on the bundled data (6 seeds; a global model trained 3 epochs on 600 images, then 3
honest sites and 1 site whose class-1 images carry a 4x4 top-left tag, 400 images and 3 epochs
each; 32 probe images; integrated gradients, 16 steps). Change of the corner share over the
global model's: probe images that carry the tag, honest -0.03..+0.05, shortcut +0.26..+0.35;
clean probe images, honest -0.05..+0.02, shortcut +0.06..+0.12. With the 4-pixel frame as the
region the margins are smaller (tagged probes: honest up to +0.05, shortcut from +0.20; clean:
up to +0.04 against from +0.09). The default threshold is set for tagged probes; on clean probes a
shortcut would need a threshold near 0.04 to be flagged.

The default explanation method is integrated gradients with ``n_steps=16`` (the same shares to
three decimals as 50 steps here, 5x faster). Gradient SHAP separated the sites as well as
integrated gradients. Occlusion moved honest sites' frame share by up to +0.10 too (one seed).
Grad-CAM's maps (14x14 from the last conv layer, upsampled) put 0.15 of the shortcut model's mass
on the tag (honest 0.02..0.03) but moved its frame share by only +0.02: it flagged nothing.

An attribution can only show reliance on features that the probe images contain: a shortcut tag
that never appears in the probe set draws little attribution. The probe should therefore come
from data that carries the artefacts of the federation's sites (or be stamped with them, e.g.
:func:`fedtrail.ml.shortcuts.add_marker` with ``label=None``).

``ExplanationScorer.score(ctx)`` maps every usable candidate
(:func:`~fedtrail.valuation.base.usable`) to its score, :meth:`ExplanationScorer.assess` gives the
components, and :meth:`ExplanationScorer.flag` returns the candidates with the shifted ones marked
``Reason.EXPLANATION_SHIFT`` (the reason text as their ``detail``) for the combiner, which scores
such a candidate 0; :func:`fedtrail.valuation.value_round` runs it with ``explanation_check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.explain import Explainer, Explanation, check_method, corners_mask, region_share
from fedtrail.ml.models import ModelSpec, load_federated
from fedtrail.ml.threads import one_thread
from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import Candidate, ValuationContext, usable

__all__ = [
    "DEFAULT_SHIFT_THRESHOLD",
    "ExplanationScorer",
    "SiteExplanationShift",
    "one_thread",
    "rank_correlation",
    "top_k_overlap",
]

DEFAULT_SHIFT_THRESHOLD: Final = 0.10


@dataclass(frozen=True)
class SiteExplanationShift:
    """How one site's update changed the model's explanations (see the module docstring)."""

    site: str
    rank_correlation: float
    top_k_overlap: float
    region_share: float
    global_region_share: float
    excess_share: float
    score: float
    shifted: bool
    threshold: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- map comparisons


def _average_ranks(row: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse.reshape(-1)]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of paired maps ``(N, H, W)`` (or ``(N, P)``): ``(N,)`` float64,
    average ranks for ties; 0 where either map is constant."""
    x = np.asarray(a, dtype=np.float64).reshape(np.shape(a)[0], -1)
    y = np.asarray(b, dtype=np.float64).reshape(np.shape(b)[0], -1)
    if x.shape != y.shape:
        raise ConfigError(f"cannot correlate maps of shapes {np.shape(a)} and {np.shape(b)}")
    out = np.zeros(x.shape[0])
    for i in range(x.shape[0]):
        rx = _average_ranks(x[i])
        ry = _average_ranks(y[i])
        rx -= rx.mean()
        ry -= ry.mean()
        denom = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
        if denom > 0:
            out[i] = float((rx * ry).sum()) / denom
    return out


def top_k_overlap(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Share of the top ``fraction`` of pixels (at least one) of each map in ``a`` that are also
    among the top of the paired map in ``b``: ``(N,)`` float64 in [0, 1]; ties by position."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"top-k fraction must lie in (0, 1], got {fraction!r}")
    x = np.asarray(a, dtype=np.float64).reshape(np.shape(a)[0], -1)
    y = np.asarray(b, dtype=np.float64).reshape(np.shape(b)[0], -1)
    if x.shape != y.shape:
        raise ConfigError(f"cannot compare maps of shapes {np.shape(a)} and {np.shape(b)}")
    k = max(1, round(fraction * x.shape[1]))
    top_x = np.argsort(-x, axis=1, kind="stable")[:, :k]
    top_y = np.argsort(-y, axis=1, kind="stable")[:, :k]
    hits = [np.intersect1d(top_x[i], top_y[i]).size for i in range(x.shape[0])]
    return np.asarray(hits, dtype=np.float64) / k


# ---------------------------------------------------------------- scorer


class ExplanationScorer:
    """Scores each site by how much of the model's evidence its update moved into the "no
    clinical signal" region (see the module docstring).

    ``probe``: the fixed probe images (an ImageDataset or an ``(N, C, H, W)`` array/tensor in
    [0, 1]); None picks ``probe_size`` images of ``ctx.validation`` with numpy's
    ``default_rng(ctx.seed)`` (ConfigError when the context has no validation split either).
    ``region``: boolean ``(H, W)`` mask of the region (default: the four ``corner_size`` x
    ``corner_size`` corner squares). ``method`` and ``method_settings`` go to
    :class:`~fedtrail.ml.explain.Explainer`, seeded with ``ctx.seed``; with the default method and
    no settings, ``n_steps=16``.
    """

    name: str = "explanation"

    def __init__(
        self,
        probe: ImageDataset | np.ndarray | torch.Tensor | None = None,
        *,
        method: str = "integrated_gradients",
        region: np.ndarray | None = None,
        corner_size: int = 6,
        top_k: float = 0.1,
        shift_threshold: float = DEFAULT_SHIFT_THRESHOLD,
        probe_size: int = 32,
        batch_size: int = 32,
        **method_settings: Any,
    ) -> None:
        check_method(method, method_settings)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0.0 < top_k <= 1.0:
            raise ConfigError(f"top_k must lie in (0, 1], got {top_k!r}")
        if not 0.0 <= shift_threshold < 1.0:
            raise ConfigError(f"shift_threshold must lie in [0, 1), got {shift_threshold!r}")
        if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1:
            raise ConfigError(f"probe_size must be a positive integer, got {probe_size!r}")
        if isinstance(corner_size, bool) or not isinstance(corner_size, int) or corner_size < 1:
            raise ConfigError(f"corner_size must be a positive integer, got {corner_size!r}")
        if region is not None:
            region = np.asarray(region)
            if region.dtype != np.bool_ or region.ndim != 2:
                raise ConfigError("region must be a boolean (H, W) mask")
        self.probe = None if probe is None else _probe_tensor(probe)
        self.method = method
        if method == "integrated_gradients" and not method_settings:
            method_settings = {"n_steps": 16}
        self.method_settings = dict(method_settings)
        self.region = region
        self.corner_size = corner_size
        self.top_k = float(top_k)
        self.shift_threshold = float(shift_threshold)
        self.probe_size = probe_size
        self.batch_size = batch_size

    def score(self, ctx: ValuationContext) -> dict[str, float]:
        """Usable candidate's site -> score in [0, 1], higher = better."""
        return {site: shift.score for site, shift in self.assess(ctx).items()}

    def assess(self, ctx: ValuationContext) -> dict[str, SiteExplanationShift]:
        """Usable candidate's site -> every component, the ``shifted`` flag and a reason (in
        candidate order)."""
        probe = self._probe(ctx)
        mask = self._mask(tuple(probe.shape[2:]))
        out: dict[str, SiteExplanationShift] = {}
        with one_thread():
            base = self._explain(_build(ctx.spec, ctx.global_state), probe, ctx.seed)
            base_share = float(region_share(base.heatmaps, mask).mean())
            for cand in usable(ctx):
                assert cand.delta is not None  # usable() guarantees it
                model = _build(ctx.spec, _add(ctx.global_state, cand.delta, cand.site))
                exp = self._explain(model, probe, ctx.seed)
                out[cand.site] = self._compare(cand.site, base, base_share, exp, mask)
        return out

    def flag(self, ctx: ValuationContext) -> list[Candidate]:
        """``ctx.candidates`` with every shifted one's status set to ``EXPLANATION_SHIFT`` and
        its ``detail`` to the reason; the others unchanged."""
        shifts = self.assess(ctx)
        return [
            replace(c, status=Reason.EXPLANATION_SHIFT, detail=shifts[c.site].reason)
            if c.site in shifts and shifts[c.site].shifted
            else c
            for c in ctx.candidates
        ]

    # ---------------------------------------------------------------- internals

    def _probe(self, ctx: ValuationContext) -> torch.Tensor:
        if self.probe is not None:
            return self.probe
        val = ctx.validation
        if val is None or len(val) == 0:
            raise ConfigError("no probe images: give the scorer a probe set or a validation split")
        n = min(self.probe_size, len(val))
        idx = np.sort(np.random.default_rng(ctx.seed).choice(len(val), size=n, replace=False))
        return torch.from_numpy(np.array(val.images[idx], dtype=np.float32))

    def _mask(self, size: tuple[int, ...]) -> np.ndarray:
        h, w = int(size[0]), int(size[1])
        if self.region is None:
            return corners_mask(h, w, self.corner_size)
        if self.region.shape != (h, w):
            raise ConfigError(f"region mask {self.region.shape} does not fit {h}x{w} probes")
        return self.region

    def _explain(self, model: nn.Module, probe: torch.Tensor, seed: int) -> Explanation:
        explainer = Explainer(
            model,
            self.method,
            seed=seed % 2**32,
            batch_size=self.batch_size,
            **self.method_settings,
        )
        return explainer.explain(probe)

    def _compare(
        self,
        site: str,
        base: Explanation,
        base_share: float,
        exp: Explanation,
        mask: np.ndarray,
    ) -> SiteExplanationShift:
        share = float(region_share(exp.heatmaps, mask).mean())
        excess = max(0.0, share - base_share)
        room = 1.0 - base_share
        score = 1.0 if excess == 0.0 else max(0.0, 1.0 - excess / room) if room > 0 else 0.0
        shifted = excess > self.shift_threshold
        if shifted:
            reason = (
                f"attribution moved into the no-clinical-signal region: {share:.3f} of the mass "
                f"vs {base_share:.3f} for the global model "
                f"(+{excess:.3f} > threshold {self.shift_threshold:.3f})"
            )
        else:
            reason = (
                f"attribution in the no-clinical-signal region {share:.3f} vs {base_share:.3f} "
                f"for the global model (within +{self.shift_threshold:.3f})"
            )
        return SiteExplanationShift(
            site=site,
            rank_correlation=float(rank_correlation(exp.heatmaps, base.heatmaps).mean()),
            top_k_overlap=float(top_k_overlap(exp.heatmaps, base.heatmaps, self.top_k).mean()),
            region_share=share,
            global_region_share=base_share,
            excess_share=excess,
            score=float(score),
            shifted=shifted,
            threshold=self.shift_threshold,
            reason=reason,
        )


def _probe_tensor(probe: ImageDataset | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(probe, ImageDataset):
        arr = probe.images
    elif isinstance(probe, torch.Tensor):
        arr = probe.detach().to("cpu", torch.float32).numpy()
    else:
        arr = np.asarray(probe)
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ConfigError(f"probe must be a non-empty (N, C, H, W) batch, got {arr.shape}")
    out = torch.from_numpy(np.array(arr, dtype=np.float32))
    if not bool(torch.isfinite(out).all()):
        raise ConfigError("probe images contain NaN or infinite values")
    return out


def _add(
    global_state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], site: str
) -> dict[str, torch.Tensor]:
    """``global + delta`` in float64, cast once to the global tensor's dtype."""
    if set(delta) != set(global_state):
        raise ConfigError(f"{site}'s update does not hold the global model's tensors")
    out = {}
    for name, g in global_state.items():
        d = delta[name]
        if d.shape != g.shape:
            raise ConfigError(f"{site}'s update has {name} of shape {tuple(d.shape)}")
        total = g.detach().to("cpu", torch.float64) + d.detach().to("cpu", torch.float64)
        out[name] = total.to(g.dtype)
    return out


def _build(spec: ModelSpec, state: Mapping[str, torch.Tensor]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # building draws init weights; leave callers' RNG
        model = spec.build()
    load_federated(model, state, what="the model state")
    return model.eval()
