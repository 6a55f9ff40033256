"""The privacy column of `fedtrail node status` and `fedtrail audit site` (issue 16): a site's
epsilon budget and cumulative spend from the chain, and per round the epsilon its update
declared (audit site: the cumulative spend after it too), in the table and the JSON. A site
without DP gets no empty epsilon column in the table."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fedtrail.chain import advance_time, connect, dev_account
from fedtrail.cli import cli
from fedtrail.keys import keystore_address, load_keystore
from fedtrail.ledger import Ledger, commitment

pytestmark = pytest.mark.anvil
PASS = {"FEDTRAIL_PASSPHRASE": "pw-node"}
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
SPENDS = (1_250_000, 500_001)  # micro-epsilon declared in rounds 1 and 2


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=PASS, catch_exceptions=False)


def h(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


@pytest.fixture(scope="module")
def world(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, Path]:
    """A node folder whose site has a budget of 8 and revealed privately in rounds 1 and 2;
    a second site (dev account 3) registered without DP."""
    coord = dev_account(0)
    ledger, _ = Ledger.deploy(connect(anvil_url), coord)
    folder = tmp_path_factory.mktemp("dp") / "node"
    where = ("--rpc-url", anvil_url, "--contract", ledger.address)
    r = invoke("node", "init", str(folder), "--name", "St. Mary", *where, "--fast-kdf")
    assert r.exit_code == 0, r.output
    address = keystore_address(folder / "keystore.json")
    r = invoke(
        "node", "register", address, "--max-samples", "600", "--epsilon-budget", "8",
        "--fund", "1", *where, "--dev-account", "0",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    ledger.register_site(coord, dev_account(3).address, "plain", 600)
    site = load_keystore(folder / "keystore.json", PASS["FEDTRAIL_PASSPHRASE"])
    for spend in SPENDS:
        r_id, _ = ledger.open_round(
            coord, CID, h("start"), terms_cid=CID, terms_sha256=h("terms"),
            commit_seconds=600, reveal_seconds=600,
        )  # fmt: skip
        sha = h(f"update {r_id}")
        ledger.commit_update(site, r_id, commitment(site.address, r_id, sha, 100))
        advance_time(ledger.w3, 601)
        ledger.reveal_update(site, r_id, CID, sha, 100, epsilon_micro=spend)
        advance_time(ledger.w3, 600)
        ledger.cancel_round(coord, r_id)
    return ledger, folder


def test_node_status_shows_spent_over_budget_and_each_rounds_epsilon(
    world: tuple[Ledger, Path],
) -> None:
    _, folder = world
    r = invoke("node", "status", str(folder), "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    total = sum(SPENDS)
    assert doc["privacy"] == {
        "budget_micro": 8_000_000,
        "budget_epsilon": 8.0,
        "spent_micro": total,
        "spent_epsilon": total / 1e6,
        # nothing released uncharged: the node counts the chain's spend alone
        "counted_micro": total,
        "counted_epsilon": total / 1e6,
        "uncharged_micro": 0,
        "uncharged_epsilon": 0.0,
        "uncharged_rounds": {},
    }
    assert [row["epsilon"] for row in doc["rounds"]] == [s / 1e6 for s in SPENDS]
    r = invoke("node", "status", str(folder))
    assert r.exit_code == 0, r.output
    assert "privacy     epsilon 1.750001 spent of a budget of 8" in r.stdout
    assert "counted locally" not in r.stdout
    header = next(line for line in r.stdout.splitlines() if line.startswith("round"))
    assert "epsilon" in header.split()


def test_audit_site_shows_the_account_and_each_rounds_spend(
    world: tuple[Ledger, Path], anvil_url: str
) -> None:
    ledger, folder = world
    address = keystore_address(folder / "keystore.json")
    where = ("--rpc-url", anvil_url, "--contract", ledger.address)
    r = invoke("audit", "site", address, *where, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["privacy"]["budget_micro"] == 8_000_000
    assert doc["privacy"]["spent_micro"] == sum(SPENDS)
    rows = doc["rounds"]
    assert [row["epsilon"] for row in rows] == [1.25, 0.500001]
    assert [row["epsilon_total"] for row in rows] == [1.25, 1.750001]
    r = invoke("audit", "site", address, *where)
    assert r.exit_code == 0, r.output
    assert "privacy: epsilon 1.750001 spent of a budget of 8" in r.stdout
    assert "epsilon_total" in r.stdout
    r = invoke("audit", "site", address, *where, "--format", "csv")
    assert r.stdout.splitlines()[0].endswith(",epsilon,epsilon_total")
    assert r.stdout.splitlines()[2].endswith(",0.5000,1.7500")  # cells: 4 decimals


def test_a_site_without_dp_has_no_epsilon_column(
    world: tuple[Ledger, Path], anvil_url: str
) -> None:
    ledger, _ = world
    where = ("--rpc-url", anvil_url, "--contract", ledger.address)
    plain = dev_account(3).address
    r = invoke("audit", "site", plain, *where, "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["privacy"] == {
        "budget_micro": 0,
        "budget_epsilon": None,
        "spent_micro": 0,
        "spent_epsilon": 0.0,
    }
    assert all(row["epsilon"] is None for row in doc["rounds"])
    r = invoke("audit", "site", plain, *where)
    assert r.exit_code == 0, r.output
    assert "epsilon" not in r.stdout and "privacy" not in r.stdout


def test_node_status_shows_the_uncharged_releases_the_budget_check_counts(
    world: tuple[Ledger, Path], tmp_path: Path
) -> None:
    """Since session 63 the node's budget check adds the epsilon of its skipped records that
    keep a CID (a DP update that left the node and the chain does not charge: a reveal refused,
    or dropped with a reopened round's opening) to the chain's spend. ``node status`` shows
    that count beside the chain's, so an operator sees why the node refuses a round the
    chain's spend would allow; a skipped record without a CID (a decline: nothing left) and a
    revealed one (charged on chain) are not added."""
    _, source = world
    folder = tmp_path / "node"
    shutil.copytree(source, folder)  # the module's folder keeps no state.json
    released = {3: 400_000, 5: 100_002}  # micro-epsilon of the updates the chain dropped
    records: dict[str, dict[str, Any]] = {
        str(r): {"round": r, "phase": "skipped", "cid": CID, "sha256": h(f"dropped {r}"),
        "epsilon_micro": micro, "declined": 0}
        for r, micro in released.items()
    }  # fmt: skip
    records["4"] = {"round": 4, "phase": "skipped", "epsilon_micro": 900_000, "declined": 0}
    records["6"] = {"round": 6, "phase": "revealed", "cid": CID, "epsilon_micro": 700_000}
    (folder / "state.json").write_text(json.dumps({"rounds": records}))
    r = invoke("node", "status", str(folder), "--format", "json")
    assert r.exit_code == 0, r.output
    privacy = json.loads(r.stdout)["privacy"]
    on_chain, extra = sum(SPENDS), sum(released.values())
    assert privacy["spent_micro"] == on_chain  # the chain's account, as before
    assert privacy["uncharged_micro"] == extra
    assert privacy["uncharged_epsilon"] == extra / 1e6
    assert privacy["uncharged_rounds"] == {"3": 0.4, "5": 0.100002}
    assert privacy["counted_micro"] == on_chain + extra
    assert privacy["counted_epsilon"] == (on_chain + extra) / 1e6
    r = invoke("node", "status", str(folder))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("privacy"))
    assert lines[at] == (
        "privacy     epsilon 1.750001 spent of a budget of 8 (summed on chain over its rounds)"
    )
    assert " ".join(lines[at + 1].split()) == (
        "counted locally epsilon 2.250003 (0.500002 from skipped reveals of round(s) 3, 5: "
        "released, not charged on chain); the node holds this to its budget"
    )
