"""audit verify's privacy checks: the declared epsilon against the one recomputed from the update's
DP parameters (privacy.spend), DP required by the terms (privacy.required), nothing added to
rounds without privacy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import RoundAudit, _check_privacy, verify_round
from fedtrail.chain import connect, dev_account
from fedtrail.ledger import Ledger
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import PrivacyConfig
from fedtrail.node.daemon import SiteNode
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.privacy import to_micro
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.federation import Federation, build_federation, make_sites
from fedtrail.storage.codec import decode_update
from fedtrail.storage.store import LocalStore
from fedtrail.valuation import default_combiner

# Every federation here runs on the real Anvil node: a third of the build time of one on the
# embedded chain (see tests.auditor.test_verify.on_anvil).
pytestmark = pytest.mark.anvil


def _federation(tmp: Path, anvil_url: str) -> Federation:
    """Two DP hospitals (100 images each) under terms that require DP at delta 1e-5 and do not
    check declared spends before valuation; hospital-0 holds a budget of epsilon 100,
    hospital-1 none. On Anvil: development accounts 0, 5, 6."""
    w3 = connect(anvil_url)
    accounts = [dev_account(i) for i in (0, 5, 6)]
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 24, seed=0)
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=make_sites(
            accounts[1:],
            [splits.train.subset(parts[i]) for i in range(2)],
            names=["hospital-0", "hospital-1"],
            training=TrainConfig(epochs=1),
            privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0),
        ),
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=splits.val,
        # terms from before dp_spend_check: the aggregator pays an understated spend, and the
        # audit is what catches it (tests/aggregator/test_dp_spend.py: the rule on)
        settings=AggregatorSettings(
            valuation="loo",
            dp_delta=1e-5,
            dp_required=True,
            combiner=replace(default_combiner(True), dp_spend_check=0),
        ),
    )
    fed.ledger.set_privacy_budget(accounts[0], accounts[1].address, to_micro(100.0))
    return fed


@pytest.fixture(scope="module")
def rounds(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, LocalStore]:
    """Round 1 honest; in round 2 hospital-0 declares 1 micro-epsilon less than it spent and
    hospital-1 trains without DP (neither refused by the chain: hospital-1 has no budget)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("dp")
    mp = pytest.MonkeyPatch()
    try:
        fed = _federation(tmp, anvil_url)
        assert fed.run_round() is not None
        under, plain = fed.nodes[0].address, fed.nodes[1].address
        reveal, plan = Ledger.reveal_update, SiteNode._privacy_plan

        def under_declare(self: Ledger, signer: Any, *args: Any, **kwargs: Any) -> Any:
            if signer.address == under and kwargs.get("epsilon_micro"):
                kwargs["epsilon_micro"] -= 1
            return reveal(self, signer, *args, **kwargs)

        def no_dp(self: SiteNode, round_id: int, config: TrainConfig, **kwargs: Any) -> Any:
            return None if self.address == plain else plan(self, round_id, config, **kwargs)

        mp.setattr(Ledger, "reveal_update", under_declare)
        mp.setattr(SiteNode, "_privacy_plan", no_dp)
        assert fed.run_round() is not None
        return fed.ledger, LocalStore(tmp / "store")
    finally:
        mp.undo()
        torch.set_num_threads(before)


def _check(ledger: Ledger, store: LocalStore, round_id: int, name: str) -> Any:
    return next(c for c in verify_round(ledger, store, round_id).checks if c.name == name)


def test_honest_dp_round_passes_both_privacy_checks(rounds: tuple[Ledger, LocalStore]) -> None:
    ledger, store = rounds
    spend = _check(ledger, store, 1, "privacy.spend")
    assert spend.passed, spend.detail
    assert "2 update(s)" in spend.detail and "2 spend(s)" in spend.detail
    required = _check(ledger, store, 1, "privacy.required")
    assert required.passed, required.detail
    assert {s.round for s in ledger.privacy_spends(1)} == {1}


def test_a_misreported_epsilon_fails_privacy_spend(rounds: tuple[Ledger, LocalStore]) -> None:
    ledger, store = rounds
    spend = _check(ledger, store, 2, "privacy.spend")
    assert not spend.passed
    site = ledger.privacy_spends(2)[0]
    assert f"{site.site[:10]} declared epsilon" in spend.detail
    assert f"({site.epsilon_micro} micro)" in spend.detail
    assert f"({site.epsilon_micro + 1} micro)" in spend.detail


def test_an_update_without_dp_under_required_terms_is_excluded_and_verify_passes(
    rounds: tuple[Ledger, LocalStore],
) -> None:
    ledger, store = rounds
    plain = next(s for s in ledger.get_submissions(2) if s.site != ledger.privacy_spends(2)[0].site)
    assert plain.reason == Reason.MALFORMED and plain.weight == 0  # the aggregator refused it
    required = _check(ledger, store, 2, "privacy.required")
    assert required.passed, required.detail
    assert len(ledger.privacy_spends(2)) == 1  # only the DP site declared
    # An aggregator that weighted it anyway fails the check.
    audit = RoundAudit(round=2)
    info = ledger.get_round(2)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    subs = [replace(s, weight=1) if s.site == plain.site else s for s in ledger.get_submissions(2)]
    dp = {s.site: None for s in subs}
    _check_privacy(audit, ledger, 2, subs, dp, terms)
    failed = next(c for c in audit.checks if c.name == "privacy.required")
    assert not failed.passed and "without DP parameters" in failed.detail
    assert plain.site[:10] in failed.detail


def test_rounds_without_privacy_get_no_privacy_check(tmp_path: Path, anvil_url: str) -> None:
    from tests.auditor.test_verify import federation, on_anvil

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    finally:
        torch.set_num_threads(before)
    names = {c.name for c in verify_round(fed.ledger, fed.store, 1).checks}
    assert "weights" in names and not {n for n in names if n.startswith("privacy")}


def test_terms_whose_delta_is_above_one_over_n_fail_privacy_spend(
    rounds: tuple[Ledger, LocalStore],
) -> None:
    """The terms' delta is the aggregator's choice: parameters that agree with terms of delta
    0.5 still fail, a delta above 1 / the site's sample count lets one of its images leak."""
    ledger, store = rounds
    info = ledger.get_round(1)
    terms = RoundTerms.from_bytes(store.get(info.terms_cid, info.terms_sha256))
    assert terms.privacy is not None
    loose = replace(terms, privacy=replace(terms.privacy, delta=0.5))
    subs = ledger.get_submissions(1)
    dp: dict[str, Any] = {}
    for sub in subs:
        _, meta = decode_update(store.get(sub.cid, sub.sha256), spec=ModelSpec())
        assert meta.dp is not None
        dp[sub.site] = replace(meta.dp, delta=0.5)
    audit = RoundAudit(round=1)
    _check_privacy(audit, ledger, 1, subs, dp, loose)
    spend = next(c for c in audit.checks if c.name == "privacy.spend")
    assert not spend.passed
    n = subs[0].num_samples
    assert f"{subs[0].site[:10]} accounted at delta 0.5 > 1 / its {n} samples" in spend.detail
