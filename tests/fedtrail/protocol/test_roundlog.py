"""The typed round log: logs the aggregator already wrote read back to the same bytes, a built log
round-trips, NaN is written as null, and untrusted input is refused with the path named."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fedtrail.protocol.codes import Reason
from fedtrail.protocol.roundlog import (
    MAX_LOG_BYTES,
    BlobRef,
    HeatmapRef,
    InvalidLog,
    LedgerRef,
    MetricsPair,
    ModelExplanations,
    RoundLog,
    RoundMetrics,
    RoundSettings,
    SiteEntry,
    UpdateRef,
    ValidationRef,
    ValuationSettings,
    build_round_log,
)

DATA = Path(__file__).parent / "data"
A, B = "0x" + "1a" * 20, "0x" + "2b" * 20


@pytest.mark.parametrize("name", ["round-log-real.json", "round-log-built.json"])
def test_logs_written_before_the_typed_record_read_back_to_the_same_bytes(name: str) -> None:
    blob = (DATA / name).read_bytes()
    assert RoundLog.from_bytes(blob).to_bytes() == blob


def test_a_real_log_reads_into_typed_fields() -> None:
    log = RoundLog.from_bytes((DATA / "round-log-real.json").read_bytes())
    assert log.round == 1 and len(log.sites) == 3
    assert sum(s.weight for s in log.sites) == 10**18
    assert log.aggregation.included_sites == tuple(s.site for s in log.sites if s.weight > 0)
    assert log.settings.valuation.method == "loo" and log.valuation_seed == 1
    assert log.metrics.after.n == 270 and log.metrics.after.get("auc") == log.metrics.after.auc
    assert log.explanations is not None and len(log.explanations["images"]) == 2
    assert log.site(log.sites[0].site.lower()) == log.sites[0]


def _record(*, auc_before: float = 0.5) -> RoundLog:
    sites = [
        SiteEntry.of(
            site=A,
            name="alpha",
            update=UpdateRef("QmA", "aa" * 32, 10),
            status=Reason.OK,
            score=900_000,
            reason=0,
            weight=10**18,
            components={"gain": 0.25, "dropped": [1, 2]},
            explanation="gain 0.25",
        ),
        SiteEntry.of(
            site=B,
            name="",
            update=UpdateRef("QmB", "bb" * 32, 5),
            status=Reason.MALFORMED,
            score=0,
            reason=int(Reason.MALFORMED),
            weight=0,
            components={},
            explanation=None,
        ),
    ]
    return build_round_log(
        round_id=3,
        ledger=LedgerRef("0x" + "ee" * 20, 31337),
        start_model=BlobRef("QmS", "dd" * 32),
        settings=RoundSettings(
            aggregation_rule={"name": "weighted"},
            valuation=ValuationSettings(method="loo", metric="loss", seed=3),
            model_spec={"arch": "smallcnn"},
            spec_hash="cc" * 32,
            seed=0,
        ),
        validation=ValidationRef("ff" * 32, 270),
        sites=sites,
        rule="weighted",
        global_sha256="99" * 32,
        before=RoundMetrics(auc=auc_before, f1=0.1, accuracy=0.5, loss=0.7, n=270),
        after=RoundMetrics(auc=0.75, f1=0.5, accuracy=0.7, loss=0.6, n=270),
        explanations=ModelExplanations(
            method="saliency",
            probe_sha256="77" * 32,
            probe_images=1,
            images=(HeatmapRef("QmH", "66" * 32, "probe 1"),),
            summary="1 of 1 probe images classified correctly",
        ),
    )


def test_a_built_log_round_trips_and_derives_what_the_aggregator_derives() -> None:
    log = _record()
    assert RoundLog.from_bytes(log.to_bytes()) == log
    ok, bad = log.sites
    assert ok.components == {"gain": 0.25} and ok.weight_fraction == 1.0 and ok.status == "ok"
    assert (bad.status, bad.reason_label) == ("malformed", "MALFORMED")
    assert bad.explanation == "MALFORMED"  # no explanation saved: the reason's name
    assert log.aggregation.included_sites == (A,)
    assert log.summary == (
        "Round 3: 1 of 2 updates aggregated with the 'weighted' rule using the on-chain "
        "weights; validation AUC 0.500 -> 0.750."
    )


def test_an_undefined_metric_is_written_as_null() -> None:
    log = _record(auc_before=float("nan"))
    doc = json.loads(log.to_bytes())
    assert doc["metrics"]["before"]["auc"] is None
    assert "validation AUC nan -> 0.750" in doc["summary"]
    assert RoundLog.from_bytes(log.to_bytes()).metrics.before.auc is None


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / "round-log-real.json").read_bytes())
    return doc


def _set(path: str, value: Any) -> dict[str, Any]:
    doc = _doc()
    *parents, last = path.split("/")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("blob", "where"),
    [
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"{truncated", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"round": ' + b"9" * 5000 + b"}", "not JSON: Exceeds the limit"),  # was ValueError
        (b"[" * 5000, "not JSON: nested 5000 levels deep"),  # was RecursionError
        # a valid log, padded past the limit: the parent parsed it
        ((DATA / "round-log-real.json").read_bytes() + b" " * MAX_LOG_BYTES, "over the limit"),
        (json.dumps(_set("sites/0/weight", "1.5")).encode(), "sites/0/weight"),
        (json.dumps(_set("format", "fedtrail.explanation-log/2")).encode(), "format"),
        (json.dumps(_set("round", 1.0)).encode(), "round"),
        (json.dumps(_set("settings/valuation/method", _DELETE)).encode(), "settings/valuation"),
        (json.dumps(_set("settings/valuation/extra", 1)).encode(), "settings/valuation"),
        (json.dumps(_set("settings/valuation/explanation_check", "yes")).encode(), "valuation"),
        (json.dumps(_set("metrics/after/brier", 0.1)).encode(), "metrics/after"),
        (json.dumps(_set("sites/1/update/num_samples", 0)).encode(), "sites/1/update"),
        # keys no writer ever wrote (attack a55; the schema admitted them until stop 47)
        (json.dumps(_set("aggregation/detail", {"clipped": [A]})).encode(), "at aggregation:"),
        (json.dumps(_set("explanations/flagged", [A])).encode(), "at explanations:"),
        (json.dumps(_set("explanations/images/0/flagged", [A])).encode(), "explanations/images/0"),
        (json.dumps(_set("explanations/method", 7)).encode(), "explanations/method"),
    ],
)
def test_untrusted_input_is_refused_naming_what_is_wrong(blob: bytes, where: str) -> None:
    with pytest.raises(InvalidLog, match=where):
        RoundLog.from_bytes(blob)


def test_a_log_without_the_later_valuation_fields_still_reads() -> None:
    """Logs written before the auditor re-ran valuations name only method and metric."""
    doc = _doc()
    doc["settings"]["valuation"] = {"method": "shapley", "metric": "auc"}
    del doc["metrics"]["before"]["n"]
    log = RoundLog.from_json(doc)
    assert log.settings.valuation.seed is None and log.valuation_seed == doc["settings"]["seed"] + 1
    assert json.loads(log.to_bytes()) == doc


_CALIBRATED = RoundMetrics(
    auc=0.9,
    f1=0.1,
    accuracy=0.55,
    loss=0.68,
    n=270,
    balanced_accuracy=0.55,
    ece=0.02,
    threshold=0.4948,
    f1_calibrated=0.93,
    balanced_accuracy_calibrated=0.92,
    bias=(0.0, 0.0207),
)


def test_calibrated_metrics_are_written_read_back_and_optional() -> None:
    """The calibrated decision's figures round-trip; a record without them writes none of
    their keys, so logs written before them keep their bytes (see the test above)."""
    log = dataclasses.replace(_record(), metrics=MetricsPair(_record().metrics.before, _CALIBRATED))
    doc = json.loads(log.to_bytes())
    assert doc["metrics"]["after"]["threshold"] == 0.4948
    assert doc["metrics"]["after"]["bias"] == [0.0, 0.0207]
    assert set(doc["metrics"]["before"]) == {"auc", "f1", "accuracy", "loss", "n"}
    back = RoundLog.from_bytes(log.to_bytes())
    assert back == log and back.metrics.after.calibrated and not back.metrics.before.calibrated
    assert back.metrics.after.get("f1_calibrated") == 0.93
    with pytest.raises(KeyError):
        back.metrics.after.get("bias")


@pytest.mark.parametrize(
    ("key", "value"),
    [("bias", [0.5]), ("bias", "0,1"), ("bias", [0.0, True]), ("threshold", "0.3")],
)
def test_malformed_calibrated_metrics_are_refused(key: str, value: Any) -> None:
    with pytest.raises(InvalidLog, match=f"metrics/after/{key}"):
        RoundLog.from_bytes(json.dumps(_set(f"metrics/after/{key}", value)).encode())


def test_a_log_text_holding_a_lone_surrogate_is_invalid() -> None:
    """a63: an explanation ending in an unpaired ``\\ud800`` escape (pure-ASCII bytes, valid to
    JSON's grammar, not to I-JSON) read as a str no UTF-8 output can hold; the golden log
    with one such escape is now refused by name, the same log without it still reads."""
    golden = (Path(__file__).parent / "data" / "round-log-real.json").read_bytes()
    doc = json.loads(golden)
    doc["sites"][0]["explanation"] += "\ud800"
    bad = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert b"\\ud800" in bad
    with pytest.raises(InvalidLog, match="lone UTF-16 surrogate"):
        RoundLog.from_bytes(bad)
    RoundLog.from_bytes(golden)


def test_the_explanation_wording_is_a_known_one_of_an_aggregator_round() -> None:
    """``valuation.explanation_wording`` reads back as written; a wording this release does
    not know (a newer writer's), a non-integer one, or one in a peer round (whose text is the
    README's sentence exactly) is refused, naming the field."""
    from fedtrail.protocol.roundlog import EXPLANATION_WORDING, InvalidLog, ValuationSettings

    doc = {"method": "shapley", "metric": "loss", "explanation_wording": EXPLANATION_WORDING}
    assert ValuationSettings.from_json(doc).to_json() == doc
    for bad, said in (
        ({**doc, "explanation_wording": 2}, "explanation wording must be one of (1,)"),
        ({**doc, "explanation_wording": True}, "explanation_wording: True is not an integer"),
        ({**doc, "explanation_wording": 1.0}, "explanation_wording: 1.0 is not an integer"),
        ({**doc, "mode": "peers", "quorum": 1}, "named only in aggregator rounds"),
    ):
        with pytest.raises(InvalidLog, match=re.escape(said)):
            ValuationSettings.from_json(bad)
    assert "explanation_wording" not in ValuationSettings(method="loo", metric="loss").to_json()
