"""A120: **site** (one or more data-less Sybils): fresh Gaussian noise with a per-tensor profile.

The free-rider screen's white-noise test (``combiner.white_noise_z``, 1000) flags an update
whose own structure statistic (``fedtrail.valuation.freeride.structure_z``: the spread of its
squares across tensors, rows and columns, and the correlation of neighbouring kernel taps) is
below the threshold: fresh Gaussian noise "has the same variance in every coordinate". It
closed a15 (noise at one scale over the whole model: ``FREE_RIDER``). A rider that draws the
noise *per tensor* at the root-mean-square of that tensor in a public update (the last global
delta, read from the finalized round; in round 1, 1% of the start model's tensor) gives its noise
the tensor profile an honest update has, and the statistic reads it as structured.

Modes (each rider has no data, claims 150 of its cap of 150, and commits after the honest sites):

* ``profiled [ROUNDS] [SYBILS]``: the attack above (default 4 rounds, 1 Sybil);
* ``rows [ROUNDS] [SYBILS]``: ``profiled`` with every row of a tensor scaled by U(0.2, 2) and
  neighbouring values summed in threes (a row profile and correlated taps too);
* ``white [ROUNDS] [SYBILS]`` (the control, a15's noise): the same draws, one scale for the whole
  model at the same total norm as ``profiled``: must be ``FREE_RIDER``.

Three honest sites of 150 beside the riders. Prints each rider's reason and weight per round,
the structure statistic of its round-1 update, ``audit verify`` and the independent reader.

usage: scripts/attacks/real.sh scripts/attacks/a120_profiled_noise_rider.py profiled [4] [1]
Exits 1 when a rider is paid (weight > 0) in any round with ``audit verify`` passing (the
attack works undetected), 0 otherwise.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import Site, read_independently, run

from fedtrail.valuation.freeride import structure_z

MODE = sys.argv[1] if len(sys.argv) > 1 else "profiled"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
SYBILS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
if MODE not in ("profiled", "rows", "white"):
    raise SystemExit(f"unknown mode {MODE!r}: profiled, rows or white")
HONEST = ["h0", "h1", "h2"]
first_z: dict[str, float] = {}


def rider(i: int):
    def strategy(ctx):
        g = torch.Generator().manual_seed(7000 + 100 * ctx.round + i)
        out = {}
        for k, s in ctx.start.items():
            # public: the last finalized global delta, or 1% of the start model's tensor
            ref = ctx.past_global[-1][k] if ctx.past_global else 0.01 * s
            rms = float(ref.double().pow(2).mean().sqrt())
            z = torch.randn(s.shape, generator=g)
            if MODE == "rows" and z.dim() > 1:
                flat = z.reshape(-1)
                z = (flat + torch.roll(flat, 1) + torch.roll(flat, 2)).reshape(s.shape)
                rows = torch.empty(z.shape[0], *[1] * (z.dim() - 1)).uniform_(0.2, 2.0, generator=g)
                z = z * rows
            out[k] = z * (rms / float(z.double().pow(2).mean().sqrt()))
        if MODE == "white":  # one scale for the whole model, the same total norm
            total = torch.sqrt(sum(v.double().pow(2).sum() for v in out.values()))
            g = torch.Generator().manual_seed(7000 + 100 * ctx.round + i)
            z = {k: torch.randn(v.shape, generator=g) for k, v in out.items()}
            zn = torch.sqrt(sum(v.double().pow(2).sum() for v in z.values()))
            out = {k: (total / zn).float() * v for k, v in z.items()}
        if ctx.round == 1:
            first_z[f"syb{i}"] = structure_z(out)
        return out, 150

    return strategy


sites = [Site(nm, 150) for nm in HONEST] + [
    Site(f"syb{i}", 0, strategy=rider(i), cap=150) for i in range(SYBILS)
]
res = run(sites, rounds=ROUNDS, real=True)
paid = []
for i, row in enumerate(res["results"], 1):
    riders = {nm: r for nm, r in row.items() if nm.startswith("syb")}
    share = sum(r["weight"] for r in riders.values())
    print(
        f"round {i}: riders' weight {share:.3f} (FedAvg 0); "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
    if share > 0:
        paid.append(i)
print(
    "round-1 structure statistic of each rider (white_noise_z 1000):",
    {k: round(v, 1) for k, v in first_z.items()},
)
reader = read_independently(res["fed"], "a120")
failed = [f"{x['check']}: {x['detail'][:120]}" for x in reader if x["result"] == "FAIL"]
print(f"independent reader: {'PASS' if not failed else 'FAIL'} {failed}")
ok = bool(res["audit_ok"])
print(f"mode {MODE}, {SYBILS} rider(s): paid in rounds {paid}; audit verify {ok}")
sys.exit(1 if paid and ok else 0)
