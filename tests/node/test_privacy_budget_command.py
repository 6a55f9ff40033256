"""`fedtrail node set-privacy-budget`: the coordinator sets a site's epsilon budget (issue 16)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from fedtrail.chain import connect, dev_account
from fedtrail.cli import cli
from fedtrail.ledger import Ledger, PrivacyAccount

pytestmark = pytest.mark.anvil


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def ledger(anvil_url: str) -> Ledger:
    deployed, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    deployed.register_site(dev_account(0), dev_account(3).address, "hospital-x", 500)
    return deployed


def test_set_privacy_budget_converts_epsilon_to_micro_rounding_up(
    ledger: Ledger, anvil_url: str
) -> None:
    site = dev_account(3).address
    where = ("--rpc-url", anvil_url, "--contract", ledger.address, "--dev-account", "0")
    r = invoke("node", "set-privacy-budget", site, "--epsilon", "8", *where)
    assert r.exit_code == 0, r.output
    assert f"{site} may spend epsilon 8 in all (8000000 micro-epsilon" in r.stdout
    assert ledger.privacy(site) == PrivacyAccount(8_000_000, 0)
    r = invoke(
        "node",
        "set-privacy-budget",
        site.lower(),
        "--epsilon",
        "2.5000001",
        *where,
        "--format",
        "json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["epsilon_budget_micro"] == 2_500_001  # ceil: never more budget than asked
    assert (doc["site"], doc["previous_epsilon_budget_micro"]) == (site, 8_000_000)
    assert doc["epsilon_spent_micro"] == 0 and doc["tx"] and doc["gas_used"] > 0
    r = invoke("node", "set-privacy-budget", site, "--epsilon", "0", *where)
    assert r.exit_code == 0 and "has no privacy budget now" in r.stdout
    assert ledger.privacy(site) == PrivacyAccount(0, 0)


def test_set_privacy_budget_errors(ledger: Ledger, anvil_url: str) -> None:
    site = dev_account(3).address
    where = ("--rpc-url", anvil_url, "--contract", ledger.address)
    r = invoke("node", "set-privacy-budget", site, "--epsilon", "1", *where, "--dev-account", "5")
    assert r.exit_code == 1 and "not the federation's coordinator" in r.stderr
    stranger = dev_account(6).address
    r = invoke(
        "node", "set-privacy-budget", stranger, "--epsilon", "1", *where, "--dev-account", "0"
    )
    assert r.exit_code == 1 and "is not a registered site" in r.stderr
    for bad in ("-1", "inf", "nan", "1e20", "1099511.627776"):
        r = invoke(
            "node", "set-privacy-budget", site, "--epsilon", bad, *where, "--dev-account", "0"
        )
        assert r.exit_code == 2 and "Traceback" not in r.output, (bad, r.output)
    assert "over the ledger's limit on a budget, 1099511.627775" in r.stderr
    r = invoke(
        "node", "set-privacy-budget", site, "--epsilon", "1099511.627775", *where,
        "--dev-account", "0",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert ledger.privacy(site) == PrivacyAccount(2**40 - 1, 0)
    r = invoke("node", "set-privacy-budget", site, "--epsilon", "0", *where, "--dev-account", "0")
    assert r.exit_code == 0, r.output
    assert ledger.privacy(site) == PrivacyAccount(0, 0)


def test_register_can_set_the_budget_at_registration(ledger: Ledger, anvil_url: str) -> None:
    site = dev_account(4).address
    where = ("--rpc-url", anvil_url, "--contract", ledger.address, "--dev-account", "0")
    r = invoke("node", "register", site, "--max-samples", "100", "--epsilon-budget", "3", *where)
    assert r.exit_code == 0, r.output
    assert "privacy budget: epsilon 3 (3000000 micro-epsilon" in r.stdout
    assert ledger.privacy(site) == PrivacyAccount(3_000_000, 0)
    other = dev_account(7).address
    for bad in ("0", "inf"):  # a zero budget at registration is no budget: refused as a typo
        r = invoke(
            "node", "register", other, "--max-samples", "100", "--epsilon-budget", bad, *where
        )
        assert r.exit_code == 2 and "Traceback" not in r.output, (bad, r.output)
    assert ledger.get_site(other) is None  # refused before anything was sent
