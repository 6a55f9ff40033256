"""A site's run loop wakes when the commit window closes, not at its next fixed poll (issue 18:
a site revealed at its first poll after the commit deadline, up to a whole poll interval
late)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.node.daemon import CLOCK_SLACK, MIN_WAKE, Wake, wake_delay
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_delay_is_the_poll_interval_with_nothing_due() -> None:
    assert wake_delay(2.0, None, 100.0) == 2.0


@pytest.mark.parametrize(
    ("due", "clock", "at", "now", "want"),
    [
        (110, 100, 50.0, 50.0, 2.0),  # due after the poll: the poll interval
        (101, 100, 50.0, 50.0, 1.0),  # due first: wake at it
        (101, 100, 50.0, 50.4, 0.6),  # the time since the clock was read counts
        (101, 100, 50.0, 50.9, MIN_WAKE),  # nearly due: not sooner than MIN_WAKE
        (101, 100, 50.0, 53.0, MIN_WAKE),  # overdue (a lagging chain clock): MIN_WAKE
    ],
)
def test_the_delay_runs_to_the_deadline(
    due: int, clock: int, at: float, now: float, want: float
) -> None:
    got = wake_delay(2.0, Wake(due=due, clock=clock, at=at), now)
    assert got == pytest.approx(want)


def test_a_committed_site_wakes_when_the_commit_window_closes(
    embedded: ChainEnv, tmp_path: Path
) -> None:
    """With a poll interval ten times the commit window, the loop commits, waits about what is
    left of the window (the chain's clock is moved by what the loop waited) and reveals at
    the next poll."""
    world = World(embedded, tmp_path)  # commits for 60 s
    node = world.node(0, poll_interval=600.0)
    info = world.ledger.get_round(world.round)
    waits: list[float] = []

    def wait(timeout: float | None = None) -> bool:
        assert timeout is not None
        waits.append(timeout)
        advance_time(world.env.w3, math.ceil(timeout))
        return False

    node.stop_event.wait = wait  # type: ignore[method-assign]
    assert node.run(once=True) == 1
    assert node.state.rounds[world.round].phase == "revealed"
    assert len(waits) == 1, waits  # committed, waited once, revealed
    assert MIN_WAKE <= waits[0] <= info.commit_deadline + CLOCK_SLACK + 1 - info.opened_at
    assert next_block_timestamp(world.env.w3) > info.commit_deadline + CLOCK_SLACK
    assert node.wake is None
