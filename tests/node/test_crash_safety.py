"""Crash safety of `fedtrail node run` against real Anvil + IPFS: the daemon is a subprocess,
SIGKILLed right after a named step by the simulation's launcher
(`python -m fedtrail.simulation.crash STEP -- node run ...`), then restarted as it is: one
commitment and one reveal per round whatever the step."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.chain import advance_time, connect, dev_account, fund, next_block_timestamp
from fedtrail.cli import cli
from fedtrail.keys import keystore_address
from fedtrail.ledger import Ledger, Valuation
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.terms import (
    INITIAL_MODEL_DEPLOYMENT,
    RoundTerms,
    deployment_seed,
    seeded_salt,
)
from fedtrail.storage.codec import encode_model
from fedtrail.storage.store import IpfsStore
from fedtrail.valuation.combine import Combiner

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
    ledger.register_site(coord, address, "hospital-a", 10_000)
    fund(w3, coord, address, 10**18)
    spec = ModelSpec()
    store = IpfsStore(ipfs_api)
    # round 1 starts from the model bound to this deployment (attack a23), as nodes require
    salt = seeded_salt(0)
    start = initial_model(spec, deployment_seed(0, ledger.chain_id, ledger.address, salt))
    blob = encode_model(start.state_dict(), spec=spec, round=0)
    terms = RoundTerms(
        round=ledger.current_round() + 1,
        aggregation_rule={"name": "weighted"},
        valuation={
            "method": "shapley",
            "metric": "balanced_loss",
            "standing": True,
            "combiner": asdict(Combiner()),
        },
        model_spec=spec.to_json(),
        spec_hash=spec.spec_hash(),
        seed=0,
        validation_sha256="0" * 64,
        validation_images=1,
        commit_seconds=600,
        reveal_seconds=3600,
        class_names=("normal", "pneumonia"),
        initial_model=INITIAL_MODEL_DEPLOYMENT,
        initial_salt=salt,
    ).to_bytes()
    round_id, _ = ledger.open_round(
        coord,
        store.put(blob),
        hashlib.sha256(blob).hexdigest(),
        terms_cid=store.put(terms),
        terms_sha256=hashlib.sha256(terms).hexdigest(),
        commit_seconds=600,  # passed by moving the clock, not waiting
        reveal_seconds=3600,
    )
    return ledger, folder, address, round_id


def _run(
    folder: Path, ledger: Ledger, round_id: int, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``node run --once`` (killed after ``crash_at``); once the chain holds the node's
    commitment, the chain's clock moves past the commit deadline so that it can reveal."""
    launcher = [sys.executable, "-m", "fedtrail.simulation.crash", crash_at, "--"]
    proc = subprocess.Popen(
        [
            *(launcher if crash_at else [str(FEDTRAIL)]),
            *("node", "run", str(folder), "--once", "--threads", "1"),
        ],
        env={**os.environ, **PASS},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = keystore_address(folder / "keystore.json")
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if ledger.get_submission(round_id, address) is not None:
            info = ledger.get_round(round_id)
            now = next_block_timestamp(ledger.w3)
            if now <= info.commit_deadline:
                advance_time(ledger.w3, info.commit_deadline - now + 1 + CLOCK_SLACK)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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


def _one_of_each(ledger: Ledger, round_id: int) -> None:
    assert ledger.get_round(round_id).submission_count == 1
    for event in ("UpdateCommitted", "UpdateSubmitted"):
        assert len(ledger.events(event, argument_filters={"round": round_id})) == 1


def test_killed_after_encoding_before_the_commit_then_restarted(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    ledger, folder, address, r = _setup(anvil_url, ipfs_api, tmp_path)
    crashed = _run(folder, ledger, r, crash_at="encoded")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "simulated crash: SIGKILL after step 'encoded'" in crashed.stderr
    encoded = _local(folder, r)
    assert encoded["phase"] == "encoded" and ledger.get_submission(r, address) is None

    done = _run(folder, ledger, r)
    assert done.returncode == 0, done.stderr
    sub = ledger.get_submission(r, address)
    assert sub is not None and sub.revealed and sub.sha256 == encoded["sha256"]
    _one_of_each(ledger, r)
    _finish_round(ledger, r, address)


def test_killed_after_committing_then_restarted(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    ledger, folder, address, r = _setup(anvil_url, ipfs_api, tmp_path)
    crashed = _run(folder, ledger, r, crash_at="committed")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    committed = _local(folder, r)
    assert committed["phase"] == "committed"
    sub = ledger.get_submission(r, address)
    assert sub is not None and not sub.revealed

    done = _run(folder, ledger, r)
    assert done.returncode == 0, done.stderr
    sub = ledger.get_submission(r, address)
    assert sub is not None and sub.revealed and sub.sha256 == committed["sha256"]
    assert _local(folder, r)["phase"] == "revealed"
    _one_of_each(ledger, r)
    _finish_round(ledger, r, address)


def test_killed_after_revealing_then_restarted(
    anvil_url: str, ipfs_api: str, tmp_path: Path
) -> None:
    ledger, folder, address, r = _setup(anvil_url, ipfs_api, tmp_path)
    crashed = _run(folder, ledger, r, crash_at="revealed")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert _local(folder, r)["phase"] == "stored"  # the kill came before the state update
    sub = ledger.get_submission(r, address)
    assert sub is not None and sub.revealed

    done = _run(folder, ledger, r)
    assert done.returncode == 0, done.stderr
    assert _local(folder, r)["phase"] == "revealed"
    _one_of_each(ledger, r)
    assert not list((folder / "pending").iterdir())
    _finish_round(ledger, r, address)
