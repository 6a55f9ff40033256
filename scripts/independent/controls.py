#!/usr/bin/env python3
# ruff: noqa: E501  (long f-string report lines)
"""Negative controls for reader.py on a finished federation: plausible misreadings of the
README's rules must NOT reproduce the on-chain global hash (else the check would be vacuous).

    scripts/independent/controls.py --rpc-url URL --deployment deployment.json --ipfs http://HOST:PORT --round R
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from web3 import Web3

sys.path.insert(0, str(Path(__file__).parent))
import reader as R

ap = argparse.ArgumentParser()
ap.add_argument("--rpc-url")
ap.add_argument("--deployment")
ap.add_argument("--ipfs")
ap.add_argument("--round", type=int, default=2)
a = ap.parse_args()
dep = json.loads(Path(a.deployment).read_text())
w3 = Web3(Web3.HTTPProvider(a.rpc_url))
c = w3.eth.contract(address=dep["address"], abi=json.loads(R.ARTIFACT.read_text())["abi"])
ipfs = R.Ipfs(R.ipfs_url(a.ipfs))
r = a.round
ro = next(
    e for e in c.events.RoundOpened.get_logs(from_block=dep["block_number"]) if e.args.round == r
)
terms = json.loads(ipfs.cat(ro.args.termsCid))
_, _, start = R.parse_safetensors(ipfs.cat(ro.args.modelCid))
shapes = {k: v.shape for k, v in start.items()}
deltas, weights = {}, {}
for e in c.events.UpdateSubmitted.get_logs(from_block=dep["block_number"]):
    if e.args.round != r:
        continue
    s = e.args.site.lower()
    _, meta, t = R.parse_safetensors(ipfs.cat(e.args.cid))
    deltas[s] = R.decode_update(t, json.loads(meta["fedtrail"]), shapes)
    weights[s] = c.functions.getSubmission(r, e.args.site).call()[7]
onchain = c.functions.getRound(r).call()[9].hex()
text = json.dumps(
    {
        "compression": {"method": "none"},
        "format_version": 1,
        "kind": "model",
        "round": r,
        "spec_hash": terms["spec_hash"],
    },
    sort_keys=True,
    separators=(",", ":"),
)
H = lambda g: R.sha(R.canonical(g, text))  # noqa: E731
order = sorted(deltas, key=lambda x: int(x, 16))


def agg(coef, order, cast_once=False):
    out = {}
    for n, g in start.items():
        acc = np.zeros(g.shape)
        for s in order:
            acc = acc + np.float64(coef(weights[s])) * deltas[s][n].astype(np.float64)
        out[n] = (
            (g.astype(np.float64) + acc).astype(np.float32)
            if cast_once
            else (g.astype(np.float64) + acc.astype(np.float32).astype(np.float64)).astype(
                np.float32
            )
        )
    return out


variants = {
    "documented (w/10**18, address order, two casts)": agg(lambda w: w / 10**18, order),
    "float(w)/1e18 (double rounding)": agg(lambda w: float(w) / 1e18, order),
    "commit/reverse address order": agg(lambda w: w / 10**18, order[::-1]),
    "one cast only (no float32 of the delta)": agg(lambda w: w / 10**18, order, cast_once=True),
}
for k, g in variants.items():
    print(f"{H(g) == onchain!s:<5} {H(g)[:16]}  {k}")
print(f"on-chain {onchain[:16]}")

# ---------------------------------------------------------------- the reasons' rules (h-167)
# Each documented rule must flag a planted case and leave the real round alone; each misreading
# named below must give a different answer (else the check it backs would be vacuous).
print(f"\nrule controls (round {r})")
spec = terms["model_spec"]
layout = R.readme_layout()(spec)
order_l = [n for n, _ in layout]
by_name = json.dumps(
    {"spec": spec, "tensors": [[n, list(start[n].shape), "float32"] for n in sorted(start)]},
    sort_keys=True,
    separators=(",", ":"),
)
print(
    f"{R.spec_hash_of(spec) == terms['spec_hash']!s:<5} spec hash from README layout(spec)\n"
    f"{R.sha(by_name.encode()) == terms['spec_hash']!s:<5} spec hash with tensors in sorted-name order (misreading)"
)
cc = dict(R.LATER_THRESHOLDS)
cc.update(terms["valuation"].get("combiner", {}))
dup = terms.get("duplicates", {})
sites = order
first = sites[0]
x = deltas[first]
items = [(s, s, deltas[s]) for s in sites]  # (site, sha256 stand-in, update)
print(f"{not R.duplicate_copies(items, dup)!s:<5} duplicates: the real updates are no copies")
same = R.duplicate_copies([*items, ("copy", "other", dict(x))], dup)
print(f"{same.get('copy') == first!s:<5} duplicates: a re-encoded exact copy is one")
scaled = {k: v * np.float32(1.5) for k, v in x.items()}
with_s = R.duplicate_copies([*items, ("scaled", "other", scaled)], dup)
without_s = R.duplicate_copies(
    [*items, ("scaled", "other", scaled)], {k: v for k, v in dup.items() if k != "scaled_cosine"}
)
print(
    f"{'scaled' in with_s and 'scaled' not in without_s!s:<5} duplicates: x1.5 copy caught only "
    f"by scaled_cosine (with {'scaled' in with_s}, without {'scaled' in without_s})"
)
if r < 2:
    sys.exit("rule controls need a round with a finalized round before it (--round 2 or later)")
# free-rider references: the previous finalized round's updates and global delta
prev = r - 1
fin = [e for e in c.events.RoundFinalized.get_logs(from_block=dep["block_number"])]
prev_fin = next(e for e in fin if e.args.round == prev)
ro_p = next(
    e for e in c.events.RoundOpened.get_logs(from_block=dep["block_number"]) if e.args.round == prev
)
_, _, start_p = R.parse_safetensors(ipfs.cat(ro_p.args.modelCid))
_, _, glob_p = R.parse_safetensors(ipfs.cat(prev_fin.args.globalCid))
prev_sub = {}
commit_order = []
for e in c.events.UpdateSubmitted.get_logs(from_block=dep["block_number"]):
    if e.args.round == prev:
        _, meta, t = R.parse_safetensors(ipfs.cat(e.args.cid))
        prev_sub[e.args.site.lower()] = R.decode_update(t, json.loads(meta["fedtrail"]), shapes)
        commit_order.append(e.args.site.lower())
cs = Web3.to_checksum_address
refs = [
    (f"{cs(s)}'s update of round {prev}", R.flat_of(prev_sub[s], order_l, True))
    for s in sorted(prev_sub, key=lambda v: int(v, 16))
]
gd = {k: (glob_p[k] - start_p[k]).astype(np.float32) for k in start_p}
refs.append((f"the global delta of round {prev}", R.flat_of(gd, order_l, True)))
counts = {s: c.functions.getSubmission(r, cs(s)).call()[4] for s in sites}
start_norm = R.tensor_norm(start)


ref_updates = [prev_sub[s] for s in sorted(prev_sub, key=lambda v: int(v, 16))] + [gd]


def wide(u):
    return {n: u[n].astype(np.float64) for n in order_l if R.trainable(n)}


def riders(planted):
    now = {s: planted.get(s, deltas[s]) for s in sites}
    return R.free_rider_rule(
        sites,
        {s: R.flat_of(u, order_l, True) for s, u in now.items()},
        refs,
        counts,
        cc,
        start_norm,
        cs,
        tensors={s: wide(u) for s, u in now.items()},
        ref_tensors=[wide(u) for u in ref_updates],
    )[0]


print(f"{not riders({})!s:<5} free riders: none among the real updates")
if first in prev_sub:
    got = riders({first: prev_sub[first]})
    print(
        f"{first in got!s:<5} free riders: resending its previous update is caught ({got.get(first)})"
    )
    half = {k: v * np.float32(0.5) for k, v in prev_sub[first].items()}
    got = riders({first: half})
    print(f"{first in got!s:<5} free riders: half its previous update is caught ({got.get(first)})")
noise = np.random.default_rng(0)
gd_flat = R.flat_of(gd, order_l, True)
sigma = 0.2 * float(np.linalg.norm(gd_flat)) / np.sqrt(gd_flat.size)  # 20% of its norm, i.i.d.
white = {k: (v + sigma * noise.standard_normal(v.shape)).astype(np.float32) for k, v in gd.items()}
got = riders({first: white})
print(
    f"{first in got!s:<5} free riders: the last global delta plus 20% white noise is caught "
    f"(white_noise_z {cc['white_noise_z']}: {got.get(first)})"
)
shaped = {
    k: (v + np.float32(0.2) * np.abs(v) * noise.standard_normal(v.shape)).astype(np.float32)
    for k, v in gd.items()
}
got = riders({first: shaped})
print(
    f"{first in got!s:<5} free riders: the last global delta plus 20% noise shaped like it is caught "
    f"(shaped_noise_z {cc['shaped_noise_z']}: {got.get(first)}; sparse, so left out by the rule: "
    f"{R.sparse(wide(shaped))})"
)
tiny = {k: v * np.float32(1e-3) for k, v in x.items()}
got = riders({first: tiny})
print(f"{first in got!s:<5} free riders: its update x 1e-3 is caught ({got.get(first)})")
standing_block = json.loads(ipfs.cat(next(e for e in fin if e.args.round == r).args.logCid)).get(
    "standing"
)
if standing_block:  # aggregator rounds valued by standing (a peer round's log has none)
    this_log = standing_block["references"]
    by_commit = [f"{cs(s)}'s update of round {prev}" for s in commit_order] + [
        f"the global delta of round {prev}"
    ]
    print(
        f"{[lab for lab, _ in refs] == this_log!s:<5} references in ascending address order equal the log's\n"
        f"{by_commit == this_log!s:<5} references in commit order (the README's old 'chain order') equal the log's"
    )
big = {k: v * np.float32(1e4) for k, v in x.items()}
print(
    f"{R.tensor_norm(big) > 100 * start_norm and not any(R.tensor_norm(deltas[s]) > 100 * start_norm for s in sites)!s:<5} "
    f"size bound: x1e4 update over 100 x the start model's norm {start_norm:.4g}, real ones under"
)


def implausible(ns, self_in):
    out = []
    for i, n in enumerate(ns):
        others = ns[:i] + ns[i + 1 :]
        pool = [*others, n] if self_in else others
        if len(others) >= 2 and n > 10 * R.statistics.median(pool):
            out.append(i)
    return out


ns = [1, 3, 25]
print(
    f"{implausible(ns, True) != implausible(ns, False)!s:<5} IMPLAUSIBLE_SAMPLES: counts {ns} flag "
    f"{implausible(ns, True)} with sample_median_self 1, {implausible(ns, False)} with 0 (the old reader's)"
)

# sites.names: the README's rule (table parsed from README) flags the look-alikes of attack a59,
# the rule without the table misses the Cyrillic one
table = R.readme_homoglyphs()
planted = {"0x01": "hospital-a", "0x02": "hospital-\u0430", "0x03": "Site-1", "0x04": "site-l"}
pairs = R.alike_pairs(planted)
plain = [
    (a, b)
    for a, b in [("0x01", "0x02"), ("0x03", "0x04")]
    if R.name_keys(planted[a], {})[0] == R.name_keys(planted[b], {})[0]
]
print(
    f"{pairs == [('0x01', '0x02'), ('0x03', '0x04')]!s:<5} sites.names: hospital-a ~ hospital-\\u0430 "
    f"and Site-1 ~ site-l by the README's rule ({len(table)} letters)\n"
    f"{('0x01', '0x02') in plain!s:<5} sites.names: without the table (misreading) the Cyrillic a is caught"
)

# peer rounds: the README's rule reproduces the chain's scores; the low median or counting a
# validator's entry for its own update (misreadings) must not
votes = sorted(
    (
        (e.args.validator.lower(), list(e.args.scores))
        for e in c.events.ScoresRevealed.get_logs(from_block=dep["block_number"])
        if e.args.round == r
    ),
    key=lambda v: int(v[0], 16),
)
if votes:
    psites = sorted(deltas, key=lambda v: int(v, 16))
    chain = [c.functions.getSubmission(r, cs(s)).call()[5] for s in psites]
    quorum = int(terms["valuation"].get("quorum", 1))
    before = {}
    for e in c.events.ValidatorRated.get_logs(from_block=dep["block_number"]):
        if e.args.round < r:
            v = e.args.validator.lower()
            before[v] = (e.args.validatorReputation, before.get(v, (0, 0))[1] + 1)
    meds = R.peer_rule(psites, votes, before, quorum, [], 300_000)[0]
    low = [
        sorted(e)[(len(e) - 1) // 2] if e else 0
        for e in ([sc[i] for v, sc in votes if v != s] for i, s in enumerate(psites))
    ]
    with_self = [
        sorted(e)[len(e) // 2] for e in ([sc[i] for _, sc in votes] for i in range(len(psites)))
    ]
    print(
        f"{meds == chain!s:<5} peers: README's high median of the others' entries {meds} (chain {chain})\n"
        f"{low == chain!s:<5} peers: low median (misreading) {low}\n"
        f"{with_self == chain!s:<5} peers: own entry counted (misreading) {with_self}"
    )

# round terms: the real bytes are canonical; a float where an integer is, spaces, or an unknown
# field must not pass
blob = ipfs.cat(ro.args.termsCid)
as_float = blob.replace(b'"round":%d' % r, b'"round":%d.0' % r)
spaced = json.dumps(json.loads(blob), sort_keys=True).encode()
extra = json.loads(blob)
extra["note"] = "x"
print(
    f"{R.canonical_terms(blob)!s:<5} terms: the committed bytes are canonical\n"
    f"{R.canonical_terms(as_float) and not R.float_integers(json.loads(as_float))!s:<5} terms: round written as {r}.0 (refused)\n"
    f"{R.canonical_terms(spaced)!s:<5} terms: default json.dumps spacing (refused)\n"
    f"{not set(extra) - R.TERMS_FIELDS!s:<5} terms: an unknown top-level field (refused)"
)
