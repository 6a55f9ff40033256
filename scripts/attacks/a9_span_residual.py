"""A9 (measurement, not an attack): how much of each update lies OUTSIDE the span of the stale
screen's references (every update and global delta of the latest 3 finalized rounds), as a
fraction of its norm, for honest updates and for the free-riders of A2/A8. A cosine-to-one-
reference screen cannot see a linear mix; a span test can. Prints per round.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Site, noisy, run

from fedtrail.storage.codec import Compression, decode_update, encode_update


def flat(d):
    return torch.cat([d[k].double().reshape(-1) for k in sorted(d)])


def residual(x, refs):
    R = torch.stack(refs, dim=1)  # (p, m)
    coef = torch.linalg.lstsq(R, x.unsqueeze(1)).solution
    return float((x - (R @ coef).squeeze(1)).norm() / x.norm())


def probe(ctx):
    if ctx.past:
        refs = [flat(u) for rnd in ctx.past[-3:] for u in rnd.values()]
        refs += [flat(g) for g in ctx.past_global[-3:]]
        last = ctx.past[-1]
        cands = {f"honest {nm}": d for nm, d in ctx.now.items()}
        cands["mix2"] = {k: 0.5 * (last["h0"][k] + last["h1"][k]) for k in last["h0"]}
        if len(ctx.past_global) >= 2:
            cands["twoago"] = {
                k: ctx.past_global[-1][k] + ctx.past_global[-2][k] for k in last["h0"]
            }
        cands["topk copy"] = decode_update(
            encode_update(
                last["h0"],
                spec=SPEC,
                round=ctx.round,
                compression=Compression(method="topk8", fraction=1.0),
            ).blob,
            spec=SPEC,
        )[0]
        cands["copy+0.5%"] = noisy(last["h0"], 0.005, 1)
        cands["copy+2%"] = noisy(last["h0"], 0.02, 1)
        cands["copy+5%"] = noisy(last["h0"], 0.05, 1)
        print(f"round {ctx.round}: residual outside the span of {len(refs)} references:")
        for nm, d in cands.items():
            print(f"   {nm:12s} {residual(flat(d), refs):.4f}")
    return None


run(
    [Site(f"h{i}", 150) for i in range(4)] + [Site("probe", 0, strategy=probe, cap=150)],
    rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 4,
    verbose=False,
    verify=False,
)
