"""A123: **sites** (colluders): drag the round's median claim down, and so every site's free-rider
model floor, so that a data-less rider's tiny update is paid.

Since h-234 (``combiner.tiny_size_reference`` 150) the free-rider screen's floor against the
global model's norm is ``0.1% x (min(1, n / m) x m / 150) ** 2`` when the round's median claimed
count ``m`` is below 150 (``fedtrail.valuation.freeride.free_riders``). The claims are the sites'
own: colluders (Sybils, or registered sites) that claim a handful of samples lower ``m`` and with
it every site's floor, by ``(m / 150) ** 2`` (20 claimed: 56x). A data-less rider then sends a
structured update at a norm under the old floor but over the lowered one; the white-noise,
shaped-noise and stale tests do not read its norm, and the validation game pays a short update
for shortening the averaged step.

usage: scripts/attacks/real.sh scripts/attacks/a123_median_claim_floor.py MODE [options]
MODE, the rider's update (normalised to LEVEL x the start model's norm):

* ``decay``: minus the start model, each weight times its own U(0.5, 1.5) (a weight-decay step:
  structured, no reference near it);
* ``profiled``: a120's per-tensor noise (each tensor's RMS in the last global delta);
* ``mix``: a random mix of the last round's global delta and site updates (round 1: ``decay``);
* ``copy`` (control): the last global delta scaled down (round 1: ``decay``): stale;
* ``white`` (control): white noise at the same norm: white.

options (key=value): ``sybils`` (default 4) colluders beside the rider, each claiming
``claim`` (20; the chain's cap each Sybil registers with is ``max(150, claim)``; ``claim=600``
is a123 *upwards*: the Sybils raise the median to 600, within ``max_sample_ratio`` 10 of the
honest 150, and under the median-relative rule of a median of 150 or more the rider claiming
150 faced ``0.1% x (150 / 600) ** 2``, 0.00625%; with ``rule=h234`` that rule is in force
there too, ``tiny_size_own`` 0) and sending ``sybil`` (a kind above at LEVEL, its own draw;
default ``white``: each Sybil its own white noise, FREE_RIDER itself but usable, so its claim
counts in the median;
``zero``: zero updates, all but the first DUPLICATE and so not counted); ``rider`` the rider's
claim (150); ``level`` (3e-4, i.e. 0.03% of the model's norm, a third of the old floor);
``honest`` (8 - sybils - 1 sites of 150 images); ``rounds`` (3);
``rule`` (``now``: this tree's rule, ``tiny_size_own`` 1; ``h234``: ``tiny_size_own`` 0, the
rule of stop 55 this attacks, the sites consenting under ``[accept.loosest]``; ``before``:
``tiny_size_reference`` 0, the rule before h-234 — the control); ``peers`` (1: ``[valuation]
mode = "peers"``; the harness drives no validators, so it stops at round 1's finalize).

Exits 1 when the rider is paid (weight > 0) in any round with ``audit verify`` passing, else 0.
"""

import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import Site, read_independently, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.valuation import default_combiner
from fedtrail.valuation.limits import ThresholdLimits

MODE = sys.argv[1] if len(sys.argv) > 1 else "decay"
KINDS = ("decay", "profiled", "mix", "copy", "white")
if MODE not in KINDS:
    raise SystemExit(f"unknown mode {MODE!r}: {', '.join(KINDS)}")
opts = dict(a.split("=", 1) for a in sys.argv[2:])
SYBILS = int(opts.get("sybils", 4))
CLAIM = int(opts.get("claim", 20))
SYBIL = opts.get("sybil", "white")
RIDER = int(opts.get("rider", 150))
LEVEL = float(opts.get("level", 3e-4))
HONEST = int(opts.get("honest", 8 - SYBILS - 1))
ROUNDS = int(opts.get("rounds", 3))
RULE = opts.get("rule", "now")
PEERS = opts.get("peers", "0") == "1"
if HONEST + SYBILS + 1 > 8:
    raise SystemExit("at most 8 sites (Anvil's development accounts less coordinator, aggregator)")


def _norm(d: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(v.double().pow(2).sum() for v in d.values())))


def update(kind: str, ctx, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind in ("mix", "copy") and not ctx.past_global:
        kind = "decay"
    if kind == "decay":
        # every weight times its own U(0.5, 1.5), drawn afresh (seeded): no two sites or rounds
        # repeat each other, tensor for tensor
        out = {
            k: -(torch.rand(v.shape, generator=g) + 0.5) * v.float() for k, v in ctx.start.items()
        }
    elif kind == "copy":
        out = {k: v.float().clone() for k, v in ctx.past_global[-1].items()}
    elif kind == "mix":
        refs = [ctx.past_global[-1], *ctx.past[-1].values()]
        w = torch.rand(len(refs), generator=g) + 0.2
        out = {
            k: sum(float(w[i]) * r[k].float() / _norm(r) for i, r in enumerate(refs))
            for k in ctx.start
        }
    elif kind == "profiled":
        out = {}
        for k, s in ctx.start.items():
            ref = ctx.past_global[-1][k] if ctx.past_global else 0.01 * s
            rms = float(ref.double().pow(2).mean().sqrt())
            z = torch.randn(s.shape, generator=g)
            out[k] = z * (rms / max(float(z.double().pow(2).mean().sqrt()), 1e-30))
    else:  # white
        out = {k: torch.randn(v.shape, generator=g) for k, v in ctx.start.items()}
    scale = LEVEL * _norm(ctx.start) / _norm(out)
    return {k: (scale * v).float() for k, v in out.items()}


def rider(ctx):
    return update(MODE, ctx, 9000 + ctx.round), RIDER


def sybil(i: int):
    def strategy(ctx):
        if SYBIL == "zero":
            return {k: torch.zeros_like(v) for k, v in ctx.start.items()}, CLAIM
        return update(SYBIL, ctx, 5000 + 100 * ctx.round + i), CLAIM

    return strategy


combiner = default_combiner(True)
if RULE == "before":
    combiner = replace(combiner, tiny_size_reference=0.0)
elif RULE == "h234":
    combiner = replace(combiner, tiny_size_own=0)
elif RULE != "now":
    raise SystemExit(f"unknown rule {RULE!r}: now, h234 or before")
settings = AggregatorSettings(
    explain_method=None, round_seconds=60, reveal_seconds=30, combiner=combiner
)
if PEERS:
    settings = replace(settings, valuation_mode="peers")
sites = (
    [Site(f"h{i}", 150) for i in range(HONEST)]
    + [Site(f"syb{i}", 0, strategy=sybil(i), cap=max(150, CLAIM)) for i in range(SYBILS)]
    + [Site("rider", 0, strategy=rider, cap=150)]
)
accept = ThresholdLimits.accepting(combiner)  # the sites consent to the rule tried
res = run(sites, rounds=ROUNDS, real=True, settings=settings, accept=accept)
paid = []
for i, row in enumerate(res["results"], 1):
    claims = sorted(r["samples"] for r in row.values())
    print(
        f"round {i}: rider {row['rider']['reason']} {row['rider']['weight']:.3f}, sybils "
        f"{sum(r['weight'] for n, r in row.items() if n.startswith('syb')):.3f} (claims {claims}); "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
    if row["rider"]["weight"] > 0:
        paid.append(i)
reader = read_independently(res["fed"], "a123")
failed = [f"{x['check']}: {x['detail'][:120]}" for x in reader if x["result"] == "FAIL"]
print(f"independent reader: {'PASS' if not failed else 'FAIL'} {failed}")
ok = bool(res["audit_ok"])
print(
    f"mode {MODE} {opts} rule {RULE}: rider paid in rounds {paid}; audit verify "
    f"{'PASS' if ok else 'FAIL'}"
)
sys.exit(1 if paid and ok else 0)
