"""A68: a DP site picks DP parameters the noise check cannot hold, declares their small spend,
and sends a plain update.

The noise check (``dp_noise_check`` 1, :mod:`fedtrail.ml.dp_noise`) fails a DP update whose
1,024-coordinate blocks need a signal longer than ``Lambda`` noise units, the longest signal
DP-SGD at the declared parameters may add. Every parameter it reads is the site's own choice
(in its blob: noise multiplier, sample rate, steps), and the spend follows from them
(``privacy.spend``). a24's liar declared what an honest node plans (one epoch, expected batch
128) and failed; this one searches the parameters for the smallest spend whose ``Lambda``
covers its plain update: a tiny sample rate (an expected batch far below one image, which no
DP-SGD run samples from) and many steps. Up to this change ``Lambda = sqrt(T) * L_max / sigma``
bounded every one of the ``T`` steps' batches by the largest one, ``L_max``, a Bernstein bound
that never falls below about 2x/3 (x = log(2T / 1e-9), ~19 images) however small the rate.

Modes (``h0``..``h2`` honest, 150 images; ``dp`` 150 images, a budget of 10 epsilon, trains
the plain way as the honest sites do, then declares):
- ``tiny``: the cheapest parameters over any sample rate (1e-9 and up);
- ``batch1``: the same search within what ``audit verify``'s ``privacy.spend`` already
  requires of DP parameters: an expected batch of at least one image (``q * n >= 1``) and
  whole epochs of steps (a multiple of ``round(1 / q)``);
- ``honest``: control, the parameters an honest node plans (noise 1.0, one epoch) for the
  same plain update (a24's liar: the check must catch it).

The site declares exactly the spend its parameters give and its blob carries them. The attack
works when the plain update is paid (``OK``, weight > 0) while declaring under half the epsilon
an honest node's default plan spends a round (4.54 at 150 images), whatever ``audit verify``
says afterwards (before the fix it named ``tiny``'s sampling in ``privacy.spend`` once the
aggregator had paid it); the defence holds when the update is ``MALFORMED`` or the cheapest
parameters that pass declare at least that much.

usage: scripts/attacks/real.sh scripts/attacks/a68_dp_small_batch_claim.py MODE [rounds]
  MODE: tiny, batch1 or honest
Exits 1 when the attack works, else 0.
"""

import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Ctx, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.errors import FedtrailError
from fedtrail.ml.dp_noise import allowed_signal, check_noise, credited_samples, noise_breach
from fedtrail.ml.privacy import (
    DP_BATCH_SIZE,
    DP_LR,
    DP_MOMENTUM,
    DpSettings,
    declared_micro,
    epsilon_spent,
    plan_privacy,
)
from fedtrail.ml.training import TrainConfig
from fedtrail.protocol.privacy import DpParams
from fedtrail.storage.codec import encode_update
from fedtrail.valuation import default_combiner

MODE = sys.argv[1] if len(sys.argv) > 1 else "tiny"
if MODE not in ("tiny", "batch1", "honest"):
    sys.exit(f"unknown mode {MODE!r}: tiny, batch1 or honest")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
RULE = default_combiner(True).dp_noise_check  # the terms' (a97: 2 credits at most 32 samples)
DELTA = 1e-5
N = 150
DEFAULT = plan_privacy(
    DpSettings(noise_multiplier=1.0, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM),
    N,
    TrainConfig(),
    DELTA,
)
DEFAULT_EPS = epsilon_spent(DEFAULT)
RATES = {
    "tiny": [1e-9, 1e-6, 1e-4, 1e-3] + [k / N for k in (1, 2, 4, 8, 16, 32, 64, 128)],
    "batch1": [k / N for k in (1, 2, 4, 8, 16, 32, 64, 128)],
}
SIGMAS = [0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0]
STEPS = [1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000]
EPOCHS = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300]


def step_counts(q: float) -> list[int]:
    """``tiny``: any count; ``batch1``: whole epochs of ``round(1 / q)`` steps, as a node plans
    (``audit verify``'s ``privacy.spend`` fails other counts)."""
    if MODE == "tiny":
        return STEPS
    return [e * max(1, round(1 / q)) for e in EPOCHS]


def cheapest(delta) -> DpParams | None:
    """The declared parameters with the smallest epsilon under which the plain ``delta``
    passes the product's own noise check (None: none on the grid)."""
    best: tuple[float, DpParams] | None = None
    needed = check_noise(delta, DEFAULT, N).needed  # the update's alone; allowed: the params'
    for q in RATES[MODE]:
        for sigma in SIGMAS:
            for steps in step_counts(q):
                p = DpParams(
                    noise_multiplier=sigma,
                    max_grad_norm=1.0,
                    sample_rate=q,
                    steps=steps,
                    delta=DELTA,
                    accounting="summed",
                )
                if allowed_signal(p, credited_samples(N, RULE)) < needed:
                    continue
                eps = epsilon_spent(p)
                if best is None or eps < best[0]:
                    best = (eps, p)
    if best is not None and noise_breach(delta, best[1], N, "none", RULE) is not None:
        sys.exit("the search and the product's noise check disagree")
    return None if best is None else best[1]


declared: dict[int, tuple[DpParams | None, float, float, float]] = {}


def dp_site(ctx: Ctx):
    delta = ctx.now["dp"]  # the plain update, trained as the honest sites train
    if MODE == "honest":
        params: DpParams | None = DpParams(**{**DEFAULT.to_json(), "accounting": "summed"})
    else:
        params = cheapest(delta)
    if params is None:
        print(f"round {ctx.round}: no parameters on the grid pass the noise check; sends none")
        declared[ctx.round] = (None, 0.0, 0.0, 0.0)
        return None
    verdict = check_noise(delta, params, credited_samples(N, RULE))
    try:
        micro = declared_micro(params, [], 0)
    except FedtrailError as exc:
        sys.exit(f"cannot account {params}: {exc}")
    declared[ctx.round] = (params, micro / 1e6, verdict.needed, verdict.allowed)
    print(
        f"round {ctx.round}: dp declares noise {params.noise_multiplier}, sample rate "
        f"{params.sample_rate:.3g} (expected batch {params.sample_rate * N:.3g} images), "
        f"{params.steps} steps: {micro / 1e6:.3f} epsilon; its plain update needs "
        f"{verdict.needed:.1f} noise units, the parameters allow {verdict.allowed:.1f}"
    )
    blob = encode_update(delta, spec=SPEC, round=ctx.round, dp=params).blob
    return blob, N, micro


def budget(fed, acct):
    fed.ledger.set_privacy_budget(fed.coordinator, acct["dp"].address, 10_000_000)  # 10 epsilon


print(
    f"an honest node's default plan at {N} images: noise 1.0, sample rate "
    f"{DEFAULT.sample_rate:.3f}, {DEFAULT.steps} step(s): {DEFAULT_EPS:.3f} epsilon a round"
)
res = run(
    [Site("h0", N), Site("h1", N), Site("h2", N), Site("dp", N, strategy=dp_site)],
    rounds=ROUNDS,
    setup=budget,
    real=True,
    settings=AggregatorSettings(
        explain_method=None, round_seconds=900, reveal_seconds=60, dp_delta=DELTA
    ),
)
paid_cheap = []
for i, row in enumerate(res["results"], 1):
    params, eps, needed, allowed = declared.get(i, (None, 0.0, 0.0, 0.0))
    dp = row.get("dp")
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
        + (f" | dp declared {eps:.3f} epsilon (needs {needed:.1f}, allowed {allowed:.1f})")
    )
    if dp is not None and dp["reason"] == "OK" and dp["weight"] > 0 and eps < DEFAULT_EPS / 2:
        paid_cheap.append(i)
dp_addr = next(s.account.address for s in res["fed"].sites if s.name == "dp")
print("on-chain spend of dp:", res["fed"].ledger.privacy(dp_addr))
# paid is the harm: a privacy.spend failure afterwards (what verify said of ``tiny`` before
# the fix) names the site but does not take its weight back
works = bool(paid_cheap)
print(
    f"plain update paid while declaring under {DEFAULT_EPS / 2:.3f} epsilon in round(s) "
    f"{paid_cheap or 'none'}; audit {'PASS' if res['audit_ok'] else 'FAIL'}: attack "
    + ("WORKS" if works else "held")
)
np.set_printoptions(precision=3)
sys.exit(1 if works else 0)
