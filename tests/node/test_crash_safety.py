"""Crash safety of `fedtrail node run` against real Anvil + IPFS: the daemon is a subprocess,
SIGKILLed right after a named step by the simulation's launcher
(`python -m fedtrail.simulation.crash STEP -- node run ...`), then restarted as it is."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.chain import block_timestamp, connect, dev_account, fund
from fedtrail.cli import cli
from fedtrail.keys import keystore_address
from fedtrail.ledger import Ledger, Valuation
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol.codes import Phase
from fedtrail.storage.codec import encode_model
from fedtrail.storage.store import IpfsStore

pytestmark = [pytest.mark.anvil, pytest.mark.ipfs, pytest.mark.slow]

FEDTRAIL = Path(sys.executable).parent / "fedtrail"
PASS = {"FEDTRAIL_PASSPHRASE": "node-pass"}


def _setup(anvil_url: str, ipfs_api: str, tmp: Path) -> tuple[Ledger, Path, str, int]:
    w3 = connect(anvil_url)
    coord = dev_account(0)
    ledger, _ = Ledger.deploy(w3, coord)
    folder = tmp / "node"
    result = CliRunner().invoke(
        cli,
        [
            "node",
            "init",
            str(folder),
            "--name",
            "hospital-a",
            "--rpc-url",
            anvil_url,
            "--contract",
            ledger.address,
            "--store",
            f"ipfs:{ipfs_api}",
            "--shard",
            "0/8",
            "--fast-kdf",
        ],
        env=PASS,
    )
    assert result.exit_code == 0, result.output
    address = keystore_address(folder / "keystore.json")
    ledger.register_site(coord, address, "hospital-a")
    fund(w3, coord, address, 10**18)
    spec = ModelSpec()
    blob = encode_model(initial_model(spec, 0).state_dict(), spec=spec, round=0)
    cid = IpfsStore(ipfs_api).put(blob)
    round_id, _ = ledger.open_round(
        coord, cid, hashlib.sha256(blob).hexdigest(), block_timestamp(w3) + 3600
    )
    return ledger, folder, address, round_id


def _run(folder: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    launcher = [sys.executable, "-m", "fedtrail.simulation.crash", crash_at, "--"]
    return subprocess.run(
        [
            *(launcher if crash_at else [str(FEDTRAIL)]),
            *("node", "run", str(folder), "--once", "--threads", "1"),
        ],
        env={**os.environ, **PASS},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _local(folder: Path, round_id: int) -> dict[str, object]:
    doc = json.loads((folder / "state.json").read_text())
    rounds: dict[str, dict[str, object]] = doc["rounds"]
    return rounds[str(round_id)]


def _finish_round(ledger: Ledger, round_id: int, address: str) -> None:
    coord = dev_account(0)
    ledger.record_valuation(coord, round_id, [Valuation(site=address, score=10**6, reason=0)])
    digest = hashlib.sha256(b"global-1").hexdigest()
    ledger.finalize_round(
        coord, round_id, global_cid="QmX", global_sha256=digest, log_cid="QmY", log_sha256=digest
    )
    assert ledger.get_round(round_id).phase == Phase.FINALIZED


def test_killed_after_storing_before_the_transaction_then_restarted(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    ledger, folder, address, r = _setup(anvil_url, ipfs_api, tmp_path)
    crashed = _run(folder, crash_at="stored")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "simulated crash: SIGKILL after step 'stored'" in crashed.stderr
    stored = _local(folder, r)
    assert stored["phase"] == "stored"
    assert ledger.get_submission(r, address) is None

    done = _run(folder)
    assert done.returncode == 0, done.stderr
    assert "resuming with the stored update" in done.stderr
    sub = ledger.get_submission(r, address)
    assert sub is not None and sub.sha256 == stored["sha256"] and sub.cid == stored["cid"]
    assert ledger.get_round(r).submission_count == 1
    assert len(ledger.events("UpdateSubmitted", argument_filters={"round": r})) == 1
    _finish_round(ledger, r, address)


def test_killed_after_submitting_then_restarted(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    ledger, folder, address, r = _setup(anvil_url, ipfs_api, tmp_path)
    crashed = _run(folder, crash_at="submitted")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert _local(folder, r)["phase"] == "stored"  # the kill came before the state update
    assert ledger.get_submission(r, address) is not None

    done = _run(folder)
    assert done.returncode == 0, done.stderr
    assert _local(folder, r)["phase"] == "submitted"
    assert ledger.get_round(r).submission_count == 1
    assert len(ledger.events("UpdateSubmitted", argument_filters={"round": r})) == 1
    assert not list((folder / "pending").iterdir())
    _finish_round(ledger, r, address)
