"""The free-rider screen's block-noise test (``block_noise_z``, attack a120): data-less noise
whose variance profile is copied from a public update (per tensor, per row and column, per
value) passes the white-noise test but is FREE_RIDER from round 1; structured updates are not;
terms recorded without the threshold replay the screen before it."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import torch

from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import Combiner
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.freeride import (
    _block_bound,
    _blocks,
    _wide,
    block_ceiling,
    block_z_of,
    free_riders,
    structure_z,
)

Delta = dict[str, torch.Tensor]
SHAPES = {  # the bundled SmallCNN's
    "conv1.weight": (16, 1, 3, 3),
    "conv1.bias": (16,),
    "conv2.weight": (32, 16, 3, 3),
    "conv2.bias": (32,),
    "fc1.weight": (64, 1568),
    "fc1.bias": (64,),
    "fc2.weight": (2, 64),
    "fc2.bias": (2,),
}


def _structured(gen: torch.Generator) -> Delta:
    """A stand-in for a trained update: each weight tensor rank 2 (its rows share two
    directions, as the same inputs move every output's weights) with uneven row scales, plus
    a little noise, each tensor at its own scale."""
    out: Delta = {}
    for (name, shape), size in zip(
        SHAPES.items(), (1.0, 0.1, 0.5, 0.05, 0.1, 0.02, 2.0, 0.3), strict=True
    ):
        rows, cols = shape[0], math.prod(shape[1:])
        if len(shape) == 1:
            out[name] = size * torch.randn(shape, generator=gen)
            continue
        scales = torch.exp(torch.randn(rows, 1, generator=gen))
        m = scales * (torch.randn(rows, 2, generator=gen) @ torch.randn(2, cols, generator=gen))
        out[name] = size * (m + 0.3 * torch.randn(rows, cols, generator=gen)).reshape(shape)
    return out


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def _riders(public: Delta, gen: torch.Generator) -> dict[str, Delta]:
    """a120's shapes and the next ones: Gaussian noise scaled to ``public``'s profile per
    tensor; per row with neighbours summed in threes (a120 ``rows``); per value (``public``'s
    magnitude); per row times per column; smoothed within each conv kernel."""
    out: dict[str, Delta] = {"tensor": {}, "rows": {}, "value": {}, "rowcol": {}, "kernel": {}}
    for k, s in public.items():
        z = torch.randn(s.shape, generator=gen)
        out["tensor"][k] = z * (_rms(s) / _rms(z))
        r = torch.randn(s.shape, generator=gen)
        if r.dim() > 1:
            flat = r.reshape(-1)
            r = (flat + torch.roll(flat, 1) + torch.roll(flat, 2)).reshape(s.shape)
            rows = torch.empty(r.shape[0], *[1] * (r.dim() - 1)).uniform_(0.2, 2.0, generator=gen)
            r = r * rows
        out["rows"][k] = r * (_rms(s) / _rms(r))
        out["value"][k] = torch.randn(s.shape, generator=gen) * s.abs()
        if s.dim() >= 2:
            m = s.reshape(s.shape[0], -1).double()
            row = m.pow(2).mean(1, keepdim=True).sqrt()
            col = m.pow(2).mean(0, keepdim=True).sqrt()
            noise = torch.randn(m.shape, generator=gen, dtype=torch.float64) * row * col
            out["rowcol"][k] = noise.reshape(s.shape).float()
        else:
            out["rowcol"][k] = torch.randn(s.shape, generator=gen) * s.abs()
        q = torch.randn(s.shape, generator=gen)
        if q.dim() == 4:  # each kernel smoothed within itself (blocks are kernels)
            q = q + torch.roll(q, 1, dims=-1) + torch.roll(q, 1, dims=-2)
        out["kernel"][k] = q * (_rms(s) / _rms(q))
    return out


def _screen(deltas: dict[str, Delta], refs: dict[str, Delta], **kw: float) -> dict[str, str]:
    comb = Combiner()
    args = {
        "white_z": comb.white_noise_z,
        "shaped_z": comb.shaped_noise_z,
        "block_z": comb.block_noise_z,
        **kw,
    }
    return free_riders(
        deltas,
        refs,
        min_norm_ratio=comb.free_rider_norm,
        stale_cosine=comb.stale_cosine,
        stale_distance=comb.stale_distance,
        **args,
    )


@pytest.mark.parametrize("seed", range(3))
def test_profiled_noise_is_flagged_from_round_one_and_structured_updates_are_not(
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    public = _structured(gen)  # the last global delta (or the start model's 1%)
    honest = {f"h{i}": _structured(gen) for i in range(3)}
    riders = _riders(public, gen)
    assert Combiner().block_noise_z == 8.0
    for refs in ({}, {"the global delta of round 1": public}):
        got = _screen({**honest, **riders}, refs)
        assert set(got) == set(riders), got
        for name in riders:
            assert got[name].startswith("noise independent between blocks (block statistic ")
            assert got[name].endswith(", below 8)")
        # the screen before the test: the white-noise test passes every rider (a120); with the
        # public update as a reference, the shaped-noise test can see noise scaled to its own
        # magnitude (``value``), nothing else
        before = _screen({**honest, **riders}, refs, block_z=0.0)
        assert set(before) <= ({"value"} if refs else set()), before
    assert all(structure_z(r) >= Combiner().white_noise_z for r in riders.values())


def test_noise_only_where_the_test_does_not_read_is_flagged() -> None:
    """A rider whose profiled noise is only in the tensors the test does not read (the
    1-channel ``conv1.weight``: one block a row; the 1-D biases), every read tensor zero,
    scores 0 and is FREE_RIDER (it scored ``inf`` and passed before h-244); honest updates
    beside it are not."""
    gen = torch.Generator().manual_seed(5)
    public = _structured(gen)
    honest = {f"h{i}": _structured(gen) for i in range(3)}
    unread = {"conv1.weight", "conv1.bias", "conv2.bias", "fc1.bias", "fc2.bias"}
    noise = _riders(public, gen)["tensor"]
    rider = {k: v if k in unread else torch.zeros_like(v) for k, v in noise.items()}
    assert block_z_of(rider) == 0.0
    assert structure_z(rider) >= Combiner().white_noise_z  # the white-noise test passes it
    got = _screen({**honest, "rider": rider}, {})
    assert set(got) == {"rider"}, got
    assert got["rider"] == "noise independent between blocks (block statistic 0, below 8)"
    assert block_z_of({"b": torch.ones(5), "c": torch.ones(4, 1, 3, 3)}) == math.inf


NARROW = {  # SmallCNN width 2, hidden 2, 28 px: ceiling sqrt(6 * 1 + 1 * 300), 17.5
    "conv1.weight": (2, 1, 3, 3),
    "conv1.bias": (2,),
    "conv2.weight": (4, 2, 3, 3),
    "conv2.bias": (4,),
    "fc1.weight": (2, 196),
    "fc1.bias": (2,),
    "fc2.weight": (2, 2),
    "fc2.bias": (2,),
}


def test_a_layout_the_statistic_cannot_judge_is_not_judged() -> None:
    """The ceiling is the rule's formula; the statistic never exceeds it (a rank-one update
    reaches it); an update of a layout whose ceiling is under 32 x block_noise_z passes the
    test (even noise: it could not be told from an honest update, h-244), one at the edge is
    judged."""
    assert block_ceiling(NARROW.values()) == math.sqrt(6 * 1 + 1 * (25 * 24 // 2))
    assert block_ceiling(SHAPES.values()) == math.sqrt(
        32 * 31 // 2 * (16 * 15 // 2) + 64 * 63 // 2 * (196 * 195 // 2) + 1 * (8 * 7 // 2)
    )
    gen = torch.Generator().manual_seed(2)
    for shapes in (NARROW, SHAPES):
        one = {k: torch.ones(v, dtype=torch.float64) for k, v in shapes.items()}
        noise = {k: torch.randn(v, generator=gen, dtype=torch.float64) for k, v in shapes.items()}
        ceiling = block_ceiling(shapes.values())
        assert block_z_of(noise) <= ceiling
        padded = {  # rank one, every block's dot product 1: no zero padding in runs of 8
            k: (v if v.dim() != 2 or v.shape[1] % 8 == 0 else torch.ones(v.shape[0], 8))
            / math.sqrt(math.prod(v.shape[2:]) if v.dim() > 2 else 8)
            for k, v in one.items()
        }
        fitted = block_ceiling(u.shape for u in padded.values())
        assert block_z_of(padded) == pytest.approx(fitted, rel=1e-12)
    noise = {k: torch.randn(v, generator=gen) for k, v in NARROW.items()}
    assert block_z_of(noise) < 8
    assert _screen({"n": noise}, {}, white_z=0.0, shaped_z=0.0) == {}
    edge = block_ceiling(NARROW.values()) / 32
    assert _screen({"n": noise}, {}, white_z=0.0, shaped_z=0.0, block_z=edge) != {}


def test_declared_dp_noise_is_left_to_the_dp_checks() -> None:
    gen = torch.Generator().manual_seed(11)
    public = _structured(gen)
    noise = _riders(public, gen)["tensor"]
    assert set(_screen({"n": noise}, {})) == {"n"}
    assert _screen({"n": noise}, {}, white_z=0.0, shaped_z=0.0, block_z=8.0) != {}
    comb = Combiner()
    declared = free_riders(
        {"n": noise},
        {},
        min_norm_ratio=comb.free_rider_norm,
        stale_cosine=comb.stale_cosine,
        stale_distance=comb.stale_distance,
        white_z=comb.white_noise_z,
        block_z=comb.block_noise_z,
        declared_noise={"n"},
    )
    assert declared == {}


def test_the_statistic_follows_its_rule() -> None:
    """The rule written out pair by pair (independently of the product's vectorised sums) on a
    small update: blocks are kernels in a 4-D tensor, runs of 8 in a 2-D one (padded)."""
    rng = np.random.default_rng(3)
    update = {
        "c": rng.standard_normal((3, 2, 2, 2)),
        "f": rng.standard_normal((4, 11)),
        "b": rng.standard_normal(4),  # 1-D: no rows to pair
    }
    num: list[float] = []
    var: list[float] = []
    for name, size in (("c", 4), ("f", 8)):
        a = update[name]
        x = a.reshape(a.shape[0], -1)
        if name == "f":
            x = np.concatenate([x, np.zeros((4, 5))], axis=1)
        for i in range(x.shape[0]):
            for j in range(i + 1, x.shape[0]):
                c = [
                    math.fsum((x[i, b : b + size] * x[j, b : b + size]).tolist())
                    for b in range(0, x.shape[1], size)
                ]
                g, w = sum(c), sum(v * v for v in c)
                q = sum(v**4 for v in c)
                num.append(g * g - w)
                var.append(2.0 * (w * w - q))
    expected = math.fsum(num) / math.sqrt(math.fsum(var))
    got = block_z_of({k: torch.from_numpy(v) for k, v in update.items()})
    assert got == pytest.approx(expected, rel=1e-12)
    assert block_z_of({"b": torch.ones(5)}) == math.inf  # nothing to pair


def _in_order(x: npt.NDArray[np.float64], size: int) -> tuple[list[float], list[float]]:
    """The rule's terms with every sum a Python loop in the rule's order (``x`` rows by values,
    blocks of ``size`` consecutive values)."""
    num: list[float] = []
    var: list[float] = []
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            g = w = q = 0.0
            for b in range(0, x.shape[1], size):
                c = float(x[i, b]) * float(x[j, b])
                for k in range(b + 1, b + size):
                    c += float(x[i, k]) * float(x[j, k])
                g, w, q = g + c, w + c * c, q + (c * c) * (c * c)
            num.append(g * g - w)
            var.append(2.0 * (w * w - q))
    return num, var


@pytest.mark.parametrize("shape", [(2, 30, 3, 3), (2, 300), (5, 17, 2, 2), (40, 9, 3, 3)])
def test_the_statistic_is_the_rules_bits(shape: tuple[int, ...]) -> None:
    """Every sum in the rule's order, to the last bit: blocks added in order even when a
    tensor's last pair of rows is alone (numpy's pairwise sum of one long row gave other bits
    before h-244) and across the product's chunks of rows."""
    a = np.random.default_rng(7).standard_normal(shape)
    x = a.reshape(shape[0], -1)
    size = 8 if a.ndim == 2 else int(np.prod(shape[2:]))
    if a.ndim == 2:
        x = np.concatenate([x, np.zeros((shape[0], -shape[1] % 8))], axis=1)
    num, var = _in_order(x, size)
    expected = math.fsum(num) / math.sqrt(math.fsum(var))
    assert block_z_of({"t": torch.from_numpy(a)}) == expected


@pytest.mark.parametrize("seed", range(4))
def test_the_bound_never_exceeds_the_statistic(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for update in (_structured(gen), *_riders(_structured(gen), gen).values()):
        parts = {k: _wide(v) for k, v in update.items()}
        blocks = [b for b in (_blocks(a) for a in parts.values()) if b is not None]
        assert _block_bound(blocks) <= block_z_of(update)


def test_terms_recorded_without_it_replay_the_screen_before_it() -> None:
    recorded = {"white_noise_z": 1000.0, "shaped_noise_z": 1000.0}
    old = combiner_from(
        ValuationSettings(
            method="shapley", metric="balanced_loss", combiner=recorded, standing=True
        )
    )
    assert old.block_noise_z == 0.0
    now = {**recorded, "block_noise_z": 8.0}
    new = combiner_from(
        ValuationSettings(method="shapley", metric="balanced_loss", combiner=now, standing=True)
    )
    assert new.block_noise_z == 8.0
