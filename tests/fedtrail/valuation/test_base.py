"""The valuation interface: reason codes, candidates, context."""

from __future__ import annotations

import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.codes import Reason
from fedtrail.valuation.base import Candidate, ValuationContext, usable

DELTA = {"x": torch.zeros(2)}


def test_reason_codes_are_stable_with_labels_and_descriptions() -> None:
    assert [(r.name, int(r)) for r in Reason] == [
        ("OK", 0),
        ("LOW_GAIN", 1),
        ("OUTLIER_DIRECTION", 2),
        ("OUTLIER_NORM", 3),
        ("TAMPERED", 4),
        ("MALFORMED", 5),
        ("DUPLICATE", 6),
        ("LATE", 7),
        ("EXPLANATION_SHIFT", 8),
        ("LOW_QUALITY", 9),
        ("FREE_RIDER", 10),
        ("IMPLAUSIBLE_SAMPLES", 11),
        ("NOT_REVEALED", 12),
        ("CONTRADICTED", 13),
        ("PEER_REJECTED", 14),
        ("WITHHELD", 15),
    ]
    assert Reason.OUTLIER_DIRECTION.label == "outlier direction"
    for r in Reason:
        assert r.description.endswith(".") and len(r.description) > 30


def test_candidate_validation() -> None:
    Candidate("s", 10, None, Reason.TAMPERED, "bytes differ")
    Candidate("s", 10, DELTA, Reason.LATE)
    with pytest.raises(ConfigError, match="non-OK status"):
        Candidate("s", 10, None)
    with pytest.raises(ConfigError):
        Candidate("", 10, DELTA)
    with pytest.raises(ConfigError):
        Candidate("s", -1, DELTA)
    with pytest.raises(ConfigError):
        Candidate("s", True, DELTA)
    with pytest.raises(ConfigError):
        Candidate("s", 1, DELTA, 4)  # type: ignore[arg-type]


def test_context_validation_and_usable() -> None:
    cands = [
        Candidate("a", 1, DELTA),
        Candidate("b", 1, None, Reason.MALFORMED),
        Candidate("c", 1, DELTA, Reason.LATE),
        Candidate("d", 1, DELTA),
    ]
    ctx = ValuationContext(global_state=DELTA, spec=ModelSpec(), candidates=cands)
    assert [c.site for c in usable(ctx)] == ["a", "d"]
    assert ctx.candidate("c").status is Reason.LATE
    with pytest.raises(ConfigError, match="distinct"):
        ValuationContext(global_state=DELTA, spec=ModelSpec(), candidates=[cands[0]] * 2)
    with pytest.raises(ConfigError, match="metric"):
        ValuationContext(global_state=DELTA, spec=ModelSpec(), candidates=[], metric="f1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        ValuationContext(global_state=DELTA, spec=ModelSpec(), candidates=[], seed=-1)
    empty = ImageDataset(torch.zeros(0, 1, 28, 28).numpy(), torch.zeros(0).long().numpy())
    with pytest.raises(ConfigError, match="empty"):
        ValuationContext(global_state=DELTA, spec=ModelSpec(), candidates=[], validation=empty)
