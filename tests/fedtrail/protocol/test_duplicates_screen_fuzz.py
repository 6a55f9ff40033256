"""h-309 (reviewing h-305): :func:`find_duplicates`'s float32 screen (:class:`_Screens`) gives
the marks of the exact rule on randomized adversarial rounds: cosines within a few margins of
either threshold on both sides, scaled and sign-flipped copies, zero updates, sparse
(``topk8``-like, some recoded) updates, unusable (None) updates and ones of another width in
between, float16/float32/float64 tensors, norms from 1e-300 to 1e200 (either side of the
screen's range), one huge entry, and up to 70 updates (three screen groups). The reference is
the same search with the screen off (float32 matmul precision "high": every pair decided by
the exact float64 rule). 3,000 such rounds against the pre-h-305 module and the unscreened
search gave no difference (``/tmp`` script of h-309's report); this keeps 120 of them."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator

import pytest
import torch

from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DUPLICATE_COSINE, DUPLICATE_SCALED_COSINE, DuplicateRule
from fedtrail.valuation.freeride import duplicate_residual_z

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RULES = {
    "before_white_noise": DuplicateRule(white_noise_z=None, shared_tensor=None),
    "cosine_and_distance": DuplicateRule(
        scaled_cosine=None,
        support_cosine=None,
        support_overlap=None,
        white_noise_z=None,
        shared_tensor=None,
        either_order=None,
    ),
    "now": DuplicateRule(),
}
SHAPES: list[list[tuple[int, ...]]] = [
    [(7,)],
    [(3, 5), (4,)],
    [(600,)],
    [(513,), (2,)],
    [(1100,)],
    [(40, 30)],
]
MARGINS = [0.0, 1e-7, 1e-6, 1e-5, 3e-5, 6e-5, 7e-5, 1e-4, 2e-4, -1e-6, -1e-5, -6e-5, -1e-4]
SCALES = [-300, -40, -20, -11, -10, -9, -5, 0, 5, 14, 15, 16, 30, 200]


def _unit(n: int, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    out: torch.Tensor = v / v.norm()
    return out


def _toward(a: torch.Tensor, cosine: float, gen: torch.Generator) -> torch.Tensor:
    u = a / a.norm()
    o = torch.randn(a.numel(), generator=gen, dtype=torch.float64)
    o -= (o @ u) * u
    out: torch.Tensor = (
        cosine * u + math.sqrt(max(0.0, 1 - cosine * cosine)) * o / o.norm()
    ) * a.norm()
    return out


def _round(seed: int) -> list[Entry]:
    r, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    shapes = r.choice(SHAPES)
    n = sum(math.prod(s) for s in shapes)
    dtype = r.choice([torch.float64, torch.float32, torch.float16, torch.float64])
    bases = [_unit(n, gen) for _ in range(r.randint(1, 4))]
    threshold = r.choice([DUPLICATE_COSINE, DUPLICATE_SCALED_COSINE])
    entries = []
    for s in range(r.choice([2, 3, 5, 8, 40, 70])):
        kind, base = r.random(), r.choice(bases)
        v: torch.Tensor | None
        if kind < 0.25:
            v = _toward(base, min(1.0, threshold + r.choice(MARGINS)), gen)
        elif kind < 0.4:
            v = base * r.choice([1.0, 1.01, -1.0, 2.0])
        elif kind < 0.5:
            v = torch.zeros(n, dtype=torch.float64)
        elif kind < 0.6:  # sparse: an eighth of the entries kept, some recoded to int8 levels
            v = base.clone()
            v[torch.randperm(n, generator=gen)[n // 8 :]] = 0
            if r.random() < 0.5:
                top = float(v.abs().max())
                v = torch.round(v * 127 / top) * (top / 127)
        elif kind < 0.65:
            v = None
        elif kind < 0.7:
            v = _unit(n + 1, gen)
        else:
            v = _unit(n, gen)
        if v is not None and v.numel() == n and r.random() < 0.3:
            v = v * 10.0 ** r.choice(SCALES)
        if v is not None and v.numel() > 1 and r.random() < 0.05:
            v = v.clone()
            v[0] = 10.0 ** r.choice([10, 15, 16, 20])
        delta: dict[str, torch.Tensor] | None = None
        if v is not None and v.numel() == n:
            delta = {f"t{i}": t.to(dtype) for i, t in enumerate(_split(v, shapes))}
            if not all(bool(torch.isfinite(t).all()) for t in delta.values()):
                delta = {f"t{i}": t for i, t in enumerate(_split(v, shapes))}  # float64
        elif v is not None:
            delta = {"t0": v}
        digest = (
            "0" * 64
            if delta is None
            else hashlib.sha256(
                b"".join(delta[k].contiguous().numpy().tobytes() for k in sorted(delta))
            ).hexdigest()
        )
        entries.append(Entry(f"s{s:03d}", s + 1, digest, delta))
    return entries


def _split(v: torch.Tensor, shapes: list[tuple[int, ...]]) -> Iterator[torch.Tensor]:
    at = 0
    for shape in shapes:
        size = math.prod(shape)
        yield v[at : at + size].reshape(shape)
        at += size


def _marks(entries: list[Entry], rule: DuplicateRule, precision: str) -> dict[str, str]:
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        return find_duplicates(entries, rule, whiteness=duplicate_residual_z)
    finally:
        torch.set_float32_matmul_precision(was)


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_screened_search_marks_what_the_exact_rule_marks(name: str) -> None:
    rule, marked = RULES[name], 0
    for seed in range(40 if name == "now" else 120):
        entries = _round(seed)
        screened = _marks(entries, rule, "highest")
        assert screened == _marks(entries, rule, "high"), seed
        marked += len(screened)
    assert marked > 100  # the rounds hold copies, not only originals
