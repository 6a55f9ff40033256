"""The second norm screen (``size_norm_z``, a round term, off by default) end to end on real
Anvil + IPFS: the production ``AggregatorService`` (``scripts/attacks/harness.py``), ``audit
verify`` and the independent reader (``scripts/independent/reader.py``, no fedtrail code).

Four honest 150-image sites and a 40-image site that sends its own update boosted to 3.5x the
honest sites' median norm: robust z about 10, under ``max_norm_z`` 20, so today's screen pays
it (stop 61's finding at 100 label-skewed sites, where a small site's x40 update stays inside
the honest spread). Under terms with ``size_norm_z`` 6 the aggregator rejects it as
OUTLIER_NORM in round 1 and both readers pass the round; in round 2 a forging aggregator pays
it under the same terms, and both ``audit verify`` and the reader fail ``reasons.screen``."""

from __future__ import annotations

import dataclasses
import importlib
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.weights import SCORE_SCALE
from fedtrail.valuation import HISTORY_COMBINER
from fedtrail.valuation.limits import ThresholdLimits

pytestmark = [
    pytest.mark.slow,
    pytest.mark.anvil,
    pytest.mark.ipfs,
    pytest.mark.usefixtures("one_torch_thread"),
]

ON = dataclasses.replace(HISTORY_COMBINER, size_norm_z=6.0)
HONEST = ("h0", "h1", "h2", "h3")
BOOST = 3.5


def _harness() -> ModuleType:
    threads = torch.get_num_threads()
    folder = str(Path(__file__).resolve().parents[2] / "scripts" / "attacks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module("harness")
    finally:
        torch.set_num_threads(threads)


def _norm(delta: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((v.double() ** 2).sum() for v in delta.values())))


def _boost(ctx: Any) -> tuple[Any, int]:
    """Its own honest update, scaled to BOOST times the honest sites' median norm."""
    target = BOOST * statistics.median(_norm(ctx.now[h]) for h in HONEST)
    own = ctx.now["boost"]
    factor = target / _norm(own)
    return {k: factor * v for k, v in own.items()}, 40


def test_a_boosted_small_site_is_rejected_and_paying_it_fails_both_readers(
    anvil_url: str, ipfs_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = _harness()
    monkeypatch.setenv("FEDTRAIL_ATTACK_RPC", anvil_url)
    monkeypatch.setenv("FEDTRAIL_ATTACK_IPFS", ipfs_api)
    sites = [harness.Site(h, 150) for h in HONEST]
    sites.append(harness.Site("boost", 40, strategy=_boost))

    def forge(fed: Any, acct: dict[str, Any]) -> None:
        honest_valuate = fed.service._valuate
        booster = acct["boost"].address

        def valuate(round_id: int, global_state: Any, pairs: Any) -> Any:
            report, standing = honest_valuate(round_id, global_state, pairs)
            if round_id == 1:
                return report, standing
            sites = [
                dataclasses.replace(v, reason=Reason.OK, score=SCORE_SCALE)
                if v.site == booster
                else v
                for v in report.sites
            ]
            return dataclasses.replace(report, sites=sites), standing

        fed.service._valuate = valuate

    settings = AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=ON
    )
    out = harness.run(
        sites,
        2,
        settings=settings,
        seed=0,
        verbose=False,
        setup=forge,
        accept=ThresholdLimits.accepting(ON),
        real=True,
    )
    first, second = out["results"]
    assert first["boost"]["reason"] == "OUTLIER_NORM" and first["boost"]["weight"] == 0
    assert all(first[h]["reason"] == "OK" and first[h]["weight"] > 0 for h in HONEST)
    assert second["boost"]["reason"] == "OK" and second["boost"]["weight"] > 0  # forged
    failed = {(r, name) for r, name, _ in out["failed"]}
    assert (2, "reasons.screen") in failed
    assert not any(r == 1 for r, _ in failed), out["failed"]
    detail = next(d for r, name, d in out["failed"] if (r, name) == (2, "reasons.screen"))
    assert "above size_norm_z 6, yet it is OK, not OUTLIER_NORM" in detail

    results = {
        (x["round"], x["check"]): x["result"]
        for x in harness.read_independently(out["fed"], "size-norm")
    }
    assert results[(1, "reasons.screen")] == "PASS"
    assert results[(2, "reasons.screen")] == "FAIL"
    assert [k for k, res in results.items() if k[0] == 1 and res == "FAIL"] == []


def test_today_the_boosted_small_site_is_paid() -> None:
    """The same round under the default terms (``size_norm_z`` off), on the embedded chain:
    the boosted update passes the screen (the miss the rule closes, opt-in)."""
    harness = _harness()
    sites = [harness.Site(h, 150) for h in HONEST]
    sites.append(harness.Site("boost", 40, strategy=_boost))
    settings = AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=30)
    out = harness.run(sites, 1, settings=settings, seed=0, verbose=False)
    assert out["audit_ok"] is True
    (first,) = out["results"]
    assert first["boost"]["reason"] == "OK" and first["boost"]["weight"] > 0


def _long(ctx: Any) -> tuple[Any, int]:
    """An honest large site's long update (its own, at 4.5x the honest sites' median norm: raw
    robust z about 14, under ``max_norm_z`` 20), claiming 600 images (4x the typical 150)."""
    target = 4.5 * statistics.median(_norm(ctx.now[h]) for h in HONEST[:2])
    own = ctx.now["large"]
    factor = target / _norm(own)
    return {k: factor * v for k, v in own.items()}, 600


def _inflate(site: str) -> Any:
    def strategy(ctx: Any) -> tuple[Any, int]:
        return ctx.now[site], 600  # its own update, claiming 4x its 150 images

    return strategy


def test_colluders_inflating_claims_leave_the_large_site_ok_under_the_terms_count(
    anvil_url: str, ipfs_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """h-312 (h-309's colluders): two 150-image sites claim 600 each beside the large site, so
    the median claim is 600 and, judged against it, the large site's allowance is 1 (z2 14 > 6:
    OUTLIER_NORM under session 62's rule). Under terms with ``size_norm_count`` 150 the
    allowance is judged against ``min(600, 150)``: the aggregator passes the large site and
    ``audit verify`` and the independent reader pass the round (before h-312 the reader judged
    against 600 and failed ``reasons.screen`` on an honest aggregator)."""
    harness = _harness()
    monkeypatch.setenv("FEDTRAIL_ATTACK_RPC", anvil_url)
    monkeypatch.setenv("FEDTRAIL_ATTACK_IPFS", ipfs_api)
    capped = dataclasses.replace(ON, size_norm_count=150.0)
    sites = [harness.Site(h, 150) for h in HONEST[:2]]
    sites += [harness.Site(c, 150, strategy=_inflate(c), cap=600) for c in ("c0", "c1")]
    sites.append(harness.Site("large", 150, strategy=_long, cap=600))
    settings = AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=capped
    )
    out = harness.run(
        sites,
        1,
        settings=settings,
        seed=0,
        verbose=False,
        accept=ThresholdLimits.accepting(capped),
        real=True,
    )
    (first,) = out["results"]
    assert first["c0"]["reason"] not in ("IMPLAUSIBLE_SAMPLES", "OUTLIER_NORM")
    assert first["large"]["reason"] != "OUTLIER_NORM"
    assert out["failed"] == []
    results = {
        (x["round"], x["check"]): x["result"]
        for x in harness.read_independently(out["fed"], "size-norm-count")
    }
    assert results[(1, "reasons.screen")] == "PASS"
    assert [k for k, res in results.items() if res == "FAIL"] == []


@pytest.mark.parametrize(
    ("count", "large_rejected"),
    [(150, False), (1e-300, False), (600.0, True), (1e9, True)],
    ids=["int 150", "tiny", "the median claim", "huge"],
)
def test_service_verify_and_the_reader_agree_on_the_count_at_its_edges(
    anvil_url: str,
    ipfs_api: str,
    monkeypatch: pytest.MonkeyPatch,
    count: float,
    large_rejected: bool,
) -> None:
    """h-318 (reviewing h-312): the colluders' round above under other ``size_norm_count``
    values: an integer (150 written as ``150``), a tiny one (every allowance huge: the screen
    rejects nothing), one at the inflated median claim (600: session 62's verdict, the large
    site OUTLIER_NORM) and one far above it. The honest aggregator's verdicts pass both
    ``audit verify`` and the independent reader in each."""
    harness = _harness()
    monkeypatch.setenv("FEDTRAIL_ATTACK_RPC", anvil_url)
    monkeypatch.setenv("FEDTRAIL_ATTACK_IPFS", ipfs_api)
    capped = dataclasses.replace(ON, size_norm_count=count)
    sites = [harness.Site(h, 150) for h in HONEST[:2]]
    sites += [harness.Site(c, 150, strategy=_inflate(c), cap=600) for c in ("c0", "c1")]
    sites.append(harness.Site("large", 150, strategy=_long, cap=600))
    settings = AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, combiner=capped
    )
    out = harness.run(
        sites,
        1,
        settings=settings,
        seed=0,
        verbose=False,
        accept=ThresholdLimits.accepting(capped),
        real=True,
    )
    (first,) = out["results"]
    assert (first["large"]["reason"] == "OUTLIER_NORM") is large_rejected
    assert out["failed"] == []
    results = {
        (x["round"], x["check"]): x["result"]
        for x in harness.read_independently(out["fed"], "size-norm-edge")
    }
    assert results[(1, "reasons.screen")] == "PASS"
    assert [k for k, res in results.items() if res == "FAIL"] == []
