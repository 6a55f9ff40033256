"""a51 (**site**): a decline commitment (a42) forged, replayed or combined with an update.

A decline is a site's one commitment of the round, ``keccak(tag, site, round, termsSha256,
reason)``. Probed on the embedded chain with the production ledger client, no training:
(1) a site that declined commits an update; (2) a site that committed an update commits a
decline; (3) a site commits another site's decline hash (does it read as that site's decline,
or its own?); (4) a site replays its round-1 decline in round 2; (5) a decline with an unknown
reason code (99); (6) a reveal of a decline commitment. The defence holds when (1), (2) and (6)
are refused by the contract, and ``Ledger.declines`` (what ``terms.declined`` reads) names only
(1)'s genuine decline in round 1 and nothing in round 2. Exit 0: it holds; 1: a probe passed.

Run: .venv/bin/python scripts/attacks/a51_decline_replays.py   (~20 s)
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.chain import advance_time, connect, funded_accounts, next_block_timestamp
from fedtrail.errors import FedtrailError
from fedtrail.ledger import commitment, decline_commitment
from fedtrail.ledger.records import DECLINE_TAG, abi_encode, checksum, keccak, to_bytes32
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol.codes import Decline
from fedtrail.simulation.federation import SiteSetup, build_federation
from fedtrail.storage.store import LocalStore


def refused(what: str, call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except FedtrailError as exc:
        print(f"  {what}: refused ({type(exc).__name__}: {str(exc)[:90]})")
        return True
    print(f"  {what}: ACCEPTED")
    return False


def main() -> int:
    w3 = connect("embedded")
    acc = funded_accounts(w3)
    a, b, c = acc[2], acc[3], acc[4]
    tmp = Path(tempfile.mkdtemp(prefix="fedtrail-a51-"))
    fed = build_federation(
        sites=[
            SiteSetup(account=x, name=n, max_samples=150) for x, n in ((a, "a"), (b, "b"), (c, "c"))
        ],
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=load_bundled().val,
        w3=w3,
        coordinator=acc[0],
        aggregator=acc[1],
        settings=AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=60),
    )
    led = fed.ledger
    ok = True
    r1 = fed.service.open_next()
    t1 = led.get_round(r1).terms_sha256
    dec_a = decline_commitment(a.address, r1, t1, Decline.UNACCEPTED)
    led.commit_update(a, r1, dec_a)
    sha = hashlib.sha256(b"update").hexdigest()
    print("round 1:")
    ok &= refused(
        "(1) a declined, then commits an update",
        lambda: led.commit_update(a, r1, commitment(a.address, r1, sha, 150)),
    )
    led.commit_update(b, r1, commitment(b.address, r1, sha, 150))
    ok &= refused(
        "(2) b committed, then commits a decline",
        lambda: led.commit_update(b, r1, decline_commitment(b.address, r1, t1, Decline.UNACCEPTED)),
    )
    led.commit_update(c, r1, dec_a)  # (3) c posts a's decline hash
    now = next_block_timestamp(w3)
    advance_time(w3, led.get_round(r1).commit_deadline - now + 3)
    ok &= refused(
        "(6) a reveals its decline as an update", lambda: led.reveal_update(a, r1, "bafy", sha, 150)
    )
    got = led.declines(r1)
    print(f"  Ledger.declines(1) = { {k[:10]: v.name for k, v in got.items()} }")
    if got != {a.address: Decline.UNACCEPTED}:
        print("  (3) HOLE: c's copy of a's decline is read as a decline")
        ok = False
    now = next_block_timestamp(w3)
    advance_time(w3, led.get_round(r1).reveal_deadline - now + 3)
    fed.service.step()  # cancels or values round 1
    if led.current_round() == r1 and led.get_round(r1).phase.name not in ("FINALIZED", "CANCELLED"):
        fed.service.step()
    print(f"round 1: {led.get_round(r1).phase.name}")
    r2 = fed.service.open_next()
    t2 = led.get_round(r2).terms_sha256
    print("round 2:")
    led.commit_update(a, r2, dec_a)  # (4) a's round-1 decline replayed
    bad = keccak(
        abi_encode(
            ["bytes32", "address", "uint256", "bytes32", "uint8"],
            [DECLINE_TAG, checksum(b.address), r2, to_bytes32(t2), 99],
        )
    ).hex()
    led.commit_update(b, r2, bad)  # (5) an unknown reason code
    got = led.declines(r2)
    print(f"  Ledger.declines(2) = { {k[:10]: v.name for k, v in got.items()} }")
    if got:
        print(
            "  (4)/(5) HOLE: a replayed or unknown-reason decline is read as a decline of round 2"
        )
        ok = False
    print("defence holds" if ok else "HOLE OPEN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
