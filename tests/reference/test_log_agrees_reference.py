"""*The round log against the chain* (attacks a82, a83) as ``scripts/independent/reader.py``
implements it from the README (``log_agrees``) against ``audit verify`` on the same forged logs:
every field the chain or the committed terms pin, lied about once, must fail both (before a82
the reader compared only each valued site's weight, fraction, score, reason and count, and
passed every lie below but ``label``), and the honest logs must pass both."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.protocol import roundlog
from fedtrail.simulation.federation import Federation
from tests.auditor.test_verify_components import _audit_with_log, _failed, fed

__all__ = ["fed"]

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
OTHER = "0x000000000000000000000000000000000000dEaD"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_log", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()
Doc = dict[str, Any]


def _cid(doc: Doc) -> None:
    doc["sites"][0]["update"]["cid"] = doc["sites"][1]["update"]["cid"]
    doc["sites"][0]["update"]["sha256"] = doc["sites"][1]["update"]["sha256"]


def _extra(doc: Doc) -> None:
    fake = json.loads(json.dumps(doc["sites"][0]))
    fake.update(site=OTHER, status="tampered", score=0, reason=4, reason_label="TAMPERED")
    fake.update(weight="0", weight_fraction=0.0, components={})
    doc["sites"].append(fake)


def _label(doc: Doc) -> None:
    doc["sites"][0]["reason_label"] = "FREE_RIDER"


def _other_reason(doc: Doc, spelled: dict[str, str]) -> None:
    """Site 0's explanation begins with another reason than the chain's (session 56: the
    reasons table an auditor reads said one thing beside the chain's other), spelled as
    ``spelled`` gives it for the chain's OK and for any other reason."""
    entry = doc["sites"][0]
    text = spelled["OK" if entry["reason_label"] == "OK" else "other"]
    entry["explanation"] = f"{text}: {entry['explanation']}"


def _explanation(doc: Doc) -> None:
    _other_reason(doc, {"OK": "LOW_QUALITY", "other": "ok"})


def _explanation_alike(doc: Doc) -> None:
    # "Free-Rider" with a Unicode hyphen; "\u041e\u041a": Cyrillic capitals that read as "OK"
    _other_reason(doc, {"OK": "Free\u2010Rider", "other": "\u041e\u041a"})


def _included(doc: Doc) -> None:
    doc["aggregation"]["included_sites"].pop()


def _global(doc: Doc) -> None:
    doc["aggregation"]["global_sha256"] = doc["start_model"]["sha256"]


def _start(doc: Doc) -> None:
    doc["start_model"]["cid"] = doc["sites"][0]["update"]["cid"]


def _ledger(doc: Doc) -> None:
    doc["ledger"]["address"] = OTHER


def _round(doc: Doc) -> None:
    doc["round"] = 99


def _classes(doc: Doc) -> None:
    doc["settings"]["class_names"] = list(reversed(doc["settings"]["class_names"]))


def _validation(doc: Doc) -> None:
    doc["validation"] = {"sha256": "ab" * 32, "images": 999}


def _terms(doc: Doc) -> None:
    doc["settings"]["terms"] = {k: doc["sites"][0]["update"][k] for k in ("cid", "sha256")}


def _bias(doc: Doc) -> None:
    doc["metrics"]["after"]["bias"] = [0.0, 2.0]


def _threshold(doc: Doc) -> None:
    doc["metrics"]["after"]["threshold"] = 0.5


def _per_class(doc: Doc) -> None:
    for key in ("bias", "recall", "recall_calibrated"):
        doc["metrics"]["before"][key] = [*doc["metrics"]["before"][key], 0.0]


def _n(doc: Doc) -> None:
    doc["metrics"]["after"]["n"] = 40


LIES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "cid": (_cid, "log.agrees"),
    "extra": (_extra, "log.agrees"),
    "label": (_label, "log.agrees"),
    "explanation": (_explanation, "log.agrees"),
    "explanation-alike": (_explanation_alike, "log.agrees"),
    "included": (_included, "log.agrees"),
    "global": (_global, "log.agrees"),
    "start": (_start, "log.agrees"),
    "ledger": (_ledger, "log.agrees"),
    "round": (_round, "log.agrees"),
    "classes": (_classes, "terms.model"),
    "validation": (_validation, "terms.validation"),
    "terms": (_terms, "terms.reference"),
    "bias": (_bias, "log.agrees"),
    "threshold": (_threshold, "log.agrees"),
    "per-class": (_per_class, "log.agrees"),
    "n": (_n, "log.agrees"),
}


def _read(fed: Federation, round_id: int, edit: Callable[[Doc], None] | None) -> list[str]:
    """The reader's ``log_agrees`` over round ``round_id``'s log (edited, its summary then
    rewritten as the lying fields give it, as a forger would), with the chain's records."""
    info = fed.ledger.get_round(round_id)
    doc = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    if edit is not None:
        edit(doc)
        _resummarise(doc)
    return _read_doc(fed, round_id, doc)


def _resummarise(doc: Doc) -> None:
    doc["summary"] = roundlog.summary_of(roundlog.RoundLog.from_json(doc))


def test_honest_logs_agree_for_the_reader_and_verify(fed: Federation) -> None:
    for round_id in (1, 2):
        assert _read(fed, round_id, None) == [], round_id
        audit = verify_round(fed.ledger, fed.store, round_id)
        assert audit.passed, _failed(audit)


@pytest.mark.parametrize("lie", list(LIES))
def test_each_pinned_field_lied_about_fails_the_reader_and_verify(
    lie: str, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit, check = LIES[lie]
    problems = _read(fed, 2, edit)
    assert problems, f"the reader passes the lie {lie!r}"

    def forged(doc: Doc) -> None:
        edit(doc)
        _resummarise(doc)

    bad = _audit_with_log(fed, 2, forged, monkeypatch)
    assert check in bad, bad


def test_a_summary_the_fields_do_not_give_fails_the_reader(fed: Federation) -> None:
    """The summary's sentence, as the README writes it, is the one fedtrail writes: an honest
    log passes (above), one word changed does not."""

    def edit(doc: Doc) -> None:
        doc["summary"] = doc["summary"].replace("updates aggregated", "vetted updates aggregated")

    info = fed.ledger.get_round(1)
    doc = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    edit(doc)
    assert any("summary" in p for p in _read_doc(fed, 1, doc))


def _read_doc(fed: Federation, round_id: int, doc: Doc) -> list[str]:
    info = fed.ledger.get_round(round_id)
    revealed = {
        s.site.lower(): (s.site, s.cid, s.sha256, s.num_samples, s.score, s.reason, s.weight)
        for s in fed.ledger.get_submissions(round_id)
    }
    problems: list[str] = R.log_agrees(
        doc,
        round_id,
        (fed.ledger.address, fed.ledger.chain_id),
        (info.start_cid, info.start_sha256),
        info.global_sha256,
        revealed,
        json.loads(fed.store.get(info.terms_cid, info.terms_sha256)),
        (info.terms_cid, info.terms_sha256),
    )
    return problems
