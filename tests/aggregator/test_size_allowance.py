"""Honest small and large hospitals keep their weight, end to end: the production
``AggregatorService`` on the embedded chain and a ``LocalStore`` (``scripts/attacks/harness.py``:
honest sites train one local epoch on IID shards of the bundled data, every site submits by
commit and reveal), then ``audit verify`` over every round.

The two rounds are the false positives ``scripts/bench/honest_screens.py`` found: a 20-image
site beside four 150-image sites FREE_RIDER in round 1 (its update under 0.1% of the model's
norm), a 1,000-image site beside sites of 90-200 images OUTLIER_NORM in round 1 (robust norm z
above 20). Their seeds (0 and 6) were found again after the a23 fix bound the start model to
the deployment (this harness's chain, contract and seeded salt): over seeds 0-13 the small
site's false positive came back in 8, the large one's in 2 of 0-11. Under the terms'
thresholds before the size allowance (``norm_size_cap`` 1, ``tiny_size_power`` 0) each is
zeroed again, so the test can fail; the
attack controls (a x10 and x30 boosted update, a zero update, resent and scaled copies of
earlier updates) are still zeroed with both allowances on (the norm one is off by default:
a count inflated within the cap buys as many times the boost, attack a10)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.valuation import HISTORY_COMBINER, Combiner
from fedtrail.valuation.limits import ThresholdLimits

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

OFF = replace(HISTORY_COMBINER, norm_size_cap=1.0, tiny_size_power=0.0)
ON = replace(HISTORY_COMBINER, norm_size_cap=10.0)
"""The norm allowance turned on (off by default since attack a10; the sites consent to it)."""
Ctx = Any  # harness.Ctx: what an attacker's strategy sees


def _harness() -> ModuleType:
    """scripts/attacks/harness.py, imported without keeping its one-thread setting (it sets
    torch's thread count on import; the fixture pins it for these tests only)."""
    threads = torch.get_num_threads()
    folder = str(Path(__file__).resolve().parents[2] / "scripts" / "attacks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module("harness")
    finally:
        torch.set_num_threads(threads)


def _site(name: str, samples: int, **kw: Any) -> Any:
    return _harness().Site(name, samples, **kw)


def _run(sites: list[Any], rounds: int, seed: int, comb: Combiner) -> dict[str, Any]:
    settings = AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=comb
    )
    # the sites consent to the thresholds (under the old rule's, only with [accept] lowered)
    accept = ThresholdLimits.accepting(comb)
    out: dict[str, Any] = _harness().run(
        sites, rounds, settings=settings, seed=seed, verbose=False, accept=accept
    )
    assert out["audit_ok"] is True
    return out


@pytest.mark.parametrize(
    ("sizes", "seed", "before", "now_rule"),
    [
        ({"probe": 20, "h0": 150, "h1": 150, "h2": 150, "h3": 150}, 0, "FREE_RIDER", None),
        ({"probe": 1000, "h0": 90, "h1": 120, "h2": 200}, 6, "OUTLIER_NORM", ON),
    ],
    ids=["small-20-among-150", "large-1000-among-90-200"],
)
def test_an_honest_small_or_large_site_keeps_its_weight_and_verify_passes(
    sizes: dict[str, int], seed: int, before: str, now_rule: Combiner | None
) -> None:
    """The small site under the defaults; the large one where the terms turn the norm
    allowance on (under the defaults it stays OUTLIER_NORM: an open false positive)."""
    sites = [_site(name, n) for name, n in sizes.items()]
    old = _run(sites, 1, seed, OFF)["results"][0]
    assert (old["probe"]["reason"], old["probe"]["weight"]) == (before, 0.0)
    now = _run(sites, 1, seed, now_rule or HISTORY_COMBINER)["results"][0]
    assert {row["reason"] for row in now.values()} == {"OK"}
    fedavg = sizes["probe"] / sum(sizes.values())
    assert now["probe"]["weight"] > 0.5 * fedavg


def _boost(ctx: Ctx) -> tuple[Any, int]:
    factor = 10.0 if ctx.round == 1 else 30.0
    return {k: factor * v for k, v in ctx.now["boost"].items()}, 150


def _rider(ctx: Ctx) -> tuple[Any, int]:
    if not ctx.past_global:
        return {k: 0.0 * v for k, v in ctx.start.items()}, 150  # a zero update
    return ctx.past_global[-1], 150  # the previous global delta, resent


def _scaled(ctx: Ctx) -> tuple[Any, int] | None:
    if not ctx.past:
        return None
    return {k: 1.3 * v for k, v in ctx.past[-1]["h0"].items()}, 20


def test_the_attack_controls_are_still_zeroed_under_the_allowance() -> None:
    """Round 1: an update boosted x10 and a zero update; round 2: x30, the previous global
    delta resent, and h0's previous update x1.3 claiming 20 samples (its floor lowered by the
    allowance, yet a scaled copy all the same)."""
    strategies: dict[str, Callable[[Ctx], Any]] = {
        "boost": _boost,
        "rider": _rider,
        "scaled": _scaled,
    }
    sites = [_site(f"h{i}", 150) for i in range(4)]
    sites += [
        _site("boost", 150, strategy=strategies["boost"]),
        _site("rider", 0, strategy=strategies["rider"], cap=150),
        _site("scaled", 0, strategy=strategies["scaled"], cap=150),
    ]
    first, second = _run(sites, 2, 0, ON)["results"]
    assert (first["boost"]["reason"], second["boost"]["reason"]) == ("OUTLIER_NORM",) * 2
    assert (first["rider"]["reason"], second["rider"]["reason"]) == ("FREE_RIDER",) * 2
    assert "scaled" not in first and second["scaled"]["reason"] == "FREE_RIDER"
    for row in (first, second):
        assert all(row[f"h{i}"]["weight"] > 0 for i in range(4))
        assert all(row[s]["weight"] == 0 for s in strategies if s in row)
