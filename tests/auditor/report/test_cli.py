"""`fedtrail audit report`: writes the page, prints the verdict, exits 1 when a check fails."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.cli import cli
from fedtrail.ledger import Valuation
from tests.auditor.report.federation import (
    Fed,
    finalize,
    initial,
    new_federation,
    open_round,
    store_without,
    submit_all,
)


@pytest.fixture(autouse=True)
def _fixture_ledger(fed: Fed, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reaches the chain by URL; the liars' embedded chains live in this process, so
    # point the command's ledger opener at the fixture's ledger (a liar's test re-points it).
    import fedtrail.auditor.commands as commands

    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)


def test_cli_report_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-round honest federation (the shared fixture's round 2 names a tampered heatmap,
    which fails log.heatmaps): the report is written, verification passes, exit 0."""
    import fedtrail.auditor.commands as commands

    honest = new_federation(tmp_path / "fed")
    monkeypatch.setattr(commands, "_open", lambda *_: honest.ledger)
    model = initial(honest)
    r = open_round(honest, model)
    submit_all(honest, r, seed=9)
    honest.ledger.record_valuation(
        honest.coordinator, r, [Valuation(s.address, 500_000, 0) for s in honest.sites]
    )
    finalize(honest, r, model, None)
    out = tmp_path / "r"
    args = ["audit", "report", "--out", str(out), "--store", f"local:{honest.store.root}"]
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
    # round 1's explanation log is missing from the store: its verification fails (round 2's
    # fails too: its log names a tampered heatmap, log.heatmaps; and round 4's, valued but not
    # finalized: phase, attack a33)
    store = store_without(fed, tmp_path / "store", fed.ledger.get_round(1).log_cid)
    out = tmp_path / "r"
    args = ["audit", "report", "--out", str(out), "--store", f"local:{store.root}"]

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"report written to {out / 'index.html'}\nverification: FAIL")
    assert result.stderr == (
        f"error: verification failed in round(s) 1, 2, 4; see {out / 'index.html'}\n"
    )
    page = (out / "index.html").read_text()
    assert '<p class="verdict fail">Verification FAILED' in page  # written all the same

    (out / "index.html").unlink()
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {"report": str(out / "index.html"), "passed": False}
    assert (out / "index.html").is_file()


def _audit_log(fed: Fed, round_id: int) -> Any:
    args = ["audit", "log", str(round_id), "--store", f"local:{fed.store.root}"]
    return CliRunner().invoke(cli, args)


def test_audit_log_marks_what_the_chain_pins_and_what_is_only_claimed(fed: Fed) -> None:
    result = _audit_log(fed, 2)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "bytes match the sha256 on chain" in out
    assert "summary [claimed]:" in out
    # the terms name the texts' wording (session 57): the re-run re-derives them
    assert "explanation texts: wording 1; audit verify --validation re-derives each" in out
    assert out.count("samples [chain]") == 3 and out.count("why [claimed]:") == 3
    assert "validation set [claimed]" in out
    assert "threshold fitted on that set [claimed]: n/a -> 0.412, F1 at it n/a -> 0." in out
    assert "DIFFERS" not in out


def test_audit_log_fails_a_log_that_contradicts_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's bytes match their on-chain hash, but it inflates one site's sample count and
    relabels its reason: both are shown against the chain's value, and the command exits 1."""
    import fedtrail.auditor.commands as commands

    liar = new_federation(tmp_path)
    monkeypatch.setattr(commands, "_open", lambda *_: liar.ledger)
    model = initial(liar)
    r = open_round(liar, model)
    submit_all(liar, r, seed=7)
    liar.ledger.record_valuation(
        liar.coordinator, r, [Valuation(s.address, 500_000, 0) for s in liar.sites]
    )

    def lie(doc: dict[str, Any]) -> None:
        doc["sites"][0]["update"]["num_samples"] = 999_999
        doc["sites"][1]["reason_label"] = "OUTLIER_DIRECTION"

    finalize(liar, r, model, None, edit=lie)
    result = _audit_log(liar, r)
    assert result.exit_code == 1, result.output
    assert re.search(r"999999 samples \[DIFFERS FROM CHAIN\] \(chain: [12][05]0\)", result.output)
    assert "reason OUTLIER_DIRECTION [DIFFERS FROM CHAIN] (chain: OK)" in result.output
    assert "the log differs from the chain" in result.output


def test_audit_log_fails_a_why_that_begins_with_another_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session 56: the "why" text stays the aggregator's word, but one that begins with a reason
    the chain does not record (``LOW_QUALITY: ...`` beside an on-chain OK, or a look-alike
    spelling) is marked against the chain's reason and the command exits 1 (before: ``why
    [claimed]``, exit 0); a "why" that begins with the chain's reason stays [claimed]."""
    import fedtrail.auditor.commands as commands

    liar = new_federation(tmp_path)
    monkeypatch.setattr(commands, "_open", lambda *_: liar.ledger)
    model = initial(liar)
    r = open_round(liar, model)
    submit_all(liar, r, seed=7)
    liar.ledger.record_valuation(
        liar.coordinator, r, [Valuation(s.address, 500_000, 0) for s in liar.sites]
    )

    def lie(doc: dict[str, Any]) -> None:
        doc["sites"][0]["explanation"] = "LOW_QUALITY: the update adds nothing"
        doc["sites"][1]["explanation"] = "Free\u2010Rider: copies another site"
        doc["sites"][2]["explanation"] = "ok: accepted"

    finalize(liar, r, model, None, edit=lie)
    result = _audit_log(liar, r)
    assert result.exit_code == 1, result.output
    assert "why [DIFFERS FROM CHAIN] (chain: OK): LOW_QUALITY: the update adds nothing" in (
        result.output
    )
    assert result.output.count("why [DIFFERS FROM CHAIN] (chain: OK)") == 2
    assert "why [claimed]: ok: accepted" in result.output


def test_verify_fails_a_log_whose_names_or_counts_contradict_the_chain(tmp_path: Path) -> None:
    """`audit verify` carries the same field check as `audit log`: a log renaming a site and
    inflating a sample count fails `log.agrees`, naming both fields."""
    from fedtrail.auditor.verify import verify_all

    liar = new_federation(tmp_path)
    model = initial(liar)
    r = open_round(liar, model)
    submit_all(liar, r, seed=8)
    liar.ledger.record_valuation(
        liar.coordinator, r, [Valuation(s.address, 500_000, 0) for s in liar.sites]
    )

    def lie(doc: dict[str, Any]) -> None:
        doc["sites"][0]["name"] = "Trusted Reference Hospital"
        doc["sites"][2]["update"]["num_samples"] = 10**9

    finalize(liar, r, model, None, edit=lie)
    (audit,) = verify_all(liar.ledger, liar.store)
    check = next(c for c in audit.checks if c.name == "log.agrees")
    assert not check.passed and not audit.passed
    assert "name 'Trusted Reference Hospital'" in check.detail
    assert "num_samples 1000000000" in check.detail


def test_audit_log_cuts_the_chains_log_cid_in_its_header(
    fed: Fed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract bounds no ``string``: the aggregator chooses the log CID every auditor's
    ``audit log`` prints in its header. It was printed whole (200,000 characters here); now cut
    as ``audit round`` cuts every chain CID (``fedtrail.protocol.cids.bounded``)."""
    import fedtrail.auditor.commands as commands
    from fedtrail.protocol.cids import bounded

    long = "Q" * 200_000
    real = fed.ledger.get_round(1)

    class _Ledger:
        """The fixture's ledger, round 1's log under a 200,000-character CID."""

        def __getattr__(self, name: str) -> Any:
            return getattr(fed.ledger, name)

        def get_round(self, round_id: int) -> Any:
            info = fed.ledger.get_round(round_id)
            return replace(info, log_cid=long) if round_id == 1 else info

    class _Store:
        """The fixture's store, which serves the log's bytes under that CID too."""

        def get(self, cid: str, sha256: str, **kwargs: Any) -> bytes:
            return fed.store.get(real.log_cid if cid == long else cid, sha256, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(fed.store, name)

    monkeypatch.setattr(commands, "_open", lambda *_: _Ledger())
    monkeypatch.setattr(commands, "open_checked_store", lambda *_, **__: _Store())
    result = _audit_log(fed, 1)
    assert result.exit_code == 0, result.output
    head = result.stdout.splitlines()[0]
    assert head.startswith(f"log {bounded(long)}: bytes match the sha256 on chain"), head[:300]
    assert "(200,000 characters)" in head and len(result.stdout) < 20_000, len(result.stdout)
