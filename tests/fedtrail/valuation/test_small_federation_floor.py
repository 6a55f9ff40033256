"""The free-rider floor in a federation whose sites are all small (``tiny_size_reference``):
honest short updates of a round whose median claim is below the reference pass, a tiny or zero
update is still FREE_RIDER, a round whose median reaches the reference is judged exactly as
before, logs recorded without the field replay without it, and the independent reader (written
from README) gives the same verdicts."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import HISTORY_COMBINER, Combiner
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.limits import ThresholdLimits

WIDTH = 64
MODEL_NORM = 1000.0
READER = Path(__file__).resolve().parents[3] / "scripts" / "independent" / "reader.py"


def _update(norm: float, seed: int) -> dict[str, torch.Tensor]:
    v = torch.randn(WIDTH, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return {"w": (v * (norm / float(v.norm()))).to(torch.float32)}


def _riders(norms: dict[str, float], samples: dict[str, int], reference: float) -> dict[str, str]:
    return free_riders(
        {s: _update(n, i) for i, (s, n) in enumerate(norms.items())},
        {},
        min_norm_ratio=HISTORY_COMBINER.free_rider_norm,
        stale_cosine=HISTORY_COMBINER.stale_cosine,
        stale_distance=HISTORY_COMBINER.stale_distance,
        model_norm=MODEL_NORM,
        min_model_ratio=1e-3,
        samples=samples,
        size_power=HISTORY_COMBINER.tiny_size_power,
        size_reference=reference,
    )


# measured (scripts/bench/small_sites.py, 5 sites of 20 images): honest updates 0.036-0.087% of
# the model's norm, 28 of 40 site-rounds under the 0.1% floor
SMALL = {f"s{i}": 0.36 + 0.1 * i for i in range(5)}  # 0.036% .. 0.076% of MODEL_NORM
TWENTY = dict.fromkeys(SMALL, 20)


def test_uniformly_small_honest_sites_pass_where_the_median_allowance_gave_none() -> None:
    before = _riders(SMALL, TWENTY, 0.0)
    assert set(before) == set(SMALL)  # every one under 0.1%: nobody below the median claim
    assert _riders(SMALL, TWENTY, 150.0) == {}


def test_a_tiny_or_zero_update_among_small_sites_is_still_a_free_rider() -> None:
    """The floor falls to (20 / 150) ** 2 of 0.1% (0.00178%), not to nothing: an update at
    0.001% of the model's norm claiming 20 is FREE_RIDER, and so is a zero one."""
    norms = {**SMALL, "tiny": 0.01, "zero": 0.0}
    samples = {**TWENTY, "tiny": 20, "zero": 20}
    got = _riders(norms, samples, 150.0)
    assert set(got) == {"tiny", "zero"}
    assert "x (min(20 claimed, median 20) / 150) ** 2 = 1.78e-05" in got["tiny"]


def test_a_round_whose_median_reaches_the_reference_is_judged_as_before() -> None:
    norms = {"h0": 3.0, "h1": 3.2, "h2": 2.8, "small": 0.1, "tiny": 0.01}
    samples = {"h0": 150, "h1": 150, "h2": 150, "small": 20, "tiny": 20}
    assert _riders(norms, samples, 150.0) == _riders(norms, samples, 0.0)
    assert set(_riders(norms, samples, 150.0)) == {"tiny"}


def test_logs_recorded_without_it_replay_the_floor_before_it() -> None:
    full = asdict(HISTORY_COMBINER)
    older = {k: v for k, v in full.items() if k != "tiny_size_reference"}
    for recorded, expected in ((full, 150.0), (older, 0.0), (None, 0.0)):
        comb = combiner_from(
            ValuationSettings(method="shapley", metric="x", standing=True, combiner=recorded)
        )
        assert comb.tiny_size_reference == expected


def test_limits_bound_it_on_the_loose_side_only() -> None:
    limits = ThresholdLimits()
    assert limits.breaches(replace(HISTORY_COMBINER, tiny_size_reference=0.0)) == []
    assert limits.loosest.breaches(HISTORY_COMBINER) == []
    assert limits.loosest.breaches(replace(HISTORY_COMBINER, tiny_size_reference=1000.0)) == [
        "tiny_size_reference 1000.0 (accepted: at most 150.0)"
    ]
    with pytest.raises(ConfigError, match="tiny_size_reference must be non-negative"):
        Combiner(tiny_size_reference=-1.0)


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_small", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("reference", [None, 0.0, 150.0])
def test_the_independent_reader_gives_the_same_verdicts(reference: float | None) -> None:
    """README's rule as scripts/independent/reader.py implements it: terms without the field
    (None) read as 0."""
    reader = _reader()
    norms = {**SMALL, "tiny": 0.01, "short": 0.02, "zero": 0.0}
    samples = {**TWENTY, "tiny": 20, "short": 10, "zero": 20}
    sites = [f"0x{i + 1:040x}" for i in range(len(norms))]
    names = dict(zip(sites, norms, strict=True))
    flats = {
        a: _update(norms[names[a]], i)["w"].double().numpy().astype(np.float64)
        for i, a in enumerate(sites)
    }
    cc: dict[str, float] = {
        "free_rider_norm": HISTORY_COMBINER.free_rider_norm,
        "stale_cosine": HISTORY_COMBINER.stale_cosine,
        "stale_distance": HISTORY_COMBINER.stale_distance,
        "tiny_size_power": HISTORY_COMBINER.tiny_size_power,
    }
    if reference is not None:
        cc["tiny_size_reference"] = reference
    mine, _ = reader.free_rider_rule(
        sites, flats, [], {a: samples[names[a]] for a in sites}, cc, MODEL_NORM, str
    )
    theirs = _riders(norms, samples, reference or 0.0)
    assert {names[a] for a in mine} == set(theirs)
    assert set(theirs) == ({"tiny", "zero"} if reference else set(norms))
