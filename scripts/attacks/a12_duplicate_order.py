"""A12: who the duplicate rule (``scaled_cosine``, commit order decides the original) zeroes.

usage: python attacks/a12_duplicate_order.py MODE [rounds]
  sybilfirst: the Sybil commits h0's update x 1.01 *before* h0 (commit_first), so h0 is the
    later copy: DUPLICATE, and the Sybil is paid in its place. The pair (h0 + sybil) still
    takes one share (0.250); h0's standing carries the zero.
  frameprev: a data-less attacker commits first a copy (x 1.01) of every honest site's update of
    the round before (public) and, being one address, commits their mean; the honest updates
    of this round are new training, so nobody is framed (prints each honest update's cosine and
    codes cosine to its own previous update: the frame would need above 0.999995).
  spike: the attacker trains honestly on 150 images, adds one coordinate per tensor at 100x the
    tensor's largest change (its int8 codes become 127 there and 0 nearly everywhere else) and
    commits first. Its codes cosine to any honest update is far below 0.999995, so nobody is
    framed; the spike makes it OUTLIER_NORM.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.protocol.duplicates import _flat, codes

mode = sys.argv[1] if len(sys.argv) > 1 else "sybilfirst"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
HONEST = ["h0", "h1", "h2", "h3"]


def cos(a, b):
    return float(a @ b) / float(a.norm() * b.norm())


def sybil(ctx):
    return {k: v * 1.01 for k, v in ctx.now["h0"].items()}, 150


def frameprev(ctx):
    if not ctx.past:
        return None
    prev = ctx.past[-1]
    for nm in HONEST:
        if nm in prev:
            print(
                f"  round {ctx.round} {nm}: cosine to its previous update "
                f"{cos(_flat(ctx.now[nm]), _flat(prev[nm])):.6f}, codes "
                f"{cos(codes(ctx.now[nm]), codes(prev[nm])):.6f}"
            )
    seen = [prev[nm] for nm in HONEST if nm in prev]
    return {k: 1.01 * sum(d[k] for d in seen) / len(seen) for k in seen[0]}, 150


def spike(ctx):
    d = {k: v.clone() for k, v in ctx.now["att"].items()}
    for v in d.values():
        v.view(-1)[0] = 100.0 * float(v.abs().max())
    for nm in HONEST:
        print(
            f"  round {ctx.round} att vs {nm}: codes cosine {cos(codes(d), codes(ctx.now[nm])):.6f}"
        )
    return d, 150


if mode == "sybilfirst":
    sites = [Site(nm, 150) for nm in HONEST] + [
        Site("sybil", 0, strategy=sybil, cap=150, commit_first=True)
    ]
elif mode == "frameprev":
    sites = [Site(nm, 150) for nm in HONEST] + [
        Site("att", 0, strategy=frameprev, cap=150, commit_first=True)
    ]
elif mode == "spike":
    sites = [Site(nm, 150) for nm in HONEST] + [Site("att", 150, strategy=spike, commit_first=True)]
else:
    raise SystemExit(mode)
res = run(sites, rounds=rounds)
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
