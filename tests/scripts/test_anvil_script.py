"""scripts/anvil.sh keeps the chain across a restart by default (issue 13, point 8: restarting
Anvil lost the ledger), and starts empty when told to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from web3 import Web3

from tests.fixtures.chain import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "anvil.sh"

pytestmark = pytest.mark.anvil


def _run(env: dict[str, str], action: str) -> None:
    subprocess.run([str(SCRIPT), action], env=env, check=True, capture_output=True, timeout=60)


def _block_after_restart(tmp_path: Path, state: str | None) -> int:
    port = free_port()
    env = {**os.environ, "FEDTRAIL_ANVIL_PORT": str(port), "FEDTRAIL_ANVIL_DIR": str(tmp_path)}
    if state is not None:
        env["FEDTRAIL_ANVIL_STATE"] = state
    w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
    try:
        _run(env, "start")
        accounts = w3.eth.accounts
        tx = w3.eth.send_transaction({"from": accounts[0], "to": accounts[1], "value": 1})
        w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.01)
        assert w3.eth.block_number >= 1
        _run(env, "stop")
        _run(env, "start")
        return int(w3.eth.block_number)
    finally:
        _run(env, "stop")


def test_the_chain_survives_a_restart_by_default(tmp_path: Path) -> None:
    assert _block_after_restart(tmp_path, None) >= 1
    assert any(p.name.endswith(".state.json") for p in tmp_path.iterdir())


def test_state_none_starts_empty(tmp_path: Path) -> None:
    assert _block_after_restart(tmp_path, "none") == 0
