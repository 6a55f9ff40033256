"""``audit verify`` checks the round log's remaining derived fields: each site's ``status``
against the audit's own reading of the updates (``log.status``)."""

from __future__ import annotations

from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.simulation.federation import Federation
from tests.auditor.test_verify_components import _audit_with_log, _failed, fed

__all__ = ["fed"]  # the module-scoped honest federation, shared with the components tests

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def test_honest_statuses_are_the_audits_reading(fed: Federation) -> None:
    audit = verify_round(fed.ledger, fed.store, 2)
    assert audit.passed, _failed(audit)
    check = next(c for c in audit.checks if c.name == "log.status")
    assert check.detail == "3 site status(es) are how this audit reads the updates"


@pytest.mark.parametrize("status", ["tampered", "malformed", "duplicate"])
def test_a_log_that_misstates_how_an_update_read_fails_log_status(
    status: str, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that reads fine, decodes and is no copy, logged as unusable: on the parent
    commit verify never compared the log's status and passed; now log.status fails, naming
    the site, and nothing else does."""
    site: list[str] = []

    def edit(doc: dict[str, Any]) -> None:
        doc["sites"][0]["status"] = status
        site.append(doc["sites"][0]["site"])

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.status"}, bad
    assert bad["log.status"] == f"{site[0][:10]} status {status!r}, read as ok"
