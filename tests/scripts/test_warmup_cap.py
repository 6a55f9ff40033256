"""The warm-up weight cap replay (scripts/bench/warmup_cap.py, issue 12 (j)): round 1's paid
updates above K median norms lose their weight, later rounds stay as recorded."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.bench import warmup_cap


def _run() -> dict[str, Any]:
    sites = ["h0", "h1", "bad"]
    return {
        "site_names": sites,
        "site_faults": ["none", "none", "scale"],
        "rounds": [
            {
                "submitted": sites,
                "weights": [2, 4, 4],
                "skipped": False,
                "norm_ratios": {"h0": 1.0, "h1": 8.0, "bad": 9.0},
            },
            {
                "submitted": sites,
                "weights": [5, 4, 1],
                "skipped": False,
                "norm_ratios": {"h0": 1.0, "h1": 1.0, "bad": 20.0},
            },
        ],
    }


def test_the_cap_zeroes_round_one_only_and_counts_honest_losses() -> None:
    run = _run()
    assert warmup_cap.capped_share(run, None) == (pytest.approx((0.4 + 0.1) / 2), 0)
    # K 8.5: only the faulty 9x update loses its round-1 weight; round 2's 20x is untouched
    assert warmup_cap.capped_share(run, 8.5) == (pytest.approx((0.0 + 0.1) / 2), 0)
    # K 5: the honest 8x one too (counted), the faulty one still 0
    assert warmup_cap.capped_share(run, 5.0) == (pytest.approx((0.0 + 0.1) / 2), 1)
