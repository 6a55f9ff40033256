"""The declared spend under each accounting rule (issue 16), against opacus' own accountant:
under "composed" a site's running total is its RDP-composed epsilon rounded up."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from fedtrail.errors import ConfigError
from fedtrail.ml.privacy import (
    DpSettings,
    declared_micro,
    epsilon_composed_at,
    epsilon_spent,
    plan_privacy,
    round_target,
)
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol.privacy import COMPOSED, SUMMED, DpParams

P1 = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.05, steps=40, delta=1e-5)
P2 = DpParams(noise_multiplier=0.8, max_grad_norm=1.0, sample_rate=0.1, steps=20, delta=1e-6)


def opacus_epsilon(history: list[DpParams], delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [(p.noise_multiplier, p.sample_rate, p.steps) for p in history]
    return float(accountant.get_epsilon(delta=delta))


def test_composition_is_opacus_bit_for_bit() -> None:
    """The cached RDP curves give opacus' float exactly: old summed declarations still verify."""
    for history in ([P1], [P1, P2], [P2, P1, P1], [P1] * 7):
        for delta in (1e-5, 1e-6):
            assert epsilon_composed_at(history, delta) == opacus_epsilon(history, delta)


def test_composed_declarations_sum_to_the_composed_epsilon_rounded_up() -> None:
    updates = [P1, P2, P1, P1]
    updates = [DpParams(**{**p.to_json(), "accounting": COMPOSED}) for p in updates]
    total = 0
    for i, update in enumerate(updates):
        before = total
        total += declared_micro(update, updates[:i], total)
        # at this update's delta, over every update so far (earlier deltas differ); a total
        # already above it (round 2 composed at the smaller delta 1e-6) grows by 1
        composed = math.ceil(opacus_epsilon(updates[: i + 1], update.delta) * 1e6)
        assert total == max(composed, before + 1)
        assert total >= composed  # never understated
    summed = sum(math.ceil(opacus_epsilon([p], p.delta) * 1e6) for p in updates)
    assert total < summed


def test_summed_declares_the_update_alone_whatever_came_before() -> None:
    assert P1.accounting == SUMMED
    want = math.ceil(opacus_epsilon([P1], P1.delta) * 1e6)
    assert declared_micro(P1, [P1, P2], 123_456) == want


def test_a_composed_spend_is_at_least_one_micro_epsilon() -> None:
    """After a summed history the chain's total is above the composed one: the contract still
    needs a positive spend."""
    p = DpParams(**{**P1.to_json(), "accounting": COMPOSED})
    assert declared_micro(p, [P1], 10**9) == 1


def test_the_node_settings_default_to_composed_and_reach_the_plan() -> None:
    plan = plan_privacy(DpSettings(noise_multiplier=1.0), 486, TrainConfig(), 1e-5)
    assert plan.accounting == COMPOSED
    old = plan_privacy(
        DpSettings(noise_multiplier=1.0, accounting=SUMMED), 486, TrainConfig(), 1e-5
    )
    assert old.accounting == SUMMED
    with pytest.raises(ConfigError, match="accounting"):
        DpSettings(noise_multiplier=1.0, accounting="tight")


def test_round_targets_compose_to_the_total() -> None:
    settings = DpSettings(noise_multiplier=1.0, batch_size=128)
    config = TrainConfig(epochs=1)
    target = round_target(486, config, 8.0, 5, 1e-5, settings)
    plan = plan_privacy(DpSettings(target_epsilon=target, batch_size=128), 486, config, 1e-5)
    assert epsilon_spent(plan) <= target
    assert opacus_epsilon([plan] * 5, 1e-5) == pytest.approx(8.0, abs=0.05)
    assert opacus_epsilon([plan] * 5, 1e-5) <= 8.0
