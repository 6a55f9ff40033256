"""``start_model.initial``: the federation's first rounds (none finalized before them) start
from the seeded initial model the terms name. The contract pins the start model only from the
first finalized round on (``StartModelMismatch``), so an aggregator that opened round 1 from a
model of its own (a planted backdoor, a model pre-trained to suit one site) passed every check
(found by an attack review)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import fedtrail.aggregator.service as service_mod
from fedtrail.auditor.verify import verify_round
from fedtrail.ml.models import federated_state, initial_model
from fedtrail.protocol.terms import RoundTerms, deployment_seed
from fedtrail.storage.codec import encode_model
from fedtrail.valuation.limits import ThresholdLimits
from tests.auditor.test_verify import federation, on_anvil

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _failed(audit: Any) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


@pytest.mark.anvil
def test_a_first_round_opened_from_another_model_fails_start_model_initial(
    tmp_path: Path, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crafted(spec: Any, seed: int) -> Any:
        model: Any = initial_model(spec, seed)
        with torch.no_grad():
            model.fc2.bias[1] += 4.0
        return model

    monkeypatch.setattr(service_mod, "initial_model", crafted)
    fed = federation(tmp_path, rounds=2, **on_anvil(anvil_url))
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert set(bad) == {"start_model.initial"}, bad
    assert "must be the seeded initial model (bound to chain" in bad["start_model.initial"]
    assert "unbound model" not in bad["start_model.initial"]  # crafted, not the shared one
    # round 2 starts from round 1's global model, which the contract pins
    second = verify_round(fed.ledger, fed.store, 2)
    assert second.passed and "start_model.initial" not in {c.name for c in second.checks}


@pytest.mark.anvil
def test_an_honest_first_round_passes_start_model_initial(tmp_path: Path, anvil_url: str) -> None:
    fed = federation(tmp_path, rounds=1, **on_anvil(anvil_url))
    audit = verify_round(fed.ledger, fed.store, 1)
    assert audit.passed, _failed(audit)
    check = next(c for c in audit.checks if c.name == "start_model.initial")
    assert "seeded initial model (bound to chain" in check.detail


def test_a_first_round_from_the_unbound_model_fails_naming_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terms declaring ``initial_model: "deployment"`` but round 1 opened from the model every
    seed-0 deployment shares (the one a foreign federation's updates are aligned with, a23)."""

    def unbound(self: service_mod.AggregatorService) -> int:
        return self.settings.seed

    monkeypatch.setattr(service_mod.AggregatorService, "initial_seed", unbound)
    fed = federation(tmp_path, rounds=1)  # the embedded chain
    info = fed.ledger.get_round(1)
    spec = fed.service.spec
    shared = encode_model(federated_state(initial_model(spec, 0)), spec=spec, round=0)
    salt = fed.service.initial_salt()
    bound_seed = deployment_seed(0, fed.ledger.chain_id, fed.ledger.address, salt)
    bound = encode_model(federated_state(initial_model(spec, bound_seed)), spec=spec, round=0)
    assert info.start_sha256 == hashlib.sha256(shared).hexdigest()
    bad = _failed(verify_round(fed.ledger, fed.store, 1))
    assert set(bad) == {"start_model.initial"}, bad
    detail = bad["start_model.initial"]
    assert f"sha256 {hashlib.sha256(bound).hexdigest()[:16]}" in detail
    assert f"but it is {info.start_sha256[:16]}" in detail
    assert "unbound model of seed 0" in detail


def test_legacy_terms_are_held_to_the_bare_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old ledger stays explainable: terms without ``initial_model`` (written before it)
    and round 1 from ``initial_model(spec, seed)`` pass under the legacy rule."""
    real = service_mod.AggregatorService.round_terms

    def legacy(self: service_mod.AggregatorService, round_id: int) -> RoundTerms:
        return replace(real(self, round_id), initial_model=None, initial_salt=None)

    def unbound(self: service_mod.AggregatorService) -> int:
        return self.settings.seed

    monkeypatch.setattr(service_mod.AggregatorService, "round_terms", legacy)
    monkeypatch.setattr(service_mod.AggregatorService, "initial_seed", unbound)
    # the sites of such a ledger opted into unbound start models (nodes refuse them otherwise)
    fed = federation(tmp_path, rounds=1, accept=ThresholdLimits(unbound_start=True))
    audit = verify_round(fed.ledger, fed.store, 1)
    assert audit.passed, _failed(audit)
    check = next(c for c in audit.checks if c.name == "start_model.initial")
    assert "legacy rule, seed 0" in check.detail
