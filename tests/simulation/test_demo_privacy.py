"""``fedtrail demo --dp-epsilon``: every hospital trains with DP-SGD under an on-chain budget,
spends within it, and the audit (privacy checks included) passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.errors import ConfigError
from fedtrail.simulation.demo import Scenario, run_demo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_demo_trains_privately_within_each_budget_and_verifies(tmp_path: Path) -> None:
    scenario = Scenario(sites=2, rounds=2, noisy_sites=0, poison_sites=0, epochs=1, dp_epsilon=8)
    lines: list[str] = []
    result = run_demo(scenario, tmp_path, echo=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert result["verified"] is True
    rows = result["privacy"]
    assert [r["site"] for r in rows] == ["hospital-A", "hospital-B"]
    for row in rows:
        assert row["epsilon_budget"] == 8.0
        # two rounds whose RDP composition aims at 8, declared as the composed total (the
        # summed rule charged two rounds at 4 each: the same 8 for far more noise)
        assert 7.5 < row["epsilon_spent"] <= 8.0
    assert any(
        "epsilon budget 8 each on chain" in line and "2 rounds compose (RDP) to 8" in line
        for line in lines
    )


def test_the_demo_trains_privately_with_topk8_under_terms_without_the_noise_check(
    tmp_path: Path,
) -> None:
    """``--dp-epsilon 8 --compression topk8``: the hospitals send topk8-compressed DP updates,
    the terms waive the per-update noise check (which no compressed update passes), nobody is
    scored MALFORMED, the spends stay within budget and the audit passes."""
    scenario = Scenario(
        sites=2,
        rounds=2,
        noisy_sites=0,
        poison_sites=0,
        epochs=1,
        dp_epsilon=8,
        compression="topk8",
    )
    lines: list[str] = []
    result = run_demo(scenario, tmp_path, echo=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert result["verified"] is True
    assert any("waive the per-update noise check" in line for line in lines)
    reasons = {row["reason"] for r in result["rounds"] for row in r["sites"]}
    assert "MALFORMED" not in reasons
    for row in result["privacy"]:
        assert 7.5 < row["epsilon_spent"] <= 8.0


def test_the_demo_refuses_a_non_positive_budget() -> None:
    with pytest.raises(ConfigError, match="dp_epsilon"):
        Scenario(dp_epsilon=0.0)
