"""The round log's JSON Schema as ``audit verify`` holds a log to it (``log.schema``,
:func:`fedtrail.protocol.roundlog.validate`) and as the independent reader
(``scripts/independent/reader.py``, no fedtrail code; the published schema read with
jsonschema) does: the same logs refused. Before h-312 the reader's ``log.schema`` only asked
that the log read one way, so a log carrying a key no writer writes (attack a55's
``aggregation.detail``), or missing its summary, passed it."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedtrail.errors import FedtrailError
from fedtrail.protocol.roundlog import validate

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "tests" / "fedtrail" / "protocol" / "data" / "round-log-real.json"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "independent_reader_log_schema", ROOT / "scripts" / "independent" / "reader.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "a55's aggregation.detail": _set("aggregation/detail", "clipped as a poisoner"),
    "an unknown top-level key": _set("note", "x"),
    "no summary": _drop("summary"),
    "another format": _set("format", "fedtrail.explanation-log/2"),
    "a round as text": _set("round", "1"),
    "a site's explanation as a number": _set("sites/0/explanation", 3),
    "a site's unknown key": _set("sites/0/detail", "x"),
}


def _product_refuses(doc: dict[str, Any]) -> bool:
    try:
        validate(doc)
    except FedtrailError:
        return True
    return False


def test_an_honest_log_follows_the_schema_for_both() -> None:
    doc = json.loads(LOG.read_text(encoding="utf-8"))
    assert not _product_refuses(doc)
    assert _reader().log_schema_problems(doc) == []


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_log_the_product_refuses_the_reader_refuses(name: str) -> None:
    doc = copy.deepcopy(json.loads(LOG.read_text(encoding="utf-8")))
    CHANGES[name](doc)
    assert _product_refuses(doc), name  # the change breaks the schema
    problems = _reader().log_schema_problems(doc)
    assert problems, name
    assert len(problems) <= 5
