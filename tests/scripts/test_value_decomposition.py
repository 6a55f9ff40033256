"""scripts/bench/value_decomposition.py: the decomposition's own exact Shapley over the coalition
models agrees with the product's valuation, and every measure is reported for every player."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts.bench import value_decomposition


def test_shapley_shares_match_the_products_values_and_every_measure_is_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vd.json"
    argv = ["--scenario", "b", "--alpha", "1", "--seed", "0", "--rounds", "1", "--out", str(out)]
    assert value_decomposition.main(argv) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert len(doc["rounds"]) == 1
    for row in doc["rounds"]:
        scored = {s: c for s, c in row["sites"].items() if c["value"] is not None}
        assert len(scored) >= 2
        total = math.fsum(abs(c["value"]) for c in scored.values())
        for cell in scored.values():
            # the product's game value, normalised as the standing does, is the decomposition's
            # independently computed exact Shapley share of the same utility
            assert cell["shapley"] == pytest.approx(cell["value"] / total, abs=1e-6)
            for key in ("class 0", "class 1", "loo", "large", "auc"):
                assert math.isfinite(cell[key])
    assert "label_noise" in capsys.readouterr().out
