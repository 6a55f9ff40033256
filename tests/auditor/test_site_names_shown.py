"""`audit round`, `audit site` and `chain status` name sites as the report does: characters that
print as nothing or as something else escaped (``\\u202e``, not U+FFFD, so two names apart in
bytes stay apart on screen), and a site registered again under another name shown with its
earlier ones (``hospital-z (formerly St. Mary's Radiology)``, attack a64)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from tests.auditor.report.federation import (
    SITE_NAMES,
    Fed,
    initial,
    new_federation,
    open_round,
    submit_all,
)

RENAMED = "hospital-z"


@pytest.fixture
def fed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fed:
    """Three sites that revealed in round 1; then site 0 removed and registered as
    ``hospital-z``. Every command reads this ledger."""
    import fedtrail.auditor.commands as commands
    import fedtrail.cli.chain as chain

    fed = new_federation(tmp_path)
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    monkeypatch.setattr(chain, "open_ledger", lambda *_: fed.ledger)
    submit_all(fed, open_round(fed, initial(fed)), seed=3)
    site = fed.sites[0].address
    fed.ledger.remove_site(fed.coordinator, site)
    fed.ledger.register_site(fed.coordinator, site, RENAMED, 10_000)
    return fed


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_chain_status_escapes_names_and_shows_former_ones(fed: Fed) -> None:
    table = invoke("chain", "status")
    assert "\ufffd" not in table and "\u202e" not in table
    assert "S\u00fcd\\u202e" in table  # one script: the accent as written, the override escaped
    assert f"{RENAMED} (formerly {SITE_NAMES[0]})" in table
    doc = json.loads(invoke("chain", "status", "--format", "json"))
    by_site = {s["site"]: s for s in doc["sites"]}
    assert by_site[fed.sites[0].address]["former_names"] == [SITE_NAMES[0]]
    assert by_site[fed.sites[2].address]["name"] == SITE_NAMES[2]  # JSON: the text itself
    assert by_site[fed.sites[1].address]["former_names"] == []


def test_audit_round_table_and_csv_show_escapes_and_former_names(fed: Fed) -> None:
    for fmt in ("table", "csv"):
        out = invoke("audit", "round", "1", "--format", fmt)
        assert "\ufffd" not in out and "\u202e" not in out, fmt
        assert "\\u202e" in out and f"{RENAMED} (formerly {SITE_NAMES[0]})" in out, fmt
    doc = json.loads(invoke("audit", "round", "1", "--format", "json"))
    assert {u["name"] for u in doc["updates"]} == {RENAMED, *SITE_NAMES[1:]}


def test_audit_site_header_names_former_registrations(fed: Fed) -> None:
    header = invoke("audit", "site", fed.sites[0].address).splitlines()[0]
    assert f"'{RENAMED}' (formerly {SITE_NAMES[0]}) registered=True" in header
    other = invoke("audit", "site", fed.sites[2].address).splitlines()[0]
    assert "S\u00fcd\\u202e'" in other and "formerly" not in other
    doc = json.loads(invoke("audit", "site", fed.sites[0].address, "--format", "json"))
    assert doc["name"] == RENAMED and doc["former_names"] == [SITE_NAMES[0]]
