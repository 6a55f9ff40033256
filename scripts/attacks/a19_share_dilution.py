"""A19: a sacrificial Sybil dilutes the standing's normalised shares to keep a poisoner paid.

With standing, each round's values become shares ``phi_i / fsum(|phi_j|)`` over every update
that passed the screens, a demoted (``LOW_QUALITY``, weight 0) one included. A data-less Sybil
that sends a large harmful update the screens pass (the direction screen is off by default,
``min_cosine`` -1; the norm screen passes up to 6x the median norm) has a huge negative value
every round, so it takes nearly all of the denominator: every other site's share, the
poisoner's included, shrinks towards 0, and the poisoner's record stops falling. The Sybil
itself is demoted at once, so its update never reaches the global model: it costs nothing.

Sites: three honest 150-image sites; ``att`` (150 images) trains honestly in round 1, then
sends its delta times -B (B default 1: a plain sign flip); ``syb`` (no data, cap 150) from
round 2 sends the previous round's public global delta, sign-flipped and scaled to S times
the median norm of the previous round's revealed updates (S default 4), claiming 150.

usage: python attacks/a19_share_dilution.py MODE [rounds] [B] [S]
  dilute: att and syb; alone: att without the Sybil (control)
  ``SHARE_CLIP=C`` in the environment: an experiment (``harness.py``), the shares' |values|
  clipped at C x the round's median |value| (``scripts/bench/share_clip.py``)
Prints per round every site's game value (the log's ``components.value``), att's and syb's
reason/score/weight and standing, the global model's validation AUC, then ``audit verify``.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.protocol.roundlog import from_bytes

mode = sys.argv[1] if len(sys.argv) > 1 else "dilute"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
b = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
s_ = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0


def att(ctx):
    d = ctx.now["att"]
    if ctx.round == 1:
        return d, 150
    return {k: -b * v for k, v in d.items()}, 150


def _norm(d):
    return float(sum((v.double() ** 2).sum() for v in d.values())) ** 0.5


def syb(ctx):
    if not ctx.past_global:
        return None
    g = ctx.past_global[-1]
    # S times the median norm of the previous round's revealed updates (public), so the norm
    # screen (robust z <= 20: up to ~6x this round's median) keeps passing it
    ref = sorted(_norm(d) for nm, d in ctx.past[-1].items() if nm != "syb")
    target = s_ * ref[len(ref) // 2]
    f = target / _norm(g)
    return {k: -f * v for k, v in g.items()}, 150


sites = [Site(f"h{i}", 150) for i in range(3)] + [Site("att", 150, strategy=att)]
if mode == "dilute":
    sites.append(Site("syb", 0, strategy=syb, cap=150))


def fmt(x):
    return "None" if x is None else f"{x:+.4f}"


res = run(sites, rounds=rounds)
fed, store = res["fed"], res["store"]
addr = {s.name: s.account.address for s in fed.sites}
for i, row in enumerate(res["results"], 1):
    info = fed.ledger.get_round(i)
    doc = from_bytes(store.get(info.log_cid, info.log_sha256))
    st = doc.get("standing") or {}
    parts = []
    for nm in ("att", "syb"):
        if nm in row:
            r = row[nm]
            share = (st.get("normalised") or {}).get(addr[nm])
            after = (st.get("after") or {}).get(addr[nm])
            parts.append(
                f"{nm} {r['reason']} score {r['score']:.3f} weight {r['weight']:.3f} "
                f"share {fmt(share)} standing {fmt(after)}"
            )
    honest = [(st.get("normalised") or {}).get(addr[f"h{j}"]) for j in range(3)]
    by_addr = {e["site"]: e for e in doc["sites"]}
    values = {
        nm: (by_addr.get(a) or {}).get("components", {}).get("value") for nm, a in addr.items()
    }
    print(f"round {i} game values " + " ".join(f"{k} {v!r}" for k, v in values.items()))
    print(
        f"round {i}: "
        + "; ".join(parts)
        + f"; honest shares {[None if x is None else round(x, 4) for x in honest]}"
        + f"; global val AUC {doc['metrics']['after']['auc']:.4f}"
    )
