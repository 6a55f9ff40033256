"""`audit round` and `audit log` print CIDs and labels that the aggregator or a site chose: the
contract takes any text as a CID, and a log's CIDs and reason labels are any strings the schema
allows. Printed raw, an escape sequence in one rewrites the auditor's terminal: a conceal
sequence in a relabelled reason hid the ``[DIFFERS FROM CHAIN]`` mark printed after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.ledger import Valuation
from tests.auditor.report.federation import (
    finalize,
    initial,
    new_federation,
    open_round,
    submit_all,
)

CONCEAL = "OK\x1b[8m"  # everything after it on the line is invisible
REWRITE = "Qm\x1b[1A\x1b[2K\r\x1b]0;pwned\x07\u202e"  # up a line, erase it, retitle, reorder
UNSAFE = "\x1b\x07\r\u202e"


def test_audit_round_and_log_print_no_escape_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedtrail.auditor.commands as commands

    liar = new_federation(tmp_path)
    monkeypatch.setattr(commands, "_open", lambda *_: liar.ledger)
    model = initial(liar)
    r = open_round(liar, (REWRITE, model[1]))  # the start model's CID, as the event holds it
    submit_all(liar, r, seed=7)
    liar.ledger.record_valuation(
        liar.coordinator, r, [Valuation(s.address, 500_000, 0) for s in liar.sites]
    )

    def lie(doc: dict[str, Any]) -> None:
        doc["sites"][1]["reason_label"] = CONCEAL  # the chain says OK: [DIFFERS FROM CHAIN]
        doc["sites"][0]["update"]["cid"] = REWRITE

    finalize(liar, r, model, None, edit=lie)

    shown = CliRunner().invoke(cli, ["audit", "round", str(r)])
    assert shown.exit_code == 0, shown.output
    assert not any(ch in shown.stdout for ch in UNSAFE), repr(shown.stdout)
    assert "start model  Qm\ufffd[1A" in shown.stdout

    logged = CliRunner().invoke(
        cli, ["audit", "log", str(r), "--store", f"local:{liar.store.root}"]
    )
    assert logged.exit_code == 1, logged.output  # the log differs from the chain
    assert not any(ch in logged.output for ch in UNSAFE), repr(logged.output)
    assert "reason OK\ufffd[8m [DIFFERS FROM CHAIN] (chain: OK)" in logged.stdout
    assert "update Qm\ufffd[1A\ufffd[2K \ufffd]0;pwned\ufffd\ufffd [DIFFERS FROM CHAIN]" in (
        logged.stdout
    )
