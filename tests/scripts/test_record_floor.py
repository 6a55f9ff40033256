"""The record floor experiment (scripts/bench/record_floor.py): now ``accuracy.py`` at
``--record-floor F``, the product's round term (tests/fedtrail/valuation/test_record_floor.py
tests the rule itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripts.bench import record_floor


def test_the_floor_becomes_accuracys_record_floor() -> None:
    got = record_floor.accuracy_args(["--floor", "0.75", "--seeds", "5"])
    assert got == ["--seeds", "5", "--record-floor", "0.75"]
    assert record_floor.accuracy_args(["--alpha", "3"])[-2:] == ["--record-floor", "0.5"]
    assert record_floor.accuracy_args(["--floor", "0"])[-1] == "0.0"


@pytest.mark.parametrize("bad", ["-0.1", "nan", "inf"])
def test_a_bad_floor_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--floor"):
        record_floor.accuracy_args(["--floor", bad])


class _Stop(Exception):
    """Raised by the spy once the saved document's settings exist: nothing is written."""


@pytest.mark.parametrize(("flag", "expected"), [((), 0.5), (("--record-floor", "0"), 0.0)])
def test_a_saved_accuracy_run_records_the_floor_it_ran_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: tuple[str, ...], expected: float
) -> None:
    """A run at the default floor says 0.5, not null: a JSON alone tells whether it was on."""
    from scripts.bench import _sim, accuracy

    floors: list[float] = []
    docs: list[dict[str, Any]] = []

    def run_method(method: str, config: _sim.SimConfig, *args: Any, **kwargs: Any) -> Any:
        floors.append(config.combiner.record_floor)
        metrics = ("auc", "f1", "balanced_accuracy", "balanced_accuracy_calibrated")
        return _sim.SimResult(method=method, seed=config.seed, test=dict.fromkeys(metrics, 0.5))

    def report(doc: dict[str, Any], results: Any) -> Any:
        docs.append(doc)
        raise _Stop

    monkeypatch.setattr(accuracy._sim, "run_method", run_method)
    monkeypatch.setattr(accuracy, "_report", report)
    argv = ["--seeds", "1", "--rounds", "1", "--scenarios", "a", "--methods", "valuation"]
    with pytest.raises(_Stop):
        accuracy.main([*argv, "--out", str(tmp_path / "a.json"), *flag])
    (doc,) = docs
    assert floors == [expected]  # the floor the simulation ran with ...
    assert doc["settings"]["record_floor"] == expected  # ... is the one the JSON records


@pytest.mark.parametrize(
    ("flag", "field", "expected"),
    [
        ((), "relief_cosine", -0.7),
        (("--relief-cosine", "-1"), "relief_cosine", -1.0),
        ((), "boost_clip", 0.0),
        (("--boost-clip", "0.5"), "boost_clip", 0.5),
        ((), "warm_up_floor", 0.5),
        (("--warm-up-floor", "0.25"), "warm_up_floor", 0.25),
        ((), "warm_up_scope", 1),
        (("--warm-up-scope", "0"), "warm_up_scope", 0),
        (("--warm-up-scope", "2"), "warm_up_scope", 2),
        ((), "max_norm_ratio", 0.0),
        (("--max-norm-ratio", "2"), "max_norm_ratio", 2.0),
    ],
)
def test_a_saved_accuracy_run_records_the_combiners_other_thresholds(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flag: tuple[str, ...],
    field: str,
    expected: float,
) -> None:
    """The combiner's other thresholds with a flag: the value the runs had, the default
    included (they wrote null at the default before session 59)."""
    from scripts.bench import _sim, accuracy

    ran: list[float] = []
    docs: list[dict[str, Any]] = []

    def run_method(method: str, config: _sim.SimConfig, *args: Any, **kwargs: Any) -> Any:
        ran.append(getattr(config.combiner, field))
        metrics = ("auc", "f1", "balanced_accuracy", "balanced_accuracy_calibrated")
        return _sim.SimResult(method=method, seed=config.seed, test=dict.fromkeys(metrics, 0.5))

    def report(doc: dict[str, Any], results: Any) -> Any:
        docs.append(doc)
        raise _Stop

    monkeypatch.setattr(accuracy._sim, "run_method", run_method)
    monkeypatch.setattr(accuracy, "_report", report)
    argv = ["--seeds", "1", "--rounds", "1", "--scenarios", "a", "--methods", "valuation"]
    with pytest.raises(_Stop):
        accuracy.main([*argv, "--out", str(tmp_path / "a.json"), *flag])
    (doc,) = docs
    assert ran == [expected]
    assert doc["settings"][field] == expected
