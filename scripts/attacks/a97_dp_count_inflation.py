"""A92: a DP site claims more samples than it has, so the noise check allows its plain update.

The noise check (:mod:`fedtrail.ml.dp_noise`) fails a DP update whose blocks need a signal
longer than ``Lambda`` noise units, the longest signal DP-SGD at the declared parameters adds.
``Lambda`` grows with the site's sample count (an expected batch of ``q * n`` images adds up to
that many clipped gradients against one noise draw), and the count is the site's own on-chain
claim, bounded only by its ``maxSamples`` cap (here 10x its data, as a generous coordinator
sets it) and the round's ``max_sample_ratio`` (10x the median). The count also sets the
smallest sample rate ``privacy.spend`` lets the site declare (``q * n >= 1``), and a smaller
rate is a smaller epsilon. a68's liar kept its true count (150) and was left declaring 2.767
epsilon a round for a plain update; this one claims 1,500.

Modes (``h0``..``h2`` honest, 150 images; ``dp`` trains 150 images the plain way as the honest
sites do, a budget of 100 epsilon, its cap 1,500):
- ``inflate``: claims 1,500 samples and declares the cheapest parameters (a68's ``batch1``
  grid: an expected batch of at least one image at the claimed count, whole epochs) under
  which its plain update passes the product's noise check at the round's rule;
- ``true``: control, the same search at its true count (150): a68 ``batch1``.
``RULE`` (second argument, default: the terms' default): the terms' ``dp_noise_check``; ``1``
is the rule before session 52 (``Lambda`` at the claimed count), ``2`` credits at most
``NOISE_COUNT`` samples.

The attack works when the plain update is paid (``OK``, weight > 0) while declaring under half
the epsilon an honest node's default plan spends a round at the site's true 150 images (4.54),
as a68 measures it; the defence holds when no parameters on the grid pass, or the cheapest
that pass declare at least that much.

usage: scripts/attacks/real.sh scripts/attacks/a97_dp_count_inflation.py MODE [RULE] [rounds]
  MODE: inflate or true; RULE: 1 or 2
Exits 1 when the attack works, else 0.
"""

import sys
from dataclasses import replace

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

MODE = sys.argv[1] if len(sys.argv) > 1 else "inflate"
if MODE not in ("inflate", "true"):
    sys.exit(f"unknown mode {MODE!r}: inflate or true")
RULE = int(sys.argv[2]) if len(sys.argv) > 2 else default_combiner(True).dp_noise_check
if RULE not in (1, 2):
    sys.exit(f"unknown rule {RULE!r}: 1 or 2")
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
DELTA = 1e-5
N = 150  # the images the site has
CLAIM = 1500 if MODE == "inflate" else N  # the count it reveals
DEFAULT = plan_privacy(
    DpSettings(noise_multiplier=1.0, batch_size=DP_BATCH_SIZE, lr=DP_LR, momentum=DP_MOMENTUM),
    N,
    TrainConfig(),
    DELTA,
)
DEFAULT_EPS = epsilon_spent(DEFAULT)
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SIGMAS = [0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0]
EPOCHS = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300]
_eps: dict[tuple[float, int, float], float] = {}


def cheapest(delta) -> DpParams | None:
    """The parameters with the smallest epsilon under which the plain ``delta`` passes the
    product's noise check at ``CLAIM`` samples under ``RULE`` (None: none on the grid)."""
    best: tuple[float, DpParams] | None = None
    needed = check_noise(delta, DEFAULT, N).needed  # the update's alone
    count = credited_samples(CLAIM, RULE)
    for b in BATCHES:
        q = b / CLAIM
        if q > 1:
            continue
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
    if best is not None and noise_breach(delta, best[1], CLAIM, "none", RULE) is not None:
        sys.exit("the search and the product's noise check disagree")
    return None if best is None else best[1]


declared: dict[int, tuple[float, float, float]] = {}


def dp_site(ctx: Ctx):
    delta = ctx.now["dp"]  # the plain update, trained as the honest sites train
    params = cheapest(delta)
    if params is None:
        print(f"round {ctx.round}: no parameters on the grid pass the noise check; sends none")
        return None
    verdict = check_noise(delta, params, credited_samples(CLAIM, RULE))
    try:
        micro = declared_micro(params, [], 0)
    except FedtrailError as exc:
        sys.exit(f"cannot account {params}: {exc}")
    declared[ctx.round] = (micro / 1e6, verdict.needed, verdict.allowed)
    print(
        f"round {ctx.round}: dp claims {CLAIM} samples (has {N}), declares noise "
        f"{params.noise_multiplier}, sample rate {params.sample_rate:.3g}, {params.steps} steps: "
        f"{micro / 1e6:.3f} epsilon; its plain update needs {verdict.needed:.1f} noise units, "
        f"the parameters allow {verdict.allowed:.1f} at {credited_samples(CLAIM, RULE)} samples"
    )
    blob = encode_update(delta, spec=SPEC, round=ctx.round, dp=params).blob
    return blob, CLAIM, micro


def budget(fed, acct):
    fed.ledger.set_privacy_budget(fed.coordinator, acct["dp"].address, 100_000_000)


print(
    f"rule dp_noise_check {RULE}; an honest node's default plan at {N} images: noise 1.0, "
    f"sample rate {DEFAULT.sample_rate:.3f}, {DEFAULT.steps} step(s): {DEFAULT_EPS:.3f} epsilon"
)
res = run(
    [
        Site("h0", N),
        Site("h1", N),
        Site("h2", N),
        Site("dp", N, strategy=dp_site, cap=1500),
    ],
    rounds=ROUNDS,
    setup=budget,
    real=True,
    settings=AggregatorSettings(
        explain_method=None,
        round_seconds=900,
        reveal_seconds=60,
        dp_delta=DELTA,
        combiner=replace(default_combiner(True), dp_noise_check=RULE),
    ),
)
paid_cheap = []
for i, row in enumerate(res["results"], 1):
    eps, needed, allowed = declared.get(i, (0.0, 0.0, 0.0))
    dp = row.get("dp")
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
        + f" | dp declared {eps:.3f} epsilon (needs {needed:.1f}, allowed {allowed:.1f})"
    )
    if dp is not None and dp["reason"] == "OK" and dp["weight"] > 0 and eps < DEFAULT_EPS / 2:
        paid_cheap.append(i)
dp_addr = next(s.account.address for s in res["fed"].sites if s.name == "dp")
print("on-chain spend of dp:", res["fed"].ledger.privacy(dp_addr))
works = bool(paid_cheap)
print(
    f"plain update paid while declaring under {DEFAULT_EPS / 2:.3f} epsilon in round(s) "
    f"{paid_cheap or 'none'}; audit {'PASS' if res['audit_ok'] else 'FAIL'}: attack "
    + ("WORKS" if works else "held")
)
sys.exit(1 if works else 0)
