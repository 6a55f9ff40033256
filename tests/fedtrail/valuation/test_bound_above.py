"""The white-noise statistic's upper bound (``freeride._bound_above``), which lets the duplicate
rule settle a copy without computing its statistic exactly (issue 18): it is at least the
exact statistic on inputs built to sit at its edges (each of the four scores the largest in
turn, values that are all equal, neighbours that cancel, magnitudes far apart, a tensor of
zeros), it settles nothing it cannot bound, and the rule's verdicts are those of the exact
statistic, also at a threshold a hair above or below it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedtrail.protocol.duplicates import Entry, find_duplicates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.valuation import freeride
from fedtrail.valuation.freeride import duplicate_residual_z
from tests.fedtrail.valuation.noisy_inputs import plus_noise

Arrays = list[np.ndarray]
SHAPES = [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (64, 392), (64,), (2, 64), (2,)]
"""A small convolutional layout (the bundled SmallCNN's, its first dense layer narrower)."""
HUGE = 1e300
"""A finite stop no bound here reaches: the bound itself comes back."""


def _white(gen: np.random.Generator) -> Arrays:
    return [gen.standard_normal(s) for s in SHAPES]


def _rows_uneven(gen: np.random.Generator) -> Arrays:
    out = _white(gen)
    out[4] = out[4] * np.linspace(0.9, 1.1, 64)[:, None]
    return out


def _columns_uneven(gen: np.random.Generator) -> Arrays:
    out = _white(gen)
    out[4] = out[4] * np.linspace(0.7, 1.3, 392)[None, :]
    return out


def _tensors_uneven(gen: np.random.Generator) -> Arrays:
    return [gen.standard_normal(s) * (1.0 + 0.1 * k) for k, s in enumerate(SHAPES)]


def _smooth_taps(gen: np.random.Generator) -> Arrays:
    """Neighbouring conv taps correlated (the neighbours' score the largest)."""
    out = _white(gen)
    for k in (0, 2):
        t = out[k]
        out[k] = np.ascontiguousarray(t + 0.3 * np.roll(t, 1, axis=-1))
    return out


def _anti_taps(gen: np.random.Generator) -> Arrays:
    """Neighbouring conv taps anti-correlated: a negative sum of products."""
    out = _white(gen)
    for k in (0, 2):
        t = out[k]
        out[k] = np.ascontiguousarray(t - 0.3 * np.roll(t, 1, axis=-1))
    return out


def _cancelling_taps(gen: np.random.Generator) -> Arrays:
    """A checkerboard of magnitudes 1e6 and 1e-6 in the conv taps: products of all one
    magnitude and alternating sign, whose real sum is 0 and whose float sums depend on their
    order."""
    out = _white(gen)
    for k in (0, 2):
        s = SHAPES[k]
        sign = np.indices(s)[-1] + np.indices(s)[-2]
        big = np.where(sign % 2 == 0, 1e6, 1e-6)
        out[k] = np.ascontiguousarray(big * np.where(gen.random(s) < 0.5, -1.0, 1.0))
    return out


def _constant(gen: np.random.Generator) -> Arrays:
    """Every value the same: every group's sum of squares is its size times the mean (exactly
    in the fixed order, so the exact scores sit at their lowest, negative)."""
    return [np.full(s, 0.1) for s in SHAPES]


def _far_apart(gen: np.random.Generator) -> Arrays:
    """Tensors of magnitudes 1e-60 to 1e60 (within the bound's range of mean squares)."""
    return [gen.standard_normal(s) * 10.0 ** (60 - 17 * k) for k, s in enumerate(SHAPES)]


def _one_tensor_of_zeros(gen: np.random.Generator) -> Arrays:
    out = _white(gen)
    out[4] = np.zeros(SHAPES[4])
    return out


def _near_white_with_spikes(gen: np.random.Generator) -> Arrays:
    out = _white(gen)
    out[4] = out[4].copy()
    out[4][3, 7] = 40.0
    out[2] = out[2].copy()
    out[2][0, 0, 1, 1] = -25.0
    return out


CASES: list[Callable[[np.random.Generator], Arrays]] = [
    _white,
    _rows_uneven,
    _columns_uneven,
    _tensors_uneven,
    _smooth_taps,
    _anti_taps,
    _cancelling_taps,
    _constant,
    _far_apart,
    _one_tensor_of_zeros,
    _near_white_with_spikes,
]


def _exact(arrays: Arrays) -> float:
    return freeride._structure({f"t{k}": a for k, a in enumerate(arrays)})


def _unit(arrays: Arrays) -> Arrays:
    """Each array over the square root of its mean square, as ``duplicate_residual_z`` scales
    its residual's tensors (its fixed-order sum)."""
    out = []
    for a in arrays:
        mean = freeride.deterministic_sum(np.multiply(a, a).ravel()) / a.size
        out.append(np.divide(a, math.sqrt(mean)) if 0 < mean < math.inf else a)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
@pytest.mark.parametrize("seed", range(3))
def test_the_bound_is_at_least_the_exact_statistic_and_close_to_it(
    case: Callable[[np.random.Generator], Arrays], seed: int
) -> None:
    arrays = case(np.random.default_rng(seed))
    for unit in (False, True):
        exact = _exact(_unit(arrays) if unit else arrays)
        above = freeride._bound_above(arrays, HUGE, unit=unit)
        if unit and case is _one_tensor_of_zeros:
            assert above == math.inf  # a tensor's mean square of 0: not settled
            continue
        assert math.isfinite(exact) and above >= exact, (case.__name__, unit, above, exact)
        assert above - exact <= 1e-3 * (1.0 + abs(exact)), (case.__name__, unit, above, exact)


def test_the_cases_are_far_from_white_noise_where_they_say() -> None:
    """Uneven rows, uneven columns and correlated taps each score well above white noise of
    the same layout (so each is an edge of the bound, not noise around 0)."""
    white = _exact(_white(np.random.default_rng(1)))
    for case in (_rows_uneven, _columns_uneven, _smooth_taps, _anti_taps, _tensors_uneven):
        exact = _exact(case(np.random.default_rng(0)))
        assert exact > 5 * max(white, 1.0), (case.__name__, exact, white)


def test_nothing_is_settled_at_or_above_the_stop() -> None:
    arrays = _rows_uneven(np.random.default_rng(0))
    exact = _exact(arrays)
    above = freeride._bound_above(arrays, HUGE)
    assert freeride._bound_above(arrays, above) == math.inf
    assert freeride._bound_above(arrays, exact) == math.inf
    assert freeride._bound_above(arrays, above * (1 + 1e-12)) == above
    # outside the range of mean squares it bounds: not settled
    assert freeride._bound_above([a * 1e-75 for a in arrays], HUGE) == math.inf
    assert freeride._bound_above([a * 1e75 for a in arrays], HUGE) == math.inf
    assert freeride._bound_above([np.asfortranarray(a) for a in arrays[4:5]] * 2, HUGE) in (
        math.inf,
        freeride._bound_above([np.ascontiguousarray(a) for a in arrays[4:5]] * 2, HUGE),
    )


def _structured(gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for k, s in enumerate(SHAPES):
        t = torch.randn(s, generator=gen) * (1.0 + k)
        if len(s) == 4:
            t = t + torch.roll(t, 1, dims=-1)
        out[f"t{k}"] = t.contiguous()
    return out


def _flats(
    later: dict[str, torch.Tensor], earlier: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = (torch.cat([d[n].double().reshape(-1) for n in sorted(d)]) for d in (later, earlier))
    return a, b


@pytest.mark.parametrize("level", [0.05, 0.3, 1.0])
def test_the_rules_verdict_is_the_exact_statistics_even_a_hair_from_the_threshold(
    level: float,
) -> None:
    """``exact=False`` returns a value below the stop exactly when the statistic is below it:
    at stops a relative 1e-9 above and below each copy's exact statistic (where the bound,
    with its room, cannot settle it) and far from it; a value it returns below the stop is at
    least the statistic."""
    gen = torch.Generator().manual_seed(3)
    original = _structured(gen)
    for _ in range(3):
        later = plus_noise(original, level, gen)
        flats = _flats(later, original)
        z = duplicate_residual_z(later, original, flats=flats)
        assert math.isfinite(z)
        for stop in (z * (1 + 1e-9), z * (1 - 1e-9), z + 1.0, z + 100.0, 1000.0):
            quick = duplicate_residual_z(later, original, stop, flats=flats, exact=False)
            assert (quick < stop) == (z < stop), (z, stop, quick)
            if quick < stop:
                assert quick >= z
        # far from it, the bound does settle it (the cut is taken)
        settled = duplicate_residual_z(later, original, z + 100.0, flats=flats, exact=False)
        assert settled != z and settled < z + 100.0


def test_the_duplicate_rules_marks_are_those_of_the_exact_statistic() -> None:
    """``find_duplicates`` with the bound (it asks ``exact=False``) marks the same copies as
    with the statistic computed exactly for every update: copies at several noise levels and
    structured updates, at the default threshold and at thresholds set between the copies'
    exact statistics."""
    gen = torch.Generator().manual_seed(5)
    original = _structured(gen)
    deltas = [original] + [plus_noise(original, lv, gen) for lv in (0.05, 0.2, 0.5, 1.0, 2.0)]
    deltas += [_structured(gen) for _ in range(2)]
    zs = sorted(duplicate_residual_z(d, original) for d in deltas[1:6])
    calls = {"bound": 0, "exact": 0}

    def exact_only(*args: object, exact: bool = True, **kw: object) -> float:
        calls["exact"] += 1
        return duplicate_residual_z(*args, **kw)  # type: ignore[arg-type]

    def counted(*args: object, **kw: object) -> float:
        calls["bound"] += 1
        assert kw.get("exact") is False
        return duplicate_residual_z(*args, **kw)  # type: ignore[arg-type]

    entries = [
        Entry(site=f"s{k}", sha256=f"{k:064x}", commit_order=k, delta=d, noise_declared=False)
        for k, d in enumerate(deltas)
    ]
    thresholds = [1000.0] + [(a + b) / 2 for a, b in itertools.pairwise(zs)]
    for z in thresholds:
        rule = DuplicateRule(cosine=1.0, scaled_cosine=None, white_noise_z=z, shared_tensor=None)
        quick = find_duplicates(entries, rule, whiteness=counted)
        slow = find_duplicates(entries, rule, whiteness=exact_only)
        assert quick == slow
    assert calls["bound"] == calls["exact"] > 0
    marked = find_duplicates(
        entries,
        DuplicateRule(cosine=1.0, scaled_cosine=None, white_noise_z=1000.0, shared_tensor=None),
        whiteness=counted,
    )
    assert set(marked) >= {"s1", "s2", "s3"}


def test_an_originals_sum_of_squares_is_taken_once_for_its_copies() -> None:
    """One original with four noisy copies (the bench's round in small): the duplicate rule
    hands the white-noise statistic the original's ``dot(r, r)`` (``earlier_squares``), the same
    bits as the statistic's own :func:`~fedtrail.ml.aggregation.deterministic_dot`, and takes
    it once for all four (before, each copy's statistic took it again); the marks are those of
    the statistic taking it itself, and the statistic's value is unchanged by it."""
    from fedtrail.ml.aggregation import deterministic_dot
    from fedtrail.protocol import duplicates

    gen = torch.Generator().manual_seed(11)
    original = _structured(gen)
    deltas = [original] + [plus_noise(original, lv, gen) for lv in (0.05, 0.2, 0.5, 1.0)]
    entries = [
        Entry(site=f"s{k}", sha256=f"{k:064x}", commit_order=k, delta=d, noise_declared=False)
        for k, d in enumerate(deltas)
    ]
    r = duplicates._flat(original).numpy()
    want = deterministic_dot(r, r)
    given: list[float | None] = []

    def recording(*args: object, **kw: object) -> float:
        given.append(kw.get("earlier_squares"))  # type: ignore[arg-type]
        return duplicate_residual_z(*args, **kw)  # type: ignore[arg-type]

    def without(*args: object, earlier_squares: object = None, **kw: object) -> float:
        return duplicate_residual_z(*args, **kw)  # type: ignore[arg-type]

    taken: list[int] = []
    plain_sum = duplicates.deterministic_sum

    def counted_sum(v: np.ndarray) -> float:
        taken.append(v.size)
        return plain_sum(v)

    rule = DuplicateRule(cosine=1.0, scaled_cosine=None, white_noise_z=1000.0, shared_tensor=None)
    duplicates.deterministic_sum = counted_sum  # type: ignore[assignment]
    try:
        marked = find_duplicates(entries, rule, whiteness=recording)
    finally:
        duplicates.deterministic_sum = plain_sum
    assert len(given) == 4 and all(g is not None for g in given), given
    assert all(np.float64(g).tobytes() == np.float64(want).tobytes() for g in given), (given, want)
    assert taken.count(r.size) == 1, taken
    assert marked == find_duplicates(entries, rule, whiteness=without)
    assert set(marked) == {"s1", "s2", "s3", "s4"}, marked
    later = deltas[3]
    assert duplicate_residual_z(later, original, earlier_squares=want) == duplicate_residual_z(
        later, original
    )
