"""A2: a free-rider with no data (claims 150 samples, its cap) that never trains. Round 1 it
sends a copy of... nothing it can see (commit-reveal), so it skips round 1; from round 2 on it
builds its update from PUBLIC earlier material only (revealed updates and global deltas of
finalized rounds), transformed to escape the stale screen (cosine > 0.99999 to ONE reference).

usage: python attacks/a2_stale_mix.py MODE [rounds]
  mix2     0.5 * (u_h0 + u_h1) of the previous round
  mixall   the mean of every update of the previous round (= the FedAvg global delta of
           equal-weight sites, but not bit-equal to the stored global delta)
  gnoise   previous global delta + Gaussian noise at 0.5% of its norm
  copynoise h0's previous-round update + Gaussian noise at 0.5% of its norm
  copyshaped h0's previous-round update + 2% noise shaped like it (each coordinate's Gaussian
           scaled by the copy's magnitude there: the adaptive copier of accuracy.py's (i))
  twoago   the sum of the last two global deltas (a 'momentum' step)
  old      h1's update from 4 rounds back (stale_rounds = 3); needs rounds >= 6
  scaled   h0's previous-round update x 1.3 (control: the stale screen's job)
  prevglobal the previous global delta itself (control)
  warmup   round 1 only: Gaussian noise at 0.5% of the start model's norm (no information at all)
  topk     h0's previous-round update re-encoded with the product's own topk8 codec at
           fraction 1.0 (int8 quantisation; no noise added, no scaling)
  random   pure Gaussian noise with the norm of h0's previous update (control: no information)
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import Site, noisy, run

mode = sys.argv[1] if len(sys.argv) > 1 else "mix2"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def rider(ctx):
    if mode == "warmup":
        d = _random_like(ctx.start, ctx.round)
        return {k: 0.005 * v for k, v in d.items()}, 150
    if not ctx.past:
        return None
    last = ctx.past[-1]
    if mode == "mix2":
        return {k: 0.5 * (last["h0"][k] + last["h1"][k]) for k in last["h0"]}, 150
    if mode == "mixall":
        hs = [v for nm, v in last.items() if nm != "rider"]
        return {k: sum(h[k] for h in hs) / len(hs) for k in hs[0]}, 150
    if mode == "gnoise":
        return noisy(ctx.past_global[-1], 0.005, ctx.round), 150
    if mode == "copynoise":
        return noisy(last["h0"], 0.005, ctx.round), 150
    if mode == "copyshaped":
        return _shaped(last["h0"], 0.02, ctx.round), 150
    if mode == "twoago":
        if len(ctx.past_global) < 2:
            return None
        return {
            k: ctx.past_global[-1][k] + ctx.past_global[-2][k] for k in ctx.past_global[-1]
        }, 150
    if mode == "old":
        if len(ctx.past) < 4:
            return None
        return ctx.past[-4]["h1"], 150
    if mode == "topk":
        from harness import SPEC

        from fedtrail.storage.codec import Compression, encode_update

        return encode_update(
            last["h0"],
            spec=SPEC,
            round=ctx.round,
            compression=Compression(method="topk8", fraction=1.0),
        ).blob, 150
    if mode == "scaled":
        return {k: 1.3 * v for k, v in last["h0"].items()}, 150
    if mode == "prevglobal":
        return ctx.past_global[-1], 150
    if mode == "random":
        return _random_like(last["h0"], ctx.round), 150
    raise SystemExit(mode)


def _shaped(d, frac, seed):
    g = torch.Generator().manual_seed(seed)
    n = {k: torch.randn(v.shape, generator=g) * v.abs() for k, v in d.items()}
    dn = torch.sqrt(sum((v.double() ** 2).sum() for v in d.values()))
    nn_ = torch.sqrt(sum((v.double() ** 2).sum() for v in n.values()))
    return {k: d[k] + (frac * dn / nn_).float() * n[k] for k in d}


def _random_like(d, seed):
    g = torch.Generator().manual_seed(seed)
    n = {k: torch.randn(v.shape, generator=g) for k, v in d.items()}
    dn = torch.sqrt(sum((v.double() ** 2).sum() for v in d.values()))
    nn_ = torch.sqrt(sum((v.double() ** 2).sum() for v in n.values()))
    return {k: (dn / nn_).float() * n[k] for k in d}


res = run(
    [
        Site("h0", 150),
        Site("h1", 150),
        Site("h2", 150),
        Site("h3", 150),
        Site("rider", 0, strategy=rider, cap=150),
    ],
    rounds=rounds,
)
for i, row in enumerate(res["results"], 1):
    if "rider" in row:
        print(
            f"round {i}: free-rider {row['rider']['reason']} score {row['rider']['score']:.3f} "
            f"weight {row['rider']['weight']:.3f} (FedAvg: 0, it trained nothing)"
        )
