"""``audit round`` with CIDs of 200,000 characters (h-295's leftover of a126): the contract
bounds no ``string``, so the aggregator (start model, terms, global model, log) and any site
that committed (its reveal) choose the CIDs the command prints. ``--format json`` printed them
whole, so one site's 200,000-byte CID flooded every auditor's output (about 400 KB for two);
now every CID is cut as ``verify``'s ``log.agrees`` quotes are, to 200 characters followed by
its length, the same in the table, JSON and CSV output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtrail.chain import advance_time, block_timestamp
from fedtrail.cli import cli
from fedtrail.ledger import commitment
from tests.auditor.report.federation import initial, new_federation, open_round

LONG = 200_000


def test_audit_round_cuts_every_cid_to_200_characters_and_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedtrail.auditor.commands as commands

    fed = new_federation(tmp_path)
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    model = initial(fed)
    r = open_round(fed, ("Q" * LONG, model[1]))  # the aggregator's start model CID
    site = fed.sites[0]
    sha = hashlib.sha256(b"never published").hexdigest()
    fed.ledger.commit_update(site, r, commitment(site.address, r, sha, 100))
    info = fed.ledger.get_round(r)
    advance_time(fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 1)
    fed.ledger.reveal_update(site, r, "b" * LONG, sha, 100)  # a site's reveal CID
    cut = f"... ({LONG:,} characters)"

    out = CliRunner().invoke(cli, ["audit", "round", str(r), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert len(out.stdout) < 5_000, len(out.stdout)
    doc = json.loads(out.stdout)
    assert doc["start_model"]["cid"] == "Q" * 200 + cut
    assert [u["cid"] for u in doc["updates"]] == ["b" * 200 + cut]
    assert doc["terms"]["cid"] == info.terms_cid  # a CID of a CID's length is whole

    table = CliRunner().invoke(cli, ["audit", "round", str(r)])
    assert table.exit_code == 0, table.output
    assert f"start model  {'Q' * 200}{cut}  sha256" in table.stdout
    assert len(table.stdout) < 5_000, len(table.stdout)

    csv = CliRunner().invoke(cli, ["audit", "round", str(r), "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    assert "b" * 200 + cut in csv.stdout and len(csv.stdout) < 5_000
