"""The privacy budget on chain (issue 16): the coordinator sets a site's epsilon budget, a
private reveal charges the site's account, and the contract refuses every way around it —
a plain reveal by a budget holder, a spend past the budget, a budget lowered below the spend,
a uint64 overflow, a charge to another site, a reset by removal and re-registration."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount

from fedtrail.errors import (
    CommitmentMismatch,
    ConfigError,
    InvalidArgument,
    PrivacyBudgetError,
    PrivacyBudgetExceeded,
    PrivacySpendRequired,
    Unauthorized,
)
from fedtrail.ledger import PrivacyAccount, PrivacySpend
from fedtrail.protocol.privacy import EPSILON_SCALE
from tests.contracts.federation import CID, Fed, expect, h, last_event
from tests.fixtures.chain import ChainEnv

U64_MAX = 2**64 - 1


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


def private_round(fed: Fed, site: LocalAccount, eps: int | None, tag: str = "u") -> int:
    """Opens a round (closing the previous one if needed is the caller's job), commits
    ``site``'s update and moves past the commit deadline; reveals with ``eps`` unless it is
    None. Returns the round id."""
    r = fed.open(model=f"g{fed.ledger.current_round()}")
    fed.commit(r, site, f"{tag}{r}")
    fed.past_commit(r)
    if eps is not None:
        fed.ledger.reveal_update(site, r, CID, h(f"{tag}{r}"), 100, epsilon_micro=eps)
    return r


def close(fed: Fed, r: int) -> None:
    fed.past_reveal(r)
    fed.ledger.cancel_round(fed.agg, r)


# ------------------------------------------------------------------ setPrivacyBudget


def test_set_privacy_budget_stores_it_and_emits(fed: Fed) -> None:
    site = fed.sites[0]
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, 0)
    fed.ledger.set_privacy_budget(fed.coord, site.address, 8 * EPSILON_SCALE)
    assert last_event(fed.ledger, "PrivacyBudgetSet") == {
        "site": site.address,
        "epsilonBudgetMicro": 8_000_000,
    }
    assert fed.ledger.privacy(site.address) == PrivacyAccount(8_000_000, 0)
    assert fed.ledger.privacy(fed.sites[1].address) == PrivacyAccount(0, 0)


def test_set_privacy_budget_errors(fed: Fed) -> None:
    site = fed.sites[0]
    with expect(Unauthorized, "NotCoordinator", caller=fed.agg.address):
        fed.ledger.set_privacy_budget(fed.agg, site.address, 1)
    with expect(Unauthorized, "NotCoordinator", caller=site.address):
        fed.ledger.set_privacy_budget(site, site.address, U64_MAX)  # no self-service budget
    with expect(Unauthorized, "UnknownSite", site=fed.env.outsider.address):
        fed.ledger.set_privacy_budget(fed.coord, fed.env.outsider.address, 1)
    with pytest.raises(ConfigError, match="epsilon_budget_micro"):
        fed.ledger.set_privacy_budget(fed.coord, site.address, 2**64)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, 0)


def test_a_budget_cannot_be_set_below_the_spend_but_can_be_raised(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 3_000_000)
    close(fed, private_round(fed, site, 2_000_000))
    for lower in (1_999_999, 0):  # 0 would lift the cap: refused too once something is spent
        with expect(
            PrivacyBudgetError,
            "PrivacyBudgetBelowSpent",
            site=site.address,
            budget=lower,
            spent=2_000_000,
        ):
            fed.ledger.set_privacy_budget(fed.coord, site.address, lower)
    fed.ledger.set_privacy_budget(fed.coord, site.address, 2_000_000)  # exactly the spend
    assert fed.ledger.privacy(site.address) == PrivacyAccount(2_000_000, 2_000_000)
    fed.ledger.set_privacy_budget(fed.coord, site.address, 5_000_000)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(5_000_000, 2_000_000)


# ------------------------------------------------------------------ revealPrivateUpdate


def test_a_private_reveal_records_the_spend_and_emits_after_the_submission(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 10_000_000)
    r1 = private_round(fed, site, 1_250_000)
    spent = fed.ledger.events("PrivacySpent")[-1]
    assert spent.args == {
        "round": r1,
        "site": site.address,
        "epsilonMicro": 1_250_000,
        "totalMicro": 1_250_000,
    }
    submitted = fed.ledger.events("UpdateSubmitted")[-1]
    assert (submitted.tx_hash, submitted.log_index + 1) == (spent.tx_hash, spent.log_index)
    sub = fed.ledger.get_submission(r1, site.address)
    assert sub is not None and sub.revealed and sub.sha256 == h(f"u{r1}")
    close(fed, r1)
    r2 = private_round(fed, site, 750_000)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(10_000_000, 2_000_000)
    assert fed.ledger.privacy_spends() == [
        PrivacySpend(r1, site.address, 1_250_000, 1_250_000),
        PrivacySpend(r2, site.address, 750_000, 2_000_000),
    ]
    assert fed.ledger.privacy_spends(r2) == [PrivacySpend(r2, site.address, 750_000, 2_000_000)]


def test_a_spend_past_the_budget_is_refused_and_nothing_is_revealed(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 1_000_000)
    r = private_round(fed, site, None)
    with expect(
        PrivacyBudgetExceeded,
        "PrivacyBudgetExceeded",
        site=site.address,
        spent=0,
        requested=1_000_001,
        budget=1_000_000,
    ):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=1_000_001)
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None and not sub.revealed
    assert fed.ledger.privacy(site.address) == PrivacyAccount(1_000_000, 0)
    assert fed.ledger.privacy_spends() == []
    # exactly the budget is allowed
    fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=1_000_000)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(1_000_000, 1_000_000)


def test_a_site_at_its_budget_cannot_submit(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 2_000_000)
    close(fed, private_round(fed, site, 2_000_000))
    r = private_round(fed, site, None)
    with expect(
        PrivacyBudgetExceeded,
        "PrivacyBudgetExceeded",
        site=site.address,
        spent=2_000_000,
        requested=1,
        budget=2_000_000,
    ):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=1)
    with expect(PrivacySpendRequired, "PrivacySpendRequired", site=site.address):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100)
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None and not sub.revealed
    assert fed.ledger.get_round(r).submission_count == 0


def test_a_budget_holder_cannot_reveal_without_declaring_a_spend(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 5_000_000)
    r = private_round(fed, site, None)
    with expect(PrivacySpendRequired, "PrivacySpendRequired", site=site.address):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100)
    with expect(InvalidArgument, "InvalidParameter", what="epsilonMicro"):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=0)
    with pytest.raises(ConfigError, match="epsilon_micro"):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=-1)
    sub = fed.ledger.get_submission(r, site.address)
    assert sub is not None and not sub.revealed


def test_removing_the_budget_before_any_spend_allows_plain_reveals_again(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 5_000_000)
    fed.ledger.set_privacy_budget(fed.coord, site.address, 0)
    assert last_event(fed.ledger, "PrivacyBudgetSet")["epsilonBudgetMicro"] == 0
    r = private_round(fed, site, None)
    fed.reveal(r, site, f"u{r}")
    assert fed.ledger.privacy_spends() == []


def test_a_site_without_budget_may_declare_a_spend_recorded_but_not_capped(fed: Fed) -> None:
    site = fed.sites[0]
    r1 = private_round(fed, site, U64_MAX - 5)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, U64_MAX - 5)
    close(fed, r1)
    r2 = private_round(fed, site, None)
    # the uint64 sum cannot wrap or panic: the implicit cap is the largest uint64
    with expect(
        PrivacyBudgetExceeded,
        "PrivacyBudgetExceeded",
        site=site.address,
        spent=U64_MAX - 5,
        requested=6,
        budget=U64_MAX,
    ):
        fed.ledger.reveal_update(site, r2, CID, h(f"u{r2}"), 100, epsilon_micro=6)
    fed.ledger.reveal_update(site, r2, CID, h(f"u{r2}"), 100, epsilon_micro=5)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, U64_MAX)


def test_a_budget_near_the_uint64_limit_does_not_overflow(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, U64_MAX)
    close(fed, private_round(fed, site, U64_MAX - 1))
    r = private_round(fed, site, None)
    with expect(PrivacyBudgetExceeded, "PrivacyBudgetExceeded", spent=U64_MAX - 1, requested=2):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=2)


def test_a_plain_reveal_by_a_site_without_budget_charges_nothing(fed: Fed) -> None:
    site = fed.sites[0]
    r = private_round(fed, site, None)
    fed.reveal(r, site, f"u{r}")
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, 0)
    assert fed.ledger.events("PrivacySpent") == []


# ------------------------------------------------------------------ attacks


def test_a_spend_is_charged_to_the_sender_only(fed: Fed) -> None:
    """No argument names the account: a site cannot charge (or relieve) another site."""
    a, b = fed.sites[0], fed.sites[1]
    fed.ledger.set_privacy_budget(fed.coord, b.address, 1_000_000)
    r = fed.open()
    fed.commit(r, a, "a")
    fed.commit(r, b, "b")
    fed.past_commit(r)
    fed.ledger.reveal_update(a, r, CID, h("a"), 100, epsilon_micro=900_000)
    assert fed.ledger.privacy(a.address) == PrivacyAccount(0, 900_000)
    assert fed.ledger.privacy(b.address) == PrivacyAccount(1_000_000, 0)
    # a copies b's reveal, declaring a spend: it opens no commitment and charges nobody
    with expect(CommitmentMismatch, "CommitmentMismatch", site=b.address):
        fed.ledger.reveal_update(b, r, CID, h("a"), 100, epsilon_micro=1)
    fed.ledger.reveal_update(b, r, CID, h("b"), 100, epsilon_micro=1_000_000)
    assert fed.ledger.privacy(b.address) == PrivacyAccount(1_000_000, 1_000_000)
    assert [(s.site, s.total_micro) for s in fed.ledger.privacy_spends(r)] == [
        (a.address, 900_000),
        (b.address, 1_000_000),
    ]


def test_a_failed_commitment_check_charges_nothing(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 1_000_000)
    r = private_round(fed, site, None)
    with expect(CommitmentMismatch, "CommitmentMismatch", site=site.address):
        fed.ledger.reveal_update(site, r, CID, h("other"), 100, epsilon_micro=10)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(1_000_000, 0)


def test_removal_and_re_registration_keep_the_budget_and_the_spend(fed: Fed) -> None:
    """Decision: a privacy account belongs to the address for good. Being removed and
    registered again resets neither the spend (the updates stay public) nor the budget."""
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 1_500_000)
    close(fed, private_round(fed, site, 1_000_000))
    fed.ledger.remove_site(fed.coord, site.address)
    with expect(Unauthorized, "UnknownSite", site=site.address):
        fed.ledger.set_privacy_budget(fed.coord, site.address, 9_000_000)
    fed.ledger.register_site(fed.coord, site.address, "again", 10_000)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(1_500_000, 1_000_000)
    r = private_round(fed, site, None)
    with expect(PrivacySpendRequired, "PrivacySpendRequired", site=site.address):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100)
    with expect(PrivacyBudgetExceeded, "PrivacyBudgetExceeded", spent=1_000_000, requested=600_000):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=600_000)
    fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=500_000)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(1_500_000, 1_500_000)


def test_a_cancelled_round_does_not_refund_the_spend(fed: Fed) -> None:
    """The update became public at its reveal: cancelling the round cannot undo that."""
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, 1_000_000)
    r = private_round(fed, site, 700_000)
    close(fed, r)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(1_000_000, 700_000)
    assert fed.ledger.privacy_spends(r) == [PrivacySpend(r, site.address, 700_000, 700_000)]
