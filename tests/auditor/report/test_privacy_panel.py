"""The report's privacy panel (issue 16): where the federation used DP, each site's budget and
on-chain spend, and per update the declared spend, the cumulative spend after it, the DP
parameters from the update blob and the epsilon the audit recomputes from them (the figures of
``fedtrail audit privacy``); a misreported epsilon shows as DIFFERS and fails the panel. A
federation without DP has no panel."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch

from fedtrail.auditor.report import write_report
from fedtrail.chain import advance_time, block_timestamp
from fedtrail.ledger import Valuation, commitment
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.privacy import epsilon_composed, epsilon_spent
from fedtrail.protocol.privacy import DpParams, to_micro
from fedtrail.protocol.terms import PrivacyTerms, RoundTerms
from fedtrail.storage.codec import encode_update
from tests.auditor.report.federation import (
    SPEC,
    VALIDATION,
    VALUATION,
    Fed,
    finalize,
    initial,
    new_federation,
    put,
)
from tests.auditor.report.test_browser import _chromium, _console_problems

pytestmark = pytest.mark.anvil

P1 = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.05, steps=40, delta=1e-5)
P2 = DpParams(noise_multiplier=0.7, max_grad_norm=0.5, sample_rate=0.1, steps=30, delta=1e-5)
BUDGET = 30_000_000


def _open(fed: Fed, start: tuple[str, str]) -> int:
    r = fed.ledger.current_round() + 1
    terms = RoundTerms(
        round=r,
        aggregation_rule=asdict(AggregationRule()),
        valuation=VALUATION,
        model_spec=asdict(SPEC),
        spec_hash=SPEC.spec_hash(),
        seed=0,
        validation_sha256=VALIDATION["sha256"],
        validation_images=VALIDATION["images"],
        commit_seconds=3600,
        reveal_seconds=3600,
        privacy=PrivacyTerms(delta=1e-5),
    )
    fed.terms[r] = put(fed.store, terms.to_bytes())
    fed.ledger.open_round(
        fed.coordinator,
        start[0],
        start[1],
        terms_cid=fed.terms[r][0],
        terms_sha256=fed.terms[r][1],
        commit_seconds=3600,
        reveal_seconds=3600,
    )
    return r


def _round(
    fed: Fed, start: tuple[str, str], plan: list[tuple[DpParams | None, int]], seed: int
) -> tuple[str, str]:
    """One DP round from ``start``: each site commits an update carrying ``params`` and reveals
    declaring ``declared`` micro-epsilon (0: a plain reveal); valued and finalized. Returns the
    new global model."""
    r = _open(fed, start)
    gen = torch.Generator().manual_seed(seed)
    reveals = []
    for i, (site, (params, declared)) in enumerate(zip(fed.sites, plan, strict=True)):
        delta = {
            name: 0.01 * torch.randn(shape, generator=gen)
            for name, (shape, _) in SPEC.tensor_layout().items()
        }
        cid, sha = put(fed.store, encode_update(delta, spec=SPEC, round=r, dp=params).blob)
        n = 100 + 50 * i
        fed.ledger.commit_update(site, r, commitment(site.address, r, sha, n))
        reveals.append((site, cid, sha, n, declared))
    info = fed.ledger.get_round(r)
    advance_time(fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 1)
    for site, cid, sha, n, declared in reveals:
        fed.ledger.reveal_update(site, r, cid, sha, n, epsilon_micro=declared or None)
    fed.ledger.record_valuation(
        fed.coordinator, r, [Valuation(s.address, 800_000, 0) for s in fed.sites]
    )
    return finalize(fed, r, start, None)


@dataclass(frozen=True)
class Pages:
    """The DP federation's report after round 1 (honest) and after round 2 (site a declares
    one micro-epsilon less than its DP parameters spend)."""

    fed: Fed
    after_round1: Path
    after_round2: Path
    e1: int
    e2: int


@pytest.fixture(scope="module")
def pages(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Pages:
    tmp = tmp_path_factory.mktemp("dp-report")
    fed = new_federation(tmp, anvil_url)
    model = initial(fed)
    a, b, _ = fed.sites
    fed.ledger.set_privacy_budget(fed.coordinator, a.address, BUDGET)
    fed.ledger.set_privacy_budget(fed.coordinator, b.address, BUDGET)
    e1, e2 = to_micro(epsilon_spent(P1)), to_micro(epsilon_spent(P2))
    assert e1 != e2
    # round 1 honest: a and b private, the third site plain (no budget, no DP)
    model = _round(fed, model, [(P1, e1), (P2, e2), (None, 0)], seed=1)
    first = write_report(fed.ledger, fed.store, tmp / "r1")
    _round(fed, model, [(P1, e1 - 1), (P2, e2), (None, 0)], seed=2)
    second = write_report(fed.ledger, fed.store, tmp / "r2")
    return Pages(fed, first, second, e1, e2)


def _panel(path: Path) -> str:
    page = path.read_text(encoding="utf-8")
    panel = page[page.index('<section id="privacy">') :]
    return panel[: panel.index("</section>")]


def test_the_report_shows_each_sites_budget_spend_and_dp_parameters(pages: Pages) -> None:
    e1 = pages.e1
    page = pages.after_round1.read_text(encoding="utf-8")
    assert '<a href="#privacy">Privacy</a>' in page
    panel = _panel(pages.after_round1)
    assert '<span class="badge pass">PASS</span> every declared spend agrees' in panel
    # the budget and each declared (and cumulative) spend, exact micro-epsilon in the tooltip
    assert f'<span title="{BUDGET} micro-epsilon">30.000000</span>' in panel
    assert f'<span title="{e1} micro-epsilon">{e1 / 1e6:.6f}</span>' in panel
    # the DP parameters of a's update, as its blob carries them, and the recomputed epsilon
    assert "<td class=num>1.1</td><td class=num>1</td><td class=num>0.05</td>" in panel
    assert "<td class=num>40</td><td class=num>1e-05</td>" in panel
    assert "<td class=num>0.7</td><td class=num>0.5</td><td class=num>0.1</td>" in panel
    assert panel.count('<span class="reason ok">agrees</span>') == 2
    assert '<span class="reason ok">not private</span>' in panel
    assert "no DP parameters" in panel
    composed = epsilon_composed([P1])
    assert f"<td class=num>{composed:.3f}</td>" in panel


def test_a_misreported_epsilon_fails_the_panel(pages: Pages) -> None:
    e1, e2 = pages.e1, pages.e2
    panel = _panel(pages.after_round2)
    assert '<span class="badge fail">FAIL</span>' in panel
    assert '<span class="reason bad">DIFFERS</span>' in panel
    assert f"its DP parameters spend {e1} micro-epsilon; declared {e1 - 1}" in panel
    # the cumulative spends on chain: a's after round 2, b's after both rounds
    assert f'<span title="{2 * e1 - 1} micro-epsilon">' in panel
    assert f'<span title="{2 * e2} micro-epsilon">' in panel


@pytest.mark.browser
def test_the_privacy_panel_renders_in_headless_chromium(pages: Pages, tmp_path: Path) -> None:
    """Chromium parses the panel as written: both tables, every row, no console message."""
    dom = _chromium(["--dump-dom", pages.after_round2.resolve().as_uri()], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_problems(dom.stderr), _console_problems(dom.stderr)
    panel = dom.stdout[dom.stdout.index('<section id="privacy">') :]
    panel = panel[: panel.index("</section>")]
    assert panel.count("<table>") == 2
    assert panel.count("<tr") == (1 + 3) + (1 + 6)  # headers, 3 sites, 2 rounds x 3 updates
    # one failing row: a's round-2 update (its account itself agrees with its events)
    assert panel.count('class="failrow"') == 1
    row = panel[panel.index('class="failrow"') :]
    assert "DIFFERS" in row[: row.index("</tr>")]


def test_a_federation_without_dp_has_no_privacy_panel(report: tuple[Path, str]) -> None:
    _, page = report
    assert '<section id="privacy">' not in page
    assert "#privacy" not in page
