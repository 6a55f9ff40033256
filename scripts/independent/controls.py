#!/usr/bin/env python3
# ruff: noqa: E501  (long f-string report lines)
"""Negative controls for reader.py on a finished federation: plausible misreadings of the
README's rules must NOT reproduce the on-chain global hash (else the check would be vacuous).

    scripts/independent/controls.py --rpc-url URL --deployment deployment.json --ipfs http://HOST:PORT --round R

Exits 1 when a documented reading does not reproduce the chain or a planted fault is not caught
(each marked MISSED); a misreading that these data happen not to tell apart is a note, not a miss.
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
MISSED: list[str] = []  # a documented rule that does not reproduce, or a planted fault not caught


def expect(value, want, text, *, fatal=True):
    """Print one control: ``value`` (True/False, as before) and whether it is the one the rule
    needs. ``fatal``: a planted fault (or the documented reading) that must come out as ``want``;
    otherwise a misreading that these data may not exercise (a note, not a miss)."""
    value = bool(value)
    if value == want:
        mark = ""
    elif fatal:
        mark = "  <- MISSED"
        MISSED.append(text)
    else:
        mark = "  (not exercised by these data)"
    print(f"{value!s:<5} {text}{mark}")


def finish():
    print(
        f"\n{'FAIL' if MISSED else 'PASS'}: {len(MISSED)} control(s) missed"
        + "".join(f"\n  - {m}" for m in MISSED)
    )
    sys.exit(1 if MISSED else 0)


ro = next(
    e for e in c.events.RoundOpened.get_logs(from_block=dep["block_number"]) if e.args.round == r
)
terms = json.loads(ipfs.cat(ro.args.termsCid))
_, _, start = R.parse_safetensors(ipfs.cat(ro.args.modelCid))
shapes = {k: v.shape for k, v in start.items()}
deltas, weights, headers, samples, reasons = {}, {}, {}, {}, {}
for e in c.events.UpdateSubmitted.get_logs(from_block=dep["block_number"]):
    if e.args.round != r:
        continue
    s = e.args.site.lower()
    _, meta, t = R.parse_safetensors(ipfs.cat(e.args.cid))
    headers[s] = json.loads(meta["fedtrail"])
    samples[s] = e.args.numSamples
    deltas[s] = R.decode_update(t, headers[s], shapes)
    weights[s] = c.functions.getSubmission(r, e.args.site).call()[7]
    reasons[s] = R.REASONS[c.functions.getSubmission(r, e.args.site).call()[6]]
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
for i, (k, g) in enumerate(variants.items()):
    # the first is the documented rule (must reproduce), the rest misreadings (must not)
    expect(H(g) == onchain, i == 0, f"{H(g)[:16]}  {k}", fatal=i == 0)
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
expect(R.spec_hash_of(spec) == terms["spec_hash"], True, "spec hash from README layout(spec)")
expect(
    R.sha(by_name.encode()) == terms["spec_hash"],
    False,
    "spec hash with tensors in sorted-name order (misreading)",
    fatal=False,
)
cc = dict(R.LATER_THRESHOLDS)
cc.update(terms["valuation"].get("combiner", {}))
dup = terms.get("duplicates", {})
sites = order
first = sites[0]
x = deltas[first]
items = [(s, s, deltas[s]) for s in sites]  # (site, sha256 stand-in, update)
expect(not R.duplicate_copies(items, dup), True, "duplicates: the real updates are no copies")
same = R.duplicate_copies([*items, ("copy", "other", dict(x))], dup)
expect(same.get("copy") == first, True, "duplicates: a re-encoded exact copy is one")
scaled = {k: v * np.float32(1.5) for k, v in x.items()}
with_s = R.duplicate_copies([*items, ("scaled", "other", scaled)], dup)
without_s = R.duplicate_copies(
    [*items, ("scaled", "other", scaled)], {k: v for k, v in dup.items() if k != "scaled_cosine"}
)
expect(
    "scaled" in with_s,
    "scaled_cosine" in dup,
    f"duplicates: x1.5 copy caught by scaled_cosine (terms name it: {'scaled_cosine' in dup})",
)
expect(
    "scaled" in without_s,
    False,
    "duplicates: x1.5 copy caught without scaled_cosine (misreading)",
    fatal=False,
)
# a90: the copy with each tensor's nonzero entries at or below their median magnitude zeroed


def _half(v: np.ndarray) -> np.ndarray:
    nz = np.abs(v[v != 0])
    cut = np.median(nz) if nz.size else 0.0
    return np.where(np.abs(v) > cut, v, np.float32(0))


sparse = {k: _half(v) for k, v in x.items()}
with_p = R.duplicate_copies([*items, ("sparse", "other", sparse)], dup)
without_p = R.duplicate_copies(
    [*items, ("sparse", "other", sparse)],
    {k: v for k, v in dup.items() if k not in ("support_cosine", "support_overlap")},
)
expect(
    "sparse" in with_p,
    "support_cosine" in dup,
    f"duplicates: half-zeroed copy caught by support_cosine (terms name it: "
    f"{'support_cosine' in dup})",
)
expect(
    "sparse" in without_p,
    False,
    "duplicates: half-zeroed copy caught without support_cosine (misreading)",
    fatal=False,
)
# a93: each tensor's largest 10% kept, with noise of 10% of their RMS on those entries


def _top_noisy(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = v.ravel().astype(np.float64)
    n = max(1, int(np.ceil(0.1 * flat.size)))
    keep = np.argsort(-np.abs(flat), kind="stable")[:n]
    keep = keep[flat[keep] != 0]  # a sparse update's own entries only
    out = np.zeros_like(flat)
    rms = float(np.sqrt(np.mean(flat[keep] ** 2)))
    out[keep] = flat[keep] + 0.1 * rms * rng.standard_normal(n)
    return out.astype(np.float32).reshape(v.shape)


noisy_top = {k: _top_noisy(v, np.random.default_rng(93)) for k, v in x.items()}
with_o = R.duplicate_copies([*items, ("kept", "other", noisy_top)], dup)
without_o = R.duplicate_copies(
    [*items, ("kept", "other", noisy_top)],
    {k: v for k, v in dup.items() if k != "support_overlap"},
)
expect(
    "kept" in with_o,
    "support_overlap" in dup,
    f"duplicates: top-10% copy with noise on its kept entries caught by support_overlap "
    f"(terms name it: {'support_overlap' in dup})",
)
expect(
    "kept" in without_o,
    False,
    "duplicates: top-10% noisy copy caught without support_overlap (misreading)",
    fatal=False,
)
# a99: that copy committed before the real updates (its original among them)
first_o = R.duplicate_copies([("kept", "other", noisy_top), *items], dup)
one_way = R.duplicate_copies(
    [("kept", "other", noisy_top), *items],
    {k: v for k, v in dup.items() if k != "either_order"},
)
expect(
    first_o.get("kept") == first and first not in first_o,
    dup.get("either_order") is True and "support_overlap" in dup,
    f"duplicates: that copy committed first caught by either_order, its original unmarked "
    f"(terms name it: {'either_order' in dup})",
)
expect(
    "kept" in one_way,
    False,
    "duplicates: copy committed first caught without either_order (misreading)",
    fatal=False,
)
_rng = np.random.default_rng(1)
a1_noisy = {
    k: (v + np.float32(0.01 * float(np.std(v))) * _rng.standard_normal(v.shape)).astype(np.float32)
    for k, v in x.items()
}
with_w = R.duplicate_copies([*items, ("noisy", "other", a1_noisy)], dup)
without_w = R.duplicate_copies(
    [*items, ("noisy", "other", a1_noisy)],
    {k: v for k, v in dup.items() if k != "white_noise_z"},
)
expect(
    "noisy" in with_w,
    bool(dup.get("white_noise_z")),
    f"duplicates: copy plus 1% of each tensor's std caught by white_noise_z "
    f"(terms name it: {'white_noise_z' in dup})",
)
expect(
    "noisy" in without_w,
    False,
    "duplicates: 1% noisy copy caught without white_noise_z (misreading)",
    fatal=False,
)
# a101: the same noise on every tensor but the largest, left as the original's
_kept = max(x, key=lambda k: np.asarray(x[k]).size)
partial = {k: (x[k] if k == _kept else v) for k, v in a1_noisy.items()}
with_t = R.duplicate_copies([*items, ("partial", "other", partial)], dup)
without_t = R.duplicate_copies(
    [*items, ("partial", "other", partial)],
    {k: v for k, v in dup.items() if k != "shared_tensor"},
)
expect(
    "partial" in with_t,
    bool(dup.get("shared_tensor")) or "partial" in without_t,
    f"duplicates: copy with noise on every tensor but {_kept} caught by shared_tensor "
    f"(terms name it: {'shared_tensor' in dup})",
)
# ... and with that tensor one float32 step away (within relative L2 1e-3, not equal)
nudged = {**partial, _kept: np.nextafter(np.asarray(x[_kept]), np.float32(np.inf))}
expect(
    "nudged" in R.duplicate_copies([*items, ("nudged", "other", nudged)], dup),
    bool(dup.get("shared_tensor")),
    f"duplicates: that copy with {_kept} one float32 step away caught by shared_tensor",
)
if r < 2:
    print("rule controls need a round with a finalized round before it (--round 2 or later)")
    finish()
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
        # README *Free-riders*: updates scored TAMPERED, MALFORMED, NOT_REVEALED (or, from a peer
        # round, PEER_REJECTED, WITHHELD) are no references (before session 51 counted here)
        why_p = R.REASONS[c.functions.getSubmission(prev, e.args.site).call()[6]]
        if why_p in ("TAMPERED", "MALFORMED", "NOT_REVEALED", "PEER_REJECTED", "WITHHELD"):
            continue
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
        # README *Free-riders*: a DP update takes only the DP-copy test (a planted one is plain);
        # before session 51 every real DP update here counted as white noise
        declared={s for s in sites if "dp" in headers[s] and s not in planted},
    )[0]


expect(not riders({}), True, "free riders: none among the real updates")
if first in prev_sub:
    got = riders({first: prev_sub[first]})
    expect(
        first in got,
        True,
        f"free riders: resending its previous update is caught ({got.get(first)})",
    )

    def topk8_half(u):
        """The largest half of each tensor's entries, as int8 codes times its scale (topk8 at
        fraction 0.5, written here from its description: a91's copier)."""
        out = {}
        for k, v in u.items():
            a = np.abs(v.astype(np.float64))
            m = float(a.max()) if a.size else 0.0
            keep = a >= np.median(a) if m > 0 else np.zeros(a.shape, dtype=bool)
            q = np.round(v.astype(np.float64) * (127 / m)) * (m / 127) if m > 0 else a
            out[k] = np.where(keep, q, 0.0).astype(np.float32)
        return out

    sparse_copy = topk8_half(prev_sub[first])
    got = riders({first: sparse_copy})
    sparse_on = cc.get("stale_support_cosine", R.LATER_THRESHOLDS["stale_support_cosine"]) < 1
    expect(
        first in got,
        sparse_on,
        f"free riders: its previous update resent through topk8 at 0.5 is caught by the sparse "
        f"stale test (a91; stale_support_cosine "
        f"{cc.get('stale_support_cosine', 'absent')}: {got.get(first)})",
    )
    if sparse_on:
        off = {**cc, "stale_support_cosine": 1.0}
        now = {s: sparse_copy if s == first else deltas[s] for s in sites}
        got_off = R.free_rider_rule(
            sites,
            {s: R.flat_of(u, order_l, True) for s, u in now.items()},
            refs,
            counts,
            off,
            start_norm,
            cs,
        )[0]
        expect(
            first in got_off,
            False,
            "free riders: without the sparse test (whole-update cosine only) the sparse copy "
            "is caught",
            fatal=False,
        )
    half = {k: v * np.float32(0.5) for k, v in prev_sub[first].items()}
    got = riders({first: half})
    expect(
        first in got, True, f"free riders: half its previous update is caught ({got.get(first)})"
    )
noise = np.random.default_rng(0)
gd_flat = R.flat_of(gd, order_l, True)
sigma = 0.2 * float(np.linalg.norm(gd_flat)) / np.sqrt(gd_flat.size)  # 20% of its norm, i.i.d.
white = {k: (v + sigma * noise.standard_normal(v.shape)).astype(np.float32) for k, v in gd.items()}
got = riders({first: white})
expect(
    first in got,
    cc["white_noise_z"] > 0,
    f"free riders: the last global delta plus 20% white noise is caught "
    f"(white_noise_z {cc['white_noise_z']}: {got.get(first)})",
)
shaped = {
    k: (v + np.float32(0.2) * np.abs(v) * noise.standard_normal(v.shape)).astype(np.float32)
    for k, v in gd.items()
}
got = riders({first: shaped})
caught_or_exempt = (
    first in got or cc["shaped_noise_z"] <= 0 or R.sparse(wide(shaped))
)  # README: the shaped test skips a sparse update (the white test may still catch it)
expect(
    caught_or_exempt,
    True,
    f"free riders: the last global delta plus 20% noise shaped like it is caught unless sparse "
    f"(shaped_noise_z {cc['shaped_noise_z']}: {got.get(first)}; sparse, so left out by the rule: "
    f"{R.sparse(wide(shaped))})",
)
tiny = {k: v * np.float32(1e-3) for k, v in x.items()}
got = riders({first: tiny})
expect(first in got, True, f"free riders: its update x 1e-3 is caught ({got.get(first)})")
standing_block = json.loads(ipfs.cat(next(e for e in fin if e.args.round == r).args.logCid)).get(
    "standing"
)
if standing_block:  # aggregator rounds valued by standing (a peer round's log has none)
    # the previous round's references lead the log's (newest first; with stale_rounds above 1
    # older rounds' follow, which these controls do not rebuild)
    this_log = standing_block["references"][: len(refs)]
    by_commit = [f"{cs(s)}'s update of round {prev}" for s in commit_order] + [
        f"the global delta of round {prev}"
    ]
    expect(
        [lab for lab, _ in refs] == this_log,
        True,
        "references in ascending address order equal the log's",
    )
    expect(
        by_commit == this_log,
        False,
        "references in commit order (the README's old 'chain order') equal the log's",
        fatal=False,
    )
# README *Size bound*: the largest real update scaled to twice the bound (100 x the start
# model's norm) is over it, scaled to half of it under, the real ones under. Before session 52
# the plant was the first update x1e4 whatever its size: on a93's honest chain (sparse topk8
# updates) that stayed under the bound and the control was reported missed, the control's fault
norms = {s: R.tensor_norm(deltas[s]) for s in sites}
bound = 100 * start_norm
base = max(sites, key=lambda s: norms[s])
if norms[base] > 0 and bound > 0:

    def scaled_to(f):
        return {k: v * np.float32(f * bound / norms[base]) for k, v in deltas[base].items()}

    expect(
        R.tensor_norm(scaled_to(2.0)) > bound
        and not R.tensor_norm(scaled_to(0.5)) > bound
        and not any(n > bound for n in norms.values()),
        True,
        f"size bound: the largest update (norm {norms[base]:.4g}) scaled to 2x 100 x the start "
        f"model's norm {start_norm:.4g} is over it, to 0.5x under, the real ones under",
    )
else:
    print(f"size bound: not exercised (largest update norm {norms[base]:.4g}, bound {bound:.4g})")


def implausible(ns, self_in):
    out = []
    for i, n in enumerate(ns):
        others = ns[:i] + ns[i + 1 :]
        pool = [*others, n] if self_in else others
        if len(others) >= 2 and n > 10 * R.statistics.median(pool):
            out.append(i)
    return out


ns = [1, 3, 25]
expect(
    implausible(ns, True) != implausible(ns, False),
    True,
    f"IMPLAUSIBLE_SAMPLES: counts {ns} flag "
    f"{implausible(ns, True)} with sample_median_self 1, {implausible(ns, False)} with 0 (the old reader's)",
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
expect(
    pairs == [("0x01", "0x02"), ("0x03", "0x04")],
    True,
    f"sites.names: hospital-a ~ hospital-\\u0430 and Site-1 ~ site-l by the README's rule "
    f"({len(table)} letters)",
)
expect(
    ("0x01", "0x02") in plain,
    False,
    "sites.names: without the table (misreading) the Cyrillic a is caught",
    fatal=False,
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
    expect(
        meds == chain,
        True,
        f"peers: README's high median of the others' entries {meds} (chain {chain})",
    )
    expect(low == chain, False, f"peers: low median (misreading) {low}", fatal=False)
    expect(
        with_self == chain, False, f"peers: own entry counted (misreading) {with_self}", fatal=False
    )

# round terms: the real bytes are canonical; a float where an integer is, spaces, or an unknown
# field must not pass
blob = ipfs.cat(ro.args.termsCid)
as_float = blob.replace(b'"round":%d' % r, b'"round":%d.0' % r)
spaced = json.dumps(json.loads(blob), sort_keys=True).encode()
extra = json.loads(blob)
extra["note"] = "x"
expect(R.canonical_terms(blob), True, "terms: the committed bytes are canonical")
expect(
    R.canonical_terms(as_float) and not R.float_integers(json.loads(as_float)),
    False,
    f"terms: round written as {r}.0 (refused)",
)
expect(R.canonical_terms(spaced), False, "terms: default json.dumps spacing (refused)")
expect(not set(extra) - R.TERMS_FIELDS, False, "terms: an unknown top-level field (refused)")

# sites.registry (README *Registry changes inside a round*, a65): planted registry histories.
# Sites a, b, c registered in block 1, the round opened at (5, 0), reveal deadline 100.
REG = [((1, 0), "registered", "0xa", None), ((1, 1), "registered", "0xb", None)]
REG.append(((1, 2), "registered", "0xc", None))
STAMPS = {1: 10, 4: 40, 5: 50, 6: 60, 7: 100, 8: 101, 9: 160, 10: 161}


def registry(moves, revealed=("0xa", "0xb"), declined=(), voted=(), phase=3, paid=True, peer=False):
    until = 160 if peer else 100
    ok, _detail = R.registry_rule(
        (5, 0),
        REG + moves,
        STAMPS,
        100,
        until,
        set(revealed),
        set(declined),
        set(voted),
        phase,
        paid,
        peer,
    )
    return ok


expect(registry([]), True, "sites.registry: no move passes")
expect(
    not registry([((6, 0), "removed", "0xc", None)]),
    True,
    "sites.registry: c removed inside the round, no reveal, round paid: fails",
)
expect(
    not registry([((5, 1), "cap", "0xc", 1)]),
    True,
    "sites.registry: a cap in the opening block after RoundOpened's log counts",
)
expect(
    not registry([((7, 0), "budget", "0xc", 10**6)]),
    True,
    "sites.registry: a budget in a block stamped exactly at the reveal deadline counts",
)
expect(
    registry([((8, 0), "removed", "0xc", None)]),
    True,
    "sites.registry: a removal in the next block (stamped past the deadline) does not",
)
expect(
    registry([((6, 0), "cap", "0xb", 300)]),
    True,
    "sites.registry: a cap raised on a site that revealed is named, not failed (a65 raise)",
)
expect(
    registry([((4, 0), "removed", "0xc", None)]),
    True,
    "sites.registry: a removal before the round opened is no move (c takes no part)",
)
expect(
    registry([((5, 1), "registered", "0xd", None), ((6, 0), "removed", "0xd", None)]),
    True,
    "sites.registry: a site registered after RoundOpened is no participant",
)
expect(
    registry([((6, 0), "removed", "0xc", None)], declined=("0xc",)),
    True,
    "sites.registry: a site that declined the terms is not kept out",
)
expect(
    registry([((6, 0), "removed", "0xc", None)], paid=False),
    True,
    "sites.registry: a round that paid nobody only names the move",
)
expect(
    registry([((6, 0), "removed", "0xc", None)], phase=4),
    True,
    "sites.registry: a cancelled round only names the move",
)
expect(
    not registry(
        [((9, 0), "removed", "0xa", None)],
        revealed=("0xa", "0xb", "0xc"),
        voted=("0xb", "0xc"),
        peer=True,
    ),
    True,
    "sites.registry: peer round, validator a removed at the score reveal deadline, no vector: fails",
)
expect(
    registry(
        [((10, 0), "removed", "0xa", None)],
        revealed=("0xa", "0xb", "0xc"),
        voted=("0xb", "0xc"),
        peer=True,
    ),
    True,
    "sites.registry: peer round, removed after the score reveal deadline: passes",
)
expect(
    registry(
        [((9, 0), "cap", "0xa", 5)], revealed=("0xa", "0xb", "0xc"), voted=("0xb", "0xc"), peer=True
    ),
    True,
    "sites.registry: peer round, a cap after the reveal deadline voids no vector: passes",
)

# privacy.spend (README *Privacy spend*, *The privacy accountant, exactly*): planted declarations
ACCT = R.readme_accountant()
DP = {
    "accountant": "rdp",
    "delta": 1e-05,
    "max_grad_norm": 1.0,
    "noise_multiplier": 1.0,
    "sample_rate": 32 / 150,
    "steps": 5,
}
TRUE = ACCT["declared_micro"](DP, [], 0)
COMP = [{**DP, "accounting": "composed", "noise_multiplier": m} for m in (1.2, 0.8)]
FIRST = ACCT["declared_micro"](COMP[0], [], 0)
SECOND = ACCT["declared_micro"](COMP[1], COMP[:1], FIRST)


def spend(declared, dp=DP, samples=150, terms_delta=1e-05, earlier=([], 0)):
    out = R.privacy_rule(
        ACCT,
        {"privacy": {"delta": terms_delta, "required": False}},
        {"0xa"},
        {"0xa"},
        {"0xa": dp},
        {"0xa": samples},
        {"0xa": 1},
        [("0xa", declared)],
        lambda site: earlier,
    )
    return out[0][1]


expect(spend(TRUE), True, f"privacy.spend: the true summed spend ({TRUE} micro) passes")
expect(not spend(TRUE - 1), True, "privacy.spend: one micro-epsilon less fails")
expect(
    not spend(TRUE, terms_delta=1e-4), True, "privacy.spend: another delta than the terms' fails"
)
expect(not spend(TRUE, samples=10**6), True, "privacy.spend: delta above 1 / n fails")
expect(
    not spend(ACCT["declared_micro"]({**DP, "steps": 7}, [], 0), dp={**DP, "steps": 7}),
    True,
    "privacy.spend: steps that are not whole epochs fail",
)
expect(
    spend(SECOND, dp=COMP[1], earlier=(COMP[:1], FIRST)),
    True,
    f"privacy.spend: the composed increment ({SECOND} micro after {FIRST}) passes",
)
expect(
    not spend(
        ACCT["declared_micro"]({**COMP[1], "accounting": "summed"}, [], 0),
        dp=COMP[1],
        earlier=(COMP[:1], FIRST),
    ),
    True,
    "privacy.spend: a composed update declaring its own epsilon (summed) fails",
)
expect(
    not spend(SECOND, dp=COMP[1], earlier=(None, 0)),
    True,
    "privacy.spend: a composed history with an unreadable earlier update fails",
)
# privacy.noise (README *Privacy noise*, *The noise check, exactly*): the README's check on this
# round's updates, and planted ones
NOISE = R.readme_noise()
LAYOUT = [name for name, _ in R.readme_layout()(terms["model_spec"])]


def lists(update):
    return [update[n].astype(np.float64).ravel().tolist() for n in LAYOUT]


for s_, h in sorted(headers.items()):
    if "dp" in h and h["compression"]["method"] == "none":
        lacks = NOISE["noise_breach"](lists(deltas[s_]), h["dp"], samples[s_], "none")
        expect(
            not lacks or (reasons[s_] in ("MALFORMED", "DUPLICATE") and weights[s_] == 0),
            True,
            f"privacy.noise: {s_[:10]}'s DP update of round {r} "
            + (
                f"lacks its noise and the chain zeroed it ({reasons[s_]})"
                if lacks
                else f"carries its noise ({reasons[s_]} on chain)"
            ),
        )
plain = [s_ for s_, h in sorted(headers.items()) if "dp" not in h]
if plain:  # at noise_multiplier 1 a 5-step plan allows about sqrt(P) noise units: no verdict
    LOUD = {**DP, "noise_multiplier": 10.0}
    need = NOISE["needed_signal"](lists(deltas[plain[0]]))
    allow = NOISE["allowed_signal"](LOUD, samples[plain[0]])
    expect(
        NOISE["noise_breach"](lists(deltas[plain[0]]), LOUD, samples[plain[0]], "none"),
        True,
        f"privacy.noise: {plain[0][:10]}'s plain update declared as DP-SGD at noise multiplier 10 "
        f"lacks its noise (needs {need:.1f} noise units, allowed {allow:.1f})",
    )
else:
    print("(no plain update in this round: the plain-update-declared-DP control is not run)")
rng = np.random.default_rng(0)
gauss = [(rng.standard_normal(len(t)) * 1e-3).tolist() for t in lists(deltas[order[0]])]
expect(
    not NOISE["noise_breach"](gauss, DP, 150, "none"), True, "privacy.noise: Gaussian noise passes"
)
expect(
    NOISE["noise_breach"](gauss, DP, 150, "topk8"),
    True,
    "privacy.noise: a topk8 DP update lacks its noise, whatever its values",
)
layered = [[v * 10.0 ** (i % 4 - 2) for v in t] for i, t in enumerate(gauss)]
expect(
    NOISE["noise_breach"](layered, DP, 150, "none"),
    True,
    "privacy.noise: noise of another scale in each tensor lacks its noise",
)
expect(
    not NOISE["noise_breach"](layered, None, 150, "none"),
    True,
    "privacy.noise: an update without dp has nothing to check",
)


# privacy.scored (README *Privacy scored*): planted spend breaches and scorings
def breach(declared, dp=DP, n=150, earlier=([], 0), asked=None):
    return R.spend_breach(ACCT, asked, dp, declared, n, earlier)


expect(breach(TRUE) is None, True, "privacy.scored: the true summed spend is no breach")
expect(breach(TRUE - 1) == "DIFFERS", True, "privacy.scored: one micro-epsilon less is DIFFERS")
expect(
    breach(TRUE, asked={"delta": 1e-4}) == "WRONG DELTA",
    True,
    "privacy.scored: another delta than the terms' is WRONG DELTA",
)
expect(
    breach(TRUE, dp={**DP, "sample_rate": 1e-9}) == "SAMPLING IMPLAUSIBLE",
    True,
    "privacy.scored: a sample rate of 1e-9 is SAMPLING IMPLAUSIBLE (a68)",
)
expect(breach(5, dp=None) == "NO DP PARAMETERS", True, "privacy.scored: a spend without dp")
expect(
    breach(SECOND, dp=COMP[1], earlier=(["unbacked"], FIRST)) == "EARLIER SPEND UNBACKED",
    True,
    "privacy.scored: a composed history over a plain earlier reveal is UNBACKED (a11)",
)
expect(
    breach(SECOND, dp=COMP[1], earlier=(["unavailable"], FIRST)) == "EARLIER SPEND UNAVAILABLE",
    True,
    "privacy.scored: a composed history over a withheld earlier blob is UNAVAILABLE (a11)",
)
expect(
    breach(SECOND, dp=COMP[1], earlier=(["unreadable"], FIRST)) is None,
    True,
    "privacy.scored: an earlier blob missing from this store only is no breach",
)


def scored(**changes):
    """One DP update that reads, planted as the chain would score it; (scored ok, noise ok)."""
    u = {"reads": True, "dp": DP, "lacks": False, "breach": None, "weight": 10**18, "reason": "OK"}
    u.update(changes)
    got = {k: ok for k, ok, _ in R.dp_scored_rule(True, True, False, None, True, {"0xa": u})}
    return got["privacy.scored"], got["privacy.noise"]


expect(scored() == (True, True), True, "privacy.scored/noise: an honest weighted DP update passes")
expect(
    scored(breach="DIFFERS") == (False, True), True, "privacy.scored: a weighted spend breach fails"
)
expect(
    scored(breach="DIFFERS", weight=0, reason="MALFORMED") == (True, True),
    True,
    "privacy.scored: a spend breach scored MALFORMED with weight 0 passes",
)
expect(
    scored(lacks=True) == (True, False),
    True,
    "privacy.noise: a weighted DP update lacking its noise fails",
)
expect(
    scored(weight=0, reason="MALFORMED") == (False, False),
    True,
    "privacy.scored/noise: an honest DP update zeroed as MALFORMED fails both",
)
expect(
    scored(lacks=True, weight=0, reason="LOW_QUALITY") == (True, False),
    True,
    "privacy.noise: a DP update lacking its noise zeroed under another reason fails",
)
# log.status (README *Log status*): planted statuses
MAL = R.REASONS.index("MALFORMED")
expect(
    R.status_rule(
        {"0xa": {"status": "malformed"}},
        {"0xa": "malformed"},
        {"0xa": (True, 1, 0, MAL, 0)},
        True,
        ["0xa"],
    )[0],
    True,
    "log.status: a MALFORMED update logged malformed, read malformed, passes",
)
expect(
    R.status_rule(
        {"0xa": {"status": "ok"}}, {"0xa": "ok"}, {"0xa": (True, 1, 0, MAL, 0)}, True, ["0xa"]
    )[0],
    False,
    "log.status: a MALFORMED update logged ok fails (read ok here: the aggregator called it unreadable)",
)
expect(
    R.status_rule({"0xa": {"status": "ok"}}, {}, {"0xa": (True, 1, 0, MAL, 0)}, True, ["0xa"])[0],
    False,
    "log.status: a MALFORMED update logged ok fails even when this reader cannot fetch it",
)
expect(
    R.status_rule(
        {"0xa": {"status": "ok"}}, {"0xa": "malformed"}, {"0xa": (True, 1, 0, 0, 0)}, True, ["0xa"]
    )[0],
    False,
    "log.status: an update logged ok, OK on chain, that lacks its noise here fails",
)
REJ = R.REASONS.index("PEER_REJECTED")
for status, read_then, ok in (
    ("tampered", set(), False),
    ("malformed", set(), True),
    ("duplicate", set(), True),
    ("malformed", {"0xa"}, False),
):
    expect(
        R.status_rule(
            {"0xa": {"status": status}},
            {"0xa": "ok"},
            {"0xa": (True, 1, 0, REJ, 0)},
            False,
            ["0xa"],
            read_then,
        )[0],
        ok,
        f"log.status: a peer round's PEER_REJECTED update that reads ok here, logged {status}, "
        f"{'read' if read_then else 'not read'} while scored",
    )
finish()
