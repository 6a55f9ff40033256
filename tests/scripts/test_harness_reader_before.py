"""``scripts/attacks/harness.py``'s ``load_reader`` (what ``read_independently`` runs): with
``before``, a commit's reader copied to a temporary folder must read this tree's files. Until
h-318 the harness moved only ``ROOT``, ``README`` and ``ARTIFACT``, so a base reader that has
h-312's ``LOG_SCHEMA`` looked for the log's JSON Schema under the temporary folder's parents
and could not check any log (``BEFORE=1`` on an attack whose base is h-312 or later)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "tests" / "fedtrail" / "protocol" / "data" / "round-log-real.json"


def _harness() -> ModuleType:
    threads = torch.get_num_threads()
    folder = str(ROOT / "scripts" / "attacks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module("harness")
    finally:
        torch.set_num_threads(threads)


def test_a_base_reader_reads_this_trees_log_schema() -> None:
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout: the harness's before reads a commit's reader")
    reader = _harness().load_reader("h318", before="HEAD")
    assert Path(reader.__file__).resolve().parent != ROOT / "scripts" / "independent"
    assert reader.ROOT == ROOT
    assert reader.LOG_SCHEMA == ROOT / "fedtrail" / "schemas" / "explanation-log.schema.json"
    doc = json.loads(LOG.read_text(encoding="utf-8"))
    assert reader.log_schema_problems(doc) == []
    doc["note"] = "x"
    assert reader.log_schema_problems(doc)


def test_this_trees_reader_is_loaded_fresh() -> None:
    harness = _harness()
    first = harness.load_reader("h318")
    first.RESULTS.append({"check": "x"})
    second = harness.load_reader("h318")
    assert second is not first
    assert Path(second.__file__).resolve() == ROOT / "scripts" / "independent" / "reader.py"
    assert not second.RESULTS
