"""`aggregator run --size-norm-z Z --size-norm-count C`: the combiner's opt-in second norm screen
and its count cap (terms fields ``size_norm_z``, ``size_norm_count``; before h-328 only library
callers and benches could set them). A flag or a config's defaults (click's ``default_map``, the
way a config file's values come in; a flag wins over it) reach the settings the service is
built with and the valuation block its round terms carry; a value the combiner refuses is a
usage error (exit 2) naming the option, before any chain or store is touched."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import fedtrail.aggregator.service as service_mod
from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.cli import cli
from fedtrail.valuation import HISTORY_COMBINER
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import Combiner
from tests.fixtures.chain import ChainEnv

EXIT_USAGE = 2


class _Idle:
    """Stands in for AggregatorService: keeps the settings it is built with, runs no round."""

    built: ClassVar[list[AggregatorSettings]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.built.append(kwargs["settings"])

    def run(self, **kwargs: Any) -> None:
        return None


def _run(
    anvil: ChainEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    default_map: dict[str, Any] | None = None,
) -> AggregatorSettings:
    """The settings ``aggregator run ... EXTRA`` builds its service with."""
    ledger = anvil.deploy()
    monkeypatch.setattr(service_mod, "AggregatorService", _Idle)
    _Idle.built.clear()
    logger = logging.getLogger("fedtrail")
    handlers = list(logger.handlers)
    args = ["aggregator", "run", "--rpc-url", anvil.w3.provider.endpoint_uri]  # type: ignore[attr-defined]
    args += ["--contract", ledger.address, "--dev-account", "1", "--store"]
    args += [f"local:{tmp_path / 'store'}", "--folder", str(tmp_path / "agg"), *extra]
    try:
        result = CliRunner().invoke(
            cli,
            args,
            default_map=None if default_map is None else {"aggregator": {"run": default_map}},
        )
    finally:
        for handler in set(logger.handlers) - set(handlers):
            logger.removeHandler(handler)
            handler.close()
    assert result.exit_code == 0, result.output
    [settings] = _Idle.built
    return settings


def _terms_combiner(settings: AggregatorSettings) -> Combiner:
    """The thresholds round 1's terms carry, as a node or ``audit verify`` reads them back."""
    return combiner_from(settings.valuation_terms(1, quorum=None, probe=None))


@pytest.mark.anvil
def test_the_defaults_leave_the_screen_off(
    anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _run(anvil, tmp_path, monkeypatch, [])
    # the flags' defaults are the combiner's own (off, none): no flag changes the terms
    assert settings.combiner == HISTORY_COMBINER
    assert (Combiner().size_norm_z, Combiner().size_norm_count) == (0.0, 0.0)
    written = settings.valuation_terms(1, quorum=None, probe=None).combiner
    assert written is not None
    assert (written["size_norm_z"], written["size_norm_count"]) == (0.0, 0.0)


@pytest.mark.anvil
def test_the_flags_reach_the_settings_and_the_terms(
    anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _run(
        anvil, tmp_path, monkeypatch, ["--size-norm-z", "6.5", "--size-norm-count", "40"]
    )
    assert settings.combiner is not None
    assert (settings.combiner.size_norm_z, settings.combiner.size_norm_count) == (6.5, 40.0)
    # every other threshold is --standing's preset, as without the flags
    assert settings.combiner.max_norm_z == HISTORY_COMBINER.max_norm_z
    read_back = _terms_combiner(settings)
    assert (read_back.size_norm_z, read_back.size_norm_count) == (6.5, 40.0)
    # sites take the screen only through their [accept]: the run warns at start
    log = (tmp_path / "agg" / "aggregator.log").read_text()
    assert "size_norm_z 6.5" in log and "[stricter]" in log, log


@pytest.mark.anvil
def test_a_configs_defaults_are_taken_and_a_flag_wins(
    anvil: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"size_norm_z": 5.0, "size_norm_count": 30.0}
    settings = _run(anvil, tmp_path, monkeypatch, [], default_map=config)
    assert settings.combiner is not None
    assert (settings.combiner.size_norm_z, settings.combiner.size_norm_count) == (5.0, 30.0)
    settings = _run(anvil, tmp_path, monkeypatch, ["--size-norm-z", "7"], default_map=config)
    assert settings.combiner is not None
    assert (settings.combiner.size_norm_z, settings.combiner.size_norm_count) == (7.0, 30.0)
    read_back = _terms_combiner(settings)
    assert (read_back.size_norm_z, read_back.size_norm_count) == (7.0, 30.0)


@pytest.mark.parametrize("option", ["--size-norm-z", "--size-norm-count"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "lots"])
def test_a_value_the_combiner_refuses_is_a_usage_error(option: str, value: str) -> None:
    """Negative, non-finite or not a number: exit 2, naming the option, before the command
    connects to anything (no chain runs here)."""
    result = CliRunner().invoke(cli, ["aggregator", "run", option, value])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output
