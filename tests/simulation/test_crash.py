"""The crash launcher: it runs the normal CLI with a hook that SIGKILLs right after one named
step of a daemon, and refuses a step no daemon has (it would never fire)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import fedtrail.simulation.crash as crash_mod
from fedtrail import __version__
from fedtrail.aggregator.service import STEPS as AGGREGATOR_STEPS
from fedtrail.errors import ConfigError
from fedtrail.hooks import DaemonHooks, launcher_step_hook, no_step
from fedtrail.node.daemon import STEPS as NODE_STEPS
from fedtrail.simulation.crash import STEPS, crash, kill_at


def test_the_steps_are_the_daemons_steps() -> None:
    assert STEPS == ("encoded", "committed", "stored", "revealed", "valued")
    assert (*NODE_STEPS, *AGGREGATOR_STEPS) == STEPS


def test_kill_at_kills_at_its_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    hook = kill_at("stored")
    hook("revealed")
    assert kills == []
    hook("stored")
    assert kills == [(os.getpid(), signal.SIGKILL)]


def test_an_unknown_step_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown step 'sotred'"):
        kill_at("sotred")
    result = CliRunner().invoke(crash, ["sotred", "--", "node", "run"])
    assert result.exit_code == 2 and "'sotred' is not one of" in result.output


def test_the_launcher_hands_its_hook_to_the_command_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kills: list[int] = []
    seen: list[str] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append(sig))

    @click.group()
    def fake_cli() -> None:
        pass

    @fake_cli.command()
    def probe() -> None:
        hook = launcher_step_hook()
        for step in ("revealed", "valued"):
            seen.append(step)
            hook(step)

    monkeypatch.setattr(crash_mod, "cli", fake_cli)
    result = CliRunner().invoke(crash, ["valued", "--", "probe"])
    assert result.exit_code == 0, result.output
    assert seen == ["revealed", "valued"] and kills == [signal.SIGKILL]


def test_without_a_launcher_the_daemons_get_the_no_op_hook() -> None:
    assert launcher_step_hook() is no_step  # no click context at all

    @click.command()
    def probe() -> None:
        click.echo("no_step" if launcher_step_hook() is no_step else "other")

    assert CliRunner().invoke(probe, []).output == "no_step\n"
    hooks = DaemonHooks(at_step=print)
    assert CliRunner().invoke(probe, [], obj=hooks).output == "other\n"


def test_the_launcher_runs_the_real_cli_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedtrail.simulation.crash", "stored", "--", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert __version__ in done.stdout
