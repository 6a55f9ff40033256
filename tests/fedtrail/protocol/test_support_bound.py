"""``support_copy_of``'s screen (``_support_bound``, issue 14's time bar) gives the verdicts of
the screen before it and of the pair-by-pair rule (``support_copy``): random layouts and
updates (exact zeros, dead units, ties, all-zero tensors, (0, n) tensors, non-finite values,
float16), sparse copies that are copies, with noise near the threshold and with each
tensor's largest entry dropped, ``topk8``-decoded updates, and thresholds set at the pairs'
own cosines, a hair either side."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import numpy as np
import pytest
import torch

from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol import duplicates
from fedtrail.protocol.duplicates import (
    CODE_LEVELS,
    SCREEN_MARGIN,
    Entry,
    _fill_codes,
    _fill_plain,
    _flat,
    _flat_codes,
    _numel,
    _support_bound,
    support_copy,
    support_copy_of,
)
from fedtrail.protocol.terms import DUPLICATE_SUPPORT_OVERLAP, DuplicateRule
from fedtrail.storage.codec import Compression, decode_update, encode_update
from tests.fedtrail.protocol.test_duplicates import _reference
from tests.fedtrail.protocol.test_duplicates import find_duplicates as dup_find

THRESHOLD = 0.999995
Update = dict[str, torch.Tensor]


def _rule_copy_of(
    earlier: Sequence[Mapping[str, torch.Tensor]],
    later: Sequence[Mapping[str, torch.Tensor]],
    threshold: float,
) -> dict[int, int]:
    """The rule pair by pair: for each later update the first earlier one it repeats."""
    names = sorted(earlier[0])
    sizes = [earlier[0][n].numel() for n in names]
    out: dict[int, int] = {}
    for j, b in enumerate(later):
        for i, a in enumerate(earlier):
            if support_copy(_flat(a), _flat(b), sizes, threshold):
                out[j] = i
                break
    return out


def _previous_copy_of(
    earlier: Sequence[Mapping[str, torch.Tensor]],
    later: Sequence[Mapping[str, torch.Tensor]],
    threshold: float,
) -> dict[int, int]:
    """``support_copy_of`` as it was before ``_support_bound`` (commit dbb0596): the same
    candidates, screened with ``_support_screen``, the rest decided by ``support_copy``."""
    width = _numel(earlier[0])
    names = sorted(earlier[0])

    def same(d: Mapping[str, torch.Tensor]) -> bool:
        return sorted(d) == names and all(d[n].shape == earlier[0][n].shape for n in names)

    sparse = [
        j for j, d in enumerate(later) if same(d) and any(bool((d[n] == 0).any()) for n in names)
    ]
    refs = [i for i, d in enumerate(earlier) if same(d)]
    if not sparse or not refs:
        return {}
    rows: list[Mapping[str, torch.Tensor] | None] = [earlier[i] for i in refs]
    rows += [later[j] for j in sparse]
    apart = _previous_support_screen(rows, width, threshold, earlier=len(refs))
    sizes = [earlier[0][n].numel() for n in names]
    out: dict[int, int] = {}
    for b, j in enumerate(sparse, start=len(refs)):
        row_b = rows[b]
        assert row_b is not None
        flat_b = _flat(row_b)
        coded = _flat_codes(flat_b, sizes)
        for a in range(len(refs)):
            row_a = rows[a]
            assert row_a is not None
            if (a, b) not in apart and support_copy(_flat(row_a), flat_b, sizes, threshold, coded):
                out[j] = refs[a]
                break
    return out


SUPPORT_CHUNK: Final = 8192
"""Columns per float64 block of the previous support screen's products (:func:`_cross`): a
float64 dot product of ``c`` terms errs by at most ``c * 2**-53`` of the sum of their
magnitudes (1e-12 here), far inside :data:`SCREEN_MARGIN`; codes' products are integers,
exact."""


COUNT_CHUNK: Final = 1024
"""Columns per float32 block of the previous support screen's integer products (entry counts,
and codes whose squares are at most 127**2): a block sums to below 1024 * 127**2 < 2**24, exact in
float32 in any order."""


def _cross(
    x: torch.Tensor,
    y: torch.Tensor,
    fx: Callable[[torch.Tensor], torch.Tensor],
    fy: Callable[[torch.Tensor], torch.Tensor],
    chunk: int = SUPPORT_CHUNK,
    exact_integers: bool = False,
) -> torch.Tensor:
    """``fx(x) @ fy(y).T`` in float64, block by block of ``chunk`` columns (rows widened to
    float64 in each block, ``fx`` and ``fy`` applied there: no full transformed copy);
    ``exact_integers``: products of small integers, in float32 blocks of :data:`COUNT_CHUNK`."""
    out = torch.zeros((x.shape[0], y.shape[0]), dtype=torch.float64)
    if exact_integers:
        chunk = COUNT_CHUNK
    for at in range(0, x.shape[1], chunk):
        xb, yb = x[:, at : at + chunk], y[:, at : at + chunk]
        if not exact_integers:
            xb, yb = xb.to(torch.float64), yb.to(torch.float64)
        out += (fx(xb) @ fy(yb).T).to(torch.float64)
    return out


def _previous_support_screen(
    deltas: Sequence[Mapping[str, torch.Tensor] | None],
    width: int,
    threshold: float,
    earlier: int | None = None,
) -> set[tuple[int, int]]:
    """``duplicates._support_screen`` as it was before ``_support_bound`` (commit dbb0596),
    verbatim but for its name and docstring: pairs ``(i, j)``, ``i < j``, that
    ``support_copy`` certainly rejects (``j`` leaves none of ``i``'s nonzero entries out, or
    both screened cosines lie below ``threshold`` by more than their error); ``earlier``: only
    the pairs of one of the first ``earlier`` updates and one of the rest."""
    idx = [i for i, d in enumerate(deltas) if d is not None and _numel(d) == width]
    if len(idx) < 2 or width == 0:
        return set()
    # later rows: columns of the products from ``low``; earlier rows of each: up to ``high(b)``
    low = 0 if earlier is None else sum(1 for i in idx if i < earlier)
    if low == len(idx) or (earlier is not None and low == 0):
        return set()

    def high(b: int) -> int:
        return b if earlier is None else low

    first = deltas[idx[0]]
    assert first is not None
    segments, at = [], 0
    for name in sorted(first):
        segments.append((at, at + first[name].numel()))
        at += first[name].numel()
    plain = torch.empty((len(idx), width), dtype=torch.float32)
    coded = torch.empty((len(idx), width), dtype=torch.float32)
    scratch = torch.empty(width, dtype=torch.float64)
    ok = []
    for row, i in enumerate(idx):
        delta = deltas[i]
        assert delta is not None
        ok.append(_fill_plain(delta, plain[row]) and _fill_codes(delta, coded[row], scratch))

    def nonzero(t: torch.Tensor) -> torch.Tensor:
        return (t != 0).to(t.dtype)

    def zero(t: torch.Tensor) -> torch.Tensor:
        return (t == 0).to(t.dtype)

    def square(t: torch.Tensor) -> torch.Tensor:
        return t * t

    def same(t: torch.Tensor) -> torch.Tensor:
        return t

    later = plain[low:]
    # [i, j - low]: a_i != 0 where b_j == 0
    left = _cross(plain, later, nonzero, zero, exact_integers=True)
    dots = _cross(plain, later, same, same)
    kept_sq = _cross(plain, later, square, nonzero)  # [i, j - low]: |a_i'|^2 on b_j's entries
    # per tensor: codes' products, a's codes squared on b's entries, whether b keeps a's max
    per_tensor = []
    for lo, hi in segments:
        c, p = coded[:, lo:hi], plain[:, lo:hi]
        if hi == lo:
            continue
        top = (p.abs() == p.abs().amax(dim=1, keepdim=True)).to(torch.float32)
        keeps = (top @ nonzero(p[low:]).T) > 0  # exact: a sum of positive terms is positive
        gram_c = _cross(c, c[low:], same, same, exact_integers=True)
        kept_c = _cross(c, p[low:], square, nonzero, exact_integers=True)
        per_tensor.append((lo, hi, gram_c, kept_c, keeps))
    # float64 blocks (SUPPORT_CHUNK); rows of float64 updates were rounded to float32 (at most
    # 2**-24 relative each: 4 * 2**-24 in a cosine, as the Gram screen's margin counts)
    margin = SCREEN_MARGIN + 4 * 2.0**-24
    lefts, kept_all, dot_all = left.numpy(), kept_sq.numpy(), dots.numpy()
    if earlier is None:
        squares = np.diag(dot_all)
    else:  # the earlier rows are no columns: their squares in float64 blocks
        squares = np.zeros(len(idx))
        for at in range(0, width, SUPPORT_CHUNK):
            block = plain[:, at : at + SUPPORT_CHUNK].to(torch.float64)
            squares += (block * block).sum(dim=1).numpy()
    screenable = np.array(ok, dtype=bool)
    out: set[tuple[int, int]] = set()
    for b in range(max(1, low), len(idx)):
        # every earlier row against row b at once; codes tensor by tensor
        n, col = high(b), b - low
        dot_c, sq_a = np.zeros(n), np.zeros(n)
        sq_b = 0.0
        for lo, hi, gram_c, kept_c, keeps in per_tensor:
            sq_b += float(gram_c[b, col])
            keep = keeps[:n, col].numpy()
            dot_c += np.where(keep, gram_c[:n, col].numpy(), 0.0)
            sq_a += np.where(keep, kept_c[:n, col].numpy(), 0.0)
            miss = np.flatnonzero(~keep)
            carried = torch.nonzero(plain[b, lo:hi]).reshape(-1) + lo
            if miss.size and carried.numel():
                # b drops these rows' largest entry here: their codes, recomputed on b's entries
                part = plain[:n].index_select(1, carried)[torch.from_numpy(miss)].double()
                amax = part.abs().amax(dim=1, keepdim=True)
                per = torch.where(amax > 0, CODE_LEVELS / amax.clamp_min(1e-300), 0.0)
                ca = torch.round(part * per)
                dot_c[miss] += (ca @ coded[b, carried].to(torch.float64)).numpy()
                sq_a[miss] += (ca * ca).sum(dim=1).numpy()
        kept, full, nb = kept_all[:n, col], squares[:n], float(dot_all[b, col])
        nothing_left = lefts[:n, col] == 0.0  # the rule does not apply
        judged = (
            ~nothing_left
            & screenable[:n]
            & bool(screenable[b])
            & (kept > 0.0)
            & (nb > 0.0)
            & (sq_a > 0.0)
            & (sq_b > 0.0)
        )
        safe_kept = np.where(judged, kept, 1.0)
        cos_p = dot_all[:n, col] / np.sqrt(safe_kept * max(nb, 1e-300))
        cos_c = dot_c / np.sqrt(np.where(judged, sq_a, 1.0) * max(sq_b, 1e-300))
        scale = np.sqrt(np.where(judged, full, 1.0) / safe_kept)  # relative to |a'| |b|
        below = (cos_p < threshold - margin * scale) & (cos_c < threshold - margin)
        for a in np.flatnonzero(nothing_left | (judged & below)).tolist():
            out.add((idx[a], idx[b]))
    return out


def _cosines(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> list[float]:
    """The rule's two cosines of the pair (plain and codes'), where it computes them."""
    x, y = _flat(a), _flat(b)
    sizes = [a[n].numel() for n in sorted(a)]
    kept = torch.where(y != 0, x, torch.zeros((), dtype=x.dtype))
    out = []
    if float(kept.norm()) > 0 and float(y.norm()) > 0:
        out.append(float(torch.dot(kept, y)) / (float(kept.norm()) * float(y.norm())))
        ca, cb = _flat_codes(kept, sizes), _flat_codes(y, sizes)
        if float(ca.norm()) > 0 and float(cb.norm()) > 0:
            out.append(float(torch.dot(ca, cb)) / (float(ca.norm()) * float(cb.norm())))
    return [c for c in out if math.isfinite(c)]


def _layout(gen: torch.Generator) -> dict[str, tuple[int, ...]]:
    """A random layout: a matrix, a vector, sometimes an empty (0, n) tensor and a 4-d one."""
    rows, cols = (int(v) for v in torch.randint(2, 40, (2,), generator=gen))
    shapes: dict[str, tuple[int, ...]] = {"w": (rows, cols), "b": (rows,)}
    if bool(torch.rand(1, generator=gen) < 0.3):
        shapes["e"] = (0, cols)
    if bool(torch.rand(1, generator=gen) < 0.5):
        shapes["c"] = (3, 2, 3, 3)
    return shapes


def _random(shapes: Mapping[str, tuple[int, ...]], gen: torch.Generator, kind: int) -> Update:
    """An update of ``shapes``: heavy-tailed values, then dead units, ties (few levels, both
    signs of the largest), scattered zeros or a zero tensor, by ``kind``."""
    out: Update = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        t = t * t.abs()
        if kind % 5 == 1 and len(shape) >= 2 and shape[0]:  # dead units: whole rows zero
            t[torch.rand(shape[0], generator=gen) < 0.4] = 0.0
        if kind % 5 == 2:  # ties: a few levels, the largest magnitude of both signs
            t = torch.round(t * 2) / 2
        if kind % 5 == 3:  # scattered exact zeros
            t = torch.where(torch.rand(shape, generator=gen) < 0.5, t, 0.0)
        if kind % 5 == 4 and bool(torch.rand(1, generator=gen) < 0.5):
            t = torch.zeros(shape)
        out[name] = t.to(torch.float32)
    return out


def _copy_of(a: Mapping[str, torch.Tensor], gen: torch.Generator, kind: int) -> Update:
    """A later update repeating ``a`` on the entries it keeps: a random share (sometimes
    without each tensor's largest entry, or only its largest ones), scaled, with noise from
    none to past the threshold."""
    out: Update = {}
    level = [0.0, 1e-7, 1e-6, 3e-6, 1e-5, 1e-3, 0.1][kind % 7]
    for name, t in a.items():
        flat = t.reshape(-1).clone()
        if kind % 3 == 0:
            keep = torch.rand(flat.shape, generator=gen) < 0.6
        elif kind % 3 == 1:  # the largest entries only, as topk8 keeps them
            keep = torch.zeros(flat.shape, dtype=torch.bool)
            keep[flat.abs().argsort(descending=True)[: max(1, flat.numel() // 10)]] = True
        else:  # everything but the largest entry
            keep = torch.ones(flat.shape, dtype=torch.bool)
            if flat.numel():
                keep[flat.abs().argmax()] = False
        noise = level * flat.abs().mean() * torch.randn(flat.shape, generator=gen)
        flat = torch.where(keep, (flat + noise) * 1.7, 0.0)
        out[name] = flat.reshape(t.shape).to(t.dtype)
    return out


def _check(
    earlier: Sequence[Mapping[str, torch.Tensor]],
    later: Sequence[Mapping[str, torch.Tensor]],
    threshold: float,
) -> dict[int, int]:
    got = support_copy_of(earlier, later, threshold)
    assert got == _previous_copy_of(earlier, later, threshold)
    assert got == _rule_copy_of(earlier, later, threshold)
    return got


def _thresholds(
    earlier: Sequence[Mapping[str, torch.Tensor]], later: Sequence[Mapping[str, torch.Tensor]]
) -> list[float]:
    """THRESHOLD, and each pair's largest cosine with its neighbouring floats either side."""
    out = {THRESHOLD}
    for a in earlier:
        for b in later:
            cos = _cosines(a, b)
            if cos and 0.5 < max(cos) < 1.0:
                top = max(cos)
                out |= {top, math.nextafter(top, 0.0), math.nextafter(top, 2.0), top - 1e-9}
    return sorted(out)


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_give_the_previous_and_the_rules_verdicts(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    copies = 0
    for case in range(6):
        shapes = _layout(gen)
        earlier = [_random(shapes, gen, case + k) for k in range(4)]
        later = [_random(shapes, gen, case + k + 1) for k in range(3)]
        later += [_copy_of(earlier[k % 4], gen, 3 * case + k) for k in range(4)]
        later.append(dict(earlier[0]))  # the same update: nothing left out
        later.append({n: torch.zeros(s) for n, s in shapes.items()})
        for threshold in _thresholds(earlier, later):
            copies += len(_check(earlier, later, threshold))
    assert copies  # copies were found, not only rejections


def test_non_finite_and_float16_updates_give_the_previous_verdicts() -> None:
    """An earlier update with an inf or a NaN is rejected where the later one keeps all its
    nonzero entries (the previous screen's rule) and otherwise decided by the rule; float16
    values are bounded as float32 ones."""
    gen = torch.Generator().manual_seed(5)
    shapes = {"w": (20, 30), "b": (20,)}
    a = _random(shapes, gen, 0)
    bad = dict(a)
    bad["w"] = a["w"].clone()
    bad["w"][3, 4] = math.inf
    nan = dict(a)
    nan["b"] = a["b"].clone()
    nan["b"][2] = math.nan
    later = [_copy_of(a, gen, k) for k in range(6)] + [dict(a), bad, nan]
    for threshold in (THRESHOLD, 0.9, 0.5):
        got = support_copy_of([bad, nan, a], later, threshold)
        assert got == _previous_copy_of([bad, nan, a], later, threshold)
    half = {n: t.to(torch.float16) for n, t in a.items()}
    half_later = [{n: t.to(torch.float16) for n, t in d.items()} for d in later[:6]]
    assert _check([half], half_later, THRESHOLD)


def _model_update(seed: int) -> Update:
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in initial_model(ModelSpec(), 0).state_dict().items()}
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        t = t * t.abs() * 1e-3
        if len(shape) >= 2:
            t[torch.rand(shape[0], generator=gen) < 0.3] = 0.0  # dead units
        out[name] = t.to(torch.float32)
    return out


def _topk8(d: Mapping[str, torch.Tensor], fraction: float) -> Update:
    spec = ModelSpec()
    blob = encode_update(
        dict(d), spec=spec, round=2, compression=Compression(method="topk8", fraction=fraction)
    ).blob
    return decode_update(blob, spec=spec, expected_round=2)[0]


def _mix(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], w: float) -> Update:
    return {k: (a[k] * (1 - w) + b[k] * w).to(torch.float32) for k in a}


@pytest.mark.parametrize("compress", [False, True])
def test_model_sized_rounds_are_screened_and_decided_as_before(compress: bool) -> None:
    """SmallCNN-sized updates with dead units, dense or ``topk8``-decoded (0.05, one 0.5),
    honest ones along their references and sparse copies of references (a91, exact and with
    noise): the same verdicts as before and as the rule, and the screen decides every honest
    dense or 0.05 pair itself (none is left to the rule's whole-update pass)."""
    earlier = [_model_update(s) for s in range(30, 36)]
    honest = [_mix(earlier[k], _model_update(40 + k), 0.4) for k in range(5)]
    if compress:  # topk8's default fraction; at 0.5 a pair's codes may be left to the rule
        honest = [_topk8(d, 0.05) for d in honest]
        honest.append(_topk8(_mix(earlier[0], _model_update(45), 0.4), 0.5))
    gen = torch.Generator().manual_seed(3)
    copies = [_topk8(earlier[1], 0.5), _topk8(earlier[4], 0.05)]
    noisy = {
        n: torch.where(t != 0, t + 1e-3 * t.abs() * torch.randn(t.shape, generator=gen), 0.0)
        for n, t in _topk8(earlier[2], 0.3).items()
    }
    later = [*honest, *copies, noisy]
    got = _check(earlier, later, THRESHOLD)
    assert got[len(honest)] == 1 and got[len(honest) + 1] == 4
    assert not set(got) & set(range(len(honest)))
    bound = _support_bound(earlier, honest[:5], THRESHOLD)
    assert bool(bound.all())


def test_each_pair_the_bound_rejects_the_rule_rejects() -> None:
    """The bound alone, pair by pair, at thresholds down to 0.5: whatever it marks, the rule
    rejects (the verdicts above could hide a wrong mark behind an earlier original)."""
    gen = torch.Generator().manual_seed(17)
    marked = 0
    for case in range(20):
        shapes = _layout(gen)
        earlier = [_random(shapes, gen, case + k) for k in range(3)]
        later = [_copy_of(earlier[k % 3], gen, case + k) for k in range(5)]
        later += [_random(shapes, gen, case + 3)]
        sizes = [earlier[0][n].numel() for n in sorted(earlier[0])]
        for threshold in (0.5, 0.9, 0.999, THRESHOLD):
            bound = _support_bound(earlier, later, threshold)
            for i, a in enumerate(earlier):
                for j, b in enumerate(later):
                    if bound[i, j]:
                        marked += 1
                        assert not support_copy(_flat(a), _flat(b), sizes, threshold)
    assert marked


def _recoded(a: Mapping[str, torch.Tensor]) -> Update:
    """``a`` without each tensor's largest entry, then int8-coded and decoded as ``topk8`` at
    fraction 1 does it (scale: the largest magnitude left): its codes are those of ``a``
    restricted to its nonzero entries, which the bound must not read at ``a``'s own scale."""
    out: Update = {}
    for name, t in a.items():
        flat = t.reshape(-1).to(torch.float64).clone()
        if flat.numel():
            flat[flat.abs().argmax()] = 0.0
        amax = float(flat.abs().max()) if flat.numel() else 0.0
        coded = torch.round(flat * (127.0 / amax)) * (amax / 127.0) if amax else flat
        out[name] = coded.reshape(t.shape).to(torch.float32)
    return out


def test_pairs_built_against_the_bound_give_the_rules_verdicts() -> None:
    """Pairs where a wrong bound would show: a later update carried only on the sampled
    entries, which hold its original's largest ones (the sample holds all of its energy: the
    bound is at its tightest), at cosines
    0.9-0.999 from its original, and recoded copies of originals whose largest entries are
    outliers 100x the rest (their codes at the original's scale are nearly all 0)."""
    gen = torch.Generator().manual_seed(23)
    stride = duplicates.SUPPORT_STRIDE
    for case in range(8):
        shapes = _layout(gen)
        a = _random(shapes, gen, 0)
        on_sample: Update = {}
        for k, (name, t) in enumerate(a.items()):
            flat = t.reshape(-1).clone()
            if flat.numel():  # a's largest entry sampled: the codes' bound reads the tensor
                flat[0] = 1.5 * float(flat.abs().max())
                a[name] = flat.reshape(t.shape).clone()
            keep = torch.zeros(flat.shape, dtype=torch.bool)
            keep[::stride] = True
            noise = (0.02 * (case + 1) + 0.05 * k) * flat.abs().mean()
            flat = torch.where(keep, flat + noise * torch.randn(flat.shape, generator=gen), 0.0)
            on_sample[name] = flat.reshape(t.shape)
        outliers: Update = {}
        for name, t in _random(shapes, gen, 0).items():
            flat = t.reshape(-1).clone()
            if flat.numel():
                flat[int(torch.randint(flat.numel(), (1,), generator=gen))] = 100 * float(
                    flat.abs().max()
                )
            outliers[name] = flat.reshape(t.shape)
        earlier = [a, outliers]
        later = [on_sample, _recoded(outliers), _recoded(a)]
        thresholds = _thresholds(earlier, later)
        assert len(thresholds) > 4  # the cosines of the pairs are in play
        for threshold in thresholds:
            _check(earlier, later, threshold)


def _rules(threshold: float) -> list[DuplicateRule]:
    """The duplicate rule at ``threshold``, both ways round and one way, with and without
    ``support_overlap`` (the other sparse test, whose reversed pass shares the support one's)."""
    return [
        DuplicateRule(
            support_cosine=threshold,
            support_overlap=overlap,
            either_order=either,
            white_noise_z=None,
            shared_tensor=None,
        )
        for either in (True, None)
        for overlap in (DUPLICATE_SUPPORT_OVERLAP, None)
    ]


def _round(updates: Sequence[Mapping[str, torch.Tensor]], gen: torch.Generator) -> list[Entry]:
    """The updates committed in a random order (a copy before or after its original)."""
    order = torch.randperm(len(updates), generator=gen).tolist()
    return [Entry(f"s{k:02d}", order[k] + 1, f"{k:064x}", dict(u)) for k, u in enumerate(updates)]


def _backwards(entries: Sequence[Entry], marks: Mapping[str, str]) -> int:
    """How many marked copies were committed before their original (the reversed test's)."""
    when = {e.site: e.commit_order for e in entries}
    return sum(when[copy] < when[original] for copy, original in marks.items())


@pytest.mark.parametrize("seed", range(8))
def test_find_duplicates_gives_the_unscreened_rules_verdicts_on_random_rounds(seed: int) -> None:
    """``find_duplicates`` screens the support test both ways round with one
    ``_support_bound`` (and skips judged updates without an exact 0): on random rounds (dead
    units, ties, scattered zeros, zero tensors, float16) with copies that leave entries out,
    noisy and scaled, committed before and after their originals, and thresholds a hair either
    side of the pairs' own cosines, its marks are those of the rule pair by pair, with no
    screen (``test_duplicates._reference``)."""
    gen = torch.Generator().manual_seed(100 + seed)
    marks = backwards = 0
    for case in range(3):
        # no (0, n) tensor: the reference's kept-entries rule reshapes each tensor by its rows
        shapes = {n: s for n, s in _layout(gen).items() if math.prod(s)}
        bases = [_random(shapes, gen, case + k) for k in range(4)]
        copies = [_copy_of(bases[k % 4], gen, 3 * case + k + seed) for k in range(4)]
        half = {n: t.to(torch.float16) for n, t in copies[1].items()}
        updates = [*bases, *copies, half, dict(bases[0]), _copy_of(copies[0], gen, 7)]
        entries = _round(updates, gen)
        levels = _thresholds(bases, [*copies, half])
        picked = torch.randperm(len(levels), generator=gen)[:5].tolist()
        for threshold in sorted({THRESHOLD, *(levels[k] for k in picked)}):
            for rule in _rules(threshold):
                got = dup_find(entries, rule)
                assert got == _reference(entries, rule), (case, threshold, rule)
                marks += len(got)
                backwards += _backwards(entries, got)
    assert marks and backwards  # copies were marked, some of them committed first


@pytest.mark.parametrize("compress", [False, True])
def test_find_duplicates_on_model_sized_rounds_gives_the_unscreened_rules_verdicts(
    compress: bool,
) -> None:
    """SmallCNN-sized rounds (dead units; ``topk8``-decoded at 0.05 and 0.5 or dense), with
    ``topk8`` copies, a noisy one and one zeroed by hand, each committed before and after its
    original: ``find_duplicates``' marks are the unscreened rule's, both ways round."""
    gen = torch.Generator().manual_seed(7 if compress else 8)
    bases = [_model_update(s) for s in range(60, 65)]
    honest = [_mix(bases[k], _model_update(70 + k), 0.4) for k in range(3)]
    if compress:
        honest = [_topk8(d, 0.05) for d in honest[:2]] + [_topk8(honest[2], 0.5)]
    noisy = {
        n: torch.where(t != 0, t + 1e-3 * t.abs() * torch.randn(t.shape, generator=gen), 0.0)
        for n, t in _topk8(bases[2], 0.3).items()
    }
    zeroed = {
        n: torch.where(torch.arange(t.numel()).reshape(t.shape) % 3 == 0, 0.0, t)
        for n, t in bases[3].items()
    }
    updates = [*bases, *honest, _topk8(bases[0], 0.5), _topk8(bases[1], 0.05), noisy, zeroed]
    backwards = 0
    for _ in range(2):
        entries = _round(updates, gen)
        for rule in _rules(THRESHOLD)[1::2]:  # without support_overlap: the reference's cost
            got = dup_find(entries, rule)
            assert got == _reference(entries, rule)
            if rule.either_order:  # every copy is marked, whichever was committed first
                assert {"s08", "s09", "s10", "s11"} <= set(got)
            backwards += _backwards(entries, got)
    assert backwards
