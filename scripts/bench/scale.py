#!/usr/bin/env python3
"""Scale: one round with 10, 50 and 100 simulated sites on real Anvil + IPFS.

    python scripts/bench/scale.py [--sites 10 50 100] [--out .run/bench/scale.json]

Sites don't train: each sends a seeded variation of one real trained update, so the figures are
the round's cost *outside training*: encoding, IPFS put/get, transactions, valuation
(Monte-Carlo Shapley at every size here: a round switches from exact to Monte-Carlo above
``AUTO_EXACT_SITES`` = 8 sites), aggregation, and the gas of every transaction of the round.
Sites submit one after another from this process (a real federation submits in parallel).
It also prints the peak RSS of this process (``resource.getrusage``: aggregator service,
simulated sites and the audit of the largest round so far; no training).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_round  # noqa: E402
from fedtrail.chain import advance_time, block_timestamp, connect, dev_account  # noqa: E402
from fedtrail.ledger import Ledger, Phase, commitment  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.codec import decode_model, encode_update  # noqa: E402
from fedtrail.storage.store import IpfsStore  # noqa: E402
from scripts.bench._daemons import daemons  # noqa: E402


def round_gas(ledger: Ledger, first_block: int) -> int:
    w3 = ledger.w3
    total = 0
    for n in range(first_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(n, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] == ledger.address:  # type: ignore[index]
                total += int(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])  # type: ignore[index]
    return total


def one_scale(rpc: str, api: str, n_sites: int) -> dict[str, float | int]:
    w3 = connect(rpc)
    sites = [dev_account(1000 + i) for i in range(n_sites)]
    splits = load_bundled()
    spec = ModelSpec()
    fed = build_federation(  # sites without data: they submit by hand below
        w3=w3,
        coordinator=dev_account(0),
        sites=[
            SiteSetup(account=s, name=f"site-{i:03d}", max_samples=100 + i)
            for i, s in enumerate(sites)
        ],
        fund_wei=10**18,
        store=IpfsStore(api),
        folder=Path(tempfile.mkdtemp()),
        validation=splits.val,
        settings=AggregatorSettings(
            valuation="shapley" if n_sites <= 10 else "mc_shapley", explain_method=None
        ),
    )
    ledger, store, service = fed.ledger, fed.store, fed.service
    first_block = w3.eth.block_number + 1
    r = service.open_next()
    info = ledger.get_round(r)
    global_state, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=spec)
    base = train_local(
        global_state,
        splits.train.subset(
            torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[
                :400
            ].numpy()
        ),
        spec=spec,
        config=TrainConfig(epochs=1, seed=0),
    ).delta
    gen = torch.Generator().manual_seed(n_sites)
    t_sites = 0.0
    blobs = []
    for i, s in enumerate(sites):
        delta = {
            k: v + 0.01 * v.std() * torch.randn(v.shape, generator=gen) for k, v in base.items()
        }
        ts = time.perf_counter()
        blob = encode_update(delta, spec=spec, round=r).blob
        sha = hashlib.sha256(blob).hexdigest()
        ledger.commit_update(s, r, commitment(s.address, r, sha, 100 + i))
        blobs.append((blob, sha))
        t_sites += time.perf_counter() - ts
    now = block_timestamp(w3)
    advance_time(w3, info.commit_deadline - now + 1)  # reveals open after the commit deadline
    for i, (s, (blob, sha)) in enumerate(zip(sites, blobs, strict=True)):
        ts = time.perf_counter()
        ledger.reveal_update(s, r, store.put(blob), sha, 100 + i)
        t_sites += time.perf_counter() - ts
    tv = time.perf_counter()
    service.step()  # value
    t_value = time.perf_counter() - tv
    if ledger.get_round(r).phase != Phase.VALUED:
        raise SystemExit(f"round {r} was not valued: the synthetic updates scored 0")
    tf = time.perf_counter()
    service.step()  # finalize
    t_final = time.perf_counter() - tf
    ta = time.perf_counter()
    audit = verify_round(ledger, store, r)
    t_audit = time.perf_counter() - ta
    if not audit.passed:
        raise SystemExit(f"verify failed: {[c for c in audit.checks if c.failed]}")
    wall = t_sites + t_value + t_final
    return {
        "sites": n_sites,
        "gas_round": round_gas(ledger, first_block),
        "seconds_sites_total": round(t_sites, 2),
        "seconds_per_site": round(t_sites / n_sites, 3),
        "seconds_valuation_step": round(t_value, 2),
        "seconds_finalize_step": round(t_final, 2),
        "seconds_round_outside_training": round(wall, 2),
        "seconds_verify_round": round(t_audit, 2),
        "verify_share_fetch_and_hash": round(audit.seconds.get("fetch", 0.0) / t_audit, 2),
        "verify_share_decode": round(audit.seconds.get("decode", 0.0) / t_audit, 2),
        "verify_share_recompute": round(audit.seconds.get("recompute", 0.0) / t_audit, 2),
        "peak_rss_mib_so_far": round(peak_rss_mib()),
    }


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "scale.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with daemons() as (rpc, api):
        for n in args.sites:
            row = one_scale(rpc, api, n)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| sites | gas per round | s/round outside training | sites: encode+put+submit"
        " (s, total / per site) | valuation step (s) | aggregate+finalize step (s) |"
        " audit verify of the round (s; fetch+hash / decode / recompute share) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['sites']} | {r['gas_round']:,} | {r['seconds_round_outside_training']} | "
            f"{r['seconds_sites_total']} / {r['seconds_per_site']} | "
            f"{r['seconds_valuation_step']} | "
            f"{r['seconds_finalize_step']} | {r['seconds_verify_round']} "
            f"({r['verify_share_fetch_and_hash']:.0%} / {r['verify_share_decode']:.0%} / "
            f"{r['verify_share_recompute']:.0%}) |"
        )
    print(
        f"\npeak RSS of this process (aggregator service + up to {max(args.sites)} simulated "
        f"sites + audit, no training): {peak_rss_mib():.0f} MiB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
