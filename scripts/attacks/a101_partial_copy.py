"""A101: **site** (a Sybil pair): a same-round copy that repeats one tensor of its original
exactly. The attacker runs one real site (``h0``, trains honestly) and a second registered
address (``sybil``, cap 150) that commits, in the same round and after ``h0``:

* ``attack [LEVEL] [ROUNDS]`` (no data of its own): ``h0``'s update with Gaussian noise of LEVEL
  times each tensor's standard deviation (a1's ``noise``) added to every tensor but ``KEEP``
  (``fc1.weight`` by default), which it sends as ``h0`` computed it. The tensor left alone keeps
  its structure in the residual, so the white-noise test (``white_noise_z``) passes the copy and
  it is past ``scaled_cosine`` at 1% (``BEFORE=1``: paid);
* ``mix [ROUNDS]`` (150 images of its own): its own trained update with ``KEEP`` replaced by
  ``h0``'s (some tensors copied, the rest trained itself);
* ``stale [LEVEL] [ROUNDS]`` (no data, from round 2): ``attack``'s copy made of ``h0``'s public
  update of the round before (against the free-rider screen's stale tests; default 3 rounds);
* ``nudge [KEPT] [ROUNDS]`` (no data): ``attack 0.01``'s copy with ``KEEP`` moved a little too:
  ``step`` (default) one float32 step (``nextafter``) up on every value, or a number, Gaussian
  noise of KEPT times that tensor's std (1e-4, 5e-4): not equal, within relative L2 1e-3;
* ``honest [LEVEL] [ROUNDS]`` (a control): the sybil trains on 150 images of its own and adds
  the same noise to every tensor but ``KEEP`` of its own update: no copy, must be paid.

The terms' ``duplicates.shared_tensor`` (1) marks a later update that carries a tensor of at
least 16 nonzero entries within relative L2 distance 1e-3 of an earlier original's (which has as
many nonzero entries). Four honest sites of
150 beside it.

``BEFORE=1``: the duplicate rule before ``shared_tensor`` (the aggregator's and the audit's
``find_duplicates`` called with it dropped from the terms' rule), to measure the old behaviour
on this tree.

usage: scripts/attacks/real.sh scripts/attacks/a101_partial_copy.py attack [0.01] [2]
Exits 1 when the sybil's copy is paid (weight > 0) in any round with ``audit verify`` passing
(the attack works undetected), 0 otherwise; ``honest`` exits 0 when the sybil is paid in every
round and verify and the independent reader pass, 1 otherwise. The reader
(``scripts/independent/reader.py``) replays the chain after each run but ``BEFORE``.
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
from harness import Site, run

import fedtrail.auditor.verify as verify
import fedtrail.valuation.candidates as candidates

if os.environ.get("BEFORE"):
    _find = candidates.find_duplicates

    def _old_rule(entries, rule, **kw):  # the rule of terms without shared_tensor
        return _find(entries, replace(rule, shared_tensor=None), **kw)

    candidates.find_duplicates = _old_rule
    verify.find_duplicates = _old_rule
    print("BEFORE=1: duplicates judged without shared_tensor")

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "mix", "honest", "stale", "nudge"):
    sys.exit(f"unknown mode {MODE!r}: attack, mix, stale, nudge or honest")
args = sys.argv[2:]
KEPT = (args.pop(0) if args else "step") if MODE == "nudge" else "0"
LEVEL = float(args.pop(0)) if MODE not in ("mix", "nudge") and args else 0.01
ROUNDS = int(args.pop(0)) if args else (3 if MODE == "stale" else 2)
KEEP = os.environ.get("KEEP", "fc1.weight")


def all_but_one(d, r):
    g = torch.Generator().manual_seed(10100 + r)
    return {
        k: v if k == KEEP else v + LEVEL * v.std() * torch.randn(v.shape, generator=g)
        for k, v in d.items()
    }


def sybil(ctx):
    if MODE == "attack":
        return all_but_one(ctx.now["h0"], ctx.round), 150
    if MODE == "nudge":
        copy = all_but_one(ctx.now["h0"], ctx.round)
        t = copy[KEEP]
        if KEPT == "step":
            copy[KEEP] = torch.nextafter(t, torch.full_like(t, float("inf")))
        else:
            g = torch.Generator().manual_seed(20100 + ctx.round)
            copy[KEEP] = t + float(KEPT) * t.std() * torch.randn(t.shape, generator=g)
        return copy, 150
    if MODE == "stale":
        if not ctx.past or "h0" not in ctx.past[-1]:
            return None  # round 1: nothing public to resend
        return all_but_one(ctx.past[-1]["h0"], ctx.round), 150
    own = ctx.now["sybil"]
    if MODE == "mix":
        return {k: ctx.now["h0"][k] if k == KEEP else v for k, v in own.items()}, 150
    return all_but_one(own, ctx.round), 150


sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("h3", 150)]
sites.append(
    Site("sybil", 0 if MODE in ("attack", "stale", "nudge") else 150, strategy=sybil, cap=150)
)
res = run(sites, rounds=ROUNDS, real=True)
paid = []
for i, row in enumerate(res["results"], 1):
    syb = row.get("sybil", {})
    if not syb:
        print(f"round {i}: sybil sent nothing")
        continue
    both = row["h0"]["weight"] + syb.get("weight", 0.0)
    honest = " ".join(f"{h} {row[h]['reason']} {row[h]['weight']:.3f}" for h in ("h1", "h2", "h3"))
    print(
        f"round {i}: h0 + sybil weight {both:.3f} (one dataset's FedAvg share 0.250); "
        f"sybil {syb.get('reason')} weight {syb.get('weight', 0.0):.3f}; {honest}"
    )
    if syb.get("weight", 0.0) > 0:
        paid.append(i)
ok = bool(res["audit_ok"])
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_ok = True
if rpc and api and not os.environ.get("BEFORE"):
    path = Path(tempfile.mkdtemp(prefix="a101-")) / "deployment.json"
    path.write_text(res["fed"].deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    failed = [f"{x['check']}: {x['detail'][:160]}" for x in reader.RESULTS if x["result"] == "FAIL"]
    passed = sum(1 for x in reader.RESULTS if x["result"] == "PASS")
    reader_ok = not failed
    print(f"independent reader: {'PASS' if reader_ok else 'FAIL'} {passed} passed, {failed}")
print(
    f"mode {MODE}, noise {LEVEL:g} of each tensor's std but {KEEP}"
    + (f" (moved: {KEPT})" if MODE == "nudge" else "")
    + ": sybil paid in rounds "
    f"{paid}; audit verify",
    ok,
)
if MODE != "honest":
    sys.exit(1 if paid and ok else 0)
sys.exit(0 if len(paid) == ROUNDS and ok and reader_ok else 1)
