"""An auditor's `--store local:DIR` naming a folder that does not exist is a usage error naming
it (exit 2). Before, the readers took it for an empty store: `audit verify` failed every check
that reads a document ("no content ... in DIR", exit 1), the verdict an aggregator that withheld
them gets, and `audit log` / `explain` exited 1 the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.protocol.codes import Phase

CID = "QmPWTDeNxUwZDHSn2n8qpdMQQc8xUrTUTDDdzQdUc9CQP5"
SHA = "cc6412038c6109682c5fe03c73796045e1f7a6b9f397dbcd2483a1bc4a5c9716"


@dataclass
class _Round:
    phase: Phase = Phase.FINALIZED
    log_cid: str = CID
    log_sha256: str = SHA


class _Ledger:
    """A finalized round with a log: all a reader asks before it opens the store."""

    def get_round(self, round_id: int) -> _Round:
        return _Round()


def _expected(folder: Path) -> str:
    return (
        f"error: no local content store at {folder}: the folder does not exist "
        "(give the folder the blobs were stored in: --store local:DIR)\n"
    )


@pytest.mark.parametrize(
    "args", [["audit", "log", "1"], ["audit", "verify", "--round", "1"], ["audit", "privacy"]]
)
def test_an_audit_of_a_local_store_that_is_not_there_names_it(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: _Ledger())
    missing = tmp_path / "no-such-store"
    result = CliRunner().invoke(cli, [*args, "--store", f"local:{missing}"])
    assert result.exit_code == 2, result.output
    assert result.stderr == _expected(missing)
    assert not missing.exists()  # a reader creates nothing


def test_explaining_a_model_from_a_local_store_that_is_not_there_names_it(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-store"
    args = ["explain", "--cid", CID, "--sha256", SHA, "--store", f"local:{missing}"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr == _expected(missing)


def test_an_existing_empty_local_store_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a folder that is not there is refused: an existing one is read, and what it lacks
    is the document's absence (exit 1, naming the CID), as before."""
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: _Ledger())
    result = CliRunner().invoke(cli, ["audit", "log", "1", "--store", f"local:{tmp_path}"])
    assert result.exit_code == 1, result.output
    assert f"no content {CID} in {tmp_path}" in result.stderr


@pytest.mark.parametrize(
    "args", [["audit", "log", "1"], ["audit", "verify", "--round", "1"], ["audit", "privacy"]]
)
def test_a_local_store_that_is_a_file_is_called_a_file(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--store local:FILE` said the folder does not exist, naming a path that does exist."""
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: _Ledger())
    file = tmp_path / "blobs.tar"
    file.write_bytes(b"not a folder")
    result = CliRunner().invoke(cli, [*args, "--store", f"local:{file}"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: local content store {str(file)!r} is a file, not a folder (give the folder "
        "the blobs are stored in: local:DIR)\n"
    )
    assert file.read_bytes() == b"not a folder"
