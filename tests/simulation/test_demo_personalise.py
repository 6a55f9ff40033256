"""``fedtrail demo --personalise``: every hospital keeps a personalised model next to the shared
one, the end table compares both on the hospital's own case mix, and the audit of the shared
model is untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedtrail.ml.models import ModelSpec
from fedtrail.simulation.demo import Scenario, run_demo
from fedtrail.storage.personal import load_personal, site_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_demo_keeps_a_fedrep_model_per_hospital_and_still_verifies(tmp_path: Path) -> None:
    scenario = Scenario(
        sites=2,
        rounds=1,
        noisy_sites=0,
        poison_sites=0,
        epochs=1,
        personalise="fedrep",
        personalise_steps=5,
    )
    lines: list[str] = []
    result = run_demo(scenario, tmp_path, echo=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert result["verified"] is True
    rows = result["personalised"]
    assert [r["site"] for r in rows] == ["hospital-A", "hospital-B"]
    for row in rows:
        for key in ("global AUC", "personal AUC"):
            assert 0.0 <= row[key] <= 1.0
        assert row["val images"] > 0
    assert any("personalised models (fedrep, 5 steps" in line for line in lines)
    # Each hospital's model: the final global body, its own head.
    state, info = load_personal(tmp_path / "nodes" / "hospital-A", ModelSpec())
    assert info.round == 1 and info.method == "fedrep" and info.steps == 5
    other, _ = load_personal(tmp_path / "nodes" / "hospital-B", ModelSpec())
    assert torch.equal(state["conv1.weight"], other["conv1.weight"])
    assert not torch.equal(state["fc2.weight"], other["fc2.weight"])
    # The folder names its task, so `fedtrail explain --personal` can read the model.
    assert site_task(tmp_path / "nodes" / "hospital-A").spec == ModelSpec()
    assert any("fedtrail explain --personal" in line for line in lines)
