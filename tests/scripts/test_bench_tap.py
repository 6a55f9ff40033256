"""``_sim.tap_value_round``, the one round tap of the bench's probes (``game_probe.py``,
``step_length.py``, ``layer_norms.py``; before session 59 each repeated the wrapper): the run
counter advances at every warm-up round, the round id is 1 plus the history's valued rounds, a
tap's non-None return replaces the report, and taps stack."""

from __future__ import annotations

from typing import Any, cast

import pytest

from fedtrail.valuation import History, RoundValuation
from scripts.bench import _sim


def _report(name: str) -> RoundValuation:
    """A stand-in report: the tap passes reports through without reading them."""
    return cast(RoundValuation, name)


@pytest.fixture
def fake_round(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``_sim.value_round`` replaced by a fake that records its calls and returns "report"."""
    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> RoundValuation:
        calls.append(kwargs)
        return _report("report")

    monkeypatch.setattr(_sim, "value_round", fake)
    return calls


def test_the_tap_counts_runs_at_the_warm_up_and_rounds_from_the_history(
    fake_round: list[dict[str, Any]],
) -> None:
    seen: list[tuple[int, int, Any, Any]] = []
    _sim.tap_value_round(lambda run, rnd, kw, rep: seen.append((run, rnd, kw["x"], rep)))
    histories = [History(), History(valued_rounds=1), History(valued_rounds=2), History(), None]
    got = [_sim.value_round(history=h, x=i) for i, h in enumerate(histories)]
    assert got == ["report"] * 5  # a tap returning None leaves the report
    assert [c["x"] for c in fake_round] == [0, 1, 2, 3, 4]  # every call reaches value_round
    # run 0: the warm-up and two valued rounds; run 1 at the next warm-up; no history: a run
    assert seen == [
        (0, 1, 0, "report"),
        (0, 2, 1, "report"),
        (0, 3, 2, "report"),
        (1, 1, 3, "report"),
        (2, 1, 4, "report"),
    ]


def test_a_taps_report_replaces_the_rounds_and_later_taps_see_it(
    fake_round: list[dict[str, Any]],
) -> None:
    first: list[object] = []
    second: list[object] = []

    def replace(run: int, rnd: int, kw: Any, rep: RoundValuation) -> RoundValuation:
        first.append(rep)
        return _report("replaced")

    _sim.tap_value_round(replace)
    _sim.tap_value_round(lambda run, rnd, kw, rep: second.append((run, rep)))
    assert _sim.value_round(history=History()) == "replaced"
    assert _sim.value_round(history=History(valued_rounds=1)) == "replaced"
    assert first == ["report", "report"]
    # each tap keeps its own counter: both count the one run
    assert second == [(0, "replaced"), (0, "replaced")]
