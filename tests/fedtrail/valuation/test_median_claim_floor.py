"""Attack a123: colluders' claims must not lower another site's free-rider floor.

Under stop 55's rule (``tiny_size_own`` 0) a round whose median claim ``m`` is below
``tiny_size_reference`` scales every site's floor by ``(min(n, m) / 150) ** 2``: five Sybils
(white noise, FREE_RIDER themselves but counted) claiming 20 beside two honest 150-image sites
put ``m`` at 20, and a data-less rider claiming 150 passed with a weight-decay step at 0.01% of
the model's norm, 1/10 of the 0.1% floor (``scripts/attacks/a123_median_claim_floor.py``: paid
0.333 of round 1 on Anvil + IPFS). Sybils claiming *more* did the same under the
median-relative rule of a median of 150 or more: claiming 600 they put a 150-claim's floor at
``(150 / 600) ** 2`` of 0.1%. With ``tiny_size_own`` 1 (the default) each site's own claim
alone lowers its floor, in every round; a round of uniformly small sites is judged as before."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation import HISTORY_COMBINER, Combiner, public_screen
from fedtrail.valuation.base import Candidate
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.freeride import free_riders
from fedtrail.valuation.limits import ThresholdLimits
from fedtrail.valuation.standing import History

SPEC = ModelSpec()
READER = Path(__file__).resolve().parents[3] / "scripts" / "independent" / "reader.py"


def _norm(d: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(v.double().pow(2).sum() for v in d.values())))


def _scaled(d: dict[str, torch.Tensor], norm: float) -> dict[str, torch.Tensor]:
    s = norm / _norm(d)
    return {k: (s * v).float() for k, v in d.items()}


@pytest.fixture(scope="module")
def start() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in SPEC.build().state_dict().items()}


def _decay(start: dict[str, torch.Tensor], seed: int, level: float) -> dict[str, torch.Tensor]:
    """Minus the start model, each weight times its own U(0.5, 1.5), at ``level`` x its norm:
    structured (no white-noise verdict), a weight-decay step anyone can send without data."""
    g = torch.Generator().manual_seed(seed)
    d = {k: -(torch.rand(v.shape, generator=g) + 0.5) * v.float() for k, v in start.items()}
    return _scaled(d, level * _norm(start))


def _white(start: dict[str, torch.Tensor], seed: int, level: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return _scaled(
        {k: torch.randn(v.shape, generator=g) for k, v in start.items()}, level * _norm(start)
    )


def _a123(start: dict[str, torch.Tensor], claim: int = 20) -> list[Candidate]:
    """a123's round: two honest 150-image sites (updates at 0.3% of the model's norm), five
    white-noise Sybils claiming ``claim``, the rider claiming 150 at 0.01%."""
    out = [Candidate(f"h{i}", 150, _decay(start, i, 3e-3)) for i in range(2)]
    out += [Candidate(f"syb{i}", claim, _white(start, 100 + i, 1e-4)) for i in range(5)]
    return [*out, Candidate("rider", 150, _decay(start, 999, 1e-4))]


def _screen(
    start: dict[str, torch.Tensor], cands: list[Candidate], comb: Combiner
) -> dict[str, str]:
    """The screen with the block-noise test off: these hand-made updates (the honest sites'
    too) are the untrained start model times independent noise, which that test marks as
    noise whatever the floor; this file is about the floor."""
    comb = replace(comb, block_noise_z=0.0)
    return public_screen(
        global_state=start, spec=SPEC, candidates=cands, history=History(), combiner=comb
    )


def test_sybils_claims_do_not_lower_the_riders_floor(start: dict[str, torch.Tensor]) -> None:
    """The default terms: the rider claiming 150 faces the full 0.1% whatever the median;
    the Sybils are white noise; the honest sites pass. Fails on stop 55's code (the rider
    passed under the median's 56x lower floor)."""
    got = _screen(start, _a123(start), HISTORY_COMBINER)
    assert set(got) == {f"syb{i}" for i in range(5)} | {"rider"}, got
    assert (
        "(below 0.1% x (min(150 claimed, 150) / 150) ** 2 = 0.001; median claim 20)"
        in (got["rider"])
    )


def test_sybils_claiming_more_do_not_lower_the_riders_floor(
    start: dict[str, torch.Tensor],
) -> None:
    """a123 upwards: the Sybils claim 600 (within ``max_sample_ratio`` 10 of the honest 150),
    the median is 600, and the median-relative rule put the rider's floor at (150 / 600) ** 2
    of 0.1%, 0.00625%, under its 0.01%. Its own claim gives the full 0.1%. Fails on the code
    before (there ``tiny_size_own`` 1 read the own claim only below a median of 150)."""
    got = _screen(start, _a123(start, 600), HISTORY_COMBINER)
    assert set(got) == {f"syb{i}" for i in range(5)} | {"rider"}, got
    assert (
        "(below 0.1% x (min(150 claimed, 150) / 150) ** 2 = 0.001; median claim 600)"
        in got["rider"]
    )
    old = _screen(start, _a123(start, 600), replace(HISTORY_COMBINER, tiny_size_own=0))
    assert set(old) == {f"syb{i}" for i in range(5)}, old


def test_stop_55s_rule_paid_the_rider(start: dict[str, torch.Tensor]) -> None:
    """``tiny_size_own`` 0 (terms written in stop 55) replays the rule a123 attacked."""
    got = _screen(start, _a123(start), replace(HISTORY_COMBINER, tiny_size_own=0))
    assert set(got) == {f"syb{i}" for i in range(5)}, got


def test_a_small_rider_is_judged_by_its_own_claim(start: dict[str, torch.Tensor]) -> None:
    """A rider claiming 20 beside the same Sybils: (20 / 150) ** 2 of 0.1% (0.00178%), its
    weight that of 20 samples; at 0.001% it is FREE_RIDER under both rules."""
    cands = _a123(start)
    cands[-1] = Candidate("rider", 20, _decay(start, 999, 1e-5))
    for own in (0, 1):
        got = _screen(start, cands, replace(HISTORY_COMBINER, tiny_size_own=own))
        assert "rider" in got, (own, got)


def _vectors(norms: dict[str, float]) -> dict[str, torch.Tensor]:
    """One 64-vector per site, of exactly its norm."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for s, n in norms.items():
        v = torch.randn(64, generator=g, dtype=torch.float64)
        out[s] = (v * (n / float(v.norm()))).float()
    return out


def _riders(norms: dict[str, float], samples: dict[str, int], own: bool) -> dict[str, str]:
    return free_riders(
        {s: {"w": v} for s, v in _vectors(norms).items()},
        {},
        min_norm_ratio=HISTORY_COMBINER.free_rider_norm,
        stale_cosine=HISTORY_COMBINER.stale_cosine,
        stale_distance=HISTORY_COMBINER.stale_distance,
        model_norm=1000.0,
        min_model_ratio=1e-3,
        samples=samples,
        size_power=2.0,
        size_reference=150.0,
        size_own=own,
    )


def test_uniformly_small_sites_and_rounds_at_the_reference_are_judged_as_before() -> None:
    """Every claim equal (h-234's 5 x 20): both rules agree; at a median of exactly 150 or
    just above, the same verdicts (the messages differ: the own-claim rule states its factor)."""
    small = {f"s{i}": 0.36 + 0.1 * i for i in range(5)}
    assert _riders(small, dict.fromkeys(small, 20), True) == {}
    norms = {**small, "tiny": 0.01}
    twenty = {**dict.fromkeys(small, 20), "tiny": 20}
    assert set(_riders(norms, twenty, True)) == set(_riders(norms, twenty, False)) == {"tiny"}
    at = {"h0": 3.0, "h1": 3.2, "h2": 2.8, "small": 0.1, "rider": 0.3}
    for edge in (150, 151):
        claims = {"h0": edge, "h1": edge, "h2": edge, "small": 20, "rider": edge}
        assert set(_riders(at, claims, True)) == set(_riders(at, claims, False)) == {"rider"}


def test_just_under_the_reference_a_full_claim_keeps_its_floor() -> None:
    """Median 149: stop 55's rule lowered a 150-claim's floor to (149 / 150) ** 2; its own
    claim now gives 1 (a norm at 0.0995% of the model's is FREE_RIDER, as at a median of 150)."""
    norms = {"h0": 3.0, "h1": 3.2, "h2": 2.8, "rider": 0.995}
    claims = {"h0": 149, "h1": 149, "h2": 149, "rider": 150}
    assert set(_riders(norms, claims, True)) == {"rider"}
    assert _riders(norms, claims, False) == {}


def test_above_the_reference_a_site_below_the_median_keeps_its_own_floor() -> None:
    """Median 600: the median-relative rule lowered a 150-claim's floor 16x and a 60-claim's
    100x; its own claim gives 1 and (60 / 150) ** 2 = 0.16 of 0.1% (norms at 0.05% and 0.01%
    of the model's: FREE_RIDER now, passed before). The 600-claims at 0.28-0.32% pass under both."""
    norms = {"h0": 3.0, "h1": 3.2, "h2": 2.8, "rider": 0.5, "small": 0.1}
    claims = {"h0": 600, "h1": 600, "h2": 600, "rider": 150, "small": 60}
    assert set(_riders(norms, claims, True)) == {"rider", "small"}
    assert _riders(norms, claims, False) == {}


def test_terms_without_it_replay_stop_55s_rule_and_limits_refuse_that() -> None:
    full = asdict(HISTORY_COMBINER)
    older = {k: v for k, v in full.items() if k != "tiny_size_own"}
    for recorded, expected in ((full, 1), (older, 0), (None, 0)):
        comb = combiner_from(
            ValuationSettings(method="shapley", metric="x", standing=True, combiner=recorded)
        )
        assert comb.tiny_size_own == expected
    limits = ThresholdLimits()
    stop55 = replace(HISTORY_COMBINER, tiny_size_own=0)
    assert limits.breaches(stop55) == []
    assert limits.loosest.breaches(stop55) == ["tiny_size_own 0 (accepted: at least 1)"]
    # where the rule it picks is off (terms before stop 55), it decides nothing: no breach
    assert limits.loosest.breaches(replace(stop55, tiny_size_reference=0.0)) == []
    assert limits.loosest.breaches(replace(stop55, tiny_size_power=0.0)) == []
    assert ThresholdLimits.accepting(stop55).loosest.breaches(stop55) == []
    for bad in (2, -1, True):
        with pytest.raises(ConfigError, match="tiny_size_own must be 0 or 1"):
            Combiner(tiny_size_own=bad)  # type: ignore[arg-type]


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_a123", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("claim", [20, 600])
@pytest.mark.parametrize("own", [None, 0, 1])
def test_the_independent_reader_gives_the_same_verdicts(own: int | None, claim: int) -> None:
    """README's rule as scripts/independent/reader.py implements it (terms without the field
    read as 0): a123's claims (Sybils claiming 20 or 600), plus a small honest site and a tiny
    one."""
    reader = _reader()
    # claim 600: the median is 375 and the rider's old floor (150 / 375) ** 2 of 0.1%, 0.016%
    rider = 0.1 if claim == 20 else 0.3
    norms = {"h0": 3.0, "h1": 2.5, "small": 0.05, "rider": rider, "tiny": 0.01}
    norms |= {f"syb{i}": 0.1 for i in range(5)}
    samples = {"h0": 150, "h1": 150, "small": 10, "rider": 150, "tiny": 20}
    samples |= {f"syb{i}": claim for i in range(5)}
    sites = [f"0x{i + 1:040x}" for i in range(len(norms))]
    names = dict(zip(sites, norms, strict=True))
    vectors = _vectors(norms)
    flats = {a: vectors[names[a]].double().numpy().astype(np.float64) for a in sites}
    cc: dict[str, float] = {
        "free_rider_norm": HISTORY_COMBINER.free_rider_norm,
        "stale_cosine": HISTORY_COMBINER.stale_cosine,
        "stale_distance": HISTORY_COMBINER.stale_distance,
        "tiny_size_power": 2.0,
        "tiny_size_reference": 150.0,
    }
    if own is not None:
        cc["tiny_size_own"] = own
    mine, _ = reader.free_rider_rule(
        sites, flats, [], {a: samples[names[a]] for a in sites}, cc, 1000.0, str
    )
    theirs = free_riders(
        {s: {"w": v} for s, v in vectors.items()},
        {},
        min_norm_ratio=HISTORY_COMBINER.free_rider_norm,
        stale_cosine=HISTORY_COMBINER.stale_cosine,
        stale_distance=HISTORY_COMBINER.stale_distance,
        model_norm=1000.0,
        min_model_ratio=1e-3,
        samples=samples,
        size_power=2.0,
        size_reference=150.0,
        size_own=bool(own),
    )
    assert {names[a] for a in mine} == set(theirs)
    assert ("rider" in theirs) == bool(own)
