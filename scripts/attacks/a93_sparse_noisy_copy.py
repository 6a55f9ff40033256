"""A93: **site** (a Sybil pair): the sparse copy with its kept values perturbed. The attacker
runs one real site (``h0``, trains honestly) and a second registered address (``sybil``, no
data, cap 150) that commits, in the same round and after ``h0``, ``h0``'s update sent through
``topk8`` at a fraction it picks (0.5 by default) with Gaussian noise of LEVEL times the copy's
norm added to the entries it keeps (the same entries stay nonzero), then encoded through
``topk8`` at that fraction again (the blob keeps exactly those entries). a90's copy without the
noise repeats ``h0``'s codes on the entries it keeps and is caught by ``support_cosine``
(0.999995); the noise takes the cosine on those entries below it (1%: about 0.9999), while the
entries kept are still ``h0``'s largest of each tensor, which the terms' ``support_overlap``
(0.99) reads.

Modes: ``attack [LEVEL] [FRACTION] [ROUNDS]`` (default 0.05, 0.1, 2 rounds), ``stale`` (a
data-less free-rider, from round 2, does the same to ``h0``'s public update of the round
before: a91 with noise, against the stale screen's ``stale_support_overlap``; default 3 rounds)
and ``honest`` (the sybil trains on 150 images of its own and sends them through ``topk8`` at
the fraction with the same noise: a control that a sparse update of other data is not
marked). Four honest sites of 150 beside it. ``HONEST_TOPK=F``: every honest site sends its
update through ``topk8`` at fraction F too (a sparse federation, ``h0``'s sparse update the
original).

``BEFORE=1``: the duplicate rule before ``support_overlap`` (the aggregator's and the audit's
``find_duplicates`` called with it dropped from the terms' rule) and the stale screen without
its kept-entries test, to measure the old behaviour on this tree.

usage: scripts/attacks/real.sh scripts/attacks/a93_sparse_noisy_copy.py attack [0.05] [0.1] [2]
Exits 1 when the sybil's copy is paid (weight > 0) in any round (``stale``: from round 2) with
``audit verify`` passing (the attack works undetected), 0 otherwise; ``honest`` exits 0 when
the sybil is paid in every round and verify and the independent reader pass, 1 otherwise. The
reader (``scripts/independent/reader.py``) replays the chain after each run but ``BEFORE``.
"""

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Site, run

import fedtrail.auditor.verify as verify
import fedtrail.valuation.candidates as candidates
import fedtrail.valuation.freeride as freeride
from fedtrail.storage.codec import Compression, decode_update, encode_update

if os.environ.get("BEFORE"):
    _find = candidates.find_duplicates

    def _old_rule(entries, rule, **kwargs):  # the rule of terms without support_overlap
        return _find(entries, replace(rule, support_overlap=None), **kwargs)

    candidates.find_duplicates = _old_rule
    verify.find_duplicates = _old_rule
    freeride.kept_largest_of = lambda earlier, later, threshold: {}  # the stale test off
    print("BEFORE=1: duplicates judged without support_overlap, stale screen without its test")

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "stale", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack, stale or honest")
LEVEL = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
FRACTION = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else (3 if MODE == "stale" else 2)
HONEST_TOPK = float(os.environ.get("HONEST_TOPK", "0") or 0)


def topk8(delta, r, fraction):
    comp = Compression(method="topk8", fraction=fraction)
    return encode_update(delta, spec=SPEC, round=r, compression=comp).blob


def noisy_sparse(ctx):
    if MODE == "stale":
        if not ctx.past or "h0" not in ctx.past[-1]:
            return None  # round 1: nothing public to resend
        source = ctx.past[-1]["h0"]
    else:
        source = ctx.now["h0"] if MODE == "attack" else ctx.now["sybil"]
    copy = decode_update(topk8(source, ctx.round, FRACTION), spec=SPEC, expected_round=ctx.round)[0]
    flat = torch.cat([v.reshape(-1).double() for v in copy.values()])
    kept = int((flat != 0).sum())
    sd = LEVEL * float(flat.norm()) / max(kept, 1) ** 0.5
    g = torch.Generator().manual_seed(9300 + ctx.round)
    out = {
        k: torch.where(v != 0, v + (sd * torch.randn(v.shape, generator=g)).to(v.dtype), v)
        for k, v in copy.items()
    }
    return topk8(out, ctx.round, FRACTION), 150


def sparse_honest(name):
    def send(ctx):
        return topk8(ctx.now[name], ctx.round, HONEST_TOPK), 150

    return send


def honest(name):
    if HONEST_TOPK:
        return Site(name, 150, strategy=sparse_honest(name))
    return Site(name, 150)


sites = [honest("h0"), honest("h1"), honest("h2"), honest("h3")]
sites.append(Site("sybil", 150 if MODE == "honest" else 0, strategy=noisy_sparse, cap=150))
res = run(sites, rounds=ROUNDS, real=True)
paid = []
for i, row in enumerate(res["results"], 1):
    syb = row.get("sybil", {})
    if not syb:
        print(f"round {i}: sybil sent nothing")
        continue
    both = row["h0"]["weight"] + syb.get("weight", 0.0)
    print(
        f"round {i}: h0 + sybil weight {both:.3f} (one dataset's FedAvg share 0.250); "
        f"sybil {syb.get('reason')} weight {syb.get('weight', 0.0):.3f}"
    )
    if syb.get("weight", 0.0) > 0:
        paid.append(i)
ok = bool(res["audit_ok"])
# the independent reader (README's rules, no fedtrail) on the same chain, when on real daemons
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_ok = True
if rpc and api and not os.environ.get("BEFORE"):
    path = Path(tempfile.mkdtemp(prefix="a93-")) / "deployment.json"
    path.write_text(res["fed"].deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    failed = [f"{x['check']}: {x['detail'][:160]}" for x in reader.RESULTS if x["result"] == "FAIL"]
    passed = sum(1 for x in reader.RESULTS if x["result"] == "PASS")
    reader_ok = not failed
    print(f"independent reader: {'PASS' if reader_ok else 'FAIL'} {passed} passed, {failed}")
    if os.environ.get("CONTROLS"):  # the reader's negative controls on this chain, round 2
        import subprocess

        controls = Path(__file__).resolve().parents[1] / "independent" / "controls.py"
        cmd = [sys.executable, str(controls), *argv, "--round", "2"]
        got = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = got.stdout.splitlines()
        shown = [
            x
            for x in lines
            if any(w in x for w in ("duplicates", "size bound", "MISSED", "control(s)"))
        ]
        print("independent controls:", *shown, got.stderr[-500:], sep="\n  ")
print(
    f"mode {MODE}, noise {LEVEL:g} of the copy's norm, fraction {FRACTION}"
    f"{f', honest sites topk8 {HONEST_TOPK}' if HONEST_TOPK else ''}: sybil paid in rounds "
    f"{paid}; audit verify",
    ok,
)
if MODE != "honest":
    first = 2 if MODE == "stale" else 1
    sys.exit(1 if [p for p in paid if p >= first] and ok else 0)
sys.exit(0 if len(paid) == ROUNDS and ok and reader_ok else 1)
