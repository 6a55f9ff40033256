"""The explanation block's optional ``faithfulness`` record: written only when set, round-trips,
older logs (without it) still read back to the same bytes, and a malformed one is refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from fedtrail.protocol.roundlog import HeatmapRef, InvalidLog, ModelExplanations, RoundLog

DATA = Path(__file__).parent / "data"
SCORES = {
    "deletion_auc": 0.21,
    "insertion_auc": 0.74,
    "random_deletion_auc": 0.55,
    "random_insertion_auc": 0.52,
    "images": 8,
    "steps": 10,
}


def _block(faithfulness: dict[str, Any] | None) -> ModelExplanations:
    return ModelExplanations(
        method="lime",
        probe_sha256="77" * 32,
        probe_images=1,
        images=(HeatmapRef("QmH", "66" * 32, "probe 1"),),
        summary="1 of 1 probe images classified correctly",
        faithfulness=faithfulness,
    )


def _older_log() -> RoundLog:
    blob = (DATA / "round-log-real.json").read_bytes()
    log = RoundLog.from_bytes(blob)
    assert log.explanations is not None and "faithfulness" not in log.explanations
    assert log.to_bytes() == blob  # an older log reads back unchanged
    return log


def test_the_field_is_written_only_when_set() -> None:
    assert "faithfulness" not in _block(None).to_json()
    assert _block(SCORES).to_json()["faithfulness"] == SCORES


def test_faithfulness_round_trips_through_the_log_bytes() -> None:
    log = dataclasses.replace(_older_log(), explanations=_block(SCORES).to_json())
    back = RoundLog.from_bytes(log.to_bytes())
    assert back == log
    assert back.explanations is not None
    assert back.explanations["faithfulness"] == SCORES


def test_an_unmeasurable_area_is_written_as_null() -> None:
    scores = {**SCORES, "deletion_auc": float("nan")}
    log = dataclasses.replace(_older_log(), explanations=_block(scores).to_json())
    doc = json.loads(log.to_bytes())
    assert doc["explanations"]["faithfulness"]["deletion_auc"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {**SCORES, "deletion_auc": 1.5},
        {**SCORES, "insertion_auc": "0.7"},
        {k: v for k, v in SCORES.items() if k != "random_deletion_auc"},
        {**SCORES, "steps": 0},
        {**SCORES, "extra": 1},
    ],
    ids=["above_1", "string", "missing", "zero_steps", "unknown_key"],
)
def test_a_malformed_record_is_refused(bad: dict[str, Any]) -> None:
    doc = json.loads(_older_log().to_bytes())
    doc["explanations"]["faithfulness"] = bad
    with pytest.raises(InvalidLog, match="explanations/faithfulness"):
        RoundLog.from_bytes(json.dumps(doc).encode())
