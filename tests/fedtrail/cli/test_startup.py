"""The CLI starts without torch or web3 (issue 18): `fedtrail --help` imports every command
group, and scripted federations run `fedtrail node register`, `chain deploy`, ... once per site,
so a command module imports the heavy libraries only inside the commands that need them."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from fedtrail.cli.common import LazyChoice

HEAVY = ("torch", "captum", "monai", "flwr", "web3", "eth_account", "jsonschema")

# Runs the console script's group in a fresh interpreter and reports, on its last line, the exit
# code and which heavy libraries ended up imported.
PROBE = f"""
import json, sys
from fedtrail.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="fedtrail")
    code = 0
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"code": code, "loaded": loaded}}))
"""


def run_cli(*args: str) -> tuple[int, list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    *help_lines, last = done.stdout.rstrip("\n").split("\n")
    report = json.loads(last)
    return int(report["code"]), list(report["loaded"]), "\n".join(help_lines)


@pytest.mark.parametrize(
    "args",
    [
        [],  # lists every role's group: imports all of their command modules
        ["node"],
        ["node", "register"],
        ["node", "status"],
        ["chain", "deploy"],
        ["aggregator"],
        ["audit"],
        ["audit", "verify"],
        ["audit", "privacy"],
    ],
    ids=lambda a: " ".join(a) or "fedtrail",
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    code, loaded, shown = run_cli(*args, "--help")
    assert code == 0
    assert "Usage: fedtrail" in shown
    assert loaded == []


def test_help_that_shows_a_registry_still_names_its_choices() -> None:
    """`node init --help` lists the codec's compression methods (read from the codec when help
    is made, so this help does load torch)."""
    code, _, shown = run_cli("node", "init", "--help")
    assert code == 0
    assert "[none|topk8]" in shown


def test_a_wrong_choice_is_still_a_usage_error() -> None:
    code, _, _ = run_cli("node", "init", ".", "--name", "x", "--compression", "zip")
    assert code == 2


def test_lazy_choice_loads_its_names_once_on_first_use() -> None:
    calls: list[int] = []

    def load() -> tuple[str, ...]:
        calls.append(1)
        return ("a", "b")

    choice = LazyChoice(load)
    assert calls == []
    assert choice.convert("b", None, None) == "b"
    assert choice.choices == ("a", "b")
    assert len(calls) == 1
    with pytest.raises(click.BadParameter, match="'c' is not one of 'a', 'b'"):
        choice.convert("c", None, None)
