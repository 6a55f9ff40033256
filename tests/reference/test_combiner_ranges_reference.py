"""The combiner's ranges as the README documents them (*The round terms, field by field*,
between the ``combiner-ranges`` markers), as the independent reader
(``scripts/independent/reader.py``, no fedtrail code) writes them, and as the product enforces
them (``Combiner.__post_init__`` through ``combiner_from``): the same three (h-312). Before
h-312 the README gave no ranges and the reader took any finite number (a ``max_norm_z`` of
-1, a ``max_sample_ratio`` of 1, a ``dp_noise_check`` of 3), which the product refuses."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from pathlib import Path
from types import ModuleType

from fedtrail.errors import FedtrailError
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import Combiner

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_ranges", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented() -> dict[str, str]:
    """README's ranges: ``name`, `name`: range`` groups joined by ``;``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- combiner-ranges -->(.*?)<!-- /combiner-ranges -->", text, re.S)
    assert found is not None
    out: dict[str, str] = {}
    for group in found.group(1).split(";"):
        names, spec = group.rsplit(":", 1)
        for name in re.findall(r"`([a-z_]+)`", names):
            assert name not in out, name
            out[name] = " ".join(spec.split())
    return out


def _product_takes(name: str, value: object) -> bool:
    """As a node and ``audit verify`` read the terms' valuation block: parsed
    (``ValuationSettings.from_json``, which refuses a boolean or a text), then the thresholds
    (``combiner_from``, which alone would read ``true`` as 1 for an integer threshold)."""
    doc = {
        "method": "shapley",
        "metric": "balanced_loss",
        "standing": True,
        "explanation_check": False,
        "combiner": {name: value},
    }
    try:
        combiner_from(ValuationSettings.from_json(doc))
    except FedtrailError:
        return False
    return True


def _reader_takes(reader: ModuleType, name: str, value: object) -> bool:
    terms = {"valuation": {"method": "shapley", "metric": "auc", "combiner": {name: value}}}
    return not any("combiner" in p for p in reader.terms_field_problems(terms))


def test_the_readme_documents_every_threshold_and_the_reader_reads_the_readme() -> None:
    documented = _documented()
    assert set(documented) == {f.name for f in fields(Combiner)}
    assert documented == _reader().COMBINER_RANGES


# h-318: booleans and texts too (JSON ``true`` is not 1 to the reader, and must not be to the
# product: ``combiner_from`` on its own takes ``true`` for an integer threshold)
VALUES: list[object] = [
    -2.0,
    -1.0,
    -0.5,
    -1e-9,
    -0.0,
    0,
    0.0,
    1e-9,
    0.5,
    1,
    1.0,
    1.5,
    2,
    2.0,
    2.5,
    3,
    1e9,
]
VALUES += [True, False, "1", None, 2**53 + 1, 5e-324]


def test_the_reader_takes_what_the_product_takes_at_every_edge() -> None:
    reader = _reader()
    differ = [
        (f.name, v)
        for f in fields(Combiner)
        for v in VALUES
        if _product_takes(f.name, v) != _reader_takes(reader, f.name, v)
    ]
    assert differ == []


def test_the_reader_refuses_an_unknown_threshold_as_the_product_does() -> None:
    assert not _product_takes("max_norm_zz", 1.0)
    assert not _reader_takes(_reader(), "max_norm_zz", 1.0)
