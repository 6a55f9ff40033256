"""The combiner's ``size_norm_z`` (h-301's second norm screen) as the product reads it and as
the independent reader (``scripts/independent/reader.py``, no fedtrail code) does: the same
values refused. Before h-309 the reader took a negative ``size_norm_z`` (which the product
refuses: ConfigError, every screen check of ``audit verify`` "unusable") as off and passed
the terms and the round's screen."""

from __future__ import annotations

import importlib.util
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

from fedtrail.errors import FedtrailError
from fedtrail.protocol.roundlog import ValuationSettings
from fedtrail.valuation.chained import combiner_from
from fedtrail.valuation.combine import Combiner

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_size_norm", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _product_takes(combiner: dict[str, Any]) -> bool:
    settings = ValuationSettings(
        method="shapley",
        metric="balanced_loss",
        standing=True,
        explanation_check=False,
        combiner=combiner,  # as parsed: any JSON value
    )
    try:
        combiner_from(settings)
    except FedtrailError:
        return False
    return True


def _reader_takes(reader: ModuleType, combiner: dict[str, object]) -> bool:
    terms = {"valuation": {"method": "shapley", "metric": "auc", "combiner": combiner}}
    return not any("combiner" in p for p in reader.terms_field_problems(terms))


VALUES: list[object] = [-1.0, -1e-300, -0.0, 0, 0.0, 5, 8.0, 1e308, True, "8", None]


def test_the_reader_refuses_the_size_norm_z_the_product_refuses() -> None:
    reader = _reader()
    takes = {repr(v): _product_takes({"size_norm_z": v}) for v in VALUES}
    assert takes == {
        repr(v): not (isinstance(v, float) and v < 0) and v not in (True, "8", None) for v in VALUES
    }  # the product: finite numbers >= 0 (-0.0 is 0: off)
    assert {repr(v): _reader_takes(reader, {"size_norm_z": v}) for v in VALUES} == takes


def test_the_reader_refuses_every_combiner_value_the_product_refuses() -> None:
    """h-309: before h-312 the reader checked only that combiner values were finite numbers,
    not the ranges ``Combiner.__post_init__`` enforces (43 field/value pairs of -1 and 1e9
    differed); it now reads each field's range from the README's list."""
    reader = _reader()
    differ = [
        (f.name, v)
        for f in fields(Combiner)
        for v in (-1.0, 1e9)
        if _product_takes({f.name: v}) != _reader_takes(reader, {f.name: v})
    ]
    assert differ == []
