"""The report shows a round's faithfulness areas (the log's optional
``explanations.faithfulness``) beside its heatmaps, and reads them as untrusted input."""

from __future__ import annotations

from pathlib import Path

from fedtrail.auditor.report import write_report
from fedtrail.auditor.report.collect import read_faithfulness
from fedtrail.ledger import Valuation
from tests.auditor.report.federation import (
    finalize,
    heatmap_png,
    initial,
    new_federation,
    open_round,
    put,
    submit_all,
)

SCORES = {
    "deletion_auc": 0.2125,
    "insertion_auc": 0.7375,
    "random_deletion_auc": 0.55,
    "random_insertion_auc": 0.525,
    "images": 1,
    "steps": 10,
}


def test_the_report_shows_the_rounds_faithfulness(tmp_path: Path) -> None:
    fed = new_federation(tmp_path)
    model = initial(fed)
    r1 = open_round(fed, model)
    submit_all(fed, r1, seed=1)
    fed.ledger.record_valuation(
        fed.coordinator, r1, [Valuation(s.address, 700_000, 0) for s in fed.sites]
    )
    png = put(fed.store, heatmap_png(0))
    block = {
        "method": "lime",
        "images": [{"cid": png[0], "sha256": png[1], "caption": "probe 1"}],
        "faithfulness": SCORES,
    }
    finalize(fed, r1, model, block)
    page = write_report(fed.ledger, fed.store, tmp_path / "report").read_text(encoding="utf-8")
    assert "<h3>Round 1 \u2014 lime</h3>" in page
    assert "deletion AUC <b>0.212</b> (random ordering 0.550; lower is better)" in page
    assert "insertion AUC <b>0.738</b> (random 0.525; higher is better)" in page
    assert "the audit does not recompute it" in page


def test_read_faithfulness_keeps_only_numbers_in_range() -> None:
    assert read_faithfulness({"explanations": {"faithfulness": SCORES}}) == {
        k: v for k, v in SCORES.items() if k.endswith("_auc")
    }
    hostile = {"deletion_auc": "<b>0.1</b>", "insertion_auc": 7.0, "random_deletion_auc": True}
    assert read_faithfulness({"explanations": {"faithfulness": hostile}}) == {}
    assert read_faithfulness({"explanations": {"faithfulness": [0.1]}}) == {}
    assert read_faithfulness({"explanations": "none"}) == {}
    assert read_faithfulness({}) == {}
