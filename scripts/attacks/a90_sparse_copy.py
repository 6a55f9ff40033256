"""A90: **site** (a Sybil pair): the copy sent sparse. The attacker runs one real site (``h0``,
trains honestly) and a second registered address (``sybil``, no data, cap 150) that commits,
in the same round and after ``h0``, ``h0``'s update re-encoded through ``topk8`` at a fraction
the sybil picks itself (the fraction is the blob's, bounded only to (0, 1]). ``a1``'s ``topk``
mode recoded at fraction 1, whose int8 codes equal the original's; below about 0.7 the dropped
entries move both cosines the duplicate rule compares (plain and codes) under
``scaled_cosine`` (0.999995; measured on the bundled data: fraction 0.5 codes cosine 0.99887,
0.3 0.99491), while on the entries it did send the copy's codes equal the original's exactly.

Modes: ``attack [FRACTION] [ROUNDS]`` (default 0.5, 2 rounds) and ``honest`` (the sybil trains
on 150 images of its own and sends them through ``topk8`` at the same fraction: a control that
a sparse update of other data is not marked). Four honest sites of 150 beside it.

``BEFORE=1``: the duplicate rule before ``support_cosine`` (the aggregator's and the audit's
``find_duplicates`` called with it dropped from the terms' rule), to measure the old behaviour
on this tree; ``BEFORE=aggregator``: the aggregator's only (an aggregator on the old rule under
terms that name the key, against today's ``audit verify``).

usage: scripts/attacks/real.sh scripts/attacks/a90_sparse_copy.py attack [0.5] [2]
Exits 1 when the sybil's copy is paid (weight > 0) in any round with ``audit verify`` passing
(the attack works undetected), 0 otherwise; ``honest`` exits 0 when the sybil is paid and
verify passes, 1 otherwise.
"""

import os
import sys
from dataclasses import replace

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, run

import fedtrail.auditor.verify as verify
import fedtrail.valuation.candidates as candidates
from fedtrail.storage.codec import Compression, encode_update

if os.environ.get("BEFORE"):  # BEFORE=aggregator: the aggregator's only (verify's rule is new)
    _find = candidates.find_duplicates

    def _old_rule(entries, rule, **kwargs):  # terms without support_cosine (nor what came after)
        return _find(entries, replace(rule, support_cosine=None, support_overlap=None), **kwargs)

    candidates.find_duplicates = _old_rule
    if os.environ["BEFORE"] != "aggregator":
        verify.find_duplicates = _old_rule
    print(f"BEFORE={os.environ['BEFORE']}: duplicates judged without support_cosine")

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack or honest")
FRACTION = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 2


def sparse(ctx):
    source = ctx.now["h0"] if MODE == "attack" else ctx.now["sybil"]
    blob = encode_update(
        source,
        spec=SPEC,
        round=ctx.round,
        compression=Compression(method="topk8", fraction=FRACTION),
    ).blob
    return blob, 150


sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("h3", 150)]
if MODE == "attack":
    sites.append(Site("sybil", 0, strategy=sparse, cap=150))
else:  # trains on its own 150 images; the strategy only re-encodes them
    sites.append(Site("sybil", 150, strategy=sparse, cap=150))
res = run(sites, rounds=ROUNDS, real=True)
paid = []
for i, row in enumerate(res["results"], 1):
    syb = row.get("sybil", {})
    both = row["h0"]["weight"] + syb.get("weight", 0.0)
    print(
        f"round {i}: h0 + sybil weight {both:.3f} (one dataset's FedAvg share 0.250); "
        f"sybil {syb.get('reason')} weight {syb.get('weight', 0.0):.3f}"
    )
    if syb.get("weight", 0.0) > 0:
        paid.append(i)
ok = bool(res["audit_ok"])
print(f"mode {MODE}, fraction {FRACTION}: sybil paid in rounds {paid}; audit verify", ok)
if MODE == "attack":
    sys.exit(1 if paid and ok else 0)
sys.exit(0 if len(paid) == ROUNDS and ok else 1)
