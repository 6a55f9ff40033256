"""``audit verify`` checks the round log's remaining derived fields: each site's ``status``
against the audit's own reading of the updates (``log.status``), and the ``summary`` against the
fields it is built from (``log.agrees``)."""

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


def _summary(doc: dict[str, Any]) -> None:
    doc["summary"] = doc["summary"].replace("3 of 3 updates", "3 of 3 vetted updates")


def _summary_auc(doc: dict[str, Any]) -> None:
    """A summary that boasts another AUC than the log's metrics state."""
    shown = f"{doc['metrics']['after']['auc']:.3f}."
    assert doc["summary"].endswith(shown)
    doc["summary"] = doc["summary"].removesuffix(shown) + "0.999."


@pytest.mark.parametrize("lie", [_summary, _summary_auc], ids=["words", "auc"])
def test_a_summary_that_is_not_its_fields_sentence_fails_log_agrees(
    lie: Any, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary is built from the log's other fields; on the parent commit verify never
    read it (any text passed). Now log.agrees fails, quoting both, and nothing else does."""
    seen: dict[str, str] = {}

    def edit(doc: dict[str, Any]) -> None:
        seen["honest"] = doc["summary"]
        lie(doc)
        seen["lied"] = doc["summary"]

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.agrees"}, bad
    assert seen["lied"] != seen["honest"]
    assert bad["log.agrees"] == (
        f"log's summary {seen['lied']!r} is not its fields' {seen['honest']!r}"
    )


def test_honest_summaries_pass_log_agrees(fed: Federation) -> None:
    audit = verify_round(fed.ledger, fed.store, 1)
    check = next(c for c in audit.checks if c.name == "log.agrees")
    assert check.passed and "its summary is its fields'" in check.detail
