"""`fedtrail node init|register|status|run` through CliRunner: results and every operator error."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fedtrail.chain import connect, dev_account
from fedtrail.cli import cli
from fedtrail.keys import keystore_address
from fedtrail.ledger import Ledger

pytestmark = pytest.mark.anvil
PASS = {"FEDTRAIL_PASSPHRASE": "pw-node"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or PASS, catch_exceptions=False)


@pytest.fixture
def ledger(anvil_url: str) -> Ledger:
    deployed, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    return deployed


def init(folder: Path, ledger: Ledger, anvil_url: str, *extra: str) -> Result:
    return invoke(
        "node",
        "init",
        str(folder),
        "--name",
        "St. Mary",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--store",
        "local:" + str(folder.parent / "s"),
        "--shard",
        "1/4",
        "--fast-kdf",
        *extra,
    )


def test_init_creates_encrypted_keystore_and_config(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "node"
    result = init(folder, ledger, anvil_url)
    assert result.exit_code == 0, result.output
    address = keystore_address(folder / "keystore.json")
    assert address in result.stdout and "fedtrail node register" in result.stdout
    config = tomllib.loads((folder / "config.toml").read_text())
    assert config["node"]["contract"] == ledger.address
    assert config["data"]["shard_index"] == 1 and config["data"]["shard_count"] == 4
    assert "pw-node" not in (folder / "config.toml").read_text()
    assert "pw-node" not in (folder / "keystore.json").read_text()
    again = init(folder, ledger, anvil_url)
    assert again.exit_code == 2 and "already a node" in again.stderr


def test_init_rejects_a_missing_data_path_and_bad_shard(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    r = init(tmp_path / "a", ledger, anvil_url, "--data", str(tmp_path / "nope.npz"))
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = init(tmp_path / "b", ledger, anvil_url, "--shard", "seven")
    assert r.exit_code == 2 and "I/N" in r.stderr
    # an index outside 0..N-1 is named by the flag the user typed, not by a config.toml field
    for bad in ("3/3", "-1/3", "0/0"):
        r = init(tmp_path / "c", ledger, anvil_url, f"--shard={bad}")
        assert r.exit_code == 2 and f"0 <= I < N; got '{bad}'" in r.stderr, r.stderr
        assert not (tmp_path / "c").exists()


def test_init_refuses_an_empty_name_and_more_shards_than_images(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    """`--name ""` and `--shard 0/99999999999` were written to config.toml and the second
    failed only at `node run`."""
    for i, extra in enumerate(
        (("--name", ""), ("--name", "  "), ("--name", "a\x1b[2Jb"), ("--shard", "0/99999999999"))
    ):
        folder = tmp_path / f"n{i}"
        r = init(folder, ledger, anvil_url, *extra)
        assert r.exit_code == 2, r.output
        named = "cannot give 99999999999 sites" if extra[0] == "--shard" else "node.name"
        assert named in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (folder / "config.toml").exists() and not (folder / "keystore.json").exists()


def test_init_refuses_a_malformed_store_before_writing_anything(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    """A typo in --store was written to config.toml and only failed at `node run`."""
    for bad, named in (("ipfs:bad", "multiaddr"), ("ftp://host:5001", "only http(s)")):
        folder = tmp_path / bad.replace(":", "_").replace("/", "_")
        r = init(folder, ledger, anvil_url, "--store", bad)
        assert r.exit_code == 2 and named in r.stderr, r.output
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (folder / "config.toml").exists() and not (folder / "keystore.json").exists()


def test_init_refuses_a_malformed_rpc_url_before_writing_anything(
    ledger: Ledger, tmp_path: Path
) -> None:
    """`--rpc-url notaurl` was written to config.toml and only failed at `node run`."""
    for i, (bad, named) in enumerate(
        (("notaurl", "must be http(s)"), ("http://127.0.0.1:99999", "Port out of range"))
    ):
        folder = tmp_path / f"n{i}"
        r = init(folder, ledger, bad)
        assert r.exit_code == 2 and named in r.stderr, r.output
        assert not (folder / "config.toml").exists() and not (folder / "keystore.json").exists()


def test_run_names_a_missing_keystore_before_asking_for_a_passphrase(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "node"
    assert init(folder, ledger, anvil_url).exit_code == 0
    (folder / "keystore.json").unlink()
    r = invoke("node", "run", str(folder), "--once", env={"FEDTRAIL_PASSPHRASE": ""})
    assert r.exit_code == 1 and "keystore.json does not exist" in r.stderr, r.output
    assert "passphrase" not in r.stderr


def test_the_register_command_an_unregistered_node_suggests_registers_it(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    """It said `fedtrail node register ADDRESS`, which exits 2: --max-samples is required."""
    folder = tmp_path / "node"
    assert init(folder, ledger, anvil_url).exit_code == 0
    r = invoke("node", "run", str(folder), "--once")
    assert r.exit_code == 1 and "not a registered site" in r.stderr
    # the placeholder `node init` prints too
    suggested = r.stderr.split("`")[1].replace("<size of this site's training set>", "100")
    words = shlex.split(suggested)
    assert words[:3] == ["fedtrail", "node", "register"]
    coordinator = ["--rpc-url", anvil_url, "--contract", ledger.address, "--dev-account", "0"]
    done = invoke(*words[1:], *coordinator)
    assert done.exit_code == 0, done.output
    site = ledger.get_site(keystore_address(folder / "keystore.json"))
    assert site is not None and site.registered and site.name == "St. Mary"


def test_register_status_and_run_errors(ledger: Ledger, anvil_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    assert init(folder, ledger, anvil_url).exit_code == 0
    address = keystore_address(folder / "keystore.json")

    # not yet registered: run refuses with the fix in the message
    r = invoke("node", "run", str(folder), "--once")
    assert r.exit_code == 1 and "not a registered site" in r.stderr and address in r.stderr

    # wrong passphrase
    r = invoke("node", "run", str(folder), "--once", env={"FEDTRAIL_PASSPHRASE": "nope"})
    assert r.exit_code == 1 and "wrong passphrase" in r.stderr

    r = invoke(
        "node",
        "register",
        address,
        "--name",
        "St. Mary",
        "--max-samples",
        "600",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
        "--fund",
        "1",
    )
    assert r.exit_code == 0, r.output
    assert "at most 600 samples" in r.stdout
    assert connect(anvil_url).eth.get_balance(address) == 10**18  # type: ignore[arg-type]
    site = ledger.get_site(address)
    assert site is not None and site.max_samples == 600

    r = invoke("node", "status", str(folder), "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["registered"] is True and doc["address"] == address and doc["rounds"] == []

    r = invoke(
        "node",
        "register",
        address,
        "--max-samples",
        "600",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "5",
    )
    assert r.exit_code == 1 and "not the federation's coordinator" in r.stderr


def test_register_takes_a_cap_up_to_a_billion(ledger: Ledger, anvil_url: str) -> None:
    """10**9 is the commands' bound (SANE_SITE_SAMPLES): accepted, one more refused (below)."""
    address = "0x" + "34" * 20
    r = invoke(
        "node",
        "register",
        address,
        "--max-samples",
        str(10**9),
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
    )
    assert r.exit_code == 0, r.output
    info = ledger.get_site(address)
    assert info is not None and info.max_samples == 10**9


@pytest.mark.parametrize(
    "flags",
    [
        [],  # the cap is required: the coordinator does not know the site's data size
        ["--max-samples", "0"],
        ["--max-samples", str(2**64)],
        # the contract takes it, but a scored update could then round to weight 0 (h-297)
        ["--max-samples", str(10**9 + 1)],
        ["--max-samples", "-5"],
        ["--max-samples", "600", "--fund", "-5"],
        ["--max-samples", "600", "--fund", "nan"],  # registered the site, sent nothing
        # more than the signer holds: registered, then a Web3RPCError traceback
        ["--max-samples", "600", "--fund", "1e40"],
    ],
)
def test_register_refuses_a_missing_or_out_of_range_value(
    ledger: Ledger, anvil_url: str, flags: list[str]
) -> None:
    address = "0x" + "12" * 20
    r = invoke(
        "node",
        "register",
        address,
        *flags,
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
    )
    assert r.exit_code == 2, r.output
    assert ledger.get_site(address) is None


def test_run_with_endpoints_down_names_them(ledger: Ledger, anvil_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    assert init(folder, ledger, anvil_url).exit_code == 0
    r = invoke("node", "run", str(folder), "--once", "--rpc-url", "http://127.0.0.1:9")
    assert r.exit_code == 1 and "http://127.0.0.1:9" in r.stderr
    r = invoke("node", "run", str(folder), "--once", "--store", "http://127.0.0.1:9")
    assert r.exit_code == 1 and "/tcp/9" in r.stderr and "does not answer" in r.stderr


def test_config_naming_a_wrong_contract_is_refused(anvil_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    r = invoke(
        "node",
        "init",
        str(folder),
        "--name",
        "x",
        "--rpc-url",
        anvil_url,
        "--contract",
        dev_account(8).address,
        "--store",
        "local:" + str(tmp_path / "s"),
        "--fast-kdf",
    )
    assert r.exit_code == 0
    r = invoke("node", "status", str(folder))
    assert r.exit_code == 1 and "no contract" in r.stderr


def test_broken_config_and_missing_folder_are_usage_errors(tmp_path: Path) -> None:
    r = invoke("node", "status", str(tmp_path / "nowhere"))
    assert r.exit_code == 2 and "node init" in r.stderr
    (tmp_path / "config.toml").write_text("[node]\nname = 'x'\nbogus = 1\n")
    r = invoke("node", "status", str(tmp_path))
    assert r.exit_code == 2 and "bogus" in r.stderr


def test_init_takes_the_rpc_url_from_the_deployment_file(anvil_url: str, tmp_path: Path) -> None:
    dep = tmp_path / "deployment.json"
    r = invoke("chain", "deploy", "--rpc-url", anvil_url, "--dev-account", "0", "--out", str(dep))
    assert r.exit_code == 0, r.output
    folder = tmp_path / "node"
    r = invoke(
        "node",
        "init",
        str(folder),
        "--name",
        "x",
        "--deployment",
        str(dep),
        "--store",
        "local:" + str(tmp_path / "s"),
        "--fast-kdf",
    )
    assert r.exit_code == 0, r.output
    assert tomllib.loads((folder / "config.toml").read_text())["node"]["rpc_url"] == anvil_url
    # status can point elsewhere without editing the config: the flag wins
    r = invoke("node", "status", str(folder), "--rpc-url", "http://127.0.0.1:9")
    assert r.exit_code == 1 and "http://127.0.0.1:9" in r.stderr


def test_bad_dev_account_index_is_a_usage_error(anvil_url: str, tmp_path: Path) -> None:
    r = invoke(
        "chain",
        "deploy",
        "--rpc-url",
        anvil_url,
        "--dev-account",
        "-1",
        "--out",
        str(tmp_path / "d.json"),
    )
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_set_max_samples_changes_a_sites_cap(ledger: Ledger, anvil_url: str) -> None:
    site = dev_account(3).address
    ledger.register_site(dev_account(0), site, "hospital-x", 500)
    where = ("--rpc-url", anvil_url, "--contract", ledger.address)
    r = invoke("node", "set-max-samples", site, "900", *where, "--dev-account", "0")
    assert r.exit_code == 0, r.output
    assert f"{site} may claim at most 900 samples" in r.stdout and "was 500" in r.stdout
    r = invoke(
        "node",
        "set-max-samples",
        site.lower(),
        "1200",
        *where,
        "--dev-account",
        "0",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["site"], doc["max_samples"], doc["previous_max_samples"]) == (site, 1200, 900)
    assert doc["tx"] and doc["gas_used"] > 0
    info = ledger.get_site(site)
    assert info is not None and info.max_samples == 1200

    # reverts: only the coordinator, only a registered site (exit 1, the contract's reason)
    r = invoke("node", "set-max-samples", site, "5", *where, "--dev-account", "5")
    assert r.exit_code == 1 and "not the federation's coordinator" in r.stderr
    stranger = dev_account(6).address
    r = invoke("node", "set-max-samples", stranger, "5", *where, "--dev-account", "0")
    assert r.exit_code == 1 and "is not a registered site" in r.stderr
    info = ledger.get_site(site)
    assert info is not None and info.max_samples == 1200


@pytest.mark.parametrize(
    "args",
    [
        [dev_account(3).address, "0"],
        [dev_account(3).address, str(2**64)],
        [dev_account(3).address, "-1"],
        [dev_account(3).address, str(10**9 + 1)],
        ["0x12", "10"],
    ],
)
def test_set_max_samples_refuses_out_of_range_values(
    ledger: Ledger, anvil_url: str, args: list[str]
) -> None:
    ledger.register_site(dev_account(0), dev_account(3).address, "hospital-x", 500)
    r = invoke(
        "node",
        "set-max-samples",
        *args,
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
    )
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    info = ledger.get_site(dev_account(3).address)
    assert info is not None and info.max_samples == 500


def test_a_hostile_site_name_reaches_no_terminal_raw(ledger: Ledger, anvil_url: str) -> None:
    """The coordinator chooses site names: an escape sequence in one was printed raw by chain
    status and audit site (clearing the auditor's screen, retitling the terminal; a carriage
    return let the name overwrite its own line)."""
    site = "0x" + "34" * 20
    ledger.register_site(dev_account(0), site, "evil\x1b[2J\x1b]0;pwned\x07\rok\u202e", 5)
    where = ["--rpc-url", anvil_url, "--contract", ledger.address]
    # both show the name escaped, each hidden character as \uNNNN, so two names differing only
    # in them read apart (chain status replaced them with U+FFFD before session 49)
    escaped = ("evil\\u001b[2J", "pwned\\u0007\\u000dok\\u202e")
    expected = {"chain": escaped, "audit": escaped}
    for args in (["chain", "status", *where], ["audit", "site", site, *where]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert all(part in r.stdout for part in expected[args[0]]), r.stdout
        assert not any(ch in r.stdout for ch in "\x1b\x07\r\u202e"), repr(r.stdout)


def test_init_and_register_print_one_json_object_with_the_real_values(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "node"
    r = init(folder, ledger, anvil_url, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    address = keystore_address(folder / "keystore.json")
    assert doc["address"] == address
    assert doc["keystore"] == str(folder / "keystore.json")
    assert doc["config"] == str(folder / "config.toml")
    assert doc["folder"] == str(folder)
    config = tomllib.loads((folder / "config.toml").read_text())
    assert doc["contract"] == ledger.address == config["node"]["contract"]
    assert doc["rpc_url"] == anvil_url and doc["store"] == config["node"]["store"]
    assert doc["name"] == "St. Mary" and doc["num_classes"] == len(doc["class_names"])

    r = invoke(
        "node",
        "register",
        address,
        "--name",
        "St. Mary",
        "--max-samples",
        "600",
        "--epsilon-budget",
        "8",
        "--fund",
        "1",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["site"] == address and doc["name"] == "St. Mary" and doc["max_samples"] == 600
    receipt = ledger.w3.eth.get_transaction_receipt(doc["tx"])
    assert receipt["blockNumber"] == doc["block"] and receipt["gasUsed"] == doc["gas_used"]
    assert doc["privacy_budget"]["epsilon_micro"] == ledger.privacy(address).budget_micro
    assert doc["funded_eth"] == 1
    assert connect(anvil_url).eth.get_balance(address) == 10**18  # type: ignore[arg-type]


def test_init_and_register_refuse_an_unknown_format_with_exit_2(
    ledger: Ledger, anvil_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "node"
    r = init(folder, ledger, anvil_url, "--format", "yaml")
    assert r.exit_code == 2 and "--format" in r.stderr
    assert not (folder / "config.toml").exists()
    r = invoke(
        "node",
        "register",
        dev_account(3).address,
        "--max-samples",
        "5",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
        "--format",
        "yaml",
    )
    assert r.exit_code == 2 and "--format" in r.stderr
    assert ledger.get_site(dev_account(3).address) is None
