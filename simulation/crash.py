"""Crash a daemon at a named step, to prove it resumes: a launcher around the normal CLI.

    python -m fedtrail.simulation.crash STEP -- node run FOLDER --once
    python -m fedtrail.simulation.crash valued -- aggregator run ...

It runs ``fedtrail COMMAND...`` exactly as the console script would, with one difference: the
daemon's ``at_step`` hook (:mod:`fedtrail.hooks`) SIGKILLs the process right after ``STEP``. So
the production daemons carry no test setting, and a misspelt step fails here instead of never
firing. Steps: the node's :data:`fedtrail.node.daemon.STEPS` and the aggregator's
:data:`fedtrail.aggregator.service.STEPS`.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Final

import click

from fedtrail.aggregator.service import STEPS as AGGREGATOR_STEPS
from fedtrail.cli import cli
from fedtrail.errors import ConfigError
from fedtrail.hooks import DaemonHooks, StepHook
from fedtrail.node.daemon import STEPS as NODE_STEPS

__all__ = ["STEPS", "crash", "kill_at"]

log = logging.getLogger("fedtrail.simulation.crash")  # also when run as __main__

STEPS: Final = (*NODE_STEPS, *AGGREGATOR_STEPS)


def kill_at(step: str) -> StepHook:
    """A step hook that SIGKILLs this process right after ``step`` (no cleanup, no flush)."""
    if step not in STEPS:
        raise ConfigError(f"unknown step {step!r}; known: {', '.join(STEPS)}")

    def at_step(name: str) -> None:
        if name == step:
            log.warning("simulated crash: SIGKILL after step %r", name)
            os.kill(os.getpid(), signal.SIGKILL)

    return at_step


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("step", type=click.Choice(STEPS))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def crash(step: str, command: tuple[str, ...]) -> None:
    """Run `fedtrail COMMAND...`, SIGKILLed right after the daemon's STEP."""
    cli.main(args=list(command), prog_name="fedtrail", obj=DaemonHooks(at_step=kill_at(step)))


if __name__ == "__main__":
    crash()
