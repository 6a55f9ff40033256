"""``start_model.initial``: the federation's first rounds (none finalized before them) start
from the seeded initial model the terms name. The contract pins the start model only from the
first finalized round on (``StartModelMismatch``), so an aggregator that opened round 1 from a
model of its own (a planted backdoor, a model pre-trained to suit one site) passed every check
(found by an attack review)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fedtrail.aggregator.service as service_mod
from fedtrail.auditor.verify import verify_round
from tests.auditor.test_verify import federation, on_anvil

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _failed(audit: Any) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


def test_a_first_round_opened_from_another_model_fails_start_model_initial(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service_mod.initial_model

    def crafted(spec: Any, seed: int) -> Any:
        model = real(spec, seed)
        with torch.no_grad():
            model.fc2.bias[1] += 4.0
        return model

    monkeypatch.setattr(service_mod, "initial_model", crafted)
    fed = federation(tmp_path, rounds=2, **on_anvil(anvil_url))
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert set(bad) == {"start_model.initial"}, bad
    assert "must be the seeded initial model (seed 0" in bad["start_model.initial"]
    # round 2 starts from round 1's global model, which the contract pins
    second = verify_round(fed.ledger, fed.store, 2)
    assert second.passed and "start_model.initial" not in {c.name for c in second.checks}


def test_an_honest_first_round_passes_start_model_initial(tmp_path: Path, anvil_url: str) -> None:
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    audit = verify_round(fed.ledger, fed.store, 1)
    assert audit.passed, _failed(audit)
    check = next(c for c in audit.checks if c.name == "start_model.initial")
    assert "seeded initial model (seed 0" in check.detail
