"""`verify_all` reads the registry's history (``Ledger.registry_history``: the registrations,
removals, caps and budgets, and the rounds' openings, valuations and finalizations) once for all
rounds, and judges each round's names, rename window and registry moves as a round-by-round
audit does."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_all, verify_round
from fedtrail.ledger import Ledger
from tests.auditor.report.federation import build_history

HISTORY = (
    "SiteRegistered",
    "SiteRemoved",
    "MaxSamplesSet",
    "PrivacyBudgetSet",
    "RoundOpened",
    "RoundValued",
    "RoundFinalized",
)


def test_verify_all_reads_registrations_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = build_history(tmp_path)
    reads: list[str] = []
    per_round: list[str] = []  # reads filtered to one round
    events = Ledger.events

    def counted(self: Ledger, name: str, **kwargs: Any) -> Any:
        filters = kwargs.get("argument_filters") or {}
        (per_round if "round" in filters else reads).append(name)
        return events(self, name, **kwargs)

    monkeypatch.setattr(Ledger, "events", counted)
    audits = verify_all(fed.ledger, fed.store)
    assert len(audits) == 4
    for name in HISTORY:  # the whole history, once
        assert reads.count(name) == 1, (name, Counter(reads))
    # no round reads its registry history again: the only per-round reads of these events are
    # get_round's own (RoundOpened, RoundFinalized: one each a round, on the embedded chain,
    # which takes no JSON-RPC batch)
    assert not {"RoundValued", "SiteRegistered", "SiteRemoved"} & set(per_round), per_round
    for name in ("RoundOpened", "RoundFinalized"):
        assert per_round.count(name) <= len(audits), Counter(per_round)
    # each round's registry checks are what a round-by-round audit finds
    for audit in audits:
        alone = verify_round(fed.ledger, fed.store, audit.round)
        for check in ("sites.names", "sites.registry", "log.agrees"):
            got = [(c.passed, c.detail) for c in audit.checks if c.name == check]
            assert got == [(c.passed, c.detail) for c in alone.checks if c.name == check]
    assert reads.count("SiteRegistered") > 1  # verify_round alone reads its own
