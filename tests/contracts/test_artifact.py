"""The committed contract artifact must be what the committed source compiles to."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "contracts" / "FederationLedger.sol"
ARTIFACT = ROOT / "contracts" / "build" / "FederationLedger.json"


def test_artifact_records_the_current_source_hash() -> None:
    doc = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    assert doc["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "contracts/build is stale: run scripts/compile_contracts.py"
    )
    assert doc["compiler"]["version"].startswith("0.8.28")


def test_recompiling_reproduces_the_committed_artifact_byte_for_byte() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compile_contracts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
