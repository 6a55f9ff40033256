"""`fedtrail node register` refuses a site name that reads like a registered one (a Cyrillic
``a``, U+0430, for a Latin one), mixes scripts, or holds characters that print as nothing or as an
escape (``fedtrail.protocol.names``); nothing is sent when it refuses."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from fedtrail.chain import connect, dev_account
from fedtrail.cli import cli
from fedtrail.ledger import Ledger

pytestmark = pytest.mark.anvil


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def ledger(anvil_url: str) -> Ledger:
    deployed, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    deployed.register_site(dev_account(0), dev_account(3).address, "hospital-a", 500)
    return deployed


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("hospital-\u0430", "mixes scripts (CYRILLIC, LATIN)"),
        ("Hospital-A", "reads like the registered name(s) 'hospital-a'"),
        ("hospital\u200b-a", "control, format, unassigned or blank"),
        ("hospital-a\u3164", "control, format, unassigned or blank"),  # a Hangul filler
        ("h\\xff", "backslash"),
        ("clinic  north", "whitespace other than single spaces"),
        ("Ho\u0302pital", "not in Unicode NFC form"),
        ("hospital-\u13aa", "reads like the registered name(s) 'hospital-a'"),  # Cherokee GO
        ("hospital -a", "reads like the registered name(s) 'hospital-a'"),
    ],
)
def test_register_refuses_a_lookalike_name(
    ledger: Ledger, anvil_url: str, name: str, why: str
) -> None:
    site = dev_account(4).address
    where = ("--rpc-url", anvil_url, "--contract", ledger.address, "--dev-account", "0")
    r = invoke("node", "register", site, "--name", name, "--max-samples", "100", *where)
    assert r.exit_code == 2 and why in r.stderr and "refused" in r.stderr, r.output
    assert ledger.get_site(site) is None


def test_register_takes_a_distinct_name_and_the_same_site_again(
    ledger: Ledger, anvil_url: str
) -> None:
    where = ("--rpc-url", anvil_url, "--contract", ledger.address, "--dev-account", "0")
    site = dev_account(4).address
    r = invoke("node", "register", site, "--name", "hospital-b", "--max-samples", "100", *where)
    assert r.exit_code == 0, r.output
    # a site's own registered name is no look-alike of itself
    again = dev_account(3).address
    r = invoke("node", "register", again, "--name", "Hospital-A", "--max-samples", "9", *where)
    assert r.exit_code in (0, 1) and "reads like" not in r.output, r.output
