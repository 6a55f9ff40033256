#!/usr/bin/env python3
"""A DP chain with faulty DP sites on real daemons, for reader.py and audit verify to read.

Through the attack harness (``scripts/attacks/harness.py``, ``real=True``: Anvil and IPFS named by
``FEDTRAIL_ATTACK_RPC`` / ``FEDTRAIL_ATTACK_IPFS``, kept running afterwards): two plain sites and
four DP sites at noise multiplier 2 under the composed rule, two rounds: ``honest`` (DP-SGD, the
spend due), ``liar`` (its plain update declared as DP-SGD: privacy.noise), ``under`` (DP-SGD, one
micro-epsilon under: privacy.spend and privacy.scored) and ``sampler`` (a sample rate of 1e-9:
SAMPLING IMPLAUSIBLE). The aggregator is the product's, so it zeroes the last three; both
readers should then fail ``privacy.spend`` in both rounds and pass the rest.

    FEDTRAIL_ATTACK_RPC=http://127.0.0.1:P FEDTRAIL_ATTACK_IPFS=/ip4/127.0.0.1/tcp/Q/http \\
        .venv/bin/python scripts/independent/dp_chain.py
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attacks"))
from harness import SPEC, Ctx, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.privacy import (
    DP_BATCH_SIZE,
    DP_LR,
    DP_MOMENTUM,
    DpSettings,
    declared_micro,
    train_private,
)
from fedtrail.ml.training import TrainConfig
from fedtrail.storage.codec import encode_update

DELTA, N = 1e-5, 150
NAMES = ["h0", "h1", "honest", "liar", "under", "sampler"]
HIST: dict[str, list] = {nm: [] for nm in NAMES}
SPENT = dict.fromkeys(NAMES, 0)
data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
DP = DpSettings(noise_multiplier=2.0, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM)


def strategy(name):
    j = NAMES.index(name)
    mine = data.train.subset(perm[j * N : (j + 1) * N])  # the harness's shard for site j

    def play(ctx: Ctx):
        out = train_private(
            ctx.start,
            mine,
            spec=SPEC,
            config=TrainConfig(seed=1000 * ctx.round + j),
            settings=DP,
            delta=DELTA,
        )
        delta, params = out.local.delta, out.params
        if name == "liar":
            delta = ctx.now["liar"]  # its own plain training, no noise
        if name == "sampler":
            params = dataclasses.replace(params, sample_rate=1e-9, steps=1)
        micro = declared_micro(params, HIST[name], SPENT[name])
        HIST[name].append(params)
        if name == "under":
            micro -= 1
        SPENT[name] += micro
        return encode_update(delta, spec=SPEC, round=ctx.round, dp=params).blob, N, micro

    return play


def budget(fed, acct):
    for nm in NAMES[2:]:
        fed.ledger.set_privacy_budget(fed.coordinator, acct[nm].address, 100_000_000)


run(
    [Site("h0", N), Site("h1", N)] + [Site(nm, N, strategy=strategy(nm)) for nm in NAMES[2:]],
    rounds=2,
    setup=budget,
    real=True,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=DELTA
    ),
)
