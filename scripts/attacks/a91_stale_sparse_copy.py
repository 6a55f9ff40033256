"""A91: **site** (a data-less free-rider, cap 150): from round 2 it resends the previous
round's public update of ``h0`` through ``topk8`` at a fraction it picks itself (0.5 by
default). The stale screen (``stale_cosine`` 0.99999 to one reference) and the white- and
shaped-noise tests judge the whole update: ``a2``'s ``topk`` mode recoded at fraction 1 and was
``FREE_RIDER`` only just (README: "a copier with a coarser codec would pass"); a copy that
leaves out half the entries is 0.97-0.98 from its reference, while on the entries it keeps it
is the reference's codes exactly.

Modes: ``attack [FRACTION] [ROUNDS]`` (default 0.5, 3 rounds) and ``honest`` (the same site
trains on 150 images of its own and sends them through ``topk8`` at that fraction: a sparse
honest update must stay paid). Four honest sites of 150 beside it, on Anvil + IPFS.

usage: scripts/attacks/real.sh scripts/attacks/a91_stale_sparse_copy.py attack [0.5] [3]
Exits 1 when the free-rider is paid (weight > 0) in any round from 2 on with ``audit verify``
passing (the attack works undetected), 0 otherwise; ``honest`` exits 0 when the site is paid
in every round and verify passes.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, run

from fedtrail.storage.codec import Compression, encode_update

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack or honest")
FRACTION = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3


def rider(ctx):
    if MODE == "attack":
        if not ctx.past or "h0" not in ctx.past[-1]:
            return None  # round 1: nothing public to resend
        source = ctx.past[-1]["h0"]
    else:
        source = ctx.now["rider"]
    blob = encode_update(
        source,
        spec=SPEC,
        round=ctx.round,
        compression=Compression(method="topk8", fraction=FRACTION),
    ).blob
    return blob, 150


sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("h3", 150)]
sites.append(Site("rider", 0 if MODE == "attack" else 150, strategy=rider, cap=150))
res = run(sites, rounds=ROUNDS, real=True)
paid = []
for i, row in enumerate(res["results"], 1):
    r = row.get("rider")
    if r is None:
        print(f"round {i}: rider sent nothing")
        continue
    print(f"round {i}: rider {r['reason']} score {r['score']:.3f} weight {r['weight']:.3f}")
    if r["weight"] > 0:
        paid.append(i)
ok = bool(res["audit_ok"])
print(f"mode {MODE}, fraction {FRACTION}: rider paid in rounds {paid}; audit verify", ok)
if MODE == "attack":
    sys.exit(1 if [p for p in paid if p >= 2] and ok else 0)
sys.exit(0 if len(paid) == ROUNDS and ok else 1)
