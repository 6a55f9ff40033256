"""The privacy budget on chain (issue 16): the coordinator sets a site's epsilon budget, a
private reveal charges the site's account, and the contract refuses every way around it —
a plain reveal by a budget holder, a spend past the budget, a budget lowered below the spend,
an overflow of the account's uint40 (or of a uint64 declaration), a budget over the limit, a
charge to another site, a reset by removal and re-registration. The account shares the site's
first storage slot with the reveal's fields (and ``maxSamples`` is a uint48 there): the limits
that packing sets are checked, and the fields beside each other are shown not to clobber one
another."""

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
from fedtrail.ledger import MAX_SITE_SAMPLES, PrivacyAccount, PrivacySpend
from fedtrail.protocol.privacy import EPSILON_SCALE, MAX_PRIVACY_MICRO
from tests.contracts.federation import CID, Fed, expect, h, last_event
from tests.fixtures.chain import ChainEnv

U64_MAX = 2**64 - 1
LIMIT = 2**40 - 1  # the contract's MAX_PRIVACY_MICRO, written out: 1,099,511.627775 epsilon


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
        fed.ledger.set_privacy_budget(site, site.address, LIMIT)  # no self-service budget
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


def test_the_limits_mirror_the_contract() -> None:
    assert MAX_PRIVACY_MICRO == LIMIT and MAX_SITE_SAMPLES == 2**48 - 1


def test_the_contract_publishes_its_limits(fed: Fed) -> None:
    fn = fed.ledger._fn
    assert fn.MAX_PRIVACY_MICRO().call() == MAX_PRIVACY_MICRO
    assert fn.MAX_SITE_SAMPLES().call() == MAX_SITE_SAMPLES


def test_a_site_without_budget_may_declare_a_spend_recorded_up_to_the_limit(fed: Fed) -> None:
    site = fed.sites[0]
    r1 = private_round(fed, site, LIMIT - 5)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, LIMIT - 5)
    close(fed, r1)
    r2 = private_round(fed, site, None)
    # the sum cannot wrap the uint40 or panic: without a budget the cap is the limit
    with expect(
        PrivacyBudgetExceeded,
        "PrivacyBudgetExceeded",
        site=site.address,
        spent=LIMIT - 5,
        requested=6,
        budget=LIMIT,
    ):
        fed.ledger.reveal_update(site, r2, CID, h(f"u{r2}"), 100, epsilon_micro=6)
    fed.ledger.reveal_update(site, r2, CID, h(f"u{r2}"), 100, epsilon_micro=5)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, LIMIT)


def test_a_declaration_over_the_limit_is_refused_not_truncated(fed: Fed) -> None:
    """A uint64 spend whose low 40 bits are small (2**40 + 1) must not be stored as 1."""
    site = fed.sites[0]
    r = private_round(fed, site, None)
    for eps in (LIMIT + 1, 2**40 + 1, U64_MAX):
        with expect(PrivacyBudgetExceeded, "PrivacyBudgetExceeded", spent=0, requested=eps):
            fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=eps)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, 0)


def test_a_budget_at_the_limit_does_not_overflow(fed: Fed) -> None:
    site = fed.sites[0]
    fed.ledger.set_privacy_budget(fed.coord, site.address, LIMIT)
    close(fed, private_round(fed, site, LIMIT - 1))
    r = private_round(fed, site, None)
    with expect(PrivacyBudgetExceeded, "PrivacyBudgetExceeded", spent=LIMIT - 1, requested=2):
        fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=2)
    fed.ledger.reveal_update(site, r, CID, h(f"u{r}"), 100, epsilon_micro=1)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(LIMIT, LIMIT)


def test_a_budget_over_the_limit_is_refused(fed: Fed) -> None:
    site = fed.sites[0]
    for budget in (LIMIT + 1, 2**40 + 8_000_000, U64_MAX):  # not truncated to its low bits
        with expect(PrivacyBudgetError, "PrivacyBudgetTooLarge", site=site.address, budget=budget):
            fed.ledger.set_privacy_budget(fed.coord, site.address, budget)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(0, 0)
    assert fed.ledger.events("PrivacyBudgetSet") == []


def test_max_samples_over_the_limit_is_refused(fed: Fed) -> None:
    site, newcomer = fed.sites[0], fed.env.outsider
    for n in (MAX_SITE_SAMPLES + 1, 2**48 + 100, U64_MAX):  # not truncated to its low bits
        with expect(InvalidArgument, "MaxSamplesTooLarge", site=site.address, maxSamples=n):
            fed.ledger.set_max_samples(fed.coord, site.address, n)
        with expect(InvalidArgument, "MaxSamplesTooLarge", site=newcomer.address, limit=2**48 - 1):
            fed.ledger.register_site(fed.coord, newcomer.address, "big", n)
    info = fed.ledger.get_site(site.address)
    assert info is not None and info.max_samples == 10_000
    assert fed.ledger.get_site(newcomer.address) is None


def test_the_packed_fields_do_not_clobber_each_other(any_chain: ChainEnv) -> None:
    """Every field of the site's first slot at its largest: a reveal of MAX_SITE_SAMPLES
    samples that spends the whole budget; each field reads back whole, in the valuation too.
    On every chain (the embedded one, Anvil and Ganache)."""
    fed = Fed(any_chain)
    site = fed.sites[0]
    fed.ledger.set_max_samples(fed.coord, site.address, MAX_SITE_SAMPLES)
    fed.ledger.set_privacy_budget(fed.coord, site.address, LIMIT)
    r = fed.open()
    fed.commit(r, site, "big", MAX_SITE_SAMPLES)
    fed.past_commit(r)
    fed.ledger.reveal_update(site, r, CID, h("big"), MAX_SITE_SAMPLES, epsilon_micro=LIMIT)
    assert fed.ledger.privacy(site.address) == PrivacyAccount(LIMIT, LIMIT)
    info = fed.ledger.get_site(site.address)
    assert info is not None and info.max_samples == MAX_SITE_SAMPLES and info.registered
    fed.past_reveal(r)
    fed.raw_valuation(r, [site.address], [900_000], [0])
    (sub,) = fed.ledger.get_submissions(r)
    assert (sub.num_samples, sub.score, sub.weight) == (MAX_SITE_SAMPLES, 900_000, 10**18)
    info = fed.ledger.get_site(site.address)
    assert info is not None and info.reputation == 900_000 and info.valued_rounds == 1
    assert info.max_samples == MAX_SITE_SAMPLES
    assert fed.ledger.privacy(site.address) == PrivacyAccount(LIMIT, LIMIT)


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
