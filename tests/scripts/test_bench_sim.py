"""The benchmarks' in-process simulation harness (scripts/bench/_sim.py) on a tiny federation:
every method gives finite metrics, the weights are the contract's rule, runs are deterministic.

Three sites, not two: multi-Krum needs at least 3 updates (2f + 3 with f = 0)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled
from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.codec import Compression

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))

import _sim


def _balanced(ds: ImageDataset, per_class: int) -> ImageDataset:
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:per_class] for c in (0, 1)])
    return ds.subset(np.sort(idx))


@pytest.fixture(scope="module")
def tiny() -> Splits:
    s = load_bundled()
    return Splits(
        train=_balanced(s.train, 60), val=_balanced(s.val, 20), test=_balanced(s.test, 30)
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(before)


CONFIG = _sim.SimConfig(
    sites=3,
    rounds=1,
    epochs=1,
    alpha=5.0,
    min_size=10,
    seed=3,
    faults=(SiteFault(), SiteFault(kind="label_noise", rate=0.4, seed=1), SiteFault()),
)


@pytest.mark.parametrize("method", _sim.METHODS)
def test_every_method_gives_finite_metrics(tiny: Splits, method: _sim.Method) -> None:
    res = _sim.run_method(method, CONFIG, tiny)
    assert res.method == method
    assert sum(res.site_samples) == len(tiny.train)
    for key in ("loss", "accuracy", "auc", "f1"):
        assert math.isfinite(res.test[key]), key
    assert 0.0 <= res.test["auc"] <= 1.0
    if method == "local":
        assert len(res.per_site) == 3 and res.rounds == []
        assert res.test_honest is not None and math.isfinite(res.test_honest["auc"])
    else:
        (rec,) = res.rounds
        assert rec.submitted == res.site_names and not rec.skipped
        assert sum(rec.weights) == 10**18
        # the contract's rule over the sample counts and the (valuation or unit) scores
        assert rec.weights == onchain_weights(res.site_samples, rec.scores)


def test_fedavg_weights_are_the_onchain_sample_shares(tiny: Splits) -> None:
    res = _sim.run_method("fedavg", CONFIG, tiny)
    (rec,) = res.rounds
    assert rec.scores == [SCORE_SCALE] * 3
    assert rec.weights == onchain_weights(res.site_samples, [SCORE_SCALE] * 3)


def test_same_seed_same_numbers(tiny: Splits) -> None:
    for method in ("valuation", "local"):
        a = _sim.run_method(method, CONFIG, tiny)
        b = _sim.run_method(method, CONFIG, tiny)
        assert a.test == b.test
        assert [(r.scores, r.weights) for r in a.rounds] == [
            (r.scores, r.weights) for r in b.rounds
        ]
    other = _sim.run_method("fedavg", replace(CONFIG, seed=4), tiny)
    assert other.test != _sim.run_method("fedavg", CONFIG, tiny).test


def test_codec_dense_is_lossless_and_topk8_counts_fewer_bytes(tiny: Splits) -> None:
    plain = _sim.run_method("fedavg", CONFIG, tiny)
    dense_cfg = replace(CONFIG, compression=Compression(method="none"))
    dense = _sim.run_method("fedavg", dense_cfg, tiny)
    assert dense.test == plain.test
    topk_cfg = replace(CONFIG, compression=Compression(method="topk8", fraction=0.05))
    topk = _sim.run_method("fedavg", topk_cfg, tiny)
    assert plain.bytes_per_round == 0
    assert 0 < topk.bytes_per_round < 0.1 * dense.bytes_per_round


def test_krum_needs_three_sites(tiny: Splits) -> None:
    two = _sim.SimConfig(sites=2, rounds=1, min_size=10)
    with pytest.raises(ConfigError, match="at least 3 sites"):
        _sim.run_method("krum", two, tiny)
