"""scripts/anvil.sh keeps the chain across a restart by default (issue 13, point 8: restarting
Anvil lost the ledger), and starts empty when told to; it mines a block every second by default
(issue 19: without a block timer an idle chain's clock stands still, so deadlines never come)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
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
    env = {
        **os.environ,
        "FEDTRAIL_ANVIL_PORT": str(port),
        "FEDTRAIL_ANVIL_DIR": str(tmp_path),
        "FEDTRAIL_ANVIL_BLOCK_TIME": "0",  # only the transaction below mines a block
    }
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


@pytest.mark.parametrize(
    ("settings", "idle_blocks", "instant"),
    [
        ({}, True, True),  # the default: a block every second, and each transaction at once
        ({"FEDTRAIL_ANVIL_MINING": "interval"}, True, False),  # as on a real chain
        ({"FEDTRAIL_ANVIL_BLOCK_TIME": "0"}, False, True),  # only on transactions
    ],
)
def test_block_timer(
    tmp_path: Path, settings: dict[str, str], idle_blocks: bool, instant: bool
) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FEDTRAIL_ANVIL_BLOCK_TIME", "FEDTRAIL_ANVIL_MINING", "FEDTRAIL_ANVIL_ARGS")
    }
    env |= {
        "FEDTRAIL_ANVIL_PORT": str(port),
        "FEDTRAIL_ANVIL_DIR": str(tmp_path),
        "FEDTRAIL_ANVIL_STATE": "none",
        **settings,
    }
    w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
    try:
        _run(env, "start")
        first = w3.eth.get_block("latest")
        time.sleep(2.5)
        idle = w3.eth.get_block("latest")
        assert (idle["number"] >= first["number"] + 2) is idle_blocks
        assert (idle["timestamp"] > first["timestamp"]) is idle_blocks
        accounts = w3.eth.accounts
        # Just after a block: with interval mining alone the transaction waits ~1 s for the next.
        while w3.eth.block_number == idle["number"] and idle_blocks:
            time.sleep(0.02)
        t0 = time.monotonic()
        tx = w3.eth.send_transaction({"from": accounts[0], "to": accounts[1], "value": 1})
        w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.01)
        assert (time.monotonic() - t0 < 0.5) is instant
    finally:
        _run(env, "stop")


def test_a_bad_block_time_is_refused(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FEDTRAIL_ANVIL_PORT": str(free_port()),
        "FEDTRAIL_ANVIL_DIR": str(tmp_path),
        "FEDTRAIL_ANVIL_BLOCK_TIME": "1s",
    }
    done = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "FEDTRAIL_ANVIL_BLOCK_TIME must be whole seconds" in done.stderr


def test_a_port_another_program_holds_is_named(tmp_path: Path) -> None:
    """Before, Anvil was started anyway and the script said only 'anvil exited; see LOG'."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env = {**os.environ, "FEDTRAIL_ANVIL_PORT": str(port), "FEDTRAIL_ANVIL_DIR": str(tmp_path)}
        done = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"anvil: error: 127.0.0.1:{port} is in use by another program; set FEDTRAIL_ANVIL_PORT"
    )
    assert not (tmp_path / f"anvil-{port}.pid").exists()
