"""Named steps of the daemons, where a caller may act: the one crash-point mechanism.

The node and the aggregator call ``at_step(name)`` right after each step whose effect outside
the process must survive a crash (a blob stored, a transaction mined). Production passes
:func:`no_step`; the simulation layer passes a hook that SIGKILLs the process there, to prove the
daemons resume (``python -m fedtrail.simulation.crash``). The daemons never read a test setting.

A launcher hands hooks to the ``fedtrail`` CLI as click's context object (``cli.main(...,
obj=DaemonHooks(...))``); the ``run`` commands look for it with ``ctx.find_object``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import click

__all__ = ["DaemonHooks", "StepHook", "launcher_step_hook", "no_step"]

StepHook: TypeAlias = Callable[[str], None]


def no_step(name: str) -> None:
    """The production hook: a step passes and nothing else happens."""


@dataclass(frozen=True, kw_only=True)
class DaemonHooks:
    """What a launcher gives a daemon started through the CLI (click's ``obj``)."""

    at_step: StepHook = no_step


def launcher_step_hook() -> StepHook:
    """The ``at_step`` a launcher handed the running CLI command, else :func:`no_step`."""
    ctx = click.get_current_context(silent=True)
    hooks = ctx.find_object(DaemonHooks) if ctx is not None else None
    return hooks.at_step if hooks is not None else no_step
