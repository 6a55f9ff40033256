"""`--help` of the demo scripts prints their whole header comment and no code (it printed the
testnet script's `set -euo pipefail` and cut the Flower script's last sentence)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _header(script: Path) -> str:
    lines = script.read_text().splitlines()[1:]
    end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join(lines[:end]) + "\n"


@pytest.mark.parametrize("name", ["testnet_demo.sh", "flower_demo.sh"])
def test_help_is_the_whole_header_comment(name: str) -> None:
    script = ROOT / "scripts" / name
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert done.stdout == _header(script)
    assert "set -euo pipefail" not in done.stdout
