"""A126: sites reveal under a CID of a megabyte, which the honest aggregator's round log repeats.

The contract takes any non-empty ``string`` as a reveal's CID (a58 sent 46 bytes that are not
UTF-8); the commitment binds the sha256 and the count, not the CID, so a site that committed an
update may reveal it under any text. The aggregator reads the CID from the ``UpdateSubmitted``
event, scores the update ``MALFORMED`` (``check_cid`` refuses anything over 128 characters), and
its round log repeats the chain's text in the site's ``update.cid`` (``log.agrees`` compares it
with the chain exactly). A CID of NUL bytes is the cheapest calldata (4 gas a zero byte) and the
most expensive log text: each NUL is written ``\\u0000``, 6 bytes of JSON. So each attacker adds
six times its CID's length to the log, and a few of them push an honest aggregator's log past
``MAX_LOG_BYTES`` (32 MiB), which every reader refuses unread. Fixed (h-295): a log records a
chain CID as it is only when it has a CID's shape (``fedtrail.protocol.cids.CID_SHAPE``, at
most 59 characters), else as ``sha256:`` and the hex sha256 of its UTF-8 (71 characters).

usage: scripts/attacks/real.sh scripts/attacks/a126_huge_reveal_cid.py [ATTACKERS] [CID_BYTES]
[HONEST] [ROUNDS] (default 6 attackers of 1,000,000 bytes each, two honest sites of 150, one
round; the harness has 8 site accounts, and Anvil takes at most about 1,000,000 bytes a
transaction: its JSON-RPC request of 2 MiB and 16.8M gas). The attackers reveal so in round 1
only. ``6 1000000 2 2``: round 1's log was 36 MB, verify failed it and round 2 could not be
valued; with the log rule round 1's log is 8,569 bytes and both rounds pass (exit 0).
Exits 1 when the attack works (a round left unfinalized, or finalized with a log that audit
verify or the independent reader cannot read), 0 when the defence holds.
"""

from __future__ import annotations

import sys

from eth_abi.abi import encode as abi_encode
from web3 import Web3

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, read_independently, run

from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, to_bytes32
from fedtrail.protocol.codes import Phase

ATTACKERS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
CID_BYTES = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
HONEST = int(sys.argv[3]) if len(sys.argv) > 3 else 2
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
SELECTOR = Web3.keccak(text="revealUpdate(uint256,string,bytes32,uint64)")[:4]

honest_reveal = Ledger.reveal_update
attackers: set[str] = set()
gas_used: list[int] = []


def reveal(self, signer, round_id, cid, sha256, num_samples, *, epsilon_micro=None):
    if signer.address not in attackers or round_id > 1:
        return honest_reveal(
            self, signer, round_id, cid, sha256, num_samples, epsilon_micro=epsilon_micro
        )
    w3 = self.w3
    data = SELECTOR + abi_encode(
        ["uint256", "bytes", "bytes32", "uint64"],
        [round_id, b"\x00" * CID_BYTES, to_bytes32(sha256), num_samples],
    )
    tx = {
        "to": self.address,
        "data": data,
        "gas": 16_777_216,
        "gasPrice": int(w3.eth.gas_price) * 2,
        "nonce": w3.eth.get_transaction_count(signer.address),
        "chainId": self.chain_id,
        "value": 0,
    }
    signed = signer.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), poll_latency=0.01, timeout=120
    )
    gas_used.append(int(receipt["gasUsed"]))
    print(
        f"  {signer.address[:10]} revealed under a CID of {CID_BYTES:,} NUL bytes: "
        f"status {receipt['status']}, gas {receipt['gasUsed']:,}"
    )
    return None


def setup(fed, acct) -> None:
    attackers.update(acct[f"x{i}"].address for i in range(ATTACKERS))


Ledger.reveal_update = reveal
sites = [Site(f"h{i}", 150) for i in range(HONEST)] + [Site(f"x{i}", 150) for i in range(ATTACKERS)]
try:
    out = run(sites, ROUNDS, real=True, setup=setup, verify=True)
except FedtrailError as exc:  # the honest aggregator stopped
    print(f"ATTACK WORKS: the aggregator stops: {type(exc).__name__}: {str(exc)[:200]}")
    sys.exit(1)
finally:
    Ledger.reveal_update = honest_reveal

fed, store = out["fed"], out["store"]
info = fed.ledger.get_round(1)
print(f"round 1: {info.phase.name}")
problems: list[str] = []
if info.phase != Phase.FINALIZED:
    problems.append(f"round 1 not finalized ({info.phase.name}): the aggregator could not close it")
else:
    size = len(store.get(info.log_cid, info.log_sha256, max_bytes=256 << 20))
    print(f"round 1's log: {size:,} bytes")
    if not out["audit_ok"]:
        problems.append(f"audit verify fails an honest aggregator's round: {out['failed'][:3]}")
    try:
        results = read_independently(fed, "a126")
    except Exception as exc:  # a crash, not a verdict
        print(f"independent reader: CRASH {type(exc).__name__}: {str(exc)[:200]}")
        problems.append(f"the independent reader crashed ({type(exc).__name__})")
    else:
        bad = [r for r in results if r.get("result") == "FAIL"]
        print(f"independent reader: {'FAIL ' + str(bad[:3]) if bad else 'PASS'}")
        if bad:
            problems.append("the independent reader fails an honest aggregator's round")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: the round finalizes and both readers pass it")
