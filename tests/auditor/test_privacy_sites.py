"""A site's privacy account in `fedtrail audit privacy`: its RDP-composed epsilon over updates
accounted at different deltas (terms may change the delta between rounds)."""

from __future__ import annotations

from fedtrail.auditor.privacy import UpdateSpend, _site
from fedtrail.ledger import PrivacyAccount
from fedtrail.ml.privacy import epsilon_composed_at
from fedtrail.protocol.privacy import DpParams

SITE = "0x" + "ab" * 20
EARLY = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.05, steps=40, delta=1e-6)
LATE = DpParams(
    noise_multiplier=0.8,
    max_grad_norm=1.0,
    sample_rate=0.1,
    steps=20,
    delta=1e-5,
    accounting="composed",
)


class _Ledger:
    def __init__(self, spent: int) -> None:
        self.spent = spent

    def privacy(self, site: str) -> PrivacyAccount:
        return PrivacyAccount(budget_micro=0, spent_micro=self.spent)


def _spend(round_id: int, params: DpParams, micro: int) -> UpdateSpend:
    return UpdateSpend(
        round=round_id,
        site=SITE,
        declared_micro=micro,
        total_micro=None,
        params=params,
        recomputed_micro=micro,
        status="ok",
    )


def test_updates_at_different_deltas_compose_at_the_latest_ones_delta_without_a_problem() -> None:
    """Before, a site whose updates named different deltas got the problem "cannot compose its
    updates' epsilons" (exit 1), though the composed rule charges exactly such a history: RDP
    composes whatever delta each update named, converted at the latest update's delta."""
    updates = [_spend(2, LATE, 300), _spend(1, EARLY, 700)]  # not in round order
    site = _site(_Ledger(1000), SITE, "hospital-A", updates)  # type: ignore[arg-type]
    assert site.problems == ()
    assert site.composed_epsilon == epsilon_composed_at([EARLY, LATE], LATE.delta)
    assert site.composed_epsilon != epsilon_composed_at([EARLY, LATE], EARLY.delta)
