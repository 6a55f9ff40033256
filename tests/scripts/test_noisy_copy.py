"""scripts/bench/noisy_copy.py: honest updates and noisy copies through the product's free-rider
screen, with its white-noise test."""

from __future__ import annotations

from collections import Counter

import torch

from fedtrail.ml.datasets import load_bundled
from scripts.bench import noisy_copy


def test_measure_screens_every_honest_update_and_each_kind_of_copy() -> None:
    torch.set_num_threads(1)
    sites, rounds, levels = 3, 3, (0.02, 0.5)
    out = noisy_copy.measure(sites, 1.0, 0, rounds, levels, load_bundled())
    # rounds 2 and 3 have references: every honest update, and per source, kind and level a copy
    assert Counter(h["round"] for h in out["honest"]) == {2: sites, 3: sites}
    # one reference (two sources): per kind and level, in rounds 2 and 3; mix2: as it is and per
    # kind and level, rounds 2 and 3; twoago the same in round 3 only (two global deltas)
    per_source = 1 + 2 * len(levels)
    assert len(out["copies"]) == 2 * 2 * len(levels) * 2 + per_source * 2 + per_source
    assert out["flagged"] == []
    single = [c for c in out["copies"] if c["source"] not in ("mix2", "twoago")]
    white = [c for c in single if c["kind"] == "white"]
    shaped = [c for c in single if c["kind"] == "shaped"]
    assert all(c["reason"] and "white noise" in c["reason"] for c in white)
    # the adaptive copier's shaped noise: caught by the shaped-noise test
    assert all(c["reason"] and "noise shaped like it" in c["reason"] for c in shaped)
    assert min(h["structure"] for h in out["honest"]) > max(c["structure"] for c in white)
    # a mixture of two references with shaped noise passes (the screen's known limit)
    mixed = [c for c in out["copies"] if c["source"] == "mix2" and c["kind"] == "shaped"]
    assert mixed and all(c["reason"] is None for c in mixed)
