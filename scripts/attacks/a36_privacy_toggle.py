"""A36: **aggregator**: ``privacy.required`` turned on for one chosen round to keep a non-DP site
out of it, then off again.

The round terms' privacy block could change per round (``payment_differences`` left it free), and
under ``required`` an update without DP parameters is not one the terms accept: the aggregator
scores it 0 as ``MALFORMED`` (an honest node whose ``[privacy]`` is off does not even train the
round: it skips it). So an aggregator that chooses the rounds can keep the one plain site out of
the rounds it picks and take its updates in the others. Now ``privacy.required`` is a payment
setting fixed by round 1's terms (``payment_differences``: nodes refuse such a round, ``audit
verify`` fails its ``terms.task_fixed``; the service patched here skips its own refusal).
Three DP sites (DP-SGD at noise SIGMA, a node's ``[privacy]`` defaults, budgets of 100
epsilon) and one plain site ``plain``, 150 images each; ``toggle`` opens round 2 with
``required`` on, rounds 1 and 3 off; ``off``: every round off (the control); ``on``: every
round on (a federation that requires DP throughout).

usage: python attacks/a36_privacy_toggle.py MODE [sigma] [rounds]   (MODE toggle|off|on;
default sigma 1.0, 3 rounds)
Prints every round's weights and ``audit verify``.
"""

import dataclasses
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Ctx, Site, run

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings
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

mode = sys.argv[1] if len(sys.argv) > 1 else "toggle"
sigma = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
DELTA = 1e-5
N = 150
NAMES = ("d0", "d1", "d2")
data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
shards = {nm: data.train.subset(perm[(i + 1) * N : (i + 2) * N]) for i, nm in enumerate(NAMES)}
DP = DpSettings(noise_multiplier=sigma, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM)
history: dict[str, list] = {nm: [] for nm in NAMES}
spent = {nm: 0 for nm in NAMES}


def required(round_id: int) -> bool:
    return mode == "on" or (mode == "toggle" and round_id == 2)


def dp_site(name: str, j: int):
    def strategy(ctx: Ctx):
        out = train_private(
            ctx.start,
            shards[name],
            spec=SPEC,
            config=TrainConfig(seed=1000 * ctx.round + j),
            settings=DP,
            delta=DELTA,
        )
        blob = encode_update(out.local.delta, spec=SPEC, round=ctx.round, dp=out.params).blob
        micro = declared_micro(out.params, history[name], spent[name])
        history[name].append(out.params)
        spent[name] += micro
        return blob, N, micro

    return strategy


real_open = AggregatorService.open_next


def open_next(self, *args, **kwargs):
    r = self.ledger.current_round() + 1
    self.settings = dataclasses.replace(self.settings, dp_required=required(r))
    return real_open(self, *args, **kwargs)


def setup(fed, acct):
    AggregatorService.open_next = open_next
    # a lying aggregator skips its own refusal to change round 1's payment settings
    AggregatorService._payment_changes = lambda self, terms: []
    for nm in NAMES:
        fed.ledger.set_privacy_budget(fed.coordinator, acct[nm].address, 100_000_000)


# the harness hands out shards in site order: plain the 1st, d0-d2 the 2nd-4th (as here)
res = run(
    [Site("plain", N)] + [Site(nm, N, strategy=dp_site(nm, j)) for j, nm in enumerate(NAMES)],
    rounds=rounds,
    setup=setup,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=DELTA
    ),
)
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i} (required {'on' if required(i) else 'off'}): "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
