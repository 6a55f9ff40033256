"""scripts/bench/poison_signals.py: each update's cosine to the others' mean and to the server
update, per parameter group, and its norm over the round's median (raw and per local step)."""

from __future__ import annotations

import math

import pytest
import torch

from scripts.bench import poison_signals


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


def test_along_is_the_length_on_the_median_update_over_the_median_norm() -> None:
    # coordinate-wise median of (1,0), (2,0), (0,3) is (1,0); median norm 2
    a = _delta([1.0], [0.0])
    b = _delta([2.0], [0.0])
    c = _delta([0.0], [3.0])
    sig = poison_signals.round_signals([a, b, c], [32, 32, 32], batch_size=32)
    assert sig[0]["along"] == pytest.approx(0.5)
    assert sig[1]["along"] == pytest.approx(1.0)  # twice a's length on the same direction
    assert sig[2]["along"] == pytest.approx(0.0)  # longest norm, but sideways


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


def test_measure_trains_the_server_update_from_the_sites_global_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spy takes the simulation's aggregate call as it is (keyword arguments included),
    gives every sent update each signal every round, and trains the server update from the very
    model the sites trained from that round (it follows the global model itself)."""
    from fedtrail.ml.datasets import load_bundled
    from scripts.bench import _sim

    torch.set_num_threads(1)
    starts: dict[str, list[dict[str, torch.Tensor]]] = {"sites": [], "server": []}

    def recorder(key: str, real):  # type: ignore[no-untyped-def]
        def train(state, *a, **k):  # type: ignore[no-untyped-def]
            starts[key].append({n: v.clone() for n, v in state.items()})
            return real(state, *a, **k)

        return train

    monkeypatch.setattr(_sim, "train_local", recorder("sites", _sim.train_local))
    monkeypatch.setattr(
        poison_signals, "train_local", recorder("server", poison_signals.train_local)
    )
    rows = poison_signals.measure("a", 100.0, 0, 3, load_bundled())
    assert [(r["round"], r["site"]) for r in rows] == [(r, s) for r in (1, 2, 3) for s in range(5)]
    for r in rows:
        assert r["kind"] == "none"
        for group in poison_signals.GROUPS:
            assert -1.0 - 1e-9 <= r[f"server {group}"] <= 1.0 + 1e-9
    assert len(starts["server"]) == 3 and len(starts["sites"]) == 15
    for rnd, server_start in enumerate(starts["server"]):
        site_start = starts["sites"][5 * rnd]  # the first site's training of that round
        assert server_start.keys() == site_start.keys()
        assert all(torch.equal(server_start[k], site_start[k]) for k in site_start)
    # the global model moved between rounds (the check above is not one model three times)
    assert not all(
        torch.equal(starts["server"][0][k], starts["server"][2][k]) for k in starts["server"][0]
    )
