"""A99: **site** (a Sybil pair): the sparse copy committed *before* its original. The attacker
runs one real site (``h0``, trains honestly) and a second registered address (``sybil``, no
data, cap 150) that commits, in the same round and *before* ``h0`` (``commit_first``), ``h0``'s
update sent through ``topk8`` at a fraction it picks (0.5 by default: a90's copy) and, with
LEVEL > 0, Gaussian noise of LEVEL times the copy's norm added to the entries it keeps (a93's
copy: the same entries stay nonzero). The sparse tests (``support_cosine``, ``support_overlap``)
read a *later* sparse update against an earlier one, so before ``duplicates.either_order`` the
earlier sparse copy was nobody's copy and ``h0``, dense, repeats none of its entries: both paid.

Modes: ``attack [FRACTION] [LEVEL] [ROUNDS]`` (default 0.5, 0, 2 rounds; ``0.1 0.05``: a93's
noisy copy), ``honest`` (the sybil trains on 150 images of its own and commits them first
through ``topk8`` at the same fraction with the same noise: a control that a sparse update
committed first is not marked and marks nobody, the dense honest sites included) and
``frame`` (the attacker flipping it: a data-less address commits first, from round 2,
``h0``'s public update of the round before sent sparse the same way, to get ``h0``'s new
dense update marked its copy; default 3 rounds) and ``stale`` (the reversal across rounds,
which ``either_order`` does not touch: the sybil trains on 150 images and commits them through
``topk8`` at the fraction, and a second data-less address ``rider`` commits from round 2 the
sybil's *dense* update of the round before, whose sparse version is public; the stale screen's
sparse tests read a current sparse update against a past reference only; default 3 rounds).
Four honest sites of 150 beside it (``h0`` dense). Every mode also asserts that ``h0`` (the
dense original) is never DUPLICATE: the honest site whose update is copied keeps its score.

``BEFORE=1``: the duplicate rule without ``either_order`` (the aggregator's and the audit's
``find_duplicates`` called with it dropped from the terms' rule), to measure the old behaviour
on this tree.

usage: scripts/attacks/real.sh scripts/attacks/a99_sparse_copy_first.py attack [0.5] [0] [2]
``stale`` exits 1 when the rider is paid in a round with verify passing, 0 otherwise.
Exits 1 when the sybil's copy is paid (weight > 0) in any round with ``audit verify`` passing
(the attack works undetected) or ``h0`` is marked DUPLICATE, 0 otherwise (``frame``: 1 when
an honest site is marked DUPLICATE, 0 otherwise); ``honest`` exits 0
when the sybil is paid in every round, nobody is DUPLICATE and verify and the independent reader
pass, 1 otherwise. The reader (``scripts/independent/reader.py``) replays the chain after each
run but ``BEFORE``.
"""

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Site, run

import fedtrail.auditor.verify as verify
import fedtrail.valuation.candidates as candidates
from fedtrail.protocol.terms import DuplicateRule
from fedtrail.storage.codec import Compression, decode_update, encode_update

if os.environ.get("BEFORE"):
    _find = candidates.find_duplicates

    def _old_rule(entries, rule, **kw):  # the rule of terms without either_order
        if "either_order" in {f.name for f in fields(DuplicateRule)}:
            rule = replace(rule, either_order=None)
        return _find(entries, rule, **kw)

    candidates.find_duplicates = _old_rule
    verify.find_duplicates = _old_rule
    print("BEFORE=1: duplicates judged without either_order (sparse tests one way)")

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest", "frame", "stale"):
    sys.exit(f"unknown mode {MODE!r}: attack, honest, frame or stale")
FRACTION = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
LEVEL = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else (3 if MODE in ("frame", "stale") else 2)


def topk8(delta, r):
    comp = Compression(method="topk8", fraction=FRACTION)
    return encode_update(delta, spec=SPEC, round=r, compression=comp).blob


def sparse_first(ctx):
    if MODE == "frame":
        if not ctx.past or "h0" not in ctx.past[-1]:
            return None  # round 1: nothing public to resend
        source = ctx.past[-1]["h0"]
    else:
        source = ctx.now["h0"] if MODE == "attack" else ctx.now["sybil"]
    if not LEVEL:
        return topk8(source, ctx.round), 150
    copy = decode_update(topk8(source, ctx.round), spec=SPEC, expected_round=ctx.round)[0]
    flat = torch.cat([v.reshape(-1).double() for v in copy.values()])
    kept = int((flat != 0).sum())
    sd = LEVEL * float(flat.norm()) / max(kept, 1) ** 0.5
    g = torch.Generator().manual_seed(9900 + ctx.round)
    out = {
        k: torch.where(v != 0, v + (sd * torch.randn(v.shape, generator=g)).to(v.dtype), v)
        for k, v in copy.items()
    }
    return topk8(out, ctx.round), 150


KEPT: dict[int, object] = {}  # stale: the sybil's dense update by round


def sparse_own(ctx):
    KEPT[ctx.round] = ctx.now["sybil"]
    return topk8(ctx.now["sybil"], ctx.round), 150


def dense_resend(ctx):
    if ctx.round - 1 not in KEPT:
        return None  # round 1: nothing to resend
    return KEPT[ctx.round - 1], 150


sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("h3", 150)]
if MODE == "stale":
    sites.append(Site("sybil", 150, strategy=sparse_own, cap=150))
    sites.append(Site("rider", 0, strategy=dense_resend, cap=150))
else:
    samples = 150 if MODE == "honest" else 0
    sites.append(Site("sybil", samples, strategy=sparse_first, cap=150, commit_first=True))
res = run(sites, rounds=ROUNDS, real=True)
paid, marked = [], []
if MODE == "stale":
    for i, row in enumerate(res["results"], 1):
        rider = row.get("rider", {})
        print(
            f"round {i}: sybil {row['sybil'].get('reason')} weight {row['sybil']['weight']:.3f}; "
            f"rider {rider.get('reason')} weight {rider.get('weight', 0.0):.3f}"
        )
        if rider.get("weight", 0.0) > 0:
            paid.append(i)
    print(f"mode stale: rider paid in rounds {paid}; audit verify {bool(res['audit_ok'])}")
    sys.exit(1 if paid and res["audit_ok"] else 0)
for i, row in enumerate(res["results"], 1):
    syb = row.get("sybil", {})
    if not syb:
        print(f"round {i}: sybil sent nothing")
        continue
    both = row["h0"]["weight"] + syb.get("weight", 0.0)
    dups = sorted(nm for nm, r in row.items() if r.get("reason") == "DUPLICATE")
    print(
        f"round {i}: h0 + sybil weight {both:.3f} (one dataset's FedAvg share 0.250); "
        f"sybil {syb.get('reason')} weight {syb.get('weight', 0.0):.3f}; "
        f"h0 {row['h0'].get('reason')} weight {row['h0']['weight']:.3f}; DUPLICATE {dups}"
    )
    if syb.get("weight", 0.0) > 0:
        paid.append(i)
    marked += [(i, nm) for nm in dups if nm != "sybil"]
ok = bool(res["audit_ok"])
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_ok = True
if rpc and api and not os.environ.get("BEFORE"):
    path = Path(tempfile.mkdtemp(prefix="a99-")) / "deployment.json"
    path.write_text(res["fed"].deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    failed = [f"{x['check']}: {x['detail'][:160]}" for x in reader.RESULTS if x["result"] == "FAIL"]
    passed = sum(1 for x in reader.RESULTS if x["result"] == "PASS")
    reader_ok = not failed
    print(f"independent reader: {'PASS' if reader_ok else 'FAIL'} {passed} passed, {failed}")
print(
    f"mode {MODE}, fraction {FRACTION}, noise {LEVEL:g} of the copy's norm, committed first: "
    f"sybil paid in rounds {paid}; others DUPLICATE {marked}; audit verify {ok}"
)
if MODE == "frame":
    sys.exit(1 if marked else 0)
if MODE == "attack":
    sys.exit(1 if (paid and ok) or marked else 0)
sys.exit(0 if len(paid) == ROUNDS and not marked and ok and reader_ok else 1)
