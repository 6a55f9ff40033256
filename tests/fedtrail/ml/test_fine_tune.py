"""Personalisation by fine-tuning: exactly ``steps`` seeded SGD steps from the global model,
the whole state back, bit-identical for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.ml.training import TrainConfig, fine_tune, train_local

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()


def test_fine_tune_is_deterministic_and_runs_exactly_the_steps() -> None:
    data = load_bundled()
    train = data.train.subset(np.arange(100))
    start = federated_state(initial_model(SPEC, 0))
    cfg = TrainConfig(batch_size=16, lr=0.05, seed=7)
    a = fine_tune(start, train, spec=SPEC, config=cfg, steps=9, val=data.val)
    b = fine_tune(start, train, spec=SPEC, config=cfg, steps=9, val=data.val)
    assert a.steps == 9 and a.metrics is not None
    assert list(a.state) == list(start)
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k])
    assert any(not torch.equal(a.state[k], start[k]) for k in start)
    # 100 images at 16 a batch are 7 steps an epoch: 7 steps are exactly one epoch of
    # train_local with the same seed (up to the rounding of new - start + start); 8 steps
    # are not.
    one = fine_tune(start, train, spec=SPEC, config=cfg, steps=7)
    eight = fine_tune(start, train, spec=SPEC, config=cfg, steps=8)
    epoch = train_local(start, train, spec=SPEC, config=cfg)
    for k in start:
        torch.testing.assert_close(one.state[k], start[k] + epoch.delta[k], rtol=0, atol=1e-6)
    assert max(float((eight.state[k] - one.state[k]).abs().max()) for k in start) > 1e-3
    other = fine_tune(start, train, spec=SPEC, config=TrainConfig(seed=8, lr=0.05), steps=9)
    assert any(not torch.equal(a.state[k], other.state[k]) for k in start)


def test_fine_tune_needs_a_positive_step_count() -> None:
    data = load_bundled()
    start = federated_state(initial_model(SPEC, 0))
    for bad in (0, -1, 2.0):
        with pytest.raises(ConfigError, match="steps"):
            fine_tune(start, data.train, spec=SPEC, config=TrainConfig(), steps=bad)  # type: ignore[arg-type]
