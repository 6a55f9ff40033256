"""A24: a DP site declares the node's DP-SGD parameters, spends their epsilon, and adds no noise.

The spend a site declares must follow from the DP parameters in its blob (``dp_spend_check``,
``privacy.spend``), and ``audit verify`` checks those parameters against the chain as far as it
can (delta, ``sample_rate * n >= 1``, whole epochs), but nothing checks that the update carries
the noise they declare (README, *Still trusted*). Here the ``dp`` site (150 images, a budget of
``budget`` epsilon) declares exactly the parameters a node with ``[privacy] noise_multiplier = S``
plans (``plan_privacy``: expected batch 128, one epoch), and the spend they give, but sends the
plain update the honest sites train (batch 32, momentum 0.9, no clipping, no noise). Control
``honest``: the same site trains with ``train_private`` at those parameters.

The declaration is contradicted by public bytes: DP-SGD adds ``lr * sigma * C / B * z_t`` at each
of ``T`` steps (``z_t`` standard normal in all ``P`` coordinates, ``B`` the expected batch
``sample_rate * n``), while the clipped gradients move the model by at most ``lr * C`` a step, so
the noise is at least ``rho = sigma * sqrt(P) / (B * sqrt(T))`` times the signal, and the update's
cosine to anything independent of its noise (the other sites' mean) is at most
``1 / sqrt(1 + rho**2)`` (momentum 0, the node's DP default). The script prints that bound
beside the measured cosine (not a check the product runs), and the verdict of the check it does
run under terms with ``dp_noise_check`` 1 (the default; :mod:`fedtrail.ml.dp_noise`): the
signal, in units of the noise, the update's block norms need, against the most the parameters
allow.

usage: python attacks/a24_dp_noise_claim.py MODE [sigma] [rounds]
  liar: parameters and spend of sigma, no noise; honest: DP-SGD at sigma (control)
"""

import math
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Ctx, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.dp_noise import check_noise
from fedtrail.ml.privacy import (
    DP_BATCH_SIZE,
    DP_LR,
    DP_MOMENTUM,
    DpSettings,
    declared_micro,
    plan_privacy,
    train_private,
)
from fedtrail.ml.training import TrainConfig
from fedtrail.storage.codec import encode_update

mode = sys.argv[1] if len(sys.argv) > 1 else "liar"
sigma = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
DELTA = 1e-5
N = 150
data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
mine = data.train.subset(perm[3 * N : 4 * N])  # the harness's shard for the 4th site
DP = DpSettings(
    noise_multiplier=sigma, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM
)  # a node's [privacy] defaults
PLAN = plan_privacy(DP, N, TrainConfig(), DELTA)
EPS = declared_micro(PLAN, [], 0) / 1e6
seen: dict[int, tuple[float, float, float, float, float]] = {}
history: list = []  # earlier DpParams (the composed rule declares the increment)
spent = [0]


def flat(d):
    return torch.cat([v.double().flatten() for v in d.values()])


def dp_site(ctx: Ctx):
    if mode == "honest":
        out = train_private(
            ctx.start,
            mine,
            spec=SPEC,
            config=TrainConfig(seed=1000 * ctx.round + 3),
            settings=DP,
            delta=DELTA,
        )
        delta, params = out.local.delta, out.params
    else:
        delta, params = ctx.now["dp"], PLAN
    blob = encode_update(delta, spec=SPEC, round=ctx.round, dp=params).blob
    d = flat(delta)
    others = sum(flat(v) for k, v in ctx.now.items() if k != "dp")
    cos = float(torch.dot(d, others) / (d.norm() * others.norm()))
    p = d.numel()
    rho = (
        params.noise_multiplier * math.sqrt(p) / (params.sample_rate * N * math.sqrt(params.steps))
    )
    check = check_noise(delta, params, N)
    seen[ctx.round] = (cos, 1 / math.sqrt(1 + rho**2), float(d.norm()), check.needed, check.allowed)
    micro = declared_micro(params, history, spent[0])
    history.append(params)
    spent[0] += micro
    return blob, N, micro


def budget(fed, acct):
    fed.ledger.set_privacy_budget(fed.coordinator, acct["dp"].address, 10_000_000)  # 10 epsilon


print(
    f"declared per round: noise_multiplier {PLAN.noise_multiplier}, sample_rate "
    f"{PLAN.sample_rate:.3f}, steps {PLAN.steps}, delta {DELTA}: epsilon {EPS:.3f}"
)
res = run(
    [Site("h0", N), Site("h1", N), Site("h2", N), Site("dp", N, strategy=dp_site)],
    rounds=rounds,
    setup=budget,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=DELTA
    ),
)
for i, row in enumerate(res["results"], 1):
    cos, bound, norm, needed, allowed = seen[i]
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
        + f" | dp cosine to the others' mean {cos:.3f}, bound for its declared noise {bound:.3f},"
        f" norm {norm:.4f}; noise check: needs {needed:.1f}, allowed {allowed:.1f}"
    )
dp_addr = next(s.account.address for s in res["fed"].sites if s.name == "dp")
print("on-chain spend of dp:", res["fed"].ledger.privacy(dp_addr))
