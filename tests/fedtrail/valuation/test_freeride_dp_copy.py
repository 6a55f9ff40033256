"""The free-rider screen's DP copy test (``dp_copy_z``): an update that declares DP-SGD (exempt
from the white-noise test) and is an earlier update, or a mix of a few, plus Gaussian noise at
an honest update's scale is FREE_RIDER at the lowest threshold a site accepts (60); an honest
DP-SGD update (its own small signal plus fresh noise) and pure noise are not; the test is off at
0 (the terms' default) and for updates without DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedtrail.valuation import Combiner
from fedtrail.valuation.freeride import DP_COPY_STEP, dp_copy_statistic, free_riders
from fedtrail.valuation.limits import ThresholdLimits

Delta = dict[str, torch.Tensor]
SHAPES = {
    "conv.weight": (16, 4, 3, 3),
    "conv.bias": (16,),
    "fc.weight": (64, 1600),
    "fc.bias": (64,),
}
WIDTH = sum(math.prod(s) for s in SHAPES.values())
SD = 0.004  # the per-coordinate noise of an honest DP-SGD update


def _noise(gen: torch.Generator) -> Delta:
    return {k: SD * torch.randn(s, generator=gen) for k, s in SHAPES.items()}


def _dp_update(signal: Delta, gen: torch.Generator) -> Delta:
    """An honest DP-SGD update: a clipped signal (here 20% of the noise's norm, more than the
    bundled data's updates carry at epsilon 8) plus fresh Gaussian noise."""
    size = math.sqrt(sum(float((v.double() ** 2).sum()) for v in signal.values()))
    scale = 0.2 * SD * math.sqrt(WIDTH) / size
    return {k: scale * signal[k] + n for k, n in _noise(gen).items()}


def _flat(d: Delta) -> np.ndarray:
    return np.concatenate([v.double().numpy().ravel() for v in d.values()])


def _screen(deltas: dict[str, Delta], refs: dict[str, Delta], **kw: object) -> dict[str, str]:
    comb = Combiner()
    args: dict[str, object] = {
        "min_norm_ratio": comb.free_rider_norm,
        "stale_cosine": comb.stale_cosine,
        "stale_distance": comb.stale_distance,
        "white_z": comb.white_noise_z,
        "declared_noise": set(deltas),
        "dp_copy_z": ThresholdLimits().dp_copy_z,
    }
    args.update(kw)
    return free_riders(deltas, refs, **args)  # type: ignore[arg-type]


def _round(seed: int) -> tuple[dict[str, Delta], dict[str, Delta], dict[str, Delta]]:
    """(honest DP updates of this round, the references, DP-declared copies)."""
    gen = torch.Generator().manual_seed(seed)
    direction = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}  # shared signal
    past = {f"h{i}'s update of round 1": _dp_update(direction, gen) for i in range(4)}
    glob = {k: sum(p[k] for p in past.values()) / 4 for k in SHAPES}
    refs = {**past, "the global delta of round 1": glob}
    honest = {f"h{i}": _dp_update(direction, gen) for i in range(4)}
    first, second = past["h0's update of round 1"], past["h1's update of round 1"]
    copies = {
        "copy": {k: first[k] + n for k, n in _noise(gen).items()},
        "gcopy": {k: glob[k] + n for k, n in _noise(gen).items()},
        "mix": {k: 0.5 * (first[k] + second[k]) + n for k, n in _noise(gen).items()},
        "half": {k: 0.5 * glob[k] + n for k, n in _noise(gen).items()},
    }
    return honest, refs, copies


@pytest.mark.parametrize("seed", range(3))
def test_dp_declared_copies_are_flagged_and_honest_dp_updates_are_not(seed: int) -> None:
    honest, refs, copies = _round(seed)
    gen = torch.Generator().manual_seed(100 + seed)
    noise = {"noise": _noise(gen)}  # pure noise lies along nothing: left to the game
    got = _screen({**honest, **copies, **noise}, refs)
    assert set(got) == set(copies)
    assert all("plus its declared DP noise" in got[c] for c in copies)
    # off: nothing (every update here declares DP, so the white-noise test skips them all)
    assert _screen({**honest, **copies, **noise}, refs, dp_copy_z=0.0) == {}
    # the terms' default is off: the copies are paid unless the terms turn the test on
    assert _screen(copies, refs, dp_copy_z=Combiner().dp_copy_z) == {}
    # updates that do not declare DP-SGD are the white-noise test's, not this one's
    plain = _screen({**honest, **copies}, refs, declared_noise=set())
    assert set(plain) == set(honest) | set(copies)
    assert not any("declared DP noise" in why for why in plain.values())


def test_the_statistic_measures_the_share_the_references_explain() -> None:
    honest, refs, copies = _round(5)
    flat_refs = [_flat(r) for r in refs.values()]
    root = math.sqrt(WIDTH)
    for d in honest.values():
        z, steps = dp_copy_statistic(_flat(d), flat_refs)
        assert z < 30 and steps <= 1
    z, steps = dp_copy_statistic(_flat(copies["copy"]), flat_refs)
    # the copy is half the update's energy: cosine 1 / sqrt(2) to its source
    assert z == pytest.approx(root / math.sqrt(2), rel=0.05) and steps >= 1
    z, steps = dp_copy_statistic(_flat(copies["mix"]), flat_refs)
    assert steps >= 2 and z > 60  # both halves of the mix taken out
    gen = torch.Generator().manual_seed(9)
    z, steps = dp_copy_statistic(_flat(_noise(gen)), flat_refs)
    assert z < DP_COPY_STEP and steps == 0
    assert dp_copy_statistic(np.zeros(WIDTH), flat_refs) == (0.0, 0)


def test_the_statistic_is_the_same_bits_for_the_same_inputs_in_any_reference_copy() -> None:
    _, refs, copies = _round(6)
    flat_refs = [_flat(r) for r in refs.values()]
    u = _flat(copies["mix"])
    first = dp_copy_statistic(u, flat_refs)
    again = dp_copy_statistic(u.copy(), [r.copy() for r in flat_refs])
    assert first == again
    assert np.array_equal(u, _flat(copies["mix"]))  # the input is not modified
