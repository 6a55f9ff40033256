"""scripts/bench/stale_cosine.py: every honest update's cosine to each reference of the rounds
before it (other sites' updates, its own, the global delta), as the stale screen computes it."""

from __future__ import annotations

from collections import Counter

import torch

from fedtrail.ml.datasets import load_bundled
from scripts.bench import stale_cosine


def test_measure_pairs_every_update_with_the_references_it_looks_back_on() -> None:
    torch.set_num_threads(1)
    sites, rounds, lags = 3, 3, 2
    rows = stale_cosine.measure(sites, 100.0, 0, rounds, lags, load_bundled(), "fedavg", "loo")
    # round r looks back min(lags, r - 1) rounds, each with `sites` updates and a global delta
    per_round = Counter(r["round"] for r in rows)
    assert per_round == {2: sites * (sites + 1), 3: 2 * sites * (sites + 1)}
    kinds = Counter((r["round"], r["lag"], r["kind"]) for r in rows)
    assert kinds[(3, 2, "own")] == sites and kinds[(3, 2, "other")] == sites * (sites - 1)
    assert kinds[(3, 1, "global")] == sites
    for r in rows:
        assert -1.0 - 1e-9 <= r["cosine"] <= 1.0 + 1e-9
        assert r["distance"] >= 0.0
    # honest updates are never copies: no cosine reaches the screen's 0.99999
    assert max(r["cosine"] for r in rows) < 0.99999
