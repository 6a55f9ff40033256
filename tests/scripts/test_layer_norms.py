"""The per-tensor probe (scripts/bench/layer_norms.py): its statistics on hand-made rows whose
ratios are known (a scaled update long in every tensor, an update long in one tensor only)."""

from __future__ import annotations

import math

from scripts.bench import layer_norms


def _row(site: str, a: float, b: float) -> dict[str, object]:
    return {
        "run": 0,
        "round": 2,
        "site": site,
        "samples": 10,
        "score": 1,
        "norms": {"a.weight": a, "b.weight": b},
        "cosines": {"a.weight": 1.0, "b.weight": -0.5, "a.bias": -1.0},
    }


def test_ratios_are_per_tensor_against_the_rounds_medians() -> None:
    rows = [_row("h1", 1.0, 1.0), _row("h2", 1.0, 1.0), _row("x10", 10.0, 10.0)]
    rows.append(_row("one", 10.0, 1.0))
    got = {r["site"]: (lo, md, wh) for r, lo, md, wh in layer_norms._stats(rows)}
    # medians per tensor: a 5.5 (of 1, 1, 10, 10), b 1 (of 1, 1, 10, 1)
    assert got["x10"][0] == 10.0 / 5.5 and got["x10"][1] == (10.0 / 5.5 + 10.0) / 2
    assert got["one"][0] == 1.0  # long in one tensor: its smallest ratio is 1
    whole = [math.sqrt(2), math.sqrt(2), math.sqrt(200), math.sqrt(101)]
    med = (whole[0] + whole[3]) / 2
    assert math.isclose(got["x10"][2], whole[2] / med)
    assert math.isclose(got["h1"][2], whole[0] / med)


def test_only_weight_tensors_count_for_the_cosines() -> None:
    assert sorted(layer_norms._weight_cosines(_row("h", 1.0, 1.0))) == [-0.5, 1.0]
