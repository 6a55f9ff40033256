"""The peer-mode benches simulate the product's default (session 58): a new peer federation's
aggregator offers the public screen (``AggregatorSettings.public_screen`` None: on in round 1,
``DEFAULT_PUBLIC_SCREEN``), so ``_sim.SimConfig``, ``accuracy.py --valuation-mode``,
``peer_validators.py``'s cases and ``peer_vectors_dump.py`` run peer rounds under it unless
told ``--no-public-screen`` (every validator screens, the mode before session 57)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedtrail.aggregator.service import DEFAULT_PUBLIC_SCREEN
from scripts.bench import _sim, accuracy, peer_validators, peer_vectors_dump


class _Stop(Exception):
    """Raised by the spy once it has the run's configuration: nothing is simulated."""


def _spy(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[_sim.SimConfig]:
    seen: list[_sim.SimConfig] = []

    def run_method(method: str, config: _sim.SimConfig, *args: Any, **kwargs: Any) -> Any:
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(module._sim, "run_method", run_method)
    return seen


def test_a_peer_simulation_runs_the_public_screen_unless_told_not_to() -> None:
    assert DEFAULT_PUBLIC_SCREEN is True  # the product's default this bench follows
    peers = _sim.SimConfig(valuation_mode="peers")
    assert peers.public_screen is True
    assert peers.describe()["public_screen"] is True
    old = _sim.SimConfig(valuation_mode="peers", public_screen=False)
    assert old.describe()["public_screen"] is False
    assert "public_screen" not in _sim.SimConfig().describe()  # aggregator mode: no such term


@pytest.mark.parametrize(("flag", "expected"), [((), True), (("--no-public-screen",), False)])
def test_accuracy_peer_runs_follow_the_default_or_the_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: tuple[str, ...], expected: bool
) -> None:
    seen = _spy(accuracy, monkeypatch)
    argv = ["--seeds", "1", "--rounds", "1", "--scenarios", "a", "--methods", "valuation"]
    with pytest.raises(_Stop):
        accuracy.main(
            [*argv, "--valuation-mode", "peers", "--out", str(tmp_path / "a.json"), *flag]
        )
    (config,) = seen
    assert (config.valuation_mode, config.public_screen) == ("peers", expected)


@pytest.mark.parametrize(("flag", "expected"), [((), True), (("--no-public-screen",), False)])
def test_adversarial_validator_cases_follow_the_default_or_the_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: tuple[str, ...], expected: bool
) -> None:
    seen = _spy(peer_validators, monkeypatch)
    argv = ["--cases", "5-invert", "--seeds", "1", "--rounds", "1", "--no-timing"]
    with pytest.raises(_Stop):
        peer_validators.main([*argv, "--out", str(tmp_path / "v.json"), *flag])
    (config,) = seen  # the case's run without adversaries, first
    assert (config.valuation_mode, config.public_screen) == ("peers", expected)


@pytest.mark.parametrize(("flag", "expected"), [((), True), (("--no-public-screen",), False)])
def test_the_vectors_dump_follows_the_default_or_the_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: tuple[str, ...], expected: bool
) -> None:
    seen = _spy(peer_vectors_dump, monkeypatch)
    with pytest.raises(_Stop):
        peer_vectors_dump.main(["--out", str(tmp_path / "d.json"), "--seeds", "0", *flag])
    (config,) = seen
    assert (config.valuation_mode, config.public_screen) == ("peers", expected)
