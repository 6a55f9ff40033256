"""How long a daemon waits before its next poll when the chain's clock brings a deadline
(issue 18: the next fixed poll came up to a whole poll interval after it)."""

from __future__ import annotations

import pytest

from fedtrail.chain import MIN_WAKE, Wake, wake_delay


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
