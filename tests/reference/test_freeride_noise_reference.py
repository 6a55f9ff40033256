"""The README's white-noise, shaped-noise and DP-copy tests of the free-rider screen
(*Free-riders and stale copies*), as ``scripts/independent/reader.py`` implements them from the
README's text alone (numpy, no fedtrail), against fedtrail.valuation.freeride: the statistics
must be the same bits and the verdicts the same. Misreadings (rows summed pairwise, the
statistic without the neighbour score) must differ, so the comparison can fail."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest
import torch

from fedtrail.valuation.freeride import (
    block_ceiling,
    block_z_of,
    dp_copy_statistic,
    duplicate_residual_z,
    free_riders,
    shaped_residual_z,
    structure_z,
)

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
SPEC = {"arch": "smallcnn", "hidden": 64, "image_size": 28, "in_channels": 1, "num_classes": 2}
F32 = npt.NDArray[np.float32]


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()
LAYOUT: list[tuple[str, list[int]]] = R.readme_layout()({**SPEC, "width": 16})


def _update(rng: np.random.Generator, scale: float, structured: bool) -> dict[str, F32]:
    out: dict[str, F32] = {}
    for name, shape in LAYOUT:
        a = rng.standard_normal(shape).astype(np.float32) * np.float32(scale)
        if structured and len(shape) >= 2:  # each row its own variance, as trained weights
            rows = rng.standard_normal([shape[0]] + [1] * (len(shape) - 1)).astype(np.float32)
            a = a * (np.float32(1) + np.float32(3) * np.abs(rows))
        out[name] = a
    return out


def _wide(u: dict[str, F32]) -> dict[str, npt.NDArray[np.float64]]:
    return {k: v.astype(np.float64) for k, v in u.items()}


def _flat(u: dict[str, F32]) -> npt.NDArray[np.float64]:
    return np.concatenate([u[name].astype(np.float64).ravel() for name, _ in LAYOUT])


def _torch(u: dict[str, F32]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in u.items()}


@pytest.mark.parametrize("structured", [False, True])
def test_structure_is_the_same_bits(structured: bool) -> None:
    u = _update(np.random.default_rng(1), 0.01, structured)
    assert R.structure(_wide(u)) == structure_z(_torch(u))


def test_shaped_residual_is_the_same_bits() -> None:
    rng = np.random.default_rng(2)
    ref = _update(rng, 0.01, True)
    copy = {
        k: (
            v * np.float32(0.7) + np.float32(0.05) * np.abs(v) * rng.standard_normal(v.shape)
        ).astype(np.float32)
        for k, v in ref.items()
    }
    x, r = _flat(copy), _flat(ref)
    scale = R.block_sum(x * r) / R.block_sum(r * r)
    residual = {k: v - scale * _wide(ref)[k] for k, v in _wide(copy).items()}
    mine = R.shaped(residual, _wide(ref), _wide(copy))
    assert mine == shaped_residual_z(_torch(copy), _torch(ref))
    assert mine < 1000  # the shaped copy is one by the README's rule


def test_dp_copy_statistic_is_the_same_bits() -> None:
    rng = np.random.default_rng(3)
    refs = [_flat(_update(rng, 0.01, True)) for _ in range(3)]
    copy = refs[1] * 0.5 + 0.01 * rng.standard_normal(refs[1].size)
    fresh = 0.01 * rng.standard_normal(refs[1].size)
    for x in (copy, fresh):
        assert R.dp_copy_z(x, refs) == dp_copy_statistic(x, refs)[0]
    assert R.dp_copy_z(copy, refs) > 60 > R.dp_copy_z(fresh, refs)


def test_verdicts_match_the_screen() -> None:
    """Honest-looking updates, a copy plus white noise and a copy plus shaped noise through
    the README's rule and through free_riders: the same sites flagged."""
    rng = np.random.default_rng(4)
    ref = _update(rng, 0.01, True)
    honest = {f"0x{i:040x}": _update(rng, 0.01, True) for i in (1, 2, 3)}
    white = {
        k: (v + np.float32(0.02) * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in ref.items()
    }
    shaped = {
        k: (v + np.float32(0.2) * np.abs(v) * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in ref.items()
    }
    sites = {**honest, "0x" + "4" * 40: white, "0x" + "5" * 40: shaped}
    cc = {
        "free_rider_norm": 0.01,
        "stale_cosine": 0.99999,
        "stale_distance": 1e6,
        "tiny_size_power": 0.0,
        "white_noise_z": 1000.0,
        "shaped_noise_z": 1000.0,
    }
    theirs = free_riders(
        {s: _torch(u) for s, u in sites.items()},
        {"the global delta of round 1": _torch(ref)},
        min_norm_ratio=0.01,
        stale_cosine=0.99999,
        stale_distance=1e6,
        white_z=1000.0,
        shaped_z=1000.0,
    )
    order = sorted(sites, key=lambda a: int(a, 16))
    mine, _ = R.free_rider_rule(
        order,
        {s: _flat(sites[s]) for s in order},
        [("the global delta of round 1", _flat(ref))],
        {s: 1 for s in order},
        cc,
        0.0,
        str,
        tensors={s: _wide(sites[s]) for s in order},
        ref_tensors=[_wide(ref)],
    )
    assert set(mine) == set(theirs)
    assert "0x" + "4" * 40 in mine and "0x" + "5" * 40 in mine
    assert not set(honest) & set(mine)


def test_misreadings_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows summed pairwise (numpy's default) instead of one value after another, or the shaped
    test's quotient with its absent positions counted as values, give other bits."""
    rng = np.random.default_rng(5)
    u = _update(rng, 0.01, True)
    exact = structure_z(_torch(u))
    with monkeypatch.context() as m:
        m.setattr(R, "seq_rows", lambda mat, axis: mat.sum(axis=axis))
        pairwise = R.structure(_wide(u))
    assert pairwise != exact and math.isfinite(exact)
    ref = _wide(_update(rng, 0.01, True))
    ref["conv1.weight"][0] = 0.0  # absent positions: the reference is 0 there
    x = {k: v * 0.5 + 0.01 * rng.standard_normal(v.shape) for k, v in ref.items()}
    residual = {k: v - 0.5 * ref[k] for k, v in x.items()}
    ratios = {
        k: np.divide(v, np.abs(ref[k]), out=np.zeros_like(v), where=ref[k] != 0)
        for k, v in residual.items()
    }
    assert R.shaped(residual, ref, x) != R.structure(ratios)


def _top(u: dict[str, F32], fraction: float, rng: np.random.Generator, level: float) -> dict:
    """Each tensor's largest ``fraction`` of entries kept (the rest 0), plus Gaussian noise of
    ``level`` times each kept value's tensor RMS on the kept entries."""
    out = {}
    for k, v in u.items():
        flat = v.ravel()
        n = max(1, math.ceil(fraction * flat.size))
        keep = np.argsort(-np.abs(flat), kind="stable")[:n]
        t = np.zeros_like(flat)
        rms = float(np.sqrt(np.mean(flat[keep].astype(np.float64) ** 2)))
        t[keep] = flat[keep] + np.float32(level * rms) * rng.standard_normal(n).astype(np.float32)
        out[k] = t.reshape(v.shape)
    return out


def test_kept_entries_verdicts_match_the_screen() -> None:
    """A reference resent sparse with noise on its kept values (a93 ``stale``) and honest sparse
    updates, through the README's ``stale_support_overlap`` rule (the reader) and through
    free_riders: the same sites flagged, the copy among them, and none with the test off."""
    rng = np.random.default_rng(7)
    ref = _update(rng, 0.01, True)
    honest = {f"0x{i:040x}": _top(_update(rng, 0.01, True), 0.05, rng, 0.0) for i in (1, 2)}
    near = {k: v + np.float32(0.5) * _update(rng, 0.01, True)[k] for k, v in ref.items()}
    honest["0x" + "3" * 40] = _top(near, 0.05, rng, 0.0)  # along the reference, other data
    copy = _top(ref, 0.05, rng, 0.1)
    sites = {**honest, "0x" + "4" * 40: copy}
    order = sorted(sites, key=lambda a: int(a, 16))
    label = "the global delta of round 1"
    for overlap in (0.99, 1.0):
        cc = {
            "free_rider_norm": 0.01,
            "stale_cosine": 0.99999,
            "stale_distance": 1e6,
            "tiny_size_power": 0.0,
            "stale_support_cosine": 0.999995,
            "stale_support_overlap": overlap,
        }
        theirs = free_riders(
            {s: _torch(u) for s, u in sites.items()},
            {label: _torch(ref)},
            min_norm_ratio=0.01,
            stale_cosine=0.99999,
            stale_distance=1e6,
            stale_support_cosine=0.999995,
            stale_support_overlap=overlap,
        )
        mine, _ = R.free_rider_rule(
            order,
            {s: _flat(sites[s]) for s in order},
            [(label, _flat(ref))],
            {s: 1 for s in order},
            cc,
            0.0,
            str,
            tensors={s: _wide(sites[s]) for s in order},
            ref_tensors=[_wide(ref)],
        )
        assert set(mine) == set(theirs)
        assert set(mine) == ({"0x" + "4" * 40} if overlap < 1 else set())


def _per_tensor_noise(u: dict[str, F32], level: float, rng: np.random.Generator) -> dict[str, F32]:
    """a1's ``noise`` copy: Gaussian noise of ``level`` times each tensor's std."""
    return {
        k: (v + np.float32(level * float(v.std())) * rng.standard_normal(v.shape)).astype(
            np.float32
        )
        for k, v in u.items()
    }


def test_duplicate_white_residual_is_the_same_bits() -> None:
    """README *Duplicates*' ``white_noise_z`` statistic, the reader's and the product's, on a
    structured pair, a copy plus noise of each tensor's std, and pairs it does not apply to
    (pointing away, a zero earlier update)."""
    rng = np.random.default_rng(7)
    a, b = _update(rng, 0.01, True), _update(rng, 0.01, True)
    copy = _per_tensor_noise(a, 0.01, rng)
    mixed = {k: (v + np.float32(0.3) * b[k]).astype(np.float32) for k, v in a.items()}
    away = {k: -v for k, v in a.items()}
    zero = {k: np.zeros_like(v) for k, v in a.items()}
    for later, earlier in ((copy, a), (mixed, a), (b, a), (a, copy), (away, a), (a, zero)):
        ours = duplicate_residual_z(_torch(later), _torch(earlier))
        assert R.white_residual(_wide(earlier), _wide(later)) == ours
    assert duplicate_residual_z(_torch(copy), _torch(a)) < 10
    assert duplicate_residual_z(_torch(away), _torch(a)) == math.inf


@pytest.mark.parametrize("dp_cosine", [None, 0.5, 0.9])
def test_duplicate_copies_with_white_noise_z_match_the_product(dp_cosine: float | None) -> None:
    """The reader's duplicate rule with ``white_noise_z`` decides a round as find_duplicates:
    the noisy copy is a DUPLICATE of the earlier update; one that declares DP-SGD only under
    terms with ``white_noise_dp_cosine`` (a100) below its cosine to the original (0.9985 for
    ``c``, about 0.71 for ``e``, noise as long as ``a``), and never under terms without it."""
    from fedtrail.protocol.duplicates import Entry, find_duplicates
    from fedtrail.protocol.terms import DuplicateRule

    rng = np.random.default_rng(8)
    a, b = _update(rng, 0.01, True), _update(rng, 0.01, True)
    size = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in a.values()))
    width = sum(v.size for v in a.values())
    loud = {
        k: (v + np.float32(size / math.sqrt(width)) * rng.standard_normal(v.shape)).astype(
            np.float32
        )
        for k, v in a.items()
    }
    ups = {
        "a": a,
        "b": b,
        "c": _per_tensor_noise(a, 0.05, rng),
        "d": _per_tensor_noise(b, 0.2, rng),
        "e": loud,
    }
    rule = DuplicateRule(white_noise_dp_cosine=dp_cosine)
    dup = rule.to_json()
    assert ("white_noise_dp_cosine" in dup) is (dp_cosine is not None)
    items = [(s, f"{i:064x}", _wide(u)) for i, (s, u) in enumerate(ups.items())]
    for noisy in (frozenset(), frozenset({"c", "e"})):
        entries = [
            Entry(s, i + 1, f"{i:064x}", _torch(u), noise_declared=s in noisy)
            for i, (s, u) in enumerate(ups.items())
        ]
        ours = find_duplicates(entries, rule, whiteness=duplicate_residual_z)
        assert R.duplicate_copies(items, dup, noisy) == ours
        everything = {"c": "a", "d": "b", "e": "a"}
        if not noisy:
            assert ours == everything
        elif dp_cosine is None:
            assert ours == {"d": "b"}
        elif dp_cosine == 0.5:
            assert ours == everything
        else:
            assert ours == {"c": "a", "d": "b"}


def test_duplicate_copies_with_shared_tensor_match_the_product() -> None:
    """The reader's duplicate rule with ``shared_tensor`` (README *Duplicates*) decides a round
    as find_duplicates: a copy with noise on every tensor but one and a mix of an original's
    tensor with other training are copies of that original (with the test, not without), and so
    is one whose kept tensor is a float32 step or noise of 1e-4 of its std away (within relative
    L2 1e-3); an update sharing only an all-zero tensor or one below 16 entries, or whose kept
    tensor has noise of 3e-3 of its std, is not."""
    from fedtrail.protocol.duplicates import Entry, find_duplicates
    from fedtrail.protocol.terms import DuplicateRule

    rng = np.random.default_rng(12)
    a, b, c = (_update(rng, 0.01, True) for _ in range(3))
    names = sorted(a)
    big = max(names, key=lambda n: a[n].size)
    small = min(names, key=lambda n: a[n].size)
    assert a[small].size < 16 <= a[big].size
    noisy = _per_tensor_noise(a, 0.05, rng)
    a[names[0]] = np.zeros_like(a[names[0]])  # a frozen layer in a
    ups = {
        "a": a,
        "b": b,
        "keep": {k: a[k] if k == big else v for k, v in noisy.items()},
        "mix": {k: a[k] if k == big else v for k, v in c.items()},
        "zero": {
            k: a[k] if k in (names[0], small) else v for k, v in _update(rng, 0.01, True).items()
        },
        "step": {
            k: np.nextafter(a[k], np.float32(np.inf)) if k == big else v
            for k, v in _update(rng, 0.01, True).items()
        },
        "near": {
            k: (a[k] + 1e-4 * a[k].std() * rng.standard_normal(a[k].shape)).astype(np.float32)
            if k == big
            else v
            for k, v in _update(rng, 0.01, True).items()
        },
        "far": {
            k: (a[k] + 3e-3 * a[k].std() * rng.standard_normal(a[k].shape)).astype(np.float32)
            if k == big
            else v
            for k, v in _update(rng, 0.01, True).items()
        },
    }
    items = [(s, f"{i:064x}", _wide(u)) for i, (s, u) in enumerate(ups.items())]
    entries = [Entry(s, i + 1, f"{i:064x}", _torch(u)) for i, (s, u) in enumerate(ups.items())]
    # white_noise_z off: these random updates' residuals are white (its own test above)
    for rule in (
        DuplicateRule(white_noise_z=None),
        DuplicateRule(white_noise_z=None, shared_tensor=0),
        DuplicateRule(white_noise_z=None, shared_tensor=None),
    ):
        ours = find_duplicates(entries, rule, whiteness=duplicate_residual_z)
        assert R.duplicate_copies(items, rule.to_json()) == ours
        copies = {"keep": "a", "mix": "a", "step": "a", "near": "a"}
        assert ours == (copies if rule.shared_tensor else {})


def test_the_shared_tensor_threshold_matches_the_product_at_its_edge() -> None:
    """README *Duplicates*: ``d2 < 1e-6 * n2`` with *Flattening and sums* sums, the earlier
    update's tensor as ``a``. 16 entries of 125/512 and one entry 2**-10 away sit exactly at the
    threshold (not a copy, in the reader and the product), one float32 step closer below it;
    a tensor of 3,000 entries (blocks of 1024, the last padded) nudged near the edge decides
    the same in both; 15 nonzero entries are below the floor."""
    from fedtrail.protocol.duplicates import shared_tensor

    def both(a: np.ndarray, b: np.ndarray) -> bool:
        ours = shared_tensor({"z": torch.from_numpy(a)}, {"z": torch.from_numpy(b)}) == "z"
        assert R.near_tensor(a, b) == ours
        return ours

    a = np.full(16, 125 / 512, dtype=np.float32)
    at = a.copy()
    at[0] = np.float32(125 / 512 + 2**-10)
    closer = at.copy()
    closer[0] = np.nextafter(at[0], np.float32(0))
    assert not both(a, at)
    assert both(a, closer)
    assert both(at, a)  # relative to the earlier tensor's norm
    rng = np.random.default_rng(13)
    big = rng.standard_normal(3000).astype(np.float32)
    norm = float(np.sqrt(np.sum(big.astype(np.float64) ** 2)))
    seen = set()
    for scale in (0.9995e-3, 0.9999e-3, 1.0001e-3, 1.0005e-3):
        step = rng.standard_normal(3000)
        moved = (big + scale * norm * step / np.linalg.norm(step)).astype(np.float32)
        seen.add(both(big, moved))
    assert seen == {True, False}
    thin = a.copy()
    thin[3] = 0.0
    assert not both(thin, thin.copy())


@pytest.mark.parametrize("levels", [1, 2])
def test_a_reference_of_equal_magnitudes_flags_no_honest_sparse_update(levels: int) -> None:
    """a98 ``stale``: a reference whose magnitudes are equal in each tensor (and, for two
    levels, 0.02 on every 50th entry) had every entry at its k-th largest, so with ties counted
    whole every honest sparse update scored 1 against it. The README's rule (the reader) and
    free_riders: none flagged by the kept-entries test, and a noisy sparse copy of a real
    reference still is."""
    rng = np.random.default_rng(11)
    real = _update(rng, 0.01, True)
    frame = {}
    for k, v in _update(rng, 0.01, True).items():
        mag = np.full(v.shape, 0.01, dtype=np.float32)
        if levels == 2:
            mag.reshape(-1)[::50] = 0.02
        frame[k] = (mag * np.sign(v)).astype(np.float32)
    sites = {f"0x{i:040x}": _top(_update(rng, 0.01, True), 0.05, rng, 0.0) for i in (1, 2, 3)}
    sites["0x" + "4" * 40] = _top(real, 0.05, rng, 0.1)
    order = sorted(sites, key=lambda a: int(a, 16))
    labels = ["a frame of round 1", "an update of round 1"]
    cc = {
        "free_rider_norm": 0.01,
        "stale_cosine": 0.99999,
        "stale_distance": 1e6,
        "tiny_size_power": 0.0,
        "stale_support_cosine": 0.999995,
        "stale_support_overlap": 0.99,
    }
    theirs = free_riders(
        {s: _torch(u) for s, u in sites.items()},
        {labels[0]: _torch(frame), labels[1]: _torch(real)},
        min_norm_ratio=0.01,
        stale_cosine=0.99999,
        stale_distance=1e6,
        stale_support_cosine=0.999995,
        stale_support_overlap=0.99,
    )
    mine, _ = R.free_rider_rule(
        order,
        {s: _flat(sites[s]) for s in order},
        [(labels[0], _flat(frame)), (labels[1], _flat(real))],
        {s: 1 for s in order},
        cc,
        0.0,
        str,
        tensors={s: _wide(sites[s]) for s in order},
        ref_tensors=[_wide(frame), _wide(real)],
    )
    assert set(mine) == set(theirs) == {"0x" + "4" * 40}


def test_the_readers_sparse_tests_are_the_products_at_the_edges() -> None:
    """README's *sparse* (both places the reader reads it: the kept-entries rule and the
    shaped test) against the product's one ``duplicates.sparse``, at the edges: exactly half
    zeros, one more, 1-D and 0-D tensors counted whole, all-zero and empty matrices (a
    (0, n) tensor used to raise in the reader; it holds no value) and dead rows and columns."""
    from fedtrail.protocol.duplicates import sparse

    block = np.zeros((6, 6), np.float32)
    block[1:4, 2:5] = np.eye(3, dtype=np.float32)
    cases: list[dict[str, F32]] = [
        {"w": np.array([[1, 0], [0, 1]], np.float32)},
        {"w": np.eye(3, dtype=np.float32)},
        {"b": np.array([0, 0, 1], np.float32)},
        {"b": np.array([0, 1], np.float32)},
        {"s": np.array(0.0, np.float32), "b": np.array([0, 1], np.float32)},
        {"w": np.zeros((4, 3), np.float32), "e": np.zeros((0, 5), np.float32)},
        {"w": np.zeros((5, 0), np.float32), "b": np.array([0, 0, 1], np.float32)},
        {"w": block, "e": np.zeros((0, 5), np.float32)},
    ]
    for case in cases:
        product = sparse({k: torch.from_numpy(v) for k, v in case.items()})
        assert R.sparse_update(case) == product, case
        assert R.sparse(case) == product, case


def _low_rank(rng: np.random.Generator) -> dict[str, F32]:
    """An update whose rows share two directions (as trained ones do), per tensor scaled."""
    out: dict[str, F32] = {}
    for k, (name, shape) in enumerate(LAYOUT):
        size = np.float32(10.0 ** (-k % 3))
        if len(shape) < 2:
            out[name] = (rng.standard_normal(shape) * size).astype(np.float32)
            continue
        rows, cols = shape[0], int(np.prod(shape[1:]))
        m = rng.standard_normal((rows, 2)) @ rng.standard_normal((2, cols))
        m = m + 0.3 * rng.standard_normal((rows, cols))
        out[name] = (m.reshape(shape) * size).astype(np.float32)
    return out


def test_block_statistic_is_the_same_bits_and_verdicts_match() -> None:
    """The README's block-noise test (``block_noise_z``) in the reader and in free_riders:
    the same statistic bit for bit, the same sites flagged (noise profiled per tensor on a
    public update, a120; updates whose rows share directions are not)."""
    rng = np.random.default_rng(6)
    public = _low_rank(rng)
    honest = {f"0x{i:040x}": _low_rank(rng) for i in (1, 2, 3)}
    rider = {
        k: (rng.standard_normal(v.shape) * np.sqrt(np.mean(v.astype(np.float64) ** 2))).astype(
            np.float32
        )
        for k, v in public.items()
    }
    for u in (*honest.values(), rider):
        assert R.block_statistic(_wide(u)) == block_z_of(_torch(u))
    # a tensor's last pair of rows alone with 30 kernels: the blocks added in order on both
    # sides (the product's numpy sum of that one row was pairwise before h-244)
    lone = {"c": rng.standard_normal((2, 30, 3, 3))}
    assert R.block_statistic(lone) == block_z_of({"c": torch.from_numpy(lone["c"])})
    # noise only where the test does not read (one block a row, 1-D), the rest zero: 0 on
    # both sides (inf before h-244); nothing to read at all: inf; the layout's ceiling the same
    unread = {
        "c": rng.standard_normal((4, 1, 3, 3)),
        "b": rng.standard_normal(4),
        "f": np.zeros((4, 20)),
    }
    assert R.block_statistic(unread) == block_z_of(_torch(unread)) == 0.0
    del unread["f"]
    assert R.block_statistic(unread) == block_z_of(_torch(unread)) == math.inf
    for u in (public, lone):
        assert R.block_ceiling(u) == block_ceiling(v.shape for v in u.values())
    assert R.block_statistic(_wide(rider)) < 8 < R.block_statistic(_wide(public))
    sites = {**honest, "0x" + "4" * 40: rider}
    cc = {
        "free_rider_norm": 0.01,
        "stale_cosine": 0.99999,
        "stale_distance": 1e6,
        "tiny_size_power": 0.0,
        "white_noise_z": 0.0,
        "block_noise_z": 8.0,
    }
    theirs = free_riders(
        {s: _torch(u) for s, u in sites.items()},
        {},
        min_norm_ratio=0.01,
        stale_cosine=0.99999,
        stale_distance=1e6,
        block_z=8.0,
    )
    order = sorted(sites, key=lambda a: int(a, 16))
    mine, _ = R.free_rider_rule(
        order,
        {s: _flat(sites[s]) for s in order},
        [],
        {s: 1 for s in order},
        cc,
        0.0,
        str,
        tensors={s: _wide(sites[s]) for s in order},
        ref_tensors=[],
    )
    assert set(mine) == set(theirs) == {"0x" + "4" * 40}


def test_span_verdicts_match_the_screen() -> None:
    """The span test (``span_residual``, h-264) through the README's rule and through
    free_riders: mixtures of the references (two sites' updates, two global deltas, three
    references with signs) flagged by both, updates with fresh training by neither, and the
    reader's statistic the product's within the float solve's error."""
    from fedtrail.valuation.freeride import span_residuals
    from fedtrail.valuation.rows import Rows

    rng = np.random.default_rng(7)
    prev = [_update(rng, 0.01, True) for _ in range(3)]
    glob = {k: ((prev[0][k] + prev[1][k] + prev[2][k]) / np.float32(3)) for k in prev[0]}
    older = {
        k: (v * np.float32(0.5)).astype(np.float32) for k, v in _update(rng, 0.01, True).items()
    }
    labels = [f"0x{s + 1:040x}'s update of round 2" for s in range(3)]
    labels += ["the global delta of round 2", "the global delta of round 1"]
    refs = [*prev, glob, older]

    def lin(*terms: tuple[float, dict[str, F32]]) -> dict[str, F32]:
        return {
            k: sum(np.float32(c) * d[k] for c, d in terms).astype(np.float32)  # type: ignore[union-attr]
            for k in terms[0][1]
        }

    sites = {
        f"0x{s + 1:040x}": lin((0.6, prev[s]), (1.0, _update(rng, 0.01, True))) for s in range(3)
    }
    sites["0x" + "4" * 40] = lin((0.5, prev[0]), (0.5, prev[1]))
    sites["0x" + "5" * 40] = lin((1.0, glob), (1.0, older))
    sites["0x" + "6" * 40] = lin((0.3, prev[2]), (-0.2, older), (0.7, glob))
    cc = {"free_rider_norm": 0.01, "stale_cosine": 0.99999, "stale_distance": 1e6}
    cc["span_residual"] = 0.02
    theirs = free_riders(
        {s: _torch(u) for s, u in sites.items()},
        {lab: _torch(r) for lab, r in zip(labels, refs, strict=True)},
        min_norm_ratio=0.01,
        stale_cosine=0.99999,
        stale_distance=1e6,
        span_residual=0.02,
    )
    order = sorted(sites, key=lambda a: int(a, 16))
    flats = {s: _flat(sites[s]) for s in order}
    ref_flats = [(lab, _flat(r)) for lab, r in zip(labels, refs, strict=True)]
    mine, norms = R.free_rider_rule(
        order,
        flats,
        ref_flats,
        {s: 1 for s in order},
        cc,
        0.0,
        str,
        tensors={s: _wide(sites[s]) for s in order},
        ref_tensors=[_wide(r) for r in refs],
    )
    assert set(mine) == set(theirs) == {"0x" + c * 40 for c in "456"}
    rows = Rows.of([*(_torch(sites[s]) for s in order), *(_torch(r) for r in refs)])
    product = span_residuals(rows, range(len(order)), len(order), rows.norms, 1.0 - 1e-9)
    ref_norms = [math.sqrt(R.block_sum(v * v)) for _, v in ref_flats]
    for i, s in enumerate(order):
        got, _ = R.span_residual(flats[s], norms[s], [v for _, v in ref_flats], ref_norms)
        assert got == pytest.approx(product[i], rel=1e-6, abs=1e-9), s
    # the reader reads the field as off when the terms lack it
    del cc["span_residual"]
    assert not R.free_rider_rule(
        order,
        flats,
        ref_flats,
        {s: 1 for s in order},
        cc,
        0.0,
        str,
        tensors={s: _wide(sites[s]) for s in order},
        ref_tensors=[_wide(r) for r in refs],
    )[0]
