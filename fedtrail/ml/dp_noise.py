"""Public noise check: does an update carry the Gaussian noise its declared DP-SGD parameters add?

A site that declares DP-SGD parameters (:class:`~fedtrail.protocol.privacy.DpParams`) and sends
a plain update is paid like everyone and its spend passes ``privacy.spend``: the spend follows
from the parameters, not from the update (``scripts/attacks/a24_dp_noise_claim.py``). This check
reads the update alone, with the parameters and the site's on-chain sample count, so the
aggregator, every validator and an auditor reach the same verdict from chain + IPFS.

The model. :func:`~fedtrail.ml.privacy.train_private` runs SGD (any momentum, learning rate,
FedProx term) on ``g_t = (sum of the batch's per-image gradients clipped to C + sigma*C*z_t) /
B`` with ``z_t`` standard normal in every coordinate, ``B = round(q*n)`` the expected Poisson
batch. Every such optimizer is linear with coefficients that do not depend on the data, so the
update is ``U = S + N`` with ``N = (sigma*C/B) * sum_t c_t z_t``: i.i.d. Gaussian of one
standard deviation ``s = (sigma*C/B) * sqrt(sum c_t^2)`` in *every* coordinate, and ``S = (C/B)
* sum_t c_t G_t`` with ``|G_t| <= L_t`` (the images of step t). By Cauchy-Schwarz ``|S| <= (C/B)
* sqrt(sum c_t^2) * sqrt(sum_t L_t^2)``, so ``|S| <= Lambda * s`` with ``Lambda = sqrt(sum_t
L_t^2) / sigma`` bounded as :func:`allowed_signal` says, whatever the learning rate or momentum
(which the blob does not carry).
Weight decay (0 in ``TrainConfig`` and the node's DP defaults) adds a drift along the global
model that this bound does not cover.

The check. The update's coordinates (tensors in the codec's order) are cut into blocks of
:data:`BLOCK` (a tensor's last block shorter). In block b of k coordinates, ``|N_b|^2 / s^2`` is
chi-square with k degrees of freedom, so with probability ``>= 1 - e^-x`` each side (Laurent and
Massart 2000) ``|N_b| / s`` lies in ``[lo_b, hi_b] = [sqrt(k - 2 sqrt(k x)), sqrt(k + 2 sqrt(k
x) + 2x)]``; and ``|U_b - N_b| = |S_b|``. Hence for the true ``t = 1/s``: ``sum_b dist(t *
|U_b|, [lo_b, hi_b])^2 <= |S|^2 / s^2 <= Lambda^2``. The check minimizes the left side over
``t > 0`` (convex in t: bisection on its derivative) and fails the update when even the best
``t`` needs a signal longer than ``Lambda``. With ``x`` split by a union bound over every block
(both sides) and the batch sizes bounded with the other half (:func:`allowed_signal`), an
honest DP-SGD update fails with probability at most :data:`FALSE_POSITIVE` (1e-9) when
``Lambda`` is evaluated at its true count. Under ``dp_noise_check`` 2 it is evaluated at no more
than :data:`NOISE_COUNT` samples (the count is the site's claim, a97), so for larger sites the
bound rests on the measured margin: honest updates need far less than their ``Lambda``.

What it catches: a plain update (block norms of a gradient vary by orders of magnitude; no
noise at all); "noise" of the right total norm concentrated in some layers (the other blocks
lack it). What it accepts: any update that is noise of one scale in every coordinate plus at
most ``Lambda`` of that scale of anything else, e.g. a plain update with Gaussian noise added
at the end (output perturbation). That is not a DP guarantee (the plain signal was not
clipped), but it carries the same noise-to-signal ratio as honest DP-SGD at the declared
parameters, so the lie buys no accuracy. What no check of one update sees: colluding sites
whose "noise" cancels in the sum. Where ``Lambda`` is close to ``sqrt(P)`` (many steps, small
noise multiplier) the noise is too small to tell from a signal and nothing fails.

Only dense updates: a ``topk8`` update is the top of (delta + the site's private residual of
earlier rounds), so what it sends is no per-round noise claim anyone can check. Such an update
stays differentially private (post-processing of the noised deltas), but only terms that waive
this check (``dp_noise_check`` 0) pay it; a DP topk8 node skips rounds whose terms keep it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch

from fedtrail.protocol.privacy import DpParams

__all__ = [
    "BLOCK",
    "CLAIMED_COUNT",
    "CREDITED_COUNT",
    "FALSE_POSITIVE",
    "NOISE_COUNT",
    "NoiseVerdict",
    "check_noise",
    "credited_samples",
    "noise_breach",
]

BLOCK: Final = 1024
"""Coordinates per block: large enough that the chi-square bounds are tight (about +-30% of
the norm at 1e-9), small enough that a layer's structure shows (a gradient's rows and channels
differ by orders of magnitude)."""
FALSE_POSITIVE: Final = 1e-9
"""The probability, at most, that an honest DP-SGD update fails: half for the block norms,
half for the batch sizes."""
_BISECTIONS: Final = 200
CLAIMED_COUNT: Final = 1
"""``dp_noise_check`` 1: ``Lambda`` at the site's claimed (on-chain) sample count, as every
round before session 52 was checked."""
CREDITED_COUNT: Final = 2
"""``dp_noise_check`` 2 (the default since session 52): ``Lambda`` at the claimed count but at
most :data:`NOISE_COUNT` (:func:`credited_samples`)."""
NOISE_COUNT: Final = 32
"""The most samples the noise check credits a site under ``dp_noise_check`` 2. ``Lambda``
grows with the count (a batch of B images adds up to B clipped gradients against one noise
draw), and the count is the site's own word, bounded only by its on-chain cap and the round's
``max_sample_ratio``: a site of 150 images claiming 1,500 passed a plain update declaring
0.278 epsilon (``scripts/attacks/a97_dp_count_inflation.py``). Honest DP-SGD updates need far
less than their ``Lambda`` (Cauchy-Schwarz assumes every clipped gradient aligned): the most
any measured one needed was 12.1 noise units (2,428 images, expected batch 512, noise 0.7),
where ``Lambda`` at 32 samples is 73.8 (README *The noise check, exactly*)."""


@dataclass(frozen=True)
class NoiseVerdict:
    """What :func:`check_noise` found: the signal, in noise units, the update's block norms
    need at the best noise scale (``needed``), the most the parameters allow (``allowed``)."""

    needed: float
    allowed: float
    blocks: int

    @property
    def ok(self) -> bool:
        """Whether the update is consistent with the declared noise."""
        return self.needed <= self.allowed

    @property
    def reason(self) -> str:
        """The verdict as the round log's explanation of a zeroed update states it."""
        return (
            f"privacy noise MISSING: the update is not the Gaussian noise its DP parameters add "
            f"plus a clipped signal (its {self.blocks} blocks need a signal of {self.needed:.1f} "
            f"noise units, the parameters allow {self.allowed:.1f})"
        )


def allowed_signal(params: DpParams, num_samples: int) -> float:
    """``Lambda``: the longest signal DP-SGD at ``params`` on ``num_samples`` images can add,
    in units of its noise's per-coordinate standard deviation (module docstring).

    The signal of ``T`` steps is at most ``sqrt(sum_t L_t^2) / sigma`` noise units, ``L_t`` the
    images step t sampled (Binomial(n, q) each: Poisson sampling). With probability at least
    ``1 - FALSE_POSITIVE / 2`` (a third each, Bernstein's inequality) every ``L_t`` is at most
    ``L_max``, their total ``sum_t L_t`` at most ``L_sum`` and ``sum_t min(L_t, L_max)^2`` at
    most ``L_sq``; then ``sum_t L_t^2`` is at most each of ``T * L_max^2``, ``L_max * L_sum``
    and ``L_sq``, and the least of them bounds it. The first alone (the rule before a68) let
    a site declare a tiny sample rate, or batches of one image over many epochs, whose
    ``L_max`` (never below about ``2x/3``, 19 images) it would bound every step by: a plain
    update passed while declaring 0.19 epsilon a round
    (``scripts/attacks/a68_dp_small_batch_claim.py``)."""
    n = max(1, num_samples)
    q, t = params.sample_rate, params.steps
    share = FALSE_POSITIVE / 6  # per bound: half of FALSE_POSITIVE is the batch sizes'
    mean, var = n * q, n * q * (1 - q)
    most = _bernstein(mean, var, 1.0, math.log(t / share), float(n))  # per step, union over t
    total = _bernstein(mean * t, var * t, 1.0, math.log(1 / share), float(n) * t)
    second = var + mean * mean  # E[L_t^2]; min(L_t, most)^2 lies in [0, most^2]
    squares = _bernstein(
        second * t, most * most * second * t, most * most, math.log(1 / share), t * most * most
    )
    return math.sqrt(min(t * most * most, most * total, squares)) / params.noise_multiplier


def _bernstein(mean: float, var: float, bound: float, x: float, cap: float) -> float:
    """An upper bound, exceeded with probability at most ``e^-x``, on a sum of independent
    terms in ``[0, bound]`` of total ``mean`` and variance at most ``var`` (Bernstein's
    inequality, with ``2 * bound * x / 3`` for its ``bound * x / 3``), capped at ``cap``."""
    return min(cap, mean + math.sqrt(2 * var * x) + 2 * bound * x / 3)


def check_noise(
    delta: Mapping[str, torch.Tensor], params: DpParams, num_samples: int
) -> NoiseVerdict:
    """The noise check of one dense update (module docstring); deterministic (float64)."""
    sizes: list[int] = []
    norms: list[float] = []
    for tensor in delta.values():
        flat = tensor.detach().to("cpu", torch.float64).flatten().numpy()
        for start in range(0, flat.size, BLOCK):
            part = flat[start : start + BLOCK]
            sizes.append(part.size)
            norms.append(math.sqrt(float(np.sum(part * part))))  # numpy's sum, not BLAS
    k = np.asarray(sizes, dtype=np.float64)
    u = np.asarray(norms, dtype=np.float64)
    x = math.log(2 * 2 * max(1, len(sizes)) / FALSE_POSITIVE)
    lo = np.sqrt(np.maximum(0.0, k - 2 * np.sqrt(k * x)))
    hi = np.sqrt(k + 2 * np.sqrt(k * x) + 2 * x)
    needed = math.sqrt(_min_excess(u, lo, hi))
    return NoiseVerdict(
        needed=needed, allowed=allowed_signal(params, num_samples), blocks=len(sizes)
    )


def _excess(t: float, u: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    v = u * t
    return float(np.sum(np.maximum(0.0, np.maximum(v - hi, lo - v)) ** 2))


def _min_excess(u: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """``min over t > 0 of sum_b dist(t u_b, [lo_b, hi_b])^2``: convex and differentiable in
    t, so bisection on the sign of its derivative over ``[0, max hi_b / u_b]``."""
    live = u > 0
    if not live.any():
        return _excess(0.0, u, lo, hi)
    a, b = 0.0, float(np.max(hi[live] / u[live]))
    for _ in range(_BISECTIONS):
        mid = (a + b) / 2
        v = u * mid
        slope = float(np.sum(u * (np.maximum(0.0, v - hi) - np.maximum(0.0, lo - v))))
        if slope < 0:
            a = mid
        else:
            b = mid
    return _excess((a + b) / 2, u, lo, hi)


def credited_samples(num_samples: int, rule: int) -> int:
    """The sample count the noise check evaluates ``Lambda`` at under ``rule`` (the terms'
    ``dp_noise_check``): the claimed count under 1 (:data:`CLAIMED_COUNT`), at most
    :data:`NOISE_COUNT` under 2 (:data:`CREDITED_COUNT`)."""
    return min(num_samples, NOISE_COUNT) if rule >= CREDITED_COUNT else num_samples


def noise_breach(
    delta: Mapping[str, torch.Tensor],
    params: DpParams | None,
    num_samples: int,
    compression: str,
    rule: int = CLAIMED_COUNT,
) -> str | None:
    """Why an update carrying ``params`` fails the noise check (the round log's detail), or
    None: an update without DP parameters has nothing to check; a compressed one cannot be
    checked, and fails (module docstring). ``rule``: the terms' ``dp_noise_check``, which
    bounds the count ``Lambda`` is evaluated at (:func:`credited_samples`)."""
    if params is None:
        return None
    if compression != "none":
        return (
            f"privacy noise UNCHECKABLE: a {compression} update (top-k with error feedback) "
            "carries no per-round noise anyone can check; send DP updates dense"
        )
    verdict = check_noise(delta, params, credited_samples(num_samples, rule))
    return None if verdict.ok else verdict.reason
