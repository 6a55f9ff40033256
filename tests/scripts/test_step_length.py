"""scripts/bench/step_length.py (an experiment for issue 12 (c)): the best step along an update
is the grid's best utility, refined by the parabola through it and its neighbours; a utility
falling from t = 0 gives 0, one still rising at the grid's end gives the end."""

from __future__ import annotations

import pytest

from scripts.bench import step_length


def test_quadratic_utility_gives_its_vertex() -> None:
    # u(t) = -(t - 0.8)^2: the parabola through 0.5, 1 and 2 is u itself, vertex 0.8
    us = [-((t - 0.8) ** 2) for t in step_length.GRID]
    t_grid, t_star = step_length.best_step(us)
    assert t_grid == 1.0
    assert t_star == pytest.approx(0.8)


def test_falling_utility_gives_zero_and_rising_gives_the_end() -> None:
    assert step_length.best_step([-t for t in step_length.GRID]) == (0.0, 0.0)
    last = step_length.GRID[-1]
    assert step_length.best_step(list(step_length.GRID)) == (last, last)


def test_ties_take_the_shortest_step_and_the_vertex_stays_between_neighbours() -> None:
    flat = [0.0] * len(step_length.GRID)
    assert step_length.best_step(flat) == (0.0, 0.0)
    # a kink: the best grid step 0.25, utilities dropping steeply to the right
    us = [0.0, 0.1, 0.2, 0.3, -5.0, -9.0, -9.0, -9.0, -9.0, -9.0]
    t_grid, t_star = step_length.best_step(us)
    assert t_grid == 0.25
    assert 0.125 <= t_star <= 0.5


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold must be positive"):
        step_length.install(0.0)
