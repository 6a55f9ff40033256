"""The free-rider screen's white-noise test: a copy of a reference plus fresh Gaussian noise
(past the stale cosine) is FREE_RIDER, structured updates are not, shaped noise passes it but
not the shaped-noise test (``shaped_z``), and updates that declare DP-SGD are left to the DP
checks."""

from __future__ import annotations

import math

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import (
    duplicate_residual_z,
    free_riders,
    shaped_residual_z,
    structure_z,
)
from tests.fedtrail.valuation.noisy_inputs import plus_noise

Delta = dict[str, torch.Tensor]
SHAPES = {"conv.weight": (8, 4, 3, 3), "conv.bias": (8,), "fc.weight": (16, 200), "fc.bias": (16,)}


def _structured(gen: torch.Generator) -> Delta:
    """A structured update: each tensor low-rank with uneven row scales and its own size, the
    conv taps smooth across the kernel (as trained updates are, unlike white noise)."""
    out: Delta = {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        rows = shape[0]
        cols = math.prod(shape[1:])
        scales = torch.exp(torch.randn(rows, 1, generator=gen))
        m = scales * (torch.randn(rows, 2, generator=gen) @ torch.randn(2, cols, generator=gen))
        t = m.reshape(shape) * 10.0 ** (-k)
        if len(shape) == 4:
            t = t + torch.roll(t, 1, dims=-1) + torch.roll(t, 1, dims=-2)
        out[name] = t.contiguous()
    return out


def _screen(deltas: dict[str, Delta], refs: dict[str, Delta], **kw: object) -> dict[str, str]:
    comb = Combiner()
    args: dict[str, object] = {
        "min_norm_ratio": comb.free_rider_norm,
        "stale_cosine": comb.stale_cosine,
        "stale_distance": comb.stale_distance,
        "white_z": comb.white_noise_z,
    }
    args.update(kw)
    return free_riders(deltas, refs, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(3))
def test_copies_plus_white_noise_are_flagged_and_structured_updates_are_not(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    refs = {
        "h1's update of round 1": _structured(gen),
        "the global delta of round 1": _structured(gen),
    }
    honest = {f"h{i}": _structured(gen) for i in range(2, 5)}
    source = refs["the global delta of round 1"]
    copies = {f"white{level:g}": plus_noise(source, level, gen) for level in (0.02, 0.2, 1.0)}
    shaped = {
        f"shaped{level:g}": plus_noise(source, level, gen, shaped=True) for level in (0.02, 0.2)
    }
    got = _screen({**honest, **copies, **shaped}, refs)
    assert set(got) == set(copies)
    assert all("plus white noise" in got[c] or "white noise" in got[c] for c in copies)
    assert "the global delta of round 1 plus white noise" in got["white0.02"]
    # the same updates with the test off: only what the stale cosine sees (nothing here)
    assert _screen({**honest, **copies, **shaped}, refs, white_z=0.0) == {}


def test_pure_noise_is_flagged_without_references_unless_it_declares_dp() -> None:
    gen = torch.Generator().manual_seed(7)
    honest = {f"h{i}": _structured(gen) for i in range(3)}
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in honest["h0"].items()}
    got = _screen({**honest, "noise": noise}, {})
    assert set(got) == {"noise"} and got["noise"].startswith("white noise")
    assert _screen({**honest, "noise": noise}, {}, declared_noise={"noise"}) == {}


def test_the_statistic_is_small_for_white_noise_and_large_for_structure() -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        white = {k: torch.randn(s, generator=gen) * 0.01 for k, s in SHAPES.items()}
        assert structure_z(white) < 10.0
        assert structure_z(_structured(gen)) > 1e3
    assert structure_z({"w": torch.randn(100, generator=gen)}) == math.inf  # nothing to compare
    assert structure_z({k: torch.zeros(s) for k, s in SHAPES.items()}) == math.inf


def _reference_z(update: Delta) -> float:
    """The statistic as its docstring states it, written out plainly: every sum over a
    contiguous copy through the zero-padded 1024-wide blocks (numpy's row-by-row reduction of
    the padded ``(blocks, 1024)`` matrix) and ``math.fsum``."""
    import numpy as np

    def total(v: np.ndarray) -> float:
        v = np.ascontiguousarray(v, dtype=np.float64).ravel()
        padded = np.zeros(-(-max(v.size, 1) // 1024) * 1024)
        padded[: v.size] = v
        acc = padded.reshape(-1, 1024)[0].copy()
        for block in padded.reshape(-1, 1024)[1:]:
            acc += block
        return math.fsum(acc.tolist())

    arrays = [t.double().numpy() for t in update.values() if t.numel()]
    squares = [a * a for a in arrays]
    sums = [total(s) for s in squares]
    mean = math.fsum(sums) / sum(a.size for a in arrays)
    families = [(np.asarray(sums), np.asarray([float(a.size) for a in arrays]))]
    lines, columns = [], []
    for s in squares:
        if s.ndim >= 2:
            m = s.reshape(s.shape[0], -1)
            lines.append((np.asarray([_seq(r) for r in m]), m.shape[1]))
            columns.append((np.asarray([_seq(c) for c in m.T]), m.shape[0]))
    for group in (lines, columns):
        if group:
            values = np.concatenate([g for g, _ in group])
            sizes = np.concatenate([np.full(g.size, float(n)) for g, n in group])
            families.append((values, sizes))
    scores = []
    for groups, sizes in families:
        if groups.size >= 2:
            dispersion = math.fsum(
                ((groups - sizes * mean) ** 2 / (2.0 * sizes * mean * mean)).tolist()
            )
            spread = math.sqrt(math.fsum((2.0 + 12.0 / sizes).tolist()))
            scores.append((dispersion - groups.size) / spread)
    num, left, right, pairs = [], [], [], 0
    for a in arrays:
        if a.ndim == 4:
            for x, y in ((a[..., :-1], a[..., 1:]), (a[..., :-1, :], a[..., 1:, :])):
                x, y = x.copy(), y.copy()
                num.append(total(x * y))
                left.append(total(x * x))
                right.append(total(y * y))
                pairs += x.size
    scores.append(
        abs(math.fsum(num) / math.sqrt(math.fsum(left) * math.fsum(right))) * math.sqrt(pairs)
    )
    return max(scores)


def _seq(values: object) -> float:
    """Left-to-right float64 sum (the order of numpy's reduction over a C matrix's first axis)."""
    acc = 0.0
    for v in values:  # type: ignore[attr-defined]
        acc += float(v)
    return acc


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_statistic_is_the_plainly_written_one_bit_for_bit(dtype: torch.dtype) -> None:
    """structure_z's faster sums (padding skipped below one block, squares reused for the
    neighbours, each tensor's sum once) give the plainly written statistic's exact bits."""
    gen = torch.Generator().manual_seed(11)
    for k in range(6):
        base = (
            _structured(gen)
            if k % 2
            else {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
        )
        update = {n: (t * 10.0 ** (k - 3)).to(dtype) for n, t in base.items()}
        update["conv.weight"][0, 0] = 0.0  # zeros (and their products) on the neighbour path
        assert structure_z(update) == _reference_z(update)


@pytest.mark.parametrize("seed", range(3))
def test_copies_plus_shaped_noise_are_flagged_by_the_shaped_test_only(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    refs = {
        "h1's update of round 1": _structured(gen),
        "the global delta of round 1": _structured(gen),
    }
    honest = {f"h{i}": _structured(gen) for i in range(2, 5)}
    source = refs["the global delta of round 1"]
    shaped = {
        f"shaped{level:g}": plus_noise(source, level, gen, shaped=True) for level in (0.02, 0.2)
    }
    white = {"white0.02": plus_noise(source, 0.02, gen)}
    both = {**honest, **shaped, **white}
    got = _screen(both, refs, shaped_z=Combiner().shaped_noise_z)
    assert set(got) == set(shaped) | set(white)
    assert "plus white noise" in got["white0.02"]
    for name in shaped:
        assert got[name].startswith("a copy of the global delta of round 1 plus noise shaped")
    # off (the value terms written before it read as): shaped copies pass, as before
    assert set(_screen(both, refs, shaped_z=0.0)) == set(white)
    # the white test off, the shaped one on: it does not flag white copies' structure for them
    only = _screen(both, refs, white_z=0.0, shaped_z=1000.0)
    assert set(only) == set(shaped)
    # DP-declared updates are exempt from both
    declared = _screen(both, refs, shaped_z=1000.0, declared_noise=set(shaped) | set(white))
    assert declared == {}


def test_shaped_residual_statistic_separates_shaped_noise_from_structure() -> None:
    gen = torch.Generator().manual_seed(11)
    for _ in range(3):
        ref = _structured(gen)
        copy = plus_noise(ref, 0.05, gen, shaped=True)
        assert shaped_residual_z(copy, ref) < 10.0
        assert shaped_residual_z(_structured(gen), ref) > 1e3
    # a reference zero in a whole tensor: the copy's values there are left out, not divided by 0
    ref = _structured(gen)
    ref["fc.bias"] = torch.zeros(SHAPES["fc.bias"])
    assert shaped_residual_z(plus_noise(ref, 0.05, gen, shaped=True), ref) < 10.0
    zero = {k: torch.zeros(s) for k, s in SHAPES.items()}
    assert shaped_residual_z(ref, zero) == math.inf


def test_sparse_updates_are_left_out_of_the_shaped_test() -> None:
    """More than half of the values exactly 0 (a ``topk8`` update): honest sparse updates score
    like copies on the shaped test (their quotient is minus the scale times a sign wherever
    they are 0), so it leaves them out, copies included (the known limit)."""
    gen = torch.Generator().manual_seed(5)
    ref = _structured(gen)
    copy = plus_noise(ref, 0.05, gen, shaped=True)
    assert shaped_residual_z(copy, ref) < 10.0
    keep = {k: (torch.rand(v.shape, generator=gen) < 0.4).to(v.dtype) for k, v in ref.items()}
    sparse_ref = {k: v * keep[k] for k, v in ref.items()}
    sparse_copy = plus_noise(sparse_ref, 0.05, gen, shaped=True)
    assert shaped_residual_z(sparse_copy, sparse_ref) == math.inf
    refs = {"the global delta of round 1": sparse_ref}
    assert _screen({"copy": sparse_copy}, refs, white_z=0.0, shaped_z=1000.0) == {}
    assert set(_screen({"copy": copy}, {"g": ref}, white_z=0.0, shaped_z=1000.0)) == {"copy"}


@pytest.mark.parametrize("stop", [math.inf, 3.0, 1000.0])
def test_the_duplicate_statistic_given_the_rules_flats_is_the_same_bit_for_bit(stop: float) -> None:
    """``duplicate_residual_z(..., flats=)`` (the duplicate rule's exact float64 flats, which it
    already holds) gives the value it computes from the updates themselves, for copies plus white
    noise (below the stop), structured updates (above) and a non-contiguous tensor; flats of
    another length are refused."""
    gen = torch.Generator().manual_seed(7)
    original = _structured(gen)
    later: list[Delta] = [
        plus_noise(original, 0.3, gen),
        _structured(gen),
        {**original, "fc.weight": torch.randn(200, 16, generator=gen).t()},
    ]
    for update in later:
        flats = tuple(
            torch.cat([d[n].to(torch.float64).reshape(-1) for n in sorted(d)])
            for d in (update, original)
        )
        alone = duplicate_residual_z(update, original, stop)
        given = duplicate_residual_z(update, original, stop, flats=(flats[0], flats[1]))
        assert given == alone and math.isfinite(alone)
    with pytest.raises(ConfigError, match="flats"):
        duplicate_residual_z(original, original, stop, flats=(flats[0][1:], flats[1]))
