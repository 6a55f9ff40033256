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


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("testnet_demo.sh", ["--sites"], "--sites needs a value"),
        ("testnet_demo.sh", ["--rounds", "0"], "--rounds must be"),
        ("testnet_demo.sh", ["--compression", "zip"], "--compression must be none or topk8"),
        ("testnet_demo.sh", ["--round-seconds", "soon"], "--round-seconds must be"),
        ("flower_demo.sh", ["--rounds"], "--rounds needs a value"),
        ("flower_demo.sh", ["--node-config-extra", "0"], "--node-config-extra needs"),
        ("flower_demo.sh", ["--app", "/nonexistent-app"], "--app /nonexistent-app"),
        ("flower_demo.sh", ["--reveal-seconds", "-5"], "--reveal-seconds must be"),
        # before, a --data naming nothing started Anvil and IPFS, deployed, and failed in every
        # site's `node init`, exit 1
        ("testnet_demo.sh", ["--data", "no-such-data"], "--data: data source 'no-such-data'"),
        ("flower_demo.sh", ["--data", "no-such-data"], "--data: data source 'no-such-data'"),
    ],
)
def test_usage_error_is_one_line_exit_2_before_anything_starts(
    name: str, args: list[str], message: str, tmp_path: Path
) -> None:
    # A new user's typo: one line naming the option, exit 2, and no daemon started (the run
    # folder, made before Anvil starts, is never created).
    folder = tmp_path / "run"
    done = subprocess.run(
        [str(ROOT / "scripts" / name), "--dir", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert done.stdout == ""
    assert not folder.exists()


@pytest.mark.parametrize("name", ["testnet_demo.sh", "flower_demo.sh"])
def test_a_dir_holding_a_run_is_refused_before_anything_starts(name: str, tmp_path: Path) -> None:
    # Before, the script started Anvil and IPFS in it and then `chain deploy` refused the
    # existing deployment.json: exit 2, but after the daemons had started (and written logs).
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "deployment.json").write_text("{}")
    done = subprocess.run(
        [str(ROOT / "scripts" / name), "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr
        == f"--dir {folder} already holds a run (deployment.json): give a new or empty folder\n"
    )
    assert done.stdout == ""
    assert sorted(p.name for p in folder.iterdir()) == ["deployment.json"]
