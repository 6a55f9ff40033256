"""The epsilon fedtrail declares and puts on chain against opacus' own RDP accountant
(``opacus.accountants.RDPAccountant``, its default orders) over random DP parameters: noise
0.3-20, sample rates 1e-4 to 1 (a full batch included), 1-5,000 steps, deltas 1e-3 to 1e-9,
histories of 1-5 updates with different parameters. The fixed-parameter tests beside it
(test_privacy, test_privacy_composed) pin a few points; this sweeps the space."""

from __future__ import annotations

import math
import random

import pytest
from opacus.accountants import RDPAccountant

from fedtrail.ml.privacy import declared_micro, epsilon_composed_at, epsilon_spent
from fedtrail.protocol.privacy import COMPOSED, DpParams


def _opacus(history: list[DpParams], delta: float) -> float:
    accountant = RDPAccountant()
    for p in history:  # as DP-SGD steps it: one history entry per update
        accountant.history.append((p.noise_multiplier, p.sample_rate, p.steps))
    return float(accountant.get_epsilon(delta=delta))


def _random_params(rng: random.Random, delta: float) -> DpParams:
    return DpParams(
        noise_multiplier=rng.choice([0.3, 0.5, 0.8, 1.0, 1.1, 1.5, 2.0, 4.0, 20.0]),
        max_grad_norm=rng.choice([0.1, 1.0, 5.0]),
        sample_rate=rng.choice([1e-4, 0.001, 0.01, 0.05, 0.2, 0.512, 1.0]),
        steps=rng.choice([1, 2, 3, 10, 100, 1000, 5000]),
        delta=delta,
        accounting=COMPOSED,
    )


@pytest.mark.parametrize("seed", range(20))
def test_declared_spends_compose_to_opacus_epsilon(seed: int) -> None:
    rng = random.Random(seed)
    delta = rng.choice([1e-3, 1e-5, 1e-6, 1e-9])
    history = [_random_params(rng, delta) for _ in range(rng.randint(1, 5))]
    assert epsilon_spent(history[0]) == _opacus(history[:1], delta)
    total = 0
    for i, update in enumerate(history):
        eps = _opacus(history[: i + 1], delta)
        assert epsilon_composed_at(history[: i + 1], delta) == eps
        spend = declared_micro(update, history[:i], total)
        # the chain's total after the reveal: the composed epsilon rounded up to a micro,
        # unless that adds nothing (the contract refuses a zero spend: one micro more)
        want = max(math.ceil(eps * 1_000_000), total + 1)
        assert total + spend == want
        total += spend
