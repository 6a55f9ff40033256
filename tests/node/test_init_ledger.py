"""`fedtrail node init` finds the ledger the way every other ledger command does (README,
Auditors: `--contract`/`FEDTRAIL_CONTRACT` wins over `--deployment`/`FEDTRAIL_DEPLOYMENT`, and
then the file's URL is not read either). It read neither variable and let the file win over an
explicit `--contract`, so an operator with the README's FEDTRAIL_* exported got "give the ledger",
and one who gave both got the file's address. No chain needed: init only writes the folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.ledger import Deployment

FILE_LEDGER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_LEDGER = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
FILE_RPC = "http://127.0.0.1:18545"


def _deployment(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    deployment = Deployment(
        address=FILE_LEDGER,
        chain_id=31337,
        block_number=1,
        tx_hash="00" * 32,
        coordinator=OTHER_LEDGER,
        aggregator=OTHER_LEDGER,
        reputation_alpha=300_000,
        min_round_window=10,
        artifact_sha256="00" * 32,
        rpc_url=FILE_RPC,
    )
    path.write_text(deployment.to_json())
    return path


def _init(folder: Path, *args: str, env: dict[str, str]) -> tuple[int, str, dict[str, object]]:
    argv = ["node", "init", str(folder), "--name", "St. Mary", "--fast-kdf", *args]
    result = CliRunner().invoke(cli, argv, env={"FEDTRAIL_PASSPHRASE": "pw", **env})
    cfg = folder / "config.toml"
    node = tomllib.loads(cfg.read_text())["node"] if cfg.exists() else {}
    return result.exit_code, result.output, node


def test_init_takes_the_ledger_from_fedtrail_deployment(tmp_path: Path) -> None:
    env = {"FEDTRAIL_DEPLOYMENT": str(_deployment(tmp_path))}
    code, out, node = _init(tmp_path / "a", env=env)
    assert code == 0, out
    assert node["contract"] == FILE_LEDGER and node["rpc_url"] == FILE_RPC


def test_init_takes_the_ledger_from_fedtrail_contract(tmp_path: Path) -> None:
    code, out, node = _init(tmp_path / "a", env={"FEDTRAIL_CONTRACT": OTHER_LEDGER})
    assert code == 0, out
    assert node["contract"] == OTHER_LEDGER


def test_an_explicit_contract_wins_over_the_deployment_file(tmp_path: Path) -> None:
    deployment = str(_deployment(tmp_path))
    args = ("--contract", OTHER_LEDGER, "--deployment", deployment)
    code, out, node = _init(tmp_path / "a", *args, env={})
    assert code == 0, out
    # the file's URL goes with its address: neither is read
    assert node["contract"] == OTHER_LEDGER and node["rpc_url"] == "http://127.0.0.1:8545"


def test_init_reads_deployment_json_in_the_working_folder_like_every_ledger_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, node = _init(tmp_path / "none", env={})
    assert code == 2 and "no ./deployment.json" in out and node == {}
    _deployment(tmp_path)  # writes tmp_path/deployment.json
    code, out, node = _init(tmp_path / "a", env={})
    assert code == 0, out
    assert node["contract"] == FILE_LEDGER and node["rpc_url"] == FILE_RPC
    code, out, node = _init(tmp_path / "b", "--contract", OTHER_LEDGER, env={})
    assert code == 0, out
    assert node["contract"] == OTHER_LEDGER and node["rpc_url"] == "http://127.0.0.1:8545"


def test_init_without_a_passphrase_is_a_usage_error_that_makes_no_folder(tmp_path: Path) -> None:
    """It exited 2 but left an empty node folder behind."""
    folder = tmp_path / "site"
    code, out, _ = _init(folder, env={"FEDTRAIL_CONTRACT": OTHER_LEDGER, "FEDTRAIL_PASSPHRASE": ""})
    assert code == 2 and "no passphrase" in out
    assert not folder.exists()
