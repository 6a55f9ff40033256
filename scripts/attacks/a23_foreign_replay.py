"""A23: a data-less site is paid for another federation's update, replayed byte for byte.

An update blob names only its spec and round number (``encode_update(..., round=r)``), and the
commitment ``keccak(sender, round, sha256, n)`` binds neither the federation (chain, contract)
nor the round's start model. Two deployments with the same model spec and the default
aggregator seed (0) open round 1 from the same initial model, and every blob of a public
federation is on IPFS. Here federation A (four honest sites on other images: permutation seed 1)
runs first; in federation B (three honest sites, seed 0) the data-less ``alien`` (cap 150)
commits, in each round r, the bytes of A's site h0's round-r update, claiming 150 samples. B's
duplicate and stale screens only compare B's own updates, and ``audit verify`` reads only B's
chain and store.

Since the fix, a deployment's round-1 model is seeded from the terms' seed, the chain id and
the contract address (terms ``initial_model: "deployment"``). A is therefore deployed after
its coordinator has sent one transaction (another contract address, as any other deployment
has); ``twin`` as the fourth argument deploys A as B is (a fresh chain, the same deployer at
nonce 0: the same chain id and address). Each aggregator draws its own ``initial_salt`` (as
``aggregator run`` does by default; here two fixed salts, so the figures repeat), which parts
twins too; ``seeded`` as the fifth argument gives both the salt derived from the seed
(``--initial-salt seeded``, what the demos use): a twin then shares B's start model again.

usage: python attacks/a23_foreign_replay.py MODE [rounds] [claim] [twin|other] [seeded]
  replay: A's h0 update of the same round number, every round
  first:  A's round-1 update in round 1 only, then nothing (what a site with no access to a
          federation in step with B could take)
  noise:  seeded Gaussian noise with the norm of A's update, claiming 150 (control: a data-less
          update that is not a real one)
  absent: the alien sends nothing (control: B's three honest sites alone)
``claim``: the count the alien claims (default 150; its cap is set to it, so 1500 is ten times
the honest sites' median, the most ``max_sample_ratio`` 10 lets pass). Prints each round's
weights and the alien's cosine to B's honest mean, then ``audit verify`` over B.
"""

import hashlib
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Ctx, Site, run

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import connect, funded_accounts
from fedtrail.ml.datasets import load_bundled
from fedtrail.storage.codec import decode_update, encode_update

mode = sys.argv[1] if len(sys.argv) > 1 else "replay"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
claim = int(sys.argv[3]) if len(sys.argv) > 3 else 150
twin = len(sys.argv) > 4 and sys.argv[4] == "twin"
seeded = len(sys.argv) > 5 and sys.argv[5] == "seeded"


def settings(name: bytes) -> AggregatorSettings:
    """The harness's settings with this aggregator's salt: None is the seeded one."""
    salt = None if seeded else hashlib.sha256(b"a23 salt " + name).hexdigest()
    return AggregatorSettings(
        explain_method=None, round_seconds=60, reveal_seconds=30, initial_salt=salt
    )


def other_deployment():
    """A fresh embedded chain whose deployer has used nonce 0: A's contract gets another
    address than B's (a twin chain would give it B's)."""
    w3 = connect("embedded")
    acct = funded_accounts(w3)[0]
    tx = {
        "from": acct.address,
        "to": acct.address,
        "value": 0,
        "nonce": w3.eth.get_transaction_count(acct.address),
        "gas": 21000,
        "gasPrice": w3.eth.gas_price,
        "chainId": w3.eth.chain_id,
    }
    w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    return w3


print("== federation A (another deployment, same spec, default seed; images: permutation seed 1)")
a = run(
    [Site(f"h{i}", 150) for i in range(4)],
    rounds=rounds,
    seed=1,
    verbose=False,
    verify=False,
    w3=None if twin else other_deployment(),
    settings=settings(b"A"),
)
fa, sa = a["fed"], a["store"]
h0 = next(s for s in fa.ledger.get_sites() if s.name == "h0").address
foreign: dict[int, bytes] = {}
for r in range(1, rounds + 1):
    sub = next(s for s in fa.ledger.get_submissions(r) if s.site == h0)
    foreign[r] = sa.get(sub.cid, sub.sha256)
    print(f"  A round {r}: h0 blob sha256 {hashlib.sha256(foreign[r]).hexdigest()[:12]}")
n = len(load_bundled().train.labels)
pa = np.random.default_rng(1).permutation(n)[:600]
pb = np.random.default_rng(0).permutation(n)[:450]
print(f"  A's 600 images overlap B's 450 in {len(set(pa) & set(pb))}")

cos: dict[int, float] = {}
ref: dict[int, list[float]] = {r: [] for r in range(1, rounds + 1)}


def flat(d):
    return torch.cat([v.double().flatten() for v in d.values()])


def alien(ctx: Ctx):
    if mode == "absent" or (mode == "first" and ctx.round > 1):
        return None
    blob = foreign[ctx.round]
    if mode == "noise":
        real = decode_update(blob, spec=SPEC)[0]
        g = torch.Generator().manual_seed(ctx.round)
        z = {k: torch.randn(v.shape, generator=g) for k, v in real.items()}
        scale = flat(real).norm() / flat(z).norm()
        blob = encode_update(
            {k: (v * scale).float() for k, v in z.items()}, spec=SPEC, round=ctx.round
        ).blob
    d = flat(decode_update(blob, spec=SPEC)[0])
    mean = sum(flat(v) for v in ctx.now.values()) / len(ctx.now)
    cos[ctx.round] = float(torch.dot(d, mean) / (d.norm() * mean.norm()))
    for nm, v in ctx.now.items():  # reference: an honest site against the other two
        rest = sum(flat(w) for k, w in ctx.now.items() if k != nm) / (len(ctx.now) - 1)
        ref[ctx.round].append(float(torch.dot(flat(v), rest) / (flat(v).norm() * rest.norm())))
    return blob, claim


print("== federation B (the attacked one; images: permutation seed 0)")
res = run(
    [Site(f"h{i}", 150) for i in range(3)] + [Site("alien", 0, alien, cap=claim)],
    rounds,
    settings=settings(b"B"),
)
fb = res["fed"]
print(f"A: chain {fa.ledger.chain_id} contract {fa.ledger.address}")
print(f"B: chain {fb.ledger.chain_id} contract {fb.ledger.address}")
for r in range(1, rounds + 1):
    same = fa.ledger.get_round(r).start_sha256 == fb.ledger.get_round(r).start_sha256
    print(f"round {r}: A and B start from the same model: {same}")
for i, row in enumerate(res["results"], 1):
    c = (
        f" (alien cosine to B's honest mean {cos[i]:.3f}; an honest site's to the other two "
        f"{min(ref[i]):.3f}..{max(ref[i]):.3f})"
        if i in cos
        else ""
    )
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
        + c
    )
