"""Real updates for the valuation tests: seven IID sites of 200 bundled training images each,
trained two local epochs from the same initial SmallCNN (once per test session, one torch
thread; about 2 s on two shared cores)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from fedtrail.ml.datasets import ImageDataset, load_bundled, partition_iid
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.ml.training import TrainConfig, train_local

SPEC = ModelSpec()


@dataclass(frozen=True)
class RealSites:
    global_state: dict[str, torch.Tensor]
    validation: ImageDataset
    deltas: list[dict[str, torch.Tensor]]
    num_samples: list[int]


@functools.cache
def real_sites() -> RealSites:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = load_bundled()
        global_state = initial_model(SPEC, seed=0).state_dict()
        chosen = np.random.default_rng(0).choice(len(splits.train), 1400, replace=False)
        pool = splits.train.subset(chosen)
        results = [
            train_local(
                global_state, pool.subset(part), spec=SPEC, config=TrainConfig(epochs=2, seed=i)
            )
            for i, part in enumerate(partition_iid(pool.labels, 7, seed=0))
        ]
    finally:
        torch.set_num_threads(threads)
    return RealSites(
        global_state=global_state,
        validation=splits.val,
        deltas=[r.delta for r in results],
        num_samples=[r.num_samples for r in results],
    )
