"""Copies plus noise for the free-rider screen's tests: one definition of "a copy plus noise of a
given share of its norm" (white, or shaped by the copy's magnitude)."""

from __future__ import annotations

import math

import torch

Delta = dict[str, torch.Tensor]


def plus_noise(copy: Delta, level: float, gen: torch.Generator, *, shaped: bool = False) -> Delta:
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in copy.items()}
    if shaped:
        noise = {k: n * copy[k].abs() for k, n in noise.items()}
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in copy.values()))
    size = math.sqrt(sum(float((n.double() ** 2).sum()) for n in noise.values()))
    return {k: (v + level * norm / size * noise[k]).contiguous() for k, v in copy.items()}
