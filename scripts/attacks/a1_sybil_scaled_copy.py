"""A1: a Sybil pair. The attacker runs one real site (h0, trains honestly) and registers a second
address (sybil) that commits, in the same round, a transformed copy of h0's update. Both are the
attacker's, so the copy exists before the commit deadline. The duplicate rule before
``scaled_cosine`` only caught cosine > 0.9999 AND relative L2 < 1e-3 (all four modes were paid);
with it (terms' ``scaled_cosine`` 0.999995) the scaled, recoded and 0.2%-noise copies are
DUPLICATE, and noise of 0.4% or 1% (``noise 3 0.01``) escaped it; since terms'
``white_noise_z`` (1000, h-197) the noisy copies are DUPLICATE too (the copy minus its original is
white noise within each tensor). The stale screen only looks at earlier rounds.

usage: python attacks/a1_sybil_scaled_copy.py [scale|topk|noise|exact] [rounds] [noise level]
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Site, run

from fedtrail.storage.codec import Compression, encode_update

mode = sys.argv[1] if len(sys.argv) > 1 else "scale"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
level = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002  # noise: times each tensor's std


def sybil(ctx):
    d = ctx.now["h0"]
    if mode == "exact":
        return d, 150
    if mode == "scale":
        return {k: v * 1.01 for k, v in d.items()}, 150
    if mode == "noise":
        g = torch.Generator().manual_seed(ctx.round)
        return {
            k: v + level * v.std() * torch.randn(v.shape, generator=g) for k, v in d.items()
        }, 150
    if mode == "topk":  # same numbers, other codec: topk8 at fraction 1 (int8-quantised)
        blob = encode_update(
            d, spec=SPEC, round=ctx.round, compression=Compression(method="topk8", fraction=1.0)
        ).blob
        return blob, 150
    raise SystemExit(mode)


res = run(
    [
        Site("h0", 150),
        Site("h1", 150),
        Site("h2", 150),
        Site("h3", 150),
        Site("sybil", 0, strategy=sybil, cap=150),
    ],
    rounds=rounds,
)
for i, row in enumerate(res["results"], 1):
    both = row["h0"]["weight"] + row["sybil"]["weight"]
    print(
        f"round {i}: attacker (h0 + sybil) weight {both:.3f}"
        f" vs FedAvg for its one dataset 0.250; sybil reason {row['sybil']['reason']}"
    )
