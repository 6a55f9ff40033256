"""A98: **site** (a data-less sender): a frame of tied magnitudes. The attacker registers one
address (``frame``, no data, cap 150) that commits, before every honest site, an update whose
entries are all 0.01 in magnitude (random signs; no training). With ties at the k-th largest
counted whole (the kept-entries rule before a98), every entry of such an update is among its
``k`` largest for every ``k``, so every honest ``topk8`` update committed after it scored
``support_overlap`` 1 against it: DUPLICATE of the frame (``same``), or, the frame sent once in
round 1 and a free-rider reference for ``stale_rounds`` rounds, FREE_RIDER in rounds 2-3
(``stale``). Ties now share the places left (``(k - A) / T`` each): the frame scores about 5%.

Modes: ``same`` (the frame every round, committed first), ``stale``
(the frame in round 1 only, committed after the honest sites: only the stale screen sees it)
and ``honest`` (a control: the frame site trains on 150 images of its own and sends them through
``topk8`` like the others, committed first). Four honest sites of 150, every one sending its
update through ``topk8`` at 0.05 (a sparse federation).

``BEFORE=1``: the kept-entries rule with ties counted whole (the aggregator's, the audit's and
the stale screen's), to measure the old behaviour on this tree.

usage: scripts/attacks/real.sh scripts/attacks/a98_tied_magnitude_frame.py same|stale|honest [R]
Exits 1 when an honest site is unpaid (weight 0, DUPLICATE or FREE_RIDER) in any round with
``audit verify`` passing (the attack works), 0 otherwise; ``honest`` exits 0 when every site is
paid in every round and verify and the independent reader pass. The reader
(``scripts/independent/reader.py``) replays the chain after each run but ``BEFORE``.
"""

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import SPEC, Site, run

import fedtrail.protocol.duplicates as duplicates
from fedtrail.errors import RoundStateError
from fedtrail.storage.codec import Compression, encode_update

if os.environ.get("BEFORE"):

    def _whole(self, index, tensors, counts):  # ties at the k-th largest counted whole
        return [int(h) + e for h, e in zip(*_parts(self, index, tensors, counts), strict=True)]

    def _parts(self, index, tensors, counts):
        mine = self.a.index_select(0, index).abs()
        nonzero = self.nonzero.index_select(0, tensors)
        at = self.offsets.index_select(0, tensors) + counts - 1
        at = torch.where(counts <= nonzero, at, self.sorted.numel() - 1)
        kth = self.sorted.index_select(0, at).repeat_interleave(counts)
        group = torch.arange(counts.numel()).repeat_interleave(counts)
        hit = ((mine != 0) & (mine >= kth)).to(torch.int64)
        n = counts.numel()
        return torch.zeros(n, dtype=torch.int64).index_add_(0, group, hit).tolist(), [0] * n

    duplicates._Ranked.tally = _whole
    print("BEFORE=1: kept-entries rule with ties at the k-th largest counted whole")

MODE = sys.argv[1] if len(sys.argv) > 1 else "same"
if MODE not in ("same", "stale", "honest"):
    sys.exit(f"unknown mode {MODE!r}: same, stale or honest")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
FRACTION = 0.05


def topk8(delta, r):
    comp = Compression(method="topk8", fraction=FRACTION)
    return encode_update(delta, spec=SPEC, round=r, compression=comp).blob


def frame(ctx):
    if MODE == "honest":
        return topk8(ctx.now["frame"], ctx.round), 150
    if MODE == "stale" and ctx.round > 1:
        return None
    g = torch.Generator().manual_seed(9800 + ctx.round)
    shape = {k: v for k, v in ctx.now["h0"].items()}
    out = {
        k: 0.01 * torch.sign(torch.randn(v.shape, generator=g)).to(v.dtype)
        for k, v in shape.items()
    }
    return encode_update(out, spec=SPEC, round=ctx.round).blob, 150


def sparse_honest(name):
    def send(ctx):
        return topk8(ctx.now[name], ctx.round), 150

    return send


honest = [Site(f"h{i}", 150, strategy=sparse_honest(f"h{i}")) for i in range(4)]
# ``stale``: the frame commits after the honest sites in round 1 (no same-round original of
# theirs), a reference of round 1 from round 2 on
first = MODE != "stale"
framer = Site("frame", 150 if MODE == "honest" else 0, strategy=frame, cap=150, commit_first=first)
sites = [framer, *honest] if first else [*honest, framer]
try:
    res = run(sites, rounds=ROUNDS, real=True)
except RoundStateError as exc:  # a round with no usable update is never finalized
    print(f"the run stopped: {exc} (every update of a round zeroed: the honest sites unpaid)")
    sys.exit(1)
unpaid = []
for i, row in enumerate(res["results"], 1):
    got = {s.name: row.get(s.name, {}) for s in honest}
    fr = row.get("frame", {})
    print(
        f"round {i}: frame {fr.get('reason', 'sent nothing')} weight {fr.get('weight', 0.0):.3f}; "
        + ", ".join(f"{n} {g.get('reason')} {g.get('weight', 0.0):.3f}" for n, g in got.items())
    )
    unpaid += [(i, n) for n, g in got.items() if g.get("weight", 0.0) <= 0]
ok = bool(res["audit_ok"])
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_ok = True
if rpc and api and not os.environ.get("BEFORE"):
    path = Path(tempfile.mkdtemp(prefix="a98-")) / "deployment.json"
    path.write_text(res["fed"].deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    failed = [f"{x['check']}: {x['detail'][:160]}" for x in reader.RESULTS if x["result"] == "FAIL"]
    passed = sum(1 for x in reader.RESULTS if x["result"] == "PASS")
    reader_ok = not failed
    print(f"independent reader: {'PASS' if reader_ok else 'FAIL'} {passed} passed, {failed}")
print(f"mode {MODE}: honest sites unpaid (round, site) {unpaid}; audit verify", ok)
if MODE == "honest":
    paid_frame = all(row.get("frame", {}).get("weight", 0.0) > 0 for row in res["results"])
    sys.exit(0 if not unpaid and paid_frame and ok and reader_ok else 1)
sys.exit(1 if unpaid and ok else 0)
