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
