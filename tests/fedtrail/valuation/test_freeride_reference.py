"""The free-rider screen against a plain formulation of it: every pair and every statistic
computed in full, written out from the module docstring (zero-padded 1024-wide blocks added one
after another and ``math.fsum``; left-to-right row sums; the closest reference by exact cosine
over all references, the first on a tie; no Gram matrix, no early stop, no cache). Its verdicts
and reasons, with every z statistic and cosine they quote, must be the screen's, and so must
the public statistics, bit for bit: on dense float32 updates, float16/float32 mixes, sparse
(topk-like) updates, DP-declared ones, dead units (zero rows, so partial masks), stale, white
and shaped copies; and whatever torch's thread count."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
import pytest
import torch

from fedtrail.protocol.duplicates import sparse as screen_sparse
from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import (
    _structure as screen_structure,
)
from fedtrail.valuation.freeride import (
    free_riders,
    own_reference,
    shaped_residual_z,
    structure_z,
)
from tests.fedtrail.valuation.noisy_inputs import plus_noise

Delta = dict[str, torch.Tensor]
SHAPES = {"conv.weight": (8, 4, 3, 3), "conv.bias": (8,), "fc.weight": (16, 200), "fc.bias": (16,)}


def _total(v: np.ndarray) -> float:
    v = np.ascontiguousarray(v, dtype=np.float64).ravel()
    padded = np.zeros(-(-max(v.size, 1) // 1024) * 1024)
    padded[: v.size] = v
    acc = padded.reshape(-1, 1024)[0].copy()
    for block in padded.reshape(-1, 1024)[1:]:
        acc += block
    return math.fsum(acc.tolist())


def _seq(values: np.ndarray) -> float:
    acc = 0.0
    for v in values.tolist():
        acc += v
    return acc


def _plain_z(parts: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray] | None) -> float:
    """The structure statistic of float64 arrays (only values where ``present`` is True)."""
    keys = [k for k, a in parts.items() if a.size]
    arrays = [parts[k] for k in keys]
    masks = [
        np.ones(a.shape, bool) if present is None else present[k]
        for a, k in zip(arrays, keys, strict=True)
    ]
    count = sum(int(m.sum()) for m in masks)
    squares = [a * a for a in arrays]
    total = math.fsum([_total(s) for s in squares])
    if count == 0 or not total > 0 or not math.isfinite(total):
        return math.inf
    mean = total / count
    families = [
        (np.asarray([_total(s) for s in squares]), np.asarray([float(m.sum()) for m in masks]))
    ]
    for axis in (1, 0):  # rows, then columns
        groups, sizes = [], []
        for s, m in zip(squares, masks, strict=True):
            if s.ndim >= 2:
                sm, mm = s.reshape(s.shape[0], -1), m.reshape(m.shape[0], -1)
                for g in range(sm.shape[0] if axis == 1 else sm.shape[1]):
                    line = sm[g] if axis == 1 else sm[:, g]
                    groups.append(_seq(line))
                    sizes.append(float((mm[g] if axis == 1 else mm[:, g]).sum()))
        if groups:
            families.append((np.asarray(groups), np.asarray(sizes)))
    scores = []
    for groups, sizes in families:
        keep = sizes > 0
        groups, sizes = groups[keep], sizes[keep]
        if groups.size >= 2:
            dispersion = math.fsum(
                ((groups - sizes * mean) ** 2 / (2.0 * sizes * mean * mean)).tolist()
            )
            spread = math.sqrt(math.fsum((2.0 + 12.0 / sizes).tolist()))
            scores.append((dispersion - groups.size) / spread)
    if not scores:
        return math.inf
    num, left, right, pairs = [], [], [], 0
    for a, m in zip(arrays, masks, strict=True):
        if a.ndim == 4:
            for x, y in (
                (np.s_[..., :-1], np.s_[..., 1:]),
                (np.s_[..., :-1, :], np.s_[..., 1:, :]),
            ):
                if a[x].size == 0:
                    continue
                both = (m[x] & m[y]).astype(np.float64).ravel()
                xs, ys = a[x].copy().ravel() * both, a[y].copy().ravel() * both
                num.append(_total(xs * ys))
                left.append(_total(xs * xs))
                right.append(_total(ys * ys))
                pairs += int(both.sum())
    if pairs:
        den = math.sqrt(math.fsum(left) * math.fsum(right))
        if den > 0:
            scores.append(abs(math.fsum(num) / den) * math.sqrt(pairs))
    return max(scores)


def _wide(d: Delta) -> dict[str, np.ndarray]:
    return {k: v.double().numpy().copy() for k, v in d.items()}


def _flat(d: Delta) -> np.ndarray:
    return np.concatenate([v.double().numpy().ravel() for v in d.values()])


def _sparse(values: Mapping[str, np.ndarray]) -> bool:
    total = zeros = 0
    for a in values.values():
        keep = a != 0
        if a.ndim >= 2:
            m = keep.reshape(a.shape[0], -1)
            keep = m[m.any(axis=1)][:, m.any(axis=0)]
        total += keep.size
        zeros += int((~keep).sum())
    return total > 0 and zeros > 0.5 * total


def _plain_shaped(
    values: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], scale: float
) -> float:
    ratios, present = {}, {}
    for k, u in values.items():
        size = np.abs(ref[k])
        mask = (size > 0) & (u != 0)
        ratio = np.zeros_like(u)
        ratio[mask] = (u - scale * ref[k])[mask] / size[mask]
        ratios[k], present[k] = ratio, mask
    return _plain_z(ratios, present)


def _plain_screen(
    deltas: Mapping[str, Delta],
    refs: Mapping[str, Delta],
    comb: Combiner,
    declared: Collection[str] = (),
) -> dict[str, str]:
    """free_riders (no model norm, no sample sizes) as its docstring states it."""
    white_z, shaped_z = comb.white_noise_z, comb.shaped_noise_z
    rows = {s: _flat(d) for s, d in deltas.items()}
    ref_rows = {r: _flat(d) for r, d in refs.items()}
    norm = {k: math.sqrt(_total(v * v)) for k, v in {**rows, **ref_rows}.items()}
    own = sorted(norm[s] for s in deltas)
    median = own[(len(own) - 1) // 2]
    out: dict[str, str] = {}
    for site, u in rows.items():
        n = norm[site]
        if n == 0.0:
            out[site] = "the update is zero"
            continue
        if n < comb.free_rider_norm * median:
            out[site] = (
                f"norm {n:.3g} is {n / median:.2%} of the median {median:.3g} "
                f"(below {comb.free_rider_norm:.0%})"
            )
            continue
        tiny = [r for r in refs if own_reference(r, site) and n < comb.free_rider_norm * norm[r]]
        if tiny:
            out[site] = (
                f"norm {n:.3g} is {n / norm[tiny[0]]:.2%} of its own earlier update's "
                f"{norm[tiny[0]]:.3g} ({tiny[0]}; below {comb.free_rider_norm:.0%})"
            )
            continue
        for label, r in ref_rows.items():
            if norm[label] == 0.0:
                continue
            cosine = _total(u * r) / (n * norm[label])
            distance = math.sqrt(_total((u - r) * (u - r))) / norm[label]
            if cosine > comb.stale_cosine and distance < comb.stale_distance:
                out[site] = (
                    f"a stale copy of {label} (cosine {cosine:.6f}, distance "
                    f"{distance:.2%} of its norm)"
                )
                break
        if site in out or site in declared:
            continue
        values = _wide(deltas[site])
        own_z = _plain_z(values, None)
        if own_z < white_z:
            out[site] = f"white noise (structure {own_z:.3g}, below {white_z:g})"
            continue
        best, best_cos = "", 0.0
        for label, r in ref_rows.items():
            if norm[label] > 0:
                c = _total(u * r) / (n * norm[label])
                if c > best_cos:
                    best, best_cos = label, c
        if not best:
            continue
        ref = _wide(refs[best])
        scale = _total(u * ref_rows[best]) / (norm[best] * norm[best])
        z = _plain_z({k: v - scale * ref[k] for k, v in values.items()}, None)
        if z < white_z:
            out[site] = (
                f"a copy of {best} plus white noise (cosine {best_cos:.6f}; the rest's "
                f"structure {z:.3g}, below {white_z:g})"
            )
            continue
        if not _sparse(values):
            z = _plain_shaped(values, ref, scale)
            if z < shaped_z:
                out[site] = (
                    f"a copy of {best} plus noise shaped like it (cosine {best_cos:.6f}; the "
                    f"rest over its magnitude has structure {z:.3g}, below {shaped_z:g})"
                )
    return out


def _structured(gen: torch.Generator, dead: int = 0) -> Delta:
    """Low-rank tensors with uneven row scales, smooth conv taps, ``dead`` zero rows per
    tensor of two or more dimensions (dead units)."""
    out: Delta = {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        rows, cols = shape[0], math.prod(shape[1:])
        scales = torch.exp(torch.randn(rows, 1, generator=gen))
        m = scales * (torch.randn(rows, 2, generator=gen) @ torch.randn(2, cols, generator=gen))
        if len(shape) >= 2 and dead:
            m[:dead] = 0.0
        t = m.reshape(shape) * 10.0 ** (-k)
        if len(shape) == 4:
            t = t + torch.roll(t, 1, dims=-1) + torch.roll(t, 1, dims=-2)
        out[name] = t.contiguous()
    return out


def _round(seed: int, mix: str) -> tuple[dict[str, Delta], dict[str, Delta], set[str]]:
    gen = torch.Generator().manual_seed(seed)
    refs = {
        "h1's update of round 1": _structured(gen, dead=seed % 3),
        "the global delta of round 1": _structured(gen, dead=1),
        "h2's update of round 1": _structured(gen),
    }
    source = refs["the global delta of round 1"]
    deltas = {f"h{i}": _structured(gen, dead=i % 2) for i in range(1, 5)}
    deltas.update(
        {
            "white": plus_noise(source, 0.05, gen),
            "shaped": plus_noise(source, 0.05, gen, shaped=True),
            "shaped_big": plus_noise(source, 0.6, gen, shaped=True),
            "stale": {k: (v * 1.5).contiguous() for k, v in refs["h2's update of round 1"].items()},
            "noise": {k: torch.randn(v.shape, generator=gen) for k, v in source.items()},
            "zero": {k: torch.zeros(v.shape) for k, v in source.items()},
            "dp": plus_noise(source, 0.05, gen),
        }
    )
    # sparse (topk-like: 5% of values kept): an honest one and a shaped copy
    for name, base in (
        ("sparse", _structured(gen)),
        ("sparse_copy", plus_noise(source, 0.05, gen, shaped=True)),
    ):
        keep = {k: (torch.rand(v.shape, generator=gen) < 0.05).to(v.dtype) for k, v in base.items()}
        deltas[name] = {k: (v * keep[k]).contiguous() for k, v in base.items()}
    if mix == "float16":  # float16 tensors among float32 ones, in updates and references
        for d in (*deltas.values(), *refs.values()):
            for k in ("conv.weight", "fc.bias"):
                d[k] = d[k].to(torch.float16)
    return deltas, refs, {"dp"}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mix", ["float32", "float16"])
def test_the_screen_gives_the_plain_formulations_reasons(seed: int, mix: str) -> None:
    comb = Combiner()
    deltas, refs, declared = _round(seed, mix)
    got = free_riders(
        deltas,
        refs,
        min_norm_ratio=comb.free_rider_norm,
        stale_cosine=comb.stale_cosine,
        stale_distance=comb.stale_distance,
        white_z=comb.white_noise_z,
        shaped_z=comb.shaped_noise_z,
        declared_noise=declared,
    )
    assert got == _plain_screen(deltas, refs, comb, declared)
    # the cases this round is made of are all there (the comparison is not vacuous)
    assert {"white", "stale", "zero", "noise", "shaped"} <= set(got)
    assert not {"h1", "h2", "h3", "h4", "dp", "sparse", "sparse_copy"} & set(got)


@pytest.mark.parametrize("mix", ["float32", "float16"])
def test_the_public_statistics_are_the_plain_ones_bit_for_bit(mix: str) -> None:
    deltas, refs, _ = _round(5, mix)
    ref = refs["the global delta of round 1"]  # a dead row: a partial mask
    ref_flat = _flat(ref)
    for name, d in deltas.items():
        assert structure_z(d) == _plain_z(_wide(d), None), name
        r2 = _total(ref_flat * ref_flat)
        scale = _total(_flat(d) * ref_flat) / (math.sqrt(r2) * math.sqrt(r2))
        values = _wide(d)
        plain = math.inf if _sparse(values) else _plain_shaped(values, _wide(ref), scale)
        assert shaped_residual_z(d, ref) == plain, name


def test_the_reasons_do_not_depend_on_the_thread_count() -> None:
    comb = Combiner()
    deltas, refs, declared = _round(1, "float32")
    kw = {
        "min_norm_ratio": comb.free_rider_norm,
        "stale_cosine": comb.stale_cosine,
        "stale_distance": comb.stale_distance,
        "white_z": comb.white_noise_z,
        "shaped_z": comb.shaped_noise_z,
        "declared_noise": declared,
    }
    before = torch.get_num_threads()
    try:
        got = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            got.append(free_riders(deltas, refs, **kw))  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(before)
    assert got[0] == got[1] == got[2]
    assert got[0]


def test_the_sparse_exemption_counts_the_plain_blocks_zeros() -> None:
    """The screen's sparse test (``fedtrail.protocol.duplicates.sparse``, the duplicate rule's:
    zeros outside all-zero rows and columns, counted without copying the block), on the
    float32 tensors or on their float64 widening, decides as the plain one (the block copied,
    its zeros counted) on dense, dead-unit, topk-like and all-zero tensors, around the 50%
    threshold."""
    gen = np.random.default_rng(5)
    for trial in range(200):
        values: dict[str, np.ndarray] = {}
        for name, shape in SHAPES.items():
            a = gen.standard_normal(shape)
            keep = gen.random(shape) < gen.choice([0.03, 0.45, 0.5, 0.55, 1.0])
            a = np.where(keep, a, 0.0)
            if a.ndim >= 2 and trial % 3 == 0:
                m = a.reshape(a.shape[0], -1)
                m[gen.random(m.shape[0]) < 0.3] = 0.0  # dead units: zero rows
                m[:, gen.random(m.shape[1]) < 0.3] = 0.0  # and zero columns
            if trial % 17 == 0:
                a = np.zeros(shape)
            values[name] = a
        as_torch = {k: torch.from_numpy(v) for k, v in values.items()}
        as_float32 = {k: v.float() for k, v in as_torch.items()}  # what the screen is given
        assert screen_sparse(as_torch) == screen_sparse(as_float32) == _sparse(values), trial


def test_the_early_stop_on_a_lower_bound_decides_as_the_plain_statistic() -> None:
    """The statistics' early stop (a lower bound from sums in any order, then the fixed-order
    score only when the bound falls short): at every threshold around the plain statistic,
    just below, at and just above it, and at the screen's 1000, the screen's statistic is below
    the threshold exactly when the plain one is, and then it is the plain one, bit for bit;
    with and without masks, on structured (scores far above 1000), white and near-white
    values, and values of extreme scale."""
    gen = torch.Generator().manual_seed(11)
    rng = np.random.default_rng(11)
    cases: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]] = []
    for trial in range(24):
        base = (
            _wide(_structured(gen, dead=trial % 3))
            if trial % 3
            else {k: rng.standard_normal(shape) for k, shape in SHAPES.items()}
        )
        if trial % 4 == 1:  # near-white: a little structure on white noise
            base = {k: rng.standard_normal(v.shape) + 0.02 * v for k, v in base.items()}
        scale = (1e-60, 1e-20, 1.0, 1e20, 1e60)[trial % 5]
        parts = {k: v * scale for k, v in base.items()}
        present = None
        if trial % 2:
            present = {k: rng.random(v.shape) < 0.9 for k, v in parts.items()}
            parts = {k: np.where(present[k], v, 0.0) for k, v in parts.items()}
        cases.append((parts, present))
    for n, (parts, present) in enumerate(cases):
        plain = _plain_z(parts, present)
        assert math.isfinite(plain), n
        stops = [
            plain * (1 - 1e-3),
            plain * (1 - 1e-7),
            math.nextafter(plain, -math.inf),
            plain,
            math.nextafter(plain, math.inf),
            plain * (1 + 1e-7),
            plain * (1 + 1e-3),
            1000.0,
        ]
        for stop in stops:
            got = screen_structure(parts, present, stop=stop)
            assert (got < stop) == (plain < stop), (n, stop, got, plain)
            if plain < stop:
                assert got == plain, (n, stop)
