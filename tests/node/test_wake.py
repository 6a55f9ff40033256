"""A site's run loop wakes when the commit window closes, not at its next fixed poll (issue 18:
a site revealed at its first poll after the commit deadline, up to a whole poll interval
late)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedtrail.chain import MIN_WAKE, advance_time, block_timestamp, next_block_timestamp
from fedtrail.node.daemon import CLOCK_SLACK
from tests.fixtures.chain import ChainEnv
from tests.node.test_daemon import World

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
        # by what was waited on the clock the node reads (the pending block's): advance_time
        # moves the embedded chain from its latest block, which lags the pending one by the
        # time between the last two transactions (a slow training: the wait fell short, a
        # second wait followed; failed 1 in 2 at load 9-17 before session 58)
        w3 = world.env.w3
        advance_time(w3, math.ceil(timeout) + next_block_timestamp(w3) - block_timestamp(w3))
        return False

    node.stop_event.wait = wait  # type: ignore[method-assign]
    assert node.run(once=True) == 1
    assert node.state.rounds[world.round].phase == "revealed"
    assert len(waits) == 1, waits  # committed, waited once, revealed
    assert MIN_WAKE <= waits[0] <= info.commit_deadline + CLOCK_SLACK + 1 - info.opened_at
    assert next_block_timestamp(world.env.w3) > info.commit_deadline + CLOCK_SLACK
    assert node.wake is None
