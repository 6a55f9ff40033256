"""The node under composed accounting (issue 16), on a real chain: each reveal declares the
increment of the site's RDP-composed total, read from the chain and its earlier blobs, so the
chain's total is the composed epsilon rounded up; the budget check uses the same rule, so a
composed site runs several times the rounds of a summed one under one budget, and a round that
would pass the budget is skipped before training. Expected figures come from opacus' own
accountant over the DP parameters in the published blobs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant

from fedtrail.aggregator.service import CLOCK_SLACK, AggregatorSettings
from fedtrail.auditor.privacy import audit_privacy
from fedtrail.auditor.verify import verify_all
from fedtrail.chain import advance_time, block_timestamp, connect, dev_account
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import plan_privacy
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import PrivacyConfig
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.privacy import COMPOSED, SUMMED, DpParams
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.codec import decode_update
from fedtrail.storage.store import LocalStore

pytestmark = pytest.mark.anvil

IMAGES = 400  # expected batch 128: q 0.32, 3 steps a round
NOISE = 1.5
BUDGET_MICRO = 4_500_000


def composed_micro(history: list[DpParams]) -> int:
    accountant = RDPAccountant()
    accountant.history = [(p.noise_multiplier, p.sample_rate, p.steps) for p in history]
    return math.ceil(float(accountant.get_epsilon(delta=history[-1].delta)) * 1e6)


def fits(params: DpParams, rule: str) -> int:
    """Rounds a site declaring under ``rule`` trains before the next passes the budget."""
    n = 0
    while True:
        total = (
            composed_micro([params] * (n + 1))
            if rule == COMPOSED
            else ((n + 1) * composed_micro([params]))
        )
        if total > BUDGET_MICRO:
            return n
        n += 1


def _federation(tmp: Path, anvil_url: str) -> Federation:
    """hospital-0 composed, hospital-1 summed (same data size and DP settings), both with the
    budget; hospital-2 without DP keeps the rounds going. On Anvil: accounts 0, 7, 8, 9."""
    w3 = connect(anvil_url)
    accounts = [dev_account(i) for i in (0, 7, 8, 9)]
    train = load_bundled().train
    trains = [train.subset(range(i * IMAGES, (i + 1) * IMAGES)) for i in range(3)]
    sites = []
    for i, rule in enumerate((COMPOSED, SUMMED, None)):
        privacy = (
            PrivacyConfig()
            if rule is None
            else PrivacyConfig(enabled=True, noise_multiplier=NOISE, accounting=rule)
        )
        sites += make_sites(
            [accounts[1 + i]],
            [trains[i]],
            names=[f"hospital-{i}"],
            training=TrainConfig(epochs=1, seed=i),
            privacy=privacy,
        )
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=sites,
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=load_bundled().val,
        settings=AggregatorSettings(valuation="loo", dp_delta=1e-5),
    )
    for account in accounts[1:3]:
        fed.ledger.set_privacy_budget(accounts[0], account.address, BUDGET_MICRO)
    return fed


def _close_round(fed: Federation) -> None:
    """One round run to its close: finalized, or cancelled when no update is usable. Which of
    the two is not this module's point (privacy is declared and spent at reveal either way): a
    leave-one-out of noisy DP updates can score every update 0 from some start models, and the
    start model is derived from the deployment, so the service cancels such a round once the
    reveal deadline has passed (``Federation.run_round`` does not wait for it)."""
    outcome = fed.run_round()
    if outcome is None:
        info = fed.ledger.get_round(fed.ledger.current_round())
        now = block_timestamp(fed.ledger.w3)
        advance_time(fed.ledger.w3, max(0, info.reveal_deadline - now) + 1 + CLOCK_SLACK)
        outcome = fed.service.step()
    assert outcome is not None and outcome.phase in (Phase.FINALIZED, Phase.CANCELLED)


@pytest.fixture(scope="module")
def run(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Federation, int]:
    """As many rounds as the composed site fits, plus one."""
    planned = plan_privacy(
        PrivacyConfig(enabled=True, noise_multiplier=NOISE).settings(),
        IMAGES,
        TrainConfig(epochs=1),
        1e-5,
    )
    rounds = fits(planned, COMPOSED) + 1
    assert rounds <= 6  # keeps the test short; the figures below make it meaningful
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fed = _federation(tmp_path_factory.mktemp("composed"), anvil_url)
        for _ in range(rounds):
            _close_round(fed)
    finally:
        torch.set_num_threads(before)
    return fed, rounds


def _params(fed: Federation, site: str) -> list[DpParams]:
    out = []
    for spend in fed.ledger.privacy_spends(site=site):
        sub = fed.ledger.get_submission(spend.round, site)
        assert sub is not None
        dp = decode_update(fed.store.get(sub.cid, sub.sha256), spec=ModelSpec())[1].dp
        assert dp is not None
        out.append(dp)
    return out


def test_the_chain_total_is_the_composed_epsilon_after_every_round(
    run: tuple[Federation, int],
) -> None:
    fed, _ = run
    site = fed.nodes[0].address
    params = _params(fed, site)
    assert len(params) >= 2 and {p.accounting for p in params} == {COMPOSED}
    totals = [s.total_micro for s in fed.ledger.privacy_spends(site=site)]
    assert totals == [composed_micro(params[: i + 1]) for i in range(len(params))]
    assert fed.ledger.privacy(site).spent_micro == totals[-1] <= BUDGET_MICRO


def test_a_composed_site_runs_more_rounds_than_a_summed_one_under_one_budget(
    run: tuple[Federation, int],
) -> None:
    fed, _ = run
    composed, summed = fed.nodes[0], fed.nodes[1]
    planned = _params(fed, composed.address)[0]
    want_composed, want_summed = fits(planned, COMPOSED), fits(planned, SUMMED)
    assert len(fed.ledger.privacy_spends(site=composed.address)) == want_composed
    assert len(fed.ledger.privacy_spends(site=summed.address)) == want_summed
    assert want_composed >= 3 * want_summed >= 3
    # the summed site's blobs name no rule (the old form) and its spends are each update's own
    old = _params(fed, summed.address)
    assert {p.accounting for p in old} == {SUMMED}
    assert [s.epsilon_micro for s in fed.ledger.privacy_spends(site=summed.address)] == [
        composed_micro([p]) for p in old
    ]


def test_the_round_past_the_budget_is_skipped_before_training(
    run: tuple[Federation, int],
) -> None:
    fed, rounds = run
    node = fed.nodes[0]
    record = node.state.rounds[rounds]
    assert record.phase == "skipped"
    assert "privacy budget" in record.note and "composed accounting" in record.note
    assert fed.ledger.get_submission(rounds, node.address) is None
    params = _params(fed, node.address)
    assert fed.ledger.privacy(node.address).spent_micro + record.epsilon_micro > BUDGET_MICRO
    assert record.epsilon_micro == composed_micro([*params, params[-1]]) - composed_micro(params)


def test_verify_and_audit_privacy_pass_with_both_rules(run: tuple[Federation, int]) -> None:
    fed, _ = run
    audits = verify_all(fed.ledger, fed.store)
    for audit in audits:
        failed = [c for c in audit.checks if not c.passed]
        assert not failed, failed
    # a finalized round checks the spends its reveals declared; a cancelled one is reported, not
    # checked, by verify, and whether a round finalizes or is cancelled (every noisy update
    # scored 0) depends on the deployment-derived start model, so audit_privacy below is what
    # covers every spend here (verify's privacy.spend: tests/auditor/test_privacy_composed.py)
    for audit in audits:
        if fed.ledger.get_round(audit.round).phase == Phase.FINALIZED:
            assert any(c.name == "privacy.spend" for c in audit.checks)
    result = audit_privacy(fed.ledger, fed.store)
    assert result.passed, result.problems
    (site,) = [s for s in result.sites if s.site == fed.nodes[0].address]
    assert site.composed_epsilon is not None
    assert site.spent_micro == math.ceil(site.composed_epsilon * 1e6)
