"""A58: values no fedtrail client sends, written straight into the contract's calldata.

fedtrail's clients refuse out-of-range numbers before sending (``_uint64``), but anyone can sign
a transaction with any calldata. A site ``att`` (150 images, an honest update) reveals through
raw transactions; before its real reveal it tries, each expected to revert:

- ``numSamples`` as a 32-byte word with bits above the uint64 set (2**64 + 150: a decoder that
  masks would read 150, the committed count, or a huge one);
- ``round`` 2**256 - 1;
- a private reveal declaring ``epsilonMicro`` 2**64 - 1 (no budget set: a plain site);

then reveals its update under a CID whose bytes are not UTF-8 (``Qm`` + 44 bytes 0xff; Solidity
does not check ``string`` contents), which the contract accepts. The coordinator also registers
two non-participating sites whose names are the invalid byte ``0xff`` and the 4-character text
``\\xff``: event readers that replace invalid bytes may show both the same. Then ``audit verify``,
``audit privacy`` and the report run over the round.

Holds when every probe reverts, the non-UTF-8 CID is scored unusable (not paid), and the
readers neither crash nor pass a paid unreadable update.

usage: scripts/attacks/real.sh scripts/attacks/a58_abi_edges.py
Exits 1 when a probe is accepted or a reader crashes / disagrees, 0 otherwise.
"""

import sys
import tempfile
from pathlib import Path

from eth_abi.abi import encode as abi_encode
from web3 import Web3

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.privacy import audit_privacy
from fedtrail.auditor.report import write_report
from fedtrail.errors import FedtrailError
from fedtrail.ledger import Ledger, to_bytes32

problems: list[str] = []
honest_reveal = Ledger.reveal_update
SELECTOR = {
    "plain": Web3.keccak(text="revealUpdate(uint256,string,bytes32,uint64)")[:4],
    "private": Web3.keccak(text="revealPrivateUpdate(uint256,string,bytes32,uint64,uint64)")[:4],
}
attacker: list[str] = []


def raw(ledger: Ledger, signer, data: bytes) -> int:
    """Sends ``data`` to the ledger, signed by ``signer``, fixed gas: the receipt status."""
    w3 = ledger.w3
    tx = {
        "to": ledger.address,
        "data": data,
        "gas": 2_000_000,
        "gasPrice": int(w3.eth.gas_price) * 2,
        "nonce": w3.eth.get_transaction_count(signer.address),
        "chainId": ledger.chain_id,
        "value": 0,
    }
    signed = signer.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), poll_latency=0.01
    )
    return int(receipt["status"])


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def reveal(self, signer, round_id, cid, sha256, num_samples, *, epsilon_micro=None):
    if signer.address not in attacker:
        return honest_reveal(
            self, signer, round_id, cid, sha256, num_samples, epsilon_micro=epsilon_micro
        )
    sha = to_bytes32(sha256)
    body = abi_encode(["uint256", "bytes", "bytes32", "uint64"], [round_id, cid.encode(), sha, 150])
    dirty = bytearray(body)
    dirty[96:128] = word(2**64 + num_samples)
    big_round = word(2**256 - 1) + body[32:]
    private = abi_encode(
        ["uint256", "bytes", "bytes32", "uint64", "uint64"],
        [round_id, cid.encode(), sha, num_samples, 2**64 - 1],
    )
    probes = {
        "numSamples with bits above uint64": SELECTOR["plain"] + bytes(dirty),
        "round 2**256-1": SELECTOR["plain"] + big_round,
        "epsilonMicro 2**64-1, no budget": SELECTOR["private"] + private,
    }
    for label, data in probes.items():
        status = raw(self, signer, data)
        print(f"  probe {label}: {'ACCEPTED' if status else 'reverted'}")
        if status:
            problems.append(f"the contract accepted {label}")
    bad_cid = b"Qm" + b"\xff" * 44
    status = raw(
        self,
        signer,
        SELECTOR["plain"]
        + abi_encode(
            ["uint256", "bytes", "bytes32", "uint64"], [round_id, bad_cid, sha, num_samples]
        ),
    )
    print(f"  reveal under a non-UTF-8 CID: {'accepted' if status else 'reverted'}")
    if not status:
        return honest_reveal(self, signer, round_id, cid, sha256, num_samples)
    return None


def setup(fed, acct) -> None:
    attacker.append(acct["att"].address)
    from fedtrail.chain import dev_account

    for i, name in ((8, b"\xff"), (9, b"\\xff")):
        site = dev_account(i).address
        data = Web3.keccak(text="registerSite(address,string,uint64)")[:4] + abi_encode(
            ["address", "bytes", "uint64"], [site, name, 100]
        )
        status = raw(fed.ledger, fed.coordinator, data)
        print(f"  registered {site[:10]} as {name!r}: status {status}")


Ledger.reveal_update = reveal
try:
    out = run(
        [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("att", 150)],
        1,
        real=True,
        setup=setup,
    )
finally:
    Ledger.reveal_update = honest_reveal

fed, store = out["fed"], out["store"]
row = out["results"][0]
att = row.get("att")
print(f"att on chain: {att}")
cids = fed.ledger.update_cids(1)
print(f"att's CID as read: {cids.get(attacker[0])!r}")
if att is None or att["weight"] > 0:
    problems.append("the update under a non-UTF-8 CID was paid (or not revealed)")
if not out["audit_ok"]:
    problems.append("verify fails the round")
names = {s.address: s.name for s in fed.ledger.get_sites()}
shown = [names[a] for a in names if a[:4] != "0x00" and names[a] in ("\\xff",)]
print(f"registry names as read: {sorted(set(names.values()))}")
if len(shown) > 1:
    print("  note: the byte 0xff and the text '\\xff' read the same (backslashreplace)")
try:
    privacy = audit_privacy(fed.ledger, store)
    print(f"audit privacy: {'PASS' if privacy.passed else 'FAIL'} {privacy.problems[:2]}")
    page = write_report(fed.ledger, store, Path(tempfile.mkdtemp(prefix="a58-")))
    print(f"report written: {page}")
except FedtrailError as exc:
    print(f"a reader refuses: {exc}")
except Exception as exc:  # a crash, not a verdict
    problems.append(f"a reader crashed: {type(exc).__name__}: {exc}")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: every probe reverts, the unreadable CID is not paid, the readers agree")
