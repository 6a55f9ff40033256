"""The terms' ``duplicates`` object, as the product parses it and as the independent reader
checks it (README *Round terms*: each key's kind and range). A rule the product refuses must
fail the reader's ``terms.canonical`` too: the reader read ``"either_order": 1`` as absent and
judged the round one way, marking an honest dense original a99's sparse copy had copied
(found by this session's reviewer), while product nodes and ``audit verify`` refuse the terms."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedtrail.errors import FedtrailError
from fedtrail.protocol.terms import DuplicateRule, RoundTerms

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_dup_terms", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc() -> dict[str, Any]:
    terms = RoundTerms(
        round=1,
        aggregation_rule={"name": "weighted"},
        valuation={"method": "loo", "metric": "auc"},
        model_spec={},
        spec_hash="0" * 64,
        seed=0,
        validation_sha256="1" * 64,
        validation_images=10,
        commit_seconds=60,
        reveal_seconds=60,
        duplicates=DuplicateRule(white_noise_dp_cosine=0.5),
    )
    doc: dict[str, Any] = json.loads(terms.to_bytes())
    return doc


def _product_takes(doc: dict[str, Any]) -> bool:
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    try:
        RoundTerms.from_bytes(blob)
    except FedtrailError:
        return False
    return True


CHANGES: list[tuple[str, Any]] = [
    ("either_order", 1),
    ("either_order", "true"),
    ("either_order", None),
    ("shared_tensor", 2),
    ("shared_tensor", True),
    ("shared_tensor", -1),
    ("cosine", 1.5),
    ("cosine", 0.0),
    ("relative_l2", 1.0),
    ("support_overlap", 0.0),
    ("white_noise_z", -1.0),
    ("white_noise_dp_cosine", 1.5),
    ("scaled_cosine", True),
    ("surprise", 1),
]


@pytest.mark.parametrize(("key", "value"), CHANGES)
def test_a_duplicate_rule_the_product_refuses_fails_the_reader(key: str, value: Any) -> None:
    doc = _doc()
    doc["duplicates"][key] = value
    assert not _product_takes(doc)
    assert _reader().duplicate_rule_problems(doc), (key, value)


def test_the_rule_written_now_and_one_without_the_optional_keys_pass_both() -> None:
    reader = _reader()
    doc = _doc()
    assert _product_takes(doc) and reader.duplicate_rule_problems(doc) == []
    for key in ("either_order", "shared_tensor", "white_noise_z", "support_cosine"):
        del doc["duplicates"][key]
        assert _product_takes(doc) and reader.duplicate_rule_problems(doc) == [], key
    doc["duplicates"]["either_order"] = False
    doc["duplicates"]["shared_tensor"] = 0
    assert _product_takes(doc) and reader.duplicate_rule_problems(doc) == []
