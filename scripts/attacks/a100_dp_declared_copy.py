"""A100: a Sybil declares DP-SGD so that its noisy same-round copy escapes the white-noise test.

The duplicate rule's white-noise test (``duplicates.white_noise_z``) catches a later update that
is an earlier one plus Gaussian noise (a1 ``noise``); a later update whose header declares
DP-SGD was exempt (its noise is declared), and the declaration is the copier's. Here four
honest sites ``h0``..``h3`` of 150 images train the plain way; the attacker's second address
``sybil`` (no data, claims 150, its cap) sends, in the same round,

  attack  ``h0``'s update plus white Gaussian noise whose norm is ``K`` times the update's (one
          standard deviation in every coordinate, as the noise check wants; cosine to ``h0``
          about ``1 / sqrt(1 + K**2)``: 0.71 at the default ``K`` 1, 0.45 at 2), declaring the
          cheapest DP-SGD parameters (a97's grid at its claimed count, the terms'
          ``dp_noise_check``) under which that update passes the noise check, and their spend
          (a budget of 1,000 epsilon);
  honest  control: ``sybil`` is an honest site of 150 images of its own training DP-SGD at the
          node's defaults (noise 1.0) and declaring it: an honest DP update among plain ones,
          which the fixed rule must not mark ``DUPLICATE`` (the norm screen marks it
          ``OUTLIER_NORM``: its noise makes it 37-47x the plain sites' median norm).

FedAvg's share of each site is 150 / 750 = 0.200; the attacker has one dataset, so ``h0`` +
``sybil`` should take 0.200 a round, not 0.400.

``DP_COSINE=0.5``: the round terms name ``duplicates.white_noise_dp_cosine`` 0.5 (opt-in; the
sites' ``[accept]`` takes it), under which a DP-declared later update whose closest original is
above that cosine takes the white-noise test; without it (the product's default, and the rule
before h-202) every DP-declared update is exempt.

usage: scripts/attacks/real.sh scripts/attacks/a100_dp_declared_copy.py MODE [K] [rounds]
Exits 1 when the attack works (``sybil`` paid, weight > 0, in some round, with ``audit verify``
passing); ``honest`` exits 1 when the honest DP site is ``DUPLICATE`` in some round.
"""

import math
import os
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Ctx, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.dp_noise import allowed_signal, check_noise, credited_samples, noise_breach
from fedtrail.ml.privacy import (
    DP_BATCH_SIZE,
    DP_LR,
    DP_MOMENTUM,
    DpSettings,
    declared_micro,
    epsilon_spent,
    train_private,
)
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import encode_update
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack or honest")
K = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
DP_COSINE = float(os.environ["DP_COSINE"]) if os.environ.get("DP_COSINE") else None
ACCEPT = None
if DP_COSINE is not None:
    defaults = DuplicateRule.__init__.__kwdefaults__
    assert defaults is not None
    defaults["white_noise_dp_cosine"] = DP_COSINE  # the terms name it
    ACCEPT = ThresholdLimits(duplicate_white_noise_dp_cosine=DP_COSINE)
    print(f"DP_COSINE={DP_COSINE:g}: round terms name duplicates.white_noise_dp_cosine")
RULE = default_combiner(True).dp_noise_check
DELTA = 1e-5
N = 150
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 150)
SIGMAS = [0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0]
EPOCHS = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300]
_eps: dict[tuple[float, int, float], float] = {}
DP = DpSettings(noise_multiplier=1.0, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM)
data = load_bundled()
own = data.train.subset(list(range(4 * N, 5 * N)))  # the honest control's images


def flat(d) -> torch.Tensor:
    return torch.cat([v.double().flatten() for v in d.values()])


def cheapest(delta) -> DpParams | None:
    """The parameters of smallest epsilon on the grid under which ``delta`` passes the noise
    check at ``N`` samples under the terms' ``dp_noise_check`` (a97's search)."""
    probe = DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, steps=2, delta=DELTA)
    needed = check_noise(delta, probe, N).needed  # the update's alone
    count = credited_samples(N, RULE)
    best: tuple[float, DpParams] | None = None
    for b in BATCHES:
        q = b / N
        for sigma in SIGMAS:
            for e in EPOCHS:
                p = DpParams(
                    noise_multiplier=sigma,
                    max_grad_norm=1.0,
                    sample_rate=q,
                    steps=e * max(1, round(1 / q)),
                    delta=DELTA,
                )
                if allowed_signal(p, count) < needed:
                    continue
                key = (q, p.steps, sigma)
                if key not in _eps:
                    _eps[key] = epsilon_spent(p)
                if best is None or _eps[key] < best[0]:
                    best = (_eps[key], p)
    if best is not None and noise_breach(delta, best[1], N, "none", RULE) is not None:
        sys.exit("the search and the product's noise check disagree")
    return None if best is None else best[1]


seen: dict[int, str] = {}
history: list[DpParams] = []
spent = [0]


def declare(delta, params: DpParams, r: int):
    micro = declared_micro(params, history, spent[0])
    history.append(params)
    spent[0] += micro
    return encode_update(delta, spec=SPEC, round=r, dp=params).blob, N, micro


def sybil(ctx: Ctx):
    if MODE == "honest":
        out = train_private(
            ctx.start,
            own,
            spec=SPEC,
            config=TrainConfig(seed=77 + ctx.round),
            settings=DP,
            delta=DELTA,
        )
        cos = float(flat(out.local.delta) @ flat(ctx.now["h0"])) / (
            float(flat(out.local.delta).norm()) * float(flat(ctx.now["h0"]).norm())
        )
        seen[ctx.round] = f"honest DP update, cosine {cos:.4f} to h0's"
        return declare(out.local.delta, out.params, ctx.round)
    src = ctx.now["h0"]
    x = flat(src)
    sd = K * float(x.norm()) / math.sqrt(x.numel())
    g = torch.Generator().manual_seed(7919 * ctx.round)
    copy = {
        k: (v.double() + sd * torch.randn(v.shape, generator=g, dtype=torch.float64)).float()
        for k, v in src.items()
    }
    y = flat(copy)
    cos = float(y @ x) / (float(y.norm()) * float(x.norm()))
    params = cheapest(copy)
    if params is None:
        seen[ctx.round] = f"cosine {cos:.4f}; no parameters on the grid pass: sends nothing"
        return None
    verdict = check_noise(copy, params, credited_samples(N, RULE))
    seen[ctx.round] = (
        f"cosine {cos:.4f} to h0's; declares noise {params.noise_multiplier}, sample rate "
        f"{params.sample_rate:.3g}, {params.steps} steps ({epsilon_spent(params):.3f} epsilon "
        f"alone); needs {verdict.needed:.1f} of {verdict.allowed:.1f} noise units"
    )
    return declare(copy, params, ctx.round)


def budget(fed, acct):
    fed.ledger.set_privacy_budget(fed.coordinator, acct["sybil"].address, 1_000_000_000)


res = run(
    [Site(f"h{i}", N) for i in range(4)]
    + [Site("sybil", N if MODE == "honest" else 0, strategy=sybil, cap=N)],
    rounds=ROUNDS,
    setup=budget,
    real=True,
    accept=ACCEPT,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=900, reveal_seconds=60, dp_delta=DELTA
    ),
)
paid, not_ok = [], []
pair = 0.0
for i, row in enumerate(res["results"], 1):
    s = row.get("sybil")
    both = row["h0"]["weight"] + (s["weight"] if s else 0.0)
    pair += both
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
        + f" | h0 + sybil {both:.3f} (FedAvg for one dataset 0.200) | sybil: {seen.get(i, '-')}"
    )
    if s is not None and s["reason"] == "OK" and s["weight"] > 0:
        paid.append(i)
    if s is not None and s["reason"] == "DUPLICATE":
        not_ok.append(i)
addr = next(st.account.address for st in res["fed"].sites if st.name == "sybil")
acct = res["fed"].ledger.privacy(addr)
print(
    f"{MODE} K {K:g} white_noise_dp_cosine {DP_COSINE}: h0 + sybil {pair:.3f} over {ROUNDS} rounds "
    f"against {0.2 * ROUNDS:.3f} ({pair / (0.2 * ROUNDS):.2f}x); sybil's on-chain spend "
    f"{acct.spent_micro / 1e6:.3f} epsilon; audit {'PASS' if res['audit_ok'] else 'FAIL'}"
)
if MODE == "honest":
    print(f"honest DP site DUPLICATE in round(s) {not_ok or 'none'}")
    sys.exit(1 if not_ok else 0)
works = bool(paid) and bool(res["audit_ok"])
print(f"sybil paid in round(s) {paid or 'none'}: attack " + ("WORKS" if works else "held"))
sys.exit(1 if works else 0)
