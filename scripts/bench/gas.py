#!/usr/bin/env python3
"""Gas of every FederationLedger function on a real Anvil, and of a full round of N sites.

    python scripts/bench/gas.py [--rpc-url URL] [--sites 10] [--out .run/bench/gas.json]

Starts its own Anvil on a free loopback port unless --rpc-url is given. Targets checked (the
foundation issue): submitUpdate <= 80,000 gas; a full round of 10 sites (open + 10 submits +
valuation + finalize) <= 1,500,000 gas. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.chain import block_timestamp, connect, dev_account, fund  # noqa: E402
from fedtrail.ledger import Ledger, Valuation  # noqa: E402

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # a real 46-character CIDv0
SUBMIT_TARGET, ROUND10_TARGET = 80_000, 1_500_000


def h(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(rpc_url: str, n_sites: int) -> dict[str, object]:
    w3 = connect(rpc_url)
    coord, agg = dev_account(0), dev_account(1)
    sites = [dev_account(100 + i) for i in range(n_sites)]
    for s in sites:
        fund(w3, coord, s.address, 10**18)
    ledger, dep = Ledger.deploy(w3, coord, aggregator=agg.address)
    deploy_gas = int(w3.eth.get_transaction_receipt("0x" + dep.tx_hash)["gasUsed"])
    rows: dict[str, list[int]] = {"deploy": [deploy_gas]}

    def add(name: str, gas: int) -> int:
        rows.setdefault(name, []).append(gas)
        return gas

    for i, s in enumerate(sites):
        add("registerSite", ledger.register_site(coord, s.address, f"hospital-{i}").gas_used)
    extra = dev_account(99)
    add("registerSite", ledger.register_site(coord, extra.address, "extra").gas_used)
    add("removeSite", ledger.remove_site(coord, extra.address).gas_used)
    add("setAggregator", ledger.set_aggregator(coord, agg.address).gas_used)

    rounds: list[int] = []
    model = "g0"
    for rnd in range(2):
        r, res = ledger.open_round(agg, CID, h(model), block_timestamp(w3) + 3600)
        total = add("openRound", res.gas_used)
        for i, s in enumerate(sites):
            total += add(
                "submitUpdate", ledger.submit_update(s, r, CID, h(f"{r}-{i}"), 100 + i).gas_used
            )
        vals = [
            Valuation(site=s.address, score=(i * 97_001) % 1_000_001, reason=0)
            for i, s in enumerate(sites)
        ]
        total += add(
            f"recordValuation({n_sites} sites)", ledger.record_valuation(agg, r, vals).gas_used
        )
        model = f"g{rnd + 1}"
        total += add(
            "finalizeRound",
            ledger.finalize_round(
                agg, r, global_cid=CID, global_sha256=h(model), log_cid=CID, log_sha256=h("log")
            ).gas_used,
        )
        rounds.append(total)
    r, _ = ledger.open_round(agg, CID, h(model), block_timestamp(w3) + 1)
    w3.provider.make_request("evm_increaseTime", [5])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    add("cancelRound", ledger.cancel_round(agg, r).gas_used)
    return {"sites": n_sites, "functions": rows, "full_round": rounds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpc-url", default=None)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "gas.json")
    args = ap.parse_args()
    proc = None
    url = args.rpc_url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "FEDTRAIL_ANVIL_PORT": str(port)}
        subprocess.run([str(ROOT / "scripts" / "anvil.sh"), "start"], check=True, env=env)
        proc = env
    try:
        result = measure(url, args.sites)
    finally:
        if proc is not None:
            subprocess.run([str(ROOT / "scripts" / "anvil.sh"), "stop"], env=proc, check=False)
    print(f"\nFederationLedger gas on Anvil ({url})\n")
    print(f"{'function':<28}{'calls':>6}{'min':>10}{'max':>10}")
    funcs: dict[str, list[int]] = result["functions"]  # type: ignore[assignment]
    for name, gas in funcs.items():
        print(f"{name:<28}{len(gas):>6}{min(gas):>10,}{max(gas):>10,}")
    full: list[int] = result["full_round"]  # type: ignore[assignment]
    print(
        f"\nfull round, {args.sites} sites (open + submits + valuation + finalize): "
        + ", ".join(f"{g:,}" for g in full)
    )
    submit_max = max(funcs["submitUpdate"])
    ok = submit_max <= SUBMIT_TARGET and (args.sites != 10 or max(full) <= ROUND10_TARGET)
    print(
        f"targets: submitUpdate {submit_max:,} <= {SUBMIT_TARGET:,}; "
        f"round of 10 {max(full):,} <= {ROUND10_TARGET:,} -> {'met' if ok else 'MISSED'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
