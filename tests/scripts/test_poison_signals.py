"""scripts/bench/poison_signals.py: each update's cosine to the others' mean and to the server
update, per parameter group, and its norm over the round's median (raw and per local step)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))

import poison_signals


def _delta(conv: list[float], head: list[float]) -> dict[str, torch.Tensor]:
    # SmallCNN's group names: conv* are convolutions, fc2* is the output layer
    return {"conv1.weight": torch.tensor(conv), "fc2.weight": torch.tensor(head)}


def test_server_cosine_per_group_against_hand_values() -> None:
    a = _delta([1.0, 0.0], [0.0, 2.0])
    b = _delta([0.0, 3.0], [1.0, 0.0])
    server = _delta([2.0, 0.0], [0.0, -1.0])
    sig = poison_signals.round_signals([a, b], [32, 64], batch_size=32, server=server)
    # a vs server: conv parallel (+1), head opposite (-1); over all, (2 - 2) / (sqrt5 sqrt5) = 0
    assert sig[0]["server conv"] == pytest.approx(1.0)
    assert sig[0]["server head"] == pytest.approx(-1.0)
    assert sig[0]["server all"] == pytest.approx(0.0)
    # b is orthogonal to the server update in every group
    assert sig[1]["server conv"] == pytest.approx(0.0)
    assert sig[1]["server all"] == pytest.approx(0.0)
    # the cosine to the others' mean (with two updates, the other one): a . b = 0
    assert sig[0]["cos all"] == pytest.approx(0.0)
    assert sig[1]["cos head"] == pytest.approx(0.0)


def test_norms_over_the_median_raw_and_per_step() -> None:
    a = _delta([3.0, 0.0], [0.0, 4.0])  # norm 5
    b = _delta([0.0, 0.0], [0.0, 10.0])  # norm 10
    sig = poison_signals.round_signals([a, b], [32, 96], batch_size=32)
    # median of (5, 10) is 7.5; per step: 5/1 and 10/3, median 25/6
    assert sig[0]["norm"] == pytest.approx(5 / 7.5)
    assert sig[1]["norm per step"] == pytest.approx((10 / 3) / (25 / 6))
    assert sig[1]["norm per sqrt step"] == pytest.approx(
        (10 / math.sqrt(3)) / ((5 + 10 / math.sqrt(3)) / 2)
    )
    assert not any(k.startswith("server") for k in sig[0])  # no server update given


def test_a_sign_flip_is_beyond_every_honest_server_cosine_in_the_summary() -> None:
    rows = [
        {"kind": "none", "server all": 0.5, "cos all": 0.2, "norm": 1.0},
        {"kind": "none", "server all": -0.3, "cos all": -0.1, "norm": 2.0},
        {"kind": "sign_flip", "server all": -0.9, "cos all": 0.0, "norm": 3.0},
    ]
    lines = "\n".join(poison_signals.summarise(rows))
    flip = [ln for ln in lines.splitlines() if "sign_flip" in ln]
    assert any("server all" in ln and "beyond every honest value: 1/1" in ln for ln in flip)
    assert any("cos all" in ln and "beyond every honest value: 0/1" in ln for ln in flip)
    assert any("norm " in ln and "beyond every honest value: 1/1" in ln for ln in flip)
