"""The kill -9 soak (scripts/bench/soak.py): its plan and its chain checks on hand-made events,
and one short real soak (3 site daemons + the aggregator as processes on their own Anvil and
js-ipfs, SIGKILLed three times) that must pass every check."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scripts.bench import soak

ROOT = Path(__file__).resolve().parents[2]


def test_the_kill_plan_is_seeded_and_covers_both_roles() -> None:
    plan = soak.plan_kills(random.Random(7), 5, rounds=3, sites=3, span=18.0)
    assert plan == soak.plan_kills(random.Random(7), 5, rounds=3, sites=3, span=18.0)
    assert plan != soak.plan_kills(random.Random(8), 5, rounds=3, sites=3, span=18.0)
    assert len(plan) == 5 and plan == sorted(plan, key=lambda k: (k.round, k.at))
    assert all(1 <= k.round <= 3 and 0.5 <= k.at <= 18.0 for k in plan)
    assert {k.target for k in plan} <= {"aggregator", "hospital-A", "hospital-B", "hospital-C"}
    for seed in range(20):
        two = soak.plan_kills(random.Random(seed), 2, rounds=2, sites=3, span=10.0)
        assert sorted(k.target == "aggregator" for k in two) == [False, True]


class FakeLedger:
    """The three reads check_chain makes, over hand-made events."""

    def __init__(self, events: dict[str, list[dict[str, Any]]], current: int) -> None:
        self._events, self._current = events, current

    def events(self, name: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(args=a) for a in self._events.get(name, [])]

    def current_round(self) -> int:
        return self._current

    def get_sites(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="hospital-A", address="0xA")]


def _ev(r: int, site: str = "0xA") -> dict[str, Any]:
    return {"round": r, "site": site}


def test_the_chain_checks_pass_a_clean_run_and_name_every_violation() -> None:
    clean = {
        "RoundFinalized": [_ev(1), _ev(2)],
        "UpdateCommitted": [_ev(1), _ev(2)],
        "UpdateSubmitted": [_ev(1), _ev(2)],
    }
    node_kill = soak.KillDone("hospital-A", "node", 1, 1, "commit", 3.0)
    figures, failures = soak.check_chain(FakeLedger(clean, 2), 2, [node_kill])  # type: ignore[arg-type]
    assert failures == []
    assert [r["closed"] for r in figures["rounds"]] == ["finalized", "finalized"]

    broken = {
        "RoundFinalized": [_ev(1), _ev(1)],  # round 1 finalized twice
        "RoundCancelled": [_ev(3)],  # a round beyond the target
        "UpdateCommitted": [_ev(1), _ev(1)],  # two commitments
        "UpdateSubmitted": [_ev(1), _ev(1), _ev(3, "0xB")],  # two reveals; one uncommitted
    }
    _, failures = soak.check_chain(FakeLedger(broken, 3), 2, [node_kill])  # type: ignore[arg-type]
    text = "\n".join(failures)
    assert "latest round is 3, expected 2" in text
    assert "round 1: 2 RoundFinalized" in text and "round 2: 0 RoundFinalized" in text
    assert "round 1: 2 commitments from 0xA" in text and "round 1: 2 reveals from 0xA" in text
    assert "round 3: 0xB revealed without a commitment" in text
    assert "hospital-A killed in round 1 never revealed again" in text


@pytest.mark.slow
@pytest.mark.anvil
@pytest.mark.ipfs
def test_a_short_soak_with_three_kills_passes(tmp_path: Path) -> None:
    """About 90 s on two cores: 3 sites, 2 rounds (12 s commit, 10 s reveal windows), kills of
    the aggregator and a node at seeded moments. The script starts its own Anvil (a block per
    second) and IPFS daemon on free ports, never the CI ones."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench" / "soak.py"),
            *("--sites", "3", "--rounds", "2", "--kills", "3", "--seed", "2"),
            *("--round-seconds", "12", "--reveal-seconds", "10"),
            *("--dir", str(tmp_path / "soak"), "--format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["failures"] == []
    assert [r["closed"] for r in doc["rounds"]] == ["finalized", "finalized"]
    assert doc["kills_done"] == 3
    assert doc["kills_by_role"]["aggregator"] >= 1 and doc["kills_by_role"]["node"] >= 1
    assert sum(doc["restarts"].values()) == 3
    assert doc["audit_verify_exit"] == 0
    assert (tmp_path / "soak" / "logs" / "aggregator.log").read_text().count("soak: start") == 1 + (
        doc["restarts"].get("aggregator", 0)
    )
