"""A round's log names its sites as the registry did when the round was finalized. The
coordinator may remove a site and register it again under another name (the contract keeps
only the latest name in ``getSite``): that must neither make an honest earlier log fail
``log.agrees`` nor let a log use a name the site did not have then."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import fedtrail.auditor.commands as commands
from fedtrail.auditor.verify import verify_round
from fedtrail.cli import cli
from fedtrail.simulation.federation import Federation
from tests.auditor.test_verify import federation, on_anvil
from tests.auditor.test_verify_components import _audit_with_log, _failed

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

NEW_NAME = "renamed-hospital"


@pytest.fixture(scope="module")
def fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """One honest round finalized, then site 0 removed and registered again under NEW_NAME."""
    fed = federation(tmp_path_factory.mktemp("registry"), rounds=1, **on_anvil(anvil_url))
    site = fed.sites[0].account.address
    info = fed.ledger.get_site(site)
    assert info is not None and info.name != NEW_NAME
    fed.ledger.remove_site(fed.coordinator, site)
    fed.ledger.register_site(fed.coordinator, site, NEW_NAME, info.max_samples)
    return fed


def test_an_honest_log_still_passes_after_its_site_is_renamed(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the parent commit verify compared the log's names with the registry's current ones:
    the honest round-1 log failed log.agrees ('name ... != chain renamed-hospital') once the
    coordinator renamed a site, and ``audit log`` flagged it DIFFERS FROM CHAIN (exit 1)."""
    audit = verify_round(fed.ledger, fed.store, 1)
    assert audit.passed, _failed(audit)
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    out = CliRunner().invoke(cli, ["audit", "log", "1", "--store", f"local:{fed.store.root}"])
    assert out.exit_code == 0, out.output
    assert "DIFFERS" not in out.output and NEW_NAME not in out.output


def test_a_log_with_the_later_name_fails_log_agrees(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site's name in round 1 was its first one: a round-1 log that gives it the name it
    got later does not name the registry of its round."""
    site = fed.sites[0].account.address
    old: list[str] = []

    def edit(doc: dict[str, Any]) -> None:
        entry = next(e for e in doc["sites"] if e["site"] == site)
        old.append(entry["name"])
        entry["name"] = NEW_NAME

    bad = _audit_with_log(fed, 1, edit, monkeypatch)
    assert set(bad) == {"log.agrees"}, bad
    assert bad["log.agrees"] == f"{site[:10]} name {NEW_NAME!r} != chain {old[0]!r}"
