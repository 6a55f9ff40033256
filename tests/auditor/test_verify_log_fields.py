"""``audit verify`` checks the round log's remaining derived fields: each site's ``status``
against the audit's own reading of the updates (``log.status``), and the ``summary`` against the
fields it is built from (``log.agrees``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
    # both halves: the status is no reading of the update, and not the chain's verdict (OK)
    assert bad["log.status"] == (
        f"{site[0][:10]} has status {status!r}, but reason 0 on chain; "
        f"{site[0][:10]} status {status!r}, read as ok"
    )


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


def _huge_cid(doc: dict[str, Any]) -> None:
    doc["sites"][0]["update"]["cid"] = "Q" * 100_000


def _huge_summary(doc: dict[str, Any]) -> None:
    doc["summary"] = "x" * 100_000


@pytest.mark.parametrize("lie", [_huge_cid, _huge_summary], ids=["cid", "summary"])
def test_a_huge_logged_value_is_quoted_bounded_in_log_agrees(
    lie: Any, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is the aggregator's text: a 100,000-character value it writes fails log.agrees,
    quoted cut with its length, not whole (before, verify's output repeated it in full)."""
    bad = _audit_with_log(fed, 2, lie, monkeypatch)
    assert set(bad) == {"log.agrees"}, {k: v[:200] for k, v in bad.items()}
    assert len(bad["log.agrees"]) < 1_000
    assert "... (100,002 characters)" in bad["log.agrees"]


def test_honest_summaries_pass_log_agrees(fed: Federation) -> None:
    audit = verify_round(fed.ledger, fed.store, 1)
    check = next(c for c in audit.checks if c.name == "log.agrees")
    assert check.passed and "its summary is its fields'" in check.detail


def test_an_aggregation_detail_fails_log_schema(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a55: the log's free-form ``aggregation.detail`` was written by no fedtrail writer
    and read by no check, so a log claiming a paid site was clipped as a poisoner passed (then
    log.agrees failed it); since stop 47 the schema refuses the key: log.schema fails, and
    nothing else but the checks the refused log takes away."""

    def edit(doc: dict[str, Any]) -> None:
        assert "detail" not in doc["aggregation"]  # the honest log has none
        doc["aggregation"]["detail"] = {"clipped_as_poisoner": [doc["sites"][0]["site"]]}

    bad = _audit_with_log(fed, 2, edit, monkeypatch, unchecked=True)
    assert _only_log_schema(bad), bad
    assert bad["log.schema"] == (
        "explanation log invalid at aggregation: Additional properties are not allowed "
        "('detail' was unexpected)"
    )


def test_a_site_listed_twice_fails_log_schema(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator lists a site twice: first with a made-up score, weight and explanation
    (the entry ``RoundLog.site`` and the readers that use it take), then with the chain's
    values. On the parent commit log.agrees compared only the last entry of each site (a dict
    keyed by address) and the round passed; now the log is refused (log.schema), naming the
    entry, and nothing else fails but the checks the refused log takes away, listed as not
    checked (the summary is rewritten to count the extra entry, as a forger would)."""
    site: list[str] = []

    def edit(doc: dict[str, Any]) -> None:
        honest = doc["sites"][0]
        forged = {**honest, "explanation": "The best update of the round."}
        forged["score"] = 999_999 if honest["score"] != 999_999 else 1
        doc["sites"].insert(0, forged)
        site.append(honest["site"])
        doc["summary"] = doc["summary"].replace(
            f"of {len(doc['sites']) - 1} updates", f"of {len(doc['sites'])} updates"
        )

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert _only_log_schema(bad), bad
    assert bad["log.schema"] == (
        f"explanation log invalid at sites/1/site: {site[0]} is listed twice"
    )


def test_a_repeated_json_key_fails_log_schema(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored log repeats a key inside a site entry: a made-up score first, the chain's
    score last. Python's json (and the parent commit's verify) keeps the last and passed the
    round; a reader whose parser keeps the first sees the made-up score under the same on-chain
    hash. Now the log is refused (log.schema) and nothing else fails but the checks the refused
    log takes away, listed as not checked."""
    info = fed.ledger.get_round(2)
    blob = fed.store.get(info.log_cid, info.log_sha256)
    at = blob.index(b'"score":', blob.index(b'"sites":'))
    forged = blob[:at] + b'"score":999999,' + blob[at:]
    assert json.loads(forged) == json.loads(blob)  # Python reads the honest value
    fake = dataclasses.replace(
        info, log_cid=fed.store.put(forged), log_sha256=hashlib.sha256(forged).hexdigest()
    )
    real = fed.ledger.get_round
    monkeypatch.setattr(fed.ledger, "get_round", lambda r: fake if r == 2 else real(r))
    bad = _failed(verify_round(fed.ledger, fed.store, 2))
    assert _only_log_schema(bad), bad
    assert bad["log.schema"] == "explanation log repeats the key 'score' in one object"


def _only_log_schema(bad: dict[str, str]) -> bool:
    """``log.schema`` fails, and every other failed check is one the refused log takes away,
    listed as not checked (``log.agrees`` among them), not a check that read the log."""
    why = "not checked: the round's log is not a valid explanation log (log.schema)"
    others = {name: detail for name, detail in bad.items() if name != "log.schema"}
    return "log.schema" in bad and "log.agrees" in others and set(others.values()) == {why}


def test_an_unusable_verdict_the_log_status_does_not_state_fails_log_status() -> None:
    """Found by an attack review: the aggregator zeroed an honest,
    readable site MALFORMED on chain while its log kept the site's status "ok", so log.status
    (the status against the audit's own reading) compared ok with ok and public verify passed.
    The chain's TAMPERED, MALFORMED and DUPLICATE verdicts are the aggregator's reading, so the
    log's status must state them, and a status that says the update was unusable must have the
    verdict on chain (aggregator rounds)."""
    from types import SimpleNamespace

    from fedtrail.auditor.verify import _check_status
    from fedtrail.protocol.codes import Reason
    from tests.auditor.test_verify_components import _sub

    def log_with(**statuses: str) -> Any:
        return SimpleNamespace(site=lambda a: SimpleNamespace(status=statuses[a]))

    subs = [_sub("0xa", 100, Reason.OK, 1), _sub("0xb", 100, Reason.MALFORMED, 0)]
    read = {"0xa": Reason.OK, "0xb": Reason.OK}
    name, passed, detail = _check_status(
        log_with(**{"0xa": "ok", "0xb": "ok"}), subs, read, duplicates_known=True
    )
    assert (name, passed) == ("log.status", False)
    assert "0xb is MALFORMED on chain, but its status is 'ok'" in detail
    # stated, and unreadable here (withheld, or deleted): the audit cannot tell, as before
    unreadable = {"0xa": Reason.OK, "0xb": None}
    honest = log_with(**{"0xa": "ok", "0xb": "malformed"})
    assert _check_status(honest, subs, unreadable, duplicates_known=True)[1]
    # a status of "malformed" for a site paid OK on chain
    subs = [_sub("0xa", 100, Reason.OK, 1), _sub("0xb", 100, Reason.OK, 1)]
    _, passed, detail = _check_status(honest, subs, unreadable, duplicates_known=True)
    assert not passed and "0xb has status 'malformed', but reason 0 on chain" in detail
    # a peer round may reject an unreadable update (PEER_REJECTED) with status "malformed"
    subs = [_sub("0xa", 100, Reason.OK, 1), _sub("0xb", 100, Reason.PEER_REJECTED, 0)]
    assert _check_status(honest, subs, unreadable, duplicates_known=True, aggregator_round=False)[1]


def _bias(doc: dict[str, Any]) -> str:
    doc["metrics"]["after"]["bias"] = [0.0, 2.0]
    return "metrics.after.threshold"


def _threshold(doc: dict[str, Any]) -> str:
    doc["metrics"]["after"]["threshold"] = 0.5
    return "metrics.after.threshold 0.5 is not its bias's"


def _threshold_dropped(doc: dict[str, Any]) -> str:
    """Before-metrics whose threshold is left out while the bias stays: the tables show no
    fitted decision, the nodes apply one."""
    del doc["metrics"]["before"]["threshold"]
    return "metrics.before.threshold None is not its bias's"


def _classes(doc: dict[str, Any]) -> str:
    for key in ("bias", "recall", "recall_calibrated"):
        doc["metrics"]["after"][key] = [*doc["metrics"]["after"][key], 0.0]
    return "metrics.after has bias 3, recall 3, recall_calibrated 3 entries for a 2-class model"


def _n(doc: dict[str, Any]) -> str:
    doc["metrics"]["before"]["n"] = 40
    return f"metrics.before.n 40, the log's validation set {doc['validation']['images']} images"


@pytest.mark.parametrize(
    "lie",
    [_bias, _threshold, _threshold_dropped, _classes, _n],
    ids=["bias", "threshold", "threshold-dropped", "classes", "n"],
)
def test_metrics_that_disagree_with_themselves_fail_log_agrees(
    lie: Any, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a83: the decision the nodes and ``fedtrail explain`` apply is the log's bias, the
    one ``audit log`` and the report show its threshold; on the parent commit only
    ``--validation`` compared either, so a log whose two (or whose per-class lengths, or whose
    ``n``) disagreed passed public verify. Now log.agrees fails it, and nothing else does."""
    words: list[str] = []

    def edit(doc: dict[str, Any]) -> None:
        assert doc["metrics"]["after"]["threshold"] is not None  # a two-class honest log
        words.append(lie(doc))

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.agrees"}, bad
    assert words[0] in bad["log.agrees"]


def test_honest_metrics_agree_with_themselves(fed: Federation) -> None:
    from fedtrail.auditor.verify import calibration_problems
    from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog

    for round_id in (1, 2):
        info = fed.ledger.get_round(round_id)
        log = RoundLog.from_bytes(
            fed.store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES)
        )
        assert log.metrics.after.bias is not None and log.metrics.after.threshold is not None
        assert calibration_problems(log) == []
