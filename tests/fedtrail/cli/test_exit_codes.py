"""The `fedtrail` group turns a file-system error that names its path into one line and an exit
code, never a traceback (an output folder under a file, a full disk)."""

from __future__ import annotations

import errno
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fedtrail.cli import EXIT_FAILED, EXIT_USAGE, _Group, cli


@pytest.mark.anvil
def test_chain_deploy_out_under_a_file_is_one_line_and_exit_2(
    anvil_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "sub" / "deployment.json"
    result = CliRunner().invoke(
        cli,
        ["chain", "deploy", "--rpc-url", anvil_url, "--dev-account", "0", "--out", str(out)],
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(blocker) in lines[0]
    assert "Traceback" not in result.output


def test_demo_workdir_under_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["demo", "--workdir", str(blocker / "run")])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(blocker) in lines[0]


def test_demo_refuses_a_used_workdir_before_any_work(tmp_path: Path) -> None:
    """A second `demo --workdir DIR` used to set up the chain and sites, then stop at the first
    node: its folder's state.json was the earlier run's ledger's (exit 1, a long message)."""
    used = tmp_path / "run"
    (used / "nodes").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["demo", "--rounds", "1", "--workdir", str(used)])
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: --workdir {used} is not empty (an earlier demo's nodes, store "
        "and report?): give a new or empty folder"
    ], result.output
    assert sorted(p.name for p in used.iterdir()) == ["nodes"]  # nothing written


def _group_raising(exc: BaseException) -> click.Group:
    group = _Group()

    @group.command()
    def boom() -> None:
        raise exc

    return group


def test_a_full_disk_is_an_operation_failure_exit_1() -> None:
    group = _group_raising(OSError(errno.ENOSPC, "No space left on device", "/data/x"))
    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == EXIT_FAILED
    assert result.stderr.strip() == "error: /data/x: No space left on device"


@pytest.mark.parametrize("exc", [OSError("no path"), ConnectionRefusedError(111, "refused")])
def test_an_os_error_without_a_path_is_not_swallowed(exc: OSError) -> None:
    result = CliRunner().invoke(_group_raising(exc), ["boom"])
    assert result.exception is exc
