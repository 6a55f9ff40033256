"""Integer arguments are range-checked before anything runs: a usage error (exit 2), never a
traceback or a silent wrap-around (issue 13, point 8)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fedtrail.cli import EXIT_USAGE, cli
from fedtrail.protocol.codes import MAX_ROUND_ID

HUGE = "1" * 80  # an 80-digit round number printed a traceback before


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "round", HUGE],
        ["audit", "round", "0"],
        ["audit", "round", str(MAX_ROUND_ID + 1)],
        ["audit", "log", "--", "-3"],
        ["audit", "verify", "--round", HUGE],
        ["chain", "status", "--round", "0"],
        ["explain", "--round", HUGE],
        ["aggregator", "run", "--seed", "-1"],
        ["aggregator", "run", "--max-sample-ratio", "1"],
        ["node", "run", ".", "--threads", "0"],
        ["demo", "--seed", "-5"],
        ["demo", "--label-noise", "1.5"],
        ["demo", "--label-noise", "0"],
        ["demo", "--alpha", "0"],
        ["demo", "--dp-epsilon", "-1"],
    ],
)
def test_out_of_range_integers_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "range" in result.output
    assert "Traceback" not in result.output


def test_the_largest_round_the_contract_holds_is_accepted_by_the_parser() -> None:
    """MAX_ROUND_ID itself parses; the command then fails for another reason (no chain here),
    not with a range error."""
    result = CliRunner().invoke(
        cli, ["audit", "round", str(MAX_ROUND_ID), "--rpc-url", "http://127.0.0.1:9"]
    )
    assert "range" not in result.output


ADDRESS = "0x000000000000000000000000000000000000bEEF"


@pytest.mark.parametrize(
    "args",
    [
        # a NaN passed every bound of click's FloatRange: --fund nan registered and sent nothing,
        # --poll-interval nan polled the chain without pause, inf crashed with a traceback
        ["node", "register", ADDRESS, "--max-samples", "5", "--fund", "nan"],
        ["node", "register", ADDRESS, "--max-samples", "5", "--fund", "inf"],
        ["node", "register", ADDRESS, "--max-samples", "5", "--epsilon-budget", "nan"],
        ["node", "set-privacy-budget", ADDRESS, "--epsilon", "nan"],
        ["aggregator", "run", "--poll-interval", "nan"],
        ["aggregator", "run", "--poll-interval", "inf"],
        ["aggregator", "run", "--clock-stall-seconds", "nan"],
        ["aggregator", "run", "--max-sample-ratio", "nan"],
        ["aggregator", "run", "--personalise-lr", "nan"],
        ["aggregator", "run", "--dp-delta", "nan"],
        ["audit", "verify", "--all", "--metrics-tolerance", "nan"],
    ],
)
def test_non_finite_numbers_are_usage_errors_before_anything_runs(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--rpc-url", "http://127.0.0.1:9"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Invalid value" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--label-noise", "--alpha", "--dp-epsilon"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_the_demos_non_finite_numbers_are_usage_errors(option: str, value: str) -> None:
    """``demo --label-noise 1.5`` ran silently when no site was noisy, and a NaN passes every
    bound of a plain range: each is refused before the demo builds anything."""
    result = CliRunner().invoke(cli, ["demo", option, value])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "Traceback" not in result.output
