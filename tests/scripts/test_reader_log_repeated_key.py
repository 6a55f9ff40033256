"""Attack a128 on real Anvil + IPFS: the aggregator finalizes an honest round under a log whose
bytes repeat one key in a paid site's entry, ``"reason_label":"LOW_QUALITY"`` before the honest
``"reason_label":"OK"``. Readers take such a document two ways (Python's and JavaScript's
``json`` keep the last value, others the first or refuse it), so the README has it fail
``log.schema``, as ``audit verify`` does (``RoundLog.from_bytes``: "repeats the key"). The
independent reader parsed the log with a plain ``json.loads``, kept the last value and passed
every check: one pinned log, a PASS beside verify's FAIL. So too a paid site's explanation
ending in a lone surrogate (a63: verify fails it, the reader passed it) and a ``NaN`` AUC (the
reader failed only its summary). Now the reader reads a log as verify's ``safejson`` does and
fails ``log.schema`` (not read further) on each, and on a log that is no JSON object (it
stopped with an uncaught ``JSONDecodeError`` on one)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.chain import advance_time, next_block_timestamp
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.protocol.terms import RoundTerms
from tests.fixtures.chain import ChainEnv
from tests.scripts.test_huge_reveal_cid import _federation, _reader

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

HONEST = b'"reason_label":"OK"'
REPEATED = b'"reason_label":"LOW_QUALITY","reason_label":"OK"'


def _run_round(anvil: ChainEnv, ipfs_api: str, tmp_path: Path, edit: Any) -> Any:
    fed = _federation(anvil, ipfs_api, tmp_path, honest=3)
    ledger, service = fed.ledger, fed.service
    honest_bytes = RoundLog.to_bytes

    def lying(self: RoundLog) -> bytes:
        return bytes(edit(honest_bytes(self)))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RoundLog, "to_bytes", lying)
        assert service.open_next() == 1
        for node in fed.nodes:
            node.participate(1)  # commit
        deadline = ledger.get_round(1).commit_deadline
        now = next_block_timestamp(ledger.w3)
        if now <= deadline:
            advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)
        for node in fed.nodes:
            node.participate(1)  # store, reveal
        for _ in range(3):
            if service.step() is not None:
                break
    assert ledger.get_round(1).phase == Phase.FINALIZED
    assert all(s.reason == Reason.OK for s in ledger.get_submissions(1))
    return fed


def _read(anvil: ChainEnv, ipfs_api: str, tmp_path: Path, fed: Any) -> dict[str, dict[str, Any]]:
    reader = _reader()
    deployment = tmp_path / "deployment.json"
    deployment.write_text(fed.deployment.to_json())
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(
            [
                "--rpc-url",
                str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
                "--deployment",
                str(deployment),
                "--ipfs",
                "ipfs:" + ipfs_api,
            ]
        )
    return {x["check"]: x for x in reader.RESULTS if x["round"] == 1 and x["result"] == "FAIL"}


def _edited(blob: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The log re-written as the writer writes it (sorted keys, no spaces), after ``change``:
    ``json.dumps`` writes a float NaN as ``NaN`` and a lone surrogate as its escape."""
    doc = json.loads(blob)
    change(doc)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


EDITS: dict[str, tuple[Callable[[bytes], bytes], str, str]] = {
    # a paid site's reason written twice, the lie first
    "repeated key": (
        lambda b: b.replace(HONEST, REPEATED, 1),
        "repeats the key 'reason_label'",
        "repeats the key 'reason_label'",
    ),
    # a claim no public check recomputes (the global model's AUC) written NaN (a29, a31)
    "NaN": (
        lambda b: _edited(b, lambda d: d["metrics"]["after"].update(auc=float("nan"))),
        "NaN is not a JSON number",
        "NaN is not a JSON number",
    ),
    # a paid site's explanation ending in an unpaired surrogate escape (a63)
    "lone surrogate": (
        lambda b: _edited(b, lambda d: d["sites"][0].update(explanation="paid\ud800")),
        "lone UTF-16 surrogate",
        "lone UTF-16 surrogate",
    ),
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_a_log_read_two_ways_fails_log_schema_for_both_readers(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, kind: str
) -> None:
    edit, verify_says, reader_says = EDITS[kind]
    fed = _run_round(anvil, ipfs_api, tmp_path, edit)
    audit = verify_round(fed.ledger, fed.store, 1)
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    assert verify_says in failed["log.schema"], failed
    bad = _read(anvil, ipfs_api, tmp_path, fed)
    assert "log.schema" in bad, bad
    assert reader_says in bad["log.schema"]["detail"], bad


def test_a_log_that_is_no_json_fails_log_schema_for_the_reader(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    fed = _run_round(anvil, ipfs_api, tmp_path, lambda b: b[:-1])  # its closing brace cut
    audit = verify_round(fed.ledger, fed.store, 1)
    assert "log.schema" in {c.name for c in audit.checks if c.failed}
    bad = _read(anvil, ipfs_api, tmp_path, fed)  # no crash
    assert "log.schema" in bad, bad


def test_terms_that_are_no_json_are_a_note_for_the_reader_not_a_crash(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path
) -> None:
    """Round 1 opened under terms cut by one byte: every honest node declines it and the
    aggregator cancels it. The reader parsed terms with a plain ``json.loads`` and stopped with
    an uncaught ``JSONDecodeError`` (no verdict on any round); now the round's terms are a note
    outside a finalized round (a failure in one) and the reader goes on."""
    fed = _federation(anvil, ipfs_api, tmp_path, honest=3)
    ledger = fed.ledger
    honest_terms = RoundTerms.to_bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RoundTerms, "to_bytes", lambda self: honest_terms(self)[:-1])
        assert fed.service.open_next() == 1
    for node in fed.nodes:
        node.participate(1)  # the terms do not parse: a decline
    info = ledger.get_round(1)
    now = next_block_timestamp(ledger.w3)
    advance_time(ledger.w3, info.reveal_deadline - now + 1 + CLOCK_SLACK)
    ledger.cancel_round(anvil.aggregator, 1)
    assert ledger.get_round(1).phase == Phase.CANCELLED
    reader = _reader()
    deployment = tmp_path / "deployment.json"
    assert fed.deployment is not None
    deployment.write_text(fed.deployment.to_json())
    reader.RESULTS.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        reader.main(
            [
                "--rpc-url",
                str(anvil.w3.provider.endpoint_uri),  # type: ignore[attr-defined]
                "--deployment",
                str(deployment),
                "--ipfs",
                "ipfs:" + ipfs_api,
            ]
        )
    results = {(x["round"], x["check"]): x for x in reader.RESULTS}
    terms = results[(1, "terms.canonical")]
    assert terms["result"] == "NOTE", terms
    assert "the terms do not read one way" in terms["detail"], terms


SHAPES: dict[str, Callable[[dict[str, Any]], None]] = {
    # a site entry without its address (the reader keys the log's sites by it)
    "a site without its address": lambda d: d["sites"][0].pop("site"),
    # the sites as an object, not a list
    "the sites as an object": lambda d: d.update(sites={"x": d["sites"][0]}),
}


@pytest.mark.parametrize("kind", list(SHAPES))
def test_a_log_of_another_shape_fails_log_schema_without_stopping_the_reader(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, kind: str
) -> None:
    fed = _run_round(anvil, ipfs_api, tmp_path, lambda b: _edited(b, SHAPES[kind]))
    audit = verify_round(fed.ledger, fed.store, 1)
    assert "log.schema" in {c.name for c in audit.checks if c.failed}
    bad = _read(anvil, ipfs_api, tmp_path, fed)  # no crash
    assert "log.schema" in bad, bad
    assert "breaks its JSON Schema" in bad["log.schema"]["detail"], bad
