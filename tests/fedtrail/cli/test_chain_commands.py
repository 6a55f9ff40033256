"""`fedtrail chain deploy|status` through click's CliRunner, against a real Anvil."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.chain import connect, dev_account
from fedtrail.cli import cli
from fedtrail.keys import FAST_KDF_N, create_keystore
from fedtrail.ledger import Deployment, Ledger

pytestmark = pytest.mark.anvil


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_deploy_writes_deployment_file_and_status_reads_it(anvil_url: str, tmp_path: Path) -> None:
    out = tmp_path / "deployment.json"
    code, stdout, _ = run(
        "chain",
        "deploy",
        "--rpc-url",
        anvil_url,
        "--dev-account",
        "0",
        "--min-round-window",
        "45",
        "--out",
        str(out),
        "--format",
        "json",
    )
    assert code == 0
    printed = json.loads(stdout)
    dep = Deployment.from_file(out)
    assert printed["address"] == dep.address
    assert dep.min_round_window == 45 == Ledger.at(connect(anvil_url), dep).min_round_window()
    assert dep.coordinator == dev_account(0).address == dep.aggregator
    ledger = Ledger.at(connect(anvil_url), dep)
    ledger.register_site(dev_account(0), dev_account(3).address, "hospital-x", 500)

    code, stdout, _ = run(
        "chain", "status", "--rpc-url", anvil_url, "--deployment", str(out), "--format", "json"
    )
    assert code == 0
    doc = json.loads(stdout)
    assert doc["contract"] == dep.address and doc["current_round"] == 0
    assert doc["sites"][0]["site"] == dev_account(3).address
    assert doc["sites"][0]["name"] == "hospital-x" and doc["sites"][0]["max_samples"] == 500

    code, stdout, _ = run("chain", "status", "--rpc-url", anvil_url, "--contract", dep.address)
    assert code == 0 and "hospital-x" in stdout and dep.address in stdout


def test_deploy_with_keystore_and_passphrase_from_env(anvil_url: str, tmp_path: Path) -> None:
    from fedtrail.chain import fund

    ks = tmp_path / "coordinator.json"
    acct = create_keystore(ks, "correct horse", kdf_n=FAST_KDF_N)
    fund(connect(anvil_url), dev_account(0), acct.address, 10**18)
    out = tmp_path / "d.json"
    code, _, err = run(
        "chain",
        "deploy",
        "--rpc-url",
        anvil_url,
        "--keystore",
        str(ks),
        "--out",
        str(out),
        env={"FEDTRAIL_PASSPHRASE": "wrong"},
    )
    assert code == 1 and "wrong passphrase" in err and not out.exists()
    code, stdout, _ = run(
        "chain",
        "deploy",
        "--rpc-url",
        anvil_url,
        "--keystore",
        str(ks),
        "--out",
        str(out),
        env={"FEDTRAIL_PASSPHRASE": "correct horse"},
    )
    assert code == 0, stdout
    assert Deployment.from_file(out).coordinator == acct.address
    assert "correct horse" not in stdout


def test_status_without_ledger_is_a_usage_error(anvil_url: str, tmp_path: Path) -> None:
    code, _, err = run(
        "chain", "status", "--rpc-url", anvil_url, "--deployment", str(tmp_path / "missing.json")
    )
    assert code == 2 and "--contract" in err


def test_status_of_an_address_without_the_contract_fails_clearly(anvil_url: str) -> None:
    code, _, err = run(
        "chain", "status", "--rpc-url", anvil_url, "--contract", dev_account(7).address
    )
    assert code == 1 and "no contract" in err


def test_unreachable_chain_names_the_endpoint(tmp_path: Path) -> None:
    code, _, err = run(
        "chain",
        "deploy",
        "--rpc-url",
        "http://127.0.0.1:9",
        "--dev-account",
        "0",
        "--out",
        str(tmp_path / "d.json"),
    )
    assert code == 1 and "http://127.0.0.1:9" in err


def test_deploy_refuses_to_overwrite_a_deployment_file(anvil_url: str, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    out.write_text("{}")
    code, _, err = run(
        "chain", "deploy", "--rpc-url", anvil_url, "--dev-account", "0", "--out", str(out)
    )
    assert code == 2 and "exists" in err


def test_an_unfunded_signer_is_named_with_what_to_do(anvil_url: str, tmp_path: Path) -> None:
    """Dev account 99 exists (the mnemonic's 100th key) but Anvil funds only the first ten: the
    error names the account and how to fund it, not only the node's 'insufficient funds'."""
    out = tmp_path / "d.json"
    code, _, err = run(
        "chain", "deploy", "--rpc-url", anvil_url, "--dev-account", "99", "--out", str(out)
    )
    assert code == 1
    assert dev_account(99).address in err and "too little ETH" in err
    assert "fedtrail chain fund" in err
    assert not out.exists()


def test_deploy_needs_a_key(anvil_url: str, tmp_path: Path) -> None:
    code, _, err = run("chain", "deploy", "--rpc-url", anvil_url, "--out", str(tmp_path / "d"))
    assert code == 2 and "--keystore" in err


def test_a_missing_or_wrong_keystore_is_named_before_a_passphrase_is_asked(
    anvil_url: str, tmp_path: Path
) -> None:
    """It said 'no passphrase for FILE: set FEDTRAIL_PASSPHRASE' for a FILE that is not there."""
    not_a_keystore = tmp_path / "config.toml"
    not_a_keystore.write_text("[node]\n")
    no_passphrase = {"FEDTRAIL_PASSPHRASE": ""}
    for keystore, said in ((tmp_path / "nope.json", "does not exist"), (not_a_keystore, "not a")):
        out = str(tmp_path / "d.json")
        args = ("chain", "deploy", "--rpc-url", anvil_url, "--keystore", str(keystore))
        code, _, err = run(*args, "--out", out, env=no_passphrase)
        assert code == 1 and said in err and str(keystore) in err, err
        assert "passphrase" not in err


def test_a_round_not_yet_valued_shows_no_verdict(anvil_url: str, tmp_path: Path) -> None:
    """Before recordValuation the chain reads score 0 / reason code 0; that is not an OK
    verdict, so `chain status` shows no score, reason or weight for the round's updates."""
    from fedtrail.ledger import commitment

    out = tmp_path / "deployment.json"
    code, _, _ = run(
        "chain", "deploy", "--rpc-url", anvil_url, "--dev-account", "0", "--out", str(out)
    )
    assert code == 0
    w3 = connect(anvil_url)
    dep = Deployment.from_file(out)
    ledger = Ledger.at(w3, dep)
    site = dev_account(3)
    ledger.register_site(dev_account(0), site.address, "hospital-x", 500)
    w3.eth.get_block("latest")["timestamp"]
    r, _ = ledger.open_round(
        dev_account(0),
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "11" * 32,
        terms_cid="QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        terms_sha256="22" * 32,
        commit_seconds=60,
        reveal_seconds=60,
    )
    ledger.commit_update(site, r, commitment(site.address, r, "33" * 32, 10))
    code, stdout, _ = run(
        "chain", "status", "--rpc-url", anvil_url, "--deployment", str(out), "--format", "json"
    )
    assert code == 0
    (update,) = json.loads(stdout)["round"]["updates"]
    assert (update["score"], update["reason"], update["weight"]) == (None, None, None)


def test_the_coordinator_role_moves_in_two_steps(anvil_url: str) -> None:
    ledger, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    old, new, other = dev_account(0).address, dev_account(3).address, dev_account(4).address
    where = ("--rpc-url", anvil_url, "--contract", ledger.address)

    code, out, _ = run("chain", "transfer-coordinator", new, *where, "--dev-account", "0")
    assert code == 0 and f"offered to {new}" in out and "accept-coordinator" in out
    assert ledger.coordinator() == old and ledger.pending_coordinator() == new
    code, out, _ = run("chain", "status", *where, "--format", "json")
    assert json.loads(out)["pending_coordinator"] == new

    # only the account offered the role can take it; nobody else can offer it
    code, _, err = run("chain", "accept-coordinator", *where, "--dev-account", "4")
    assert code == 1 and f"{other} was not offered the coordinator role" in err
    code, _, err = run("chain", "transfer-coordinator", other, *where, "--dev-account", "4")
    assert code == 1 and "not the federation's coordinator" in err

    code, out, _ = run(
        "chain", "accept-coordinator", *where, "--dev-account", "3", "--format", "json"
    )
    assert code == 0
    doc = json.loads(out)
    assert (doc["coordinator"], doc["previous_coordinator"]) == (new, old) and doc["tx"]
    assert ledger.coordinator() == new and ledger.pending_coordinator() is None

    # the old coordinator lost the role; the new one can offer it and withdraw the offer
    code, _, err = run("chain", "transfer-coordinator", other, *where, "--dev-account", "0")
    assert code == 1 and "not the federation's coordinator" in err
    code, out, _ = run(
        "chain", "transfer-coordinator", other, *where, "--dev-account", "3", "--format", "json"
    )
    assert code == 0 and json.loads(out)["pending_coordinator"] == other
    code, out, _ = run(
        "chain", "transfer-coordinator", "0x" + "0" * 40, *where, "--dev-account", "3"
    )
    assert code == 0 and "withdrawn" in out and ledger.pending_coordinator() is None


def test_transfer_coordinator_refuses_a_bad_address(anvil_url: str) -> None:
    ledger, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    code, _, err = run(
        "chain",
        "transfer-coordinator",
        "0x12",
        "--rpc-url",
        anvil_url,
        "--contract",
        ledger.address,
        "--dev-account",
        "0",
    )
    assert code == 2 and "not an Ethereum address" in err
    assert ledger.pending_coordinator() is None


def test_a_new_keystore_funded_from_the_dev_account_deploys_the_ledger(
    anvil_url: str, tmp_path: Path
) -> None:
    """The coordinator's path without a site folder: create a keystore, fund it, deploy."""
    key = tmp_path / "coordinator.json"
    env = {"FEDTRAIL_PASSPHRASE": "coordinator pass"}
    code, stdout, _ = run("chain", "keystore", str(key), "--fast-kdf", "--format", "json", env=env)
    assert code == 0
    address = json.loads(stdout)["address"]
    assert key.stat().st_mode & 0o077 == 0  # owner-only
    assert connect(anvil_url).eth.get_balance(address) == 0

    code, stdout, _ = run(
        "chain",
        "fund",
        address,
        "--eth",
        "2.5",
        "--rpc-url",
        anvil_url,
        "--dev-account",
        "0",
        "--format",
        "json",
    )
    assert code == 0
    doc = json.loads(stdout)
    assert doc["to"] == address and doc["wei"] == 25 * 10**17
    assert connect(anvil_url).eth.get_balance(address) == 25 * 10**17 == doc["balance_wei"]

    out = tmp_path / "deployment.json"
    code, _, _ = run(
        "chain",
        "deploy",
        "--rpc-url",
        anvil_url,
        "--keystore",
        str(key),
        "--out",
        str(out),
        env=env,
    )
    assert code == 0
    assert Deployment.from_file(out).coordinator == address


def test_keystore_refuses_to_overwrite_and_needs_a_passphrase(tmp_path: Path) -> None:
    key = tmp_path / "k.json"
    key.write_text("precious")
    code, _, stderr = run("chain", "keystore", str(key), env={"FEDTRAIL_PASSPHRASE": "p"})
    assert code == 2 and "refusing to overwrite" in stderr
    assert key.read_text() == "precious"
    fresh = tmp_path / "fresh.json"
    code, _, stderr = run("chain", "keystore", str(fresh), env={"FEDTRAIL_PASSPHRASE": ""})
    assert code == 2 and "no passphrase" in stderr and not fresh.exists()


def test_fund_refuses_bad_amounts_addresses_and_empty_signers(
    anvil_url: str, tmp_path: Path
) -> None:
    target = dev_account(5).address
    before = connect(anvil_url).eth.get_balance(target)
    for args in (["--eth", "0"], ["--eth", "-1"], ["--eth", "nan"], ["--eth", "1e-30"]):
        code, _, _ = run(
            "chain", "fund", target, *args, "--rpc-url", anvil_url, "--dev-account", "0"
        )
        assert code == 2, args
    code, _, stderr = run(
        "chain", "fund", "0x123", "--eth", "1", "--rpc-url", anvil_url, "--dev-account", "0"
    )
    assert code == 2 and "not an Ethereum address" in stderr
    empty = tmp_path / "empty.json"
    create_keystore(empty, "p", kdf_n=FAST_KDF_N)
    code, _, stderr = run(
        "chain",
        "fund",
        target,
        "--eth",
        "1",
        "--rpc-url",
        anvil_url,
        "--keystore",
        str(empty),
        env={"FEDTRAIL_PASSPHRASE": "p"},
    )
    assert code == 2 and "holds less than 1.0 ETH" in stderr
    assert connect(anvil_url).eth.get_balance(target) == before


def test_fund_refuses_an_address_whose_mixed_case_fails_its_checksum(anvil_url: str) -> None:
    """EIP-55: an address in mixed case carries a checksum. web3 took one that fails it as the
    address it spells, so `chain fund` sent ETH to a mistyped address (exit 0); now exit 2 and
    nothing sent. The same address in lower case (no checksum) is still taken."""
    target = dev_account(6).address
    digits = target[2:]
    flip = next(i for i, c in enumerate(digits) if c.isalpha())
    typo = "0x" + digits[:flip] + digits[flip].swapcase() + digits[flip + 1 :]
    w3 = connect(anvil_url)
    before = w3.eth.get_balance(target)
    code, _, stderr = run(
        "chain", "fund", typo, "--eth", "0.5", "--rpc-url", anvil_url, "--dev-account", "0"
    )
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"error: {typo!r} fails its EIP-55 checksum (its mixed case does not match its "
        "digits): a mistyped character? Copy the address again from its source"
    ]
    assert w3.eth.get_balance(target) == before
    code, _, _ = run(
        "chain",
        "fund",
        target.lower(),
        "--eth",
        "0.5",
        "--rpc-url",
        anvil_url,
        "--dev-account",
        "0",
    )
    assert code == 0 and w3.eth.get_balance(target) == before + 5 * 10**17


def test_deploy_refuses_a_minimum_window_no_round_can_meet(anvil_url: str, tmp_path: Path) -> None:
    """Exit 2 (a usage error), the reason said, no deployment file and no contract."""
    out = tmp_path / "deployment.json"
    w3 = connect(anvil_url)
    nonce = w3.eth.get_transaction_count(dev_account(0).address)
    code, stdout, stderr = run(
        "chain",
        "deploy",
        "--rpc-url",
        anvil_url,
        "--dev-account",
        "0",
        "--min-round-window",
        str(2**64 - 1),
        "--out",
        str(out),
    )
    assert code == 2, (stdout, stderr)
    assert "no round can open" in stderr and "at most 4294967296 s" in stderr
    assert not out.exists()
    assert w3.eth.get_transaction_count(dev_account(0).address) == nonce
