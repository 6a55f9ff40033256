"""A60: a data-less free-rider that declares DP-SGD, so the white-noise screen exempts it.

The free-rider screen's white-noise test (``white_noise_z``) flags a copy of an earlier update
plus fresh Gaussian noise, and pure noise; updates that declare DP-SGD are exempt (their noise is
declared, and ``dp_noise_check`` judges it: :mod:`fedtrail.ml.dp_noise`). Here every site
declares DP-SGD (terms ``dp_required``, delta 1e-5, composed accounting, a budget of 100 epsilon
each): three honest sites of 150 images train with ``train_private`` at noise multiplier
``sigma`` (the node's DP defaults: expected batch 128, lr 0.5, no momentum), and the rider
``fr`` (no data, claims 150, its cap) declares the very parameters such a node plans for 150
images, declares their spend (so ``dp_spend_check`` holds), and sends

  copy    h0's previous-round revealed update plus fresh Gaussian noise of the per-coordinate
          standard deviation an honest update at those parameters carries
          (``s = lr * sigma * C / B * sqrt(T)``, ``B`` the expected batch);
  gcopy   the last global delta plus that noise;
  noise   that noise alone (= a zero delta plus the declared noise: (b) and (c) of the brief are
          the same update);
  honest  control: the rider trains DP-SGD on its own 150 images.

(Round 1 has nothing to copy: ``copy`` and ``gcopy`` send ``noise`` then.) FedAvg's share of
each site is 150 / 600 = 0.250; the rider trained nothing, so its fair share is 0.

Printed per round: every site's reason / score / weight, the rider's noise-check verdict (the
signal its blocks need, in noise units, against the parameters' allowance), its cosine to the
copied reference, and the declared spend; at the end the rider's on-chain epsilon and the sum
of its weights against 0.250 a round. Exit 1 when the rider (not in ``honest``) is paid more
than half of FedAvg's share over the rounds (the issue's bar), 0 otherwise.

The terms' ``dp_copy_z`` is the default (0: off) unless the fourth argument sets it (60: the
lowest a site accepts).

usage: python scripts/attacks/a60_dp_declared_copy.py MODE [sigma] [rounds] [dp_copy_z]
  (or ``scripts/attacks/real.sh scripts/attacks/a60_dp_declared_copy.py MODE ...`` on Anvil +
  IPFS)
"""

import math
import sys
from dataclasses import replace

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
from fedtrail.valuation import default_combiner

mode = sys.argv[1] if len(sys.argv) > 1 else "copy"
if mode not in ("copy", "gcopy", "noise", "honest"):
    raise SystemExit(__doc__)
sigma = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
COMBINER = default_combiner(AggregatorSettings().standing)
if len(sys.argv) > 4:
    COMBINER = replace(COMBINER, dp_copy_z=float(sys.argv[4]))
DELTA = 1e-5
N = 150
NAMES = ("h0", "h1", "h2", "fr")
data = load_bundled()
perm = np.random.default_rng(0).permutation(len(data.train.labels))
shards = {nm: data.train.subset(perm[i * N : (i + 1) * N]) for i, nm in enumerate(NAMES)}
DP = DpSettings(noise_multiplier=sigma, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM)
PLAN = plan_privacy(DP, N, TrainConfig(), DELTA)
B = max(1, round(PLAN.sample_rate * N))
# momentum 0: the update is -lr * sum_t (clipped sum + sigma C z_t) / B, so each coordinate's
# noise has standard deviation lr sigma C sqrt(T) / B
NOISE_SD = DP_LR * sigma * PLAN.max_grad_norm * math.sqrt(PLAN.steps) / B
history: dict[str, list] = {nm: [] for nm in NAMES}
spent: dict[str, int] = dict.fromkeys(NAMES, 0)
seen: dict[int, tuple[float, float, float, str]] = {}


def flat(d):
    return torch.cat([v.double().flatten() for v in d.values()])


def declare(nm, delta, params, r):
    blob = encode_update(delta, spec=SPEC, round=r, dp=params).blob
    micro = declared_micro(params, history[nm], spent[nm])
    history[nm].append(params)
    spent[nm] += micro
    return blob, N, micro


def honest(nm, j):
    def strategy(ctx: Ctx):
        out = train_private(
            ctx.start,
            shards[nm],
            spec=SPEC,
            config=TrainConfig(seed=1000 * ctx.round + j),
            settings=DP,
            delta=DELTA,
        )
        return declare(nm, out.local.delta, out.params, ctx.round)

    return strategy


def rider(ctx: Ctx):
    if mode == "honest":
        return honest("fr", 3)(ctx)
    g = torch.Generator().manual_seed(7919 * ctx.round)
    noise = {k: NOISE_SD * torch.randn(v.shape, generator=g) for k, v in ctx.start.items()}
    ref, label = None, "none"
    if mode == "copy" and ctx.past and "h0" in ctx.past[-1]:
        ref, label = ctx.past[-1]["h0"], "h0's previous update"
    if mode == "gcopy" and ctx.past_global:
        ref, label = ctx.past_global[-1], "the last global delta"
    delta = noise if ref is None else {k: ref[k] + noise[k] for k in noise}
    verdict = check_noise(delta, PLAN, N)
    cos = (
        float(torch.dot(flat(delta), flat(ref)) / (flat(delta).norm() * flat(ref).norm()))
        if ref is not None
        else math.nan
    )
    seen[ctx.round] = (verdict.needed, verdict.allowed, cos, label)
    return declare("fr", delta, PLAN, ctx.round)


def budget(fed, acct):
    for nm in NAMES:
        fed.ledger.set_privacy_budget(fed.coordinator, acct[nm].address, 100_000_000)


print(
    f"declared per round: noise_multiplier {PLAN.noise_multiplier}, sample_rate "
    f"{PLAN.sample_rate:.3f}, steps {PLAN.steps}, delta {DELTA}; noise sd {NOISE_SD:.3g} a "
    f"coordinate; first round's spend {declared_micro(PLAN, [], 0) / 1e6:.3f} epsilon"
)
res = run(
    [Site(nm, N, strategy=honest(nm, j)) for j, nm in enumerate(NAMES[:3])]
    + [Site("fr", N, strategy=rider)],
    rounds=rounds,
    setup=budget,
    settings=AggregatorSettings(
        explain_method=None,
        round_seconds=60,
        reveal_seconds=30,
        dp_delta=DELTA,
        dp_required=True,
        combiner=COMBINER,
    ),
    real=True,
)
total = 0.0
for i, row in enumerate(res["results"], 1):
    fr = row.get("fr")
    total += fr["weight"] if fr else 0.0
    extra = ""
    if i in seen:
        needed, allowed, cos, label = seen[i]
        extra = (
            f" | fr: noise check needs {needed:.1f} of {allowed:.1f} noise units"
            f" ({'passes' if needed <= allowed else 'fails'}); copies {label}"
            + ("" if math.isnan(cos) else f" (cosine {cos:.3f})")
        )
    print(
        f"round {i}: "
        + ", ".join(
            f"{nm} {r['reason']} {r['score']:.3f} {r['weight']:.3f}" for nm, r in row.items()
        )
        + extra
    )
fed = res["fed"]
fr_addr = next(s.account.address for s in fed.sites if s.name == "fr")
acct = fed.ledger.privacy(fr_addr)
print(
    f"fr ({mode}, dp_copy_z {COMBINER.dp_copy_z:g}): weight {total:.3f} over {rounds} rounds "
    f"against FedAvg's {0.25 * rounds:.3f} "
    f"({total / (0.25 * rounds):.2f}x); on-chain spend {acct.spent_micro / 1e6:.4f} of "
    f"{acct.budget_micro / 1e6:.1f} epsilon"
)
if mode != "honest" and total > 0.5 * 0.25 * rounds:
    print("ATTACK WORKS: paid more than half of FedAvg's share")
    sys.exit(1)
