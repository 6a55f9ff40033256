"""RoundMetrics of a K-class model: per-class recall written only when set, read back with the
class count checked against the bias, refused when out of range or inconsistent."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedtrail.ml.metrics import classification_metrics
from fedtrail.protocol.roundlog import InvalidLog, MetricsPair, RoundLog, RoundMetrics

DATA = Path(__file__).parent / "data"

FIVE = RoundMetrics(
    auc=0.8,
    f1=0.4,
    accuracy=0.5,
    loss=1.2,
    n=100,
    balanced_accuracy=0.45,
    ece=0.1,
    f1_calibrated=0.42,
    balanced_accuracy_calibrated=0.5,
    bias=(0.0, 0.3, -0.2, 0.1, 0.4),
    recall=(0.9, 0.2, None, 0.5, 0.2),
    recall_calibrated=(0.7, 0.4, None, 0.5, 0.4),
)


def _log(after: RoundMetrics) -> RoundLog:
    log = RoundLog.from_bytes((DATA / "round-log-real.json").read_bytes())
    return dataclasses.replace(log, metrics=MetricsPair(before=log.metrics.before, after=after))


def _with_after(**fields: Any) -> bytes:
    doc: dict[str, Any] = json.loads((DATA / "round-log-real.json").read_bytes())
    doc["metrics"]["after"].update(fields)
    return json.dumps(doc).encode()


def test_five_class_metrics_round_trip_with_their_recalls() -> None:
    log = _log(FIVE)
    doc = json.loads(log.to_bytes())["metrics"]["after"]
    assert doc["recall"] == [0.9, 0.2, None, 0.5, 0.2]
    assert doc["recall_calibrated"] == [0.7, 0.4, None, 0.5, 0.4]
    assert "threshold" not in doc  # a two-class figure, not set
    back = RoundLog.from_bytes(log.to_bytes()).metrics.after
    assert back == FIVE
    assert back.classes == 5 and back.decision_bias(5) == FIVE.bias
    assert back.decision_bias(2) is None


def test_recalls_are_written_only_when_set() -> None:
    log = RoundLog.from_bytes((DATA / "round-log-real.json").read_bytes())
    after = log.metrics.after
    assert after.recall is None and "recall" not in after.to_json()
    assert "recall_calibrated" not in after.to_json()
    assert RoundMetrics(auc=0.5, f1=0.5, accuracy=0.5, loss=0.7).classes is None
    assert RoundMetrics(auc=0.5, f1=0.5, accuracy=0.5, loss=0.7, bias=(0.0, 1.0)).classes == 2


def test_the_aggregators_figures_fit_the_record() -> None:
    """What classification_metrics gives for 5 classes (a class absent: NaN) fits the schema."""
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 3, 4], 40)
    m = classification_metrics(rng.normal(size=(40, 5)), y, bias=(0.0,) * 5)
    record = RoundMetrics(
        auc=m.auc,
        f1=m.f1,
        accuracy=m.accuracy,
        loss=m.loss,
        bias=(0.0,) * 5,
        recall=tuple(None if math.isnan(r) else r for r in m.recall),
        recall_calibrated=tuple(None if math.isnan(r) else r for r in m.recall_calibrated),
    )
    back = RoundLog.from_bytes(_log(record).to_bytes()).metrics.after
    assert back.recall is not None and back.recall[2] is None and back.classes == 5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"recall": [0.5]}, "recall"),
        ({"recall": "0.5,0.5"}, "recall"),
        ({"recall": [0.5, 1.5]}, "recall"),
        ({"recall_calibrated": [0.5, -0.1]}, "recall_calibrated"),
        ({"recall": [0.5, True]}, "recall"),
        (
            {"recall": [0.5, 0.5, 0.5], "bias": [0.0, 1.0]},
            "one number per class, but bias has 2, recall has 3",
        ),
        (
            {"recall": [0.5, 0.5], "recall_calibrated": [0.5, 0.5, None]},
            "recall has 2, recall_calibrated has 3",
        ),
    ],
)
def test_bad_recalls_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidLog, match=message):
        RoundLog.from_bytes(_with_after(**fields))
