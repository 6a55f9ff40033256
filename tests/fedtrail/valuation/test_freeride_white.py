"""The free-rider screen's white-noise test: a copy of a reference plus fresh Gaussian noise
(past the stale cosine) is FREE_RIDER, structured updates are not, shaped noise passes (the
known limit), and updates that declare DP-SGD are left to the DP checks."""

from __future__ import annotations

import math

import pytest
import torch

from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import free_riders, structure_z

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


def _plus(copy: Delta, level: float, gen: torch.Generator, *, shaped: bool = False) -> Delta:
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in copy.items()}
    if shaped:
        noise = {k: n * copy[k].abs() for k, n in noise.items()}
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in copy.values()))
    size = math.sqrt(sum(float((n.double() ** 2).sum()) for n in noise.values()))
    return {k: (v + level * norm / size * noise[k]).contiguous() for k, v in copy.items()}


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
    copies = {f"white{level:g}": _plus(source, level, gen) for level in (0.02, 0.2, 1.0)}
    shaped = {f"shaped{level:g}": _plus(source, level, gen, shaped=True) for level in (0.02, 0.2)}
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
