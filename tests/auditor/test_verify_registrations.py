"""`verify_all` reads the registry's history (``SiteRegistered`` and ``RoundFinalized`` events)
once for all rounds, and judges each round's names as ``names_at_finalize`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_all, verify_round
from fedtrail.ledger import Ledger
from tests.auditor.report.federation import build_history


def test_verify_all_reads_registrations_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = build_history(tmp_path)
    reads: list[str] = []
    events = Ledger.events

    def counted(self: Ledger, name: str, **kwargs: Any) -> Any:
        reads.append(name)
        return events(self, name, **kwargs)

    monkeypatch.setattr(Ledger, "events", counted)
    audits = verify_all(fed.ledger, fed.store)
    assert len(audits) == 4
    assert reads.count("SiteRegistered") == 1, reads
    # each round's sites.names is what a round-by-round audit finds
    for audit in audits:
        alone = verify_round(fed.ledger, fed.store, audit.round)
        names = [c.detail for c in audit.checks if c.name == "sites.names"]
        assert names == [c.detail for c in alone.checks if c.name == "sites.names"]
    assert reads.count("SiteRegistered") > 1  # verify_round alone reads its own
