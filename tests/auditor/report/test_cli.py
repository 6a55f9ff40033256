"""`fedtrail audit report`: writes the page, prints the verdict, exits 1 when a check fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from tests.auditor.report.federation import Fed, store_without


@pytest.fixture(autouse=True)
def _embedded_ledger(fed: Fed, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reaches the chain by URL; the embedded chain lives in this process, so point the
    # command's ledger opener at the fixture's ledger.
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)


def test_cli_report_json(fed: Fed, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["audit", "report", "--out", str(out), "--store", f"local:{fed.store.root}"]
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc == {"report": str(tmp_path / "r" / "index.html"), "passed": True}
    assert "Generated</dt>" in (tmp_path / "r" / "index.html").read_text()

    result = CliRunner().invoke(cli, [*args, "--no-timestamp", "--title", "Pneumonia federation"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"report written to {out / 'index.html'}\nverification: PASS")
    page = (out / "index.html").read_text()
    assert "Generated</dt>" not in page and "<h1>Pneumonia federation</h1>" in page


def test_cli_report_exits_1_when_verification_fails(fed: Fed, tmp_path: Path) -> None:
    # round 1's explanation log is missing from the store: its verification fails
    store = store_without(fed, tmp_path / "store", fed.ledger.get_round(1).log_cid)
    out = tmp_path / "r"
    args = ["audit", "report", "--out", str(out), "--store", f"local:{store.root}"]

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"report written to {out / 'index.html'}\nverification: FAIL")
    assert result.stderr == (
        f"error: verification failed in round(s) 1; see {out / 'index.html'}\n"
    )
    page = (out / "index.html").read_text()
    assert '<p class="verdict fail">Verification FAILED' in page  # written all the same

    (out / "index.html").unlink()
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {"report": str(out / "index.html"), "passed": False}
    assert (out / "index.html").is_file()
