"""A57: two CIDs, one content: the same bytes under another CID spelling, codec or hash function.

The chain records an update's (and a round log's) CID in event data and its sha256 in storage;
``check_cid`` accepts a CIDv0 or a base32 CIDv1 of codec dag-pb or raw over sha2-256, and every
read checks the bytes against the recorded sha256. IPFS serves one content under several CIDs:
the default CIDv0 (dag-pb, UnixFS), a raw-codec CIDv1 of the same bytes (``block/put
format=raw``), the same over another hash function (sha2-512). Modes (sites ``h0``..``h2``
honest, 150 images; ``sybil`` sends a leaked copy of ``h0``'s update, committed after ``h0``):

- ``raw``: the sybil reveals ``h0``'s bytes under their raw CIDv1 (``bafkrei...``), ``h0``
  under the CIDv0: does the duplicate screen, which could have keyed on the CID, still zero it?
- ``sha512``: the sybil reveals them under a raw CIDv1 over sha2-512 (a hash ``check_cid``
  does not accept): is it scored unusable, and does verify agree?
- ``log``: the aggregator (its own check of the store's CIDs bypassed) finalizes round 1 with
  its log under the raw CIDv1 of the same bytes (before session 55 an equivalent address that
  verify passed; since a121, README *Content not given*: bytes are given only under their
  canonical CID, so the log is not given and verify must fail the round);
- ``logswap``: ... under the raw CID of *other* bytes (the log with a paid site's explanation
  rewritten) while the chain pins the honest log's sha256: verify must fail, since an auditor
  who fetched by CID would read the other log.

usage: scripts/attacks/real.sh scripts/attacks/a57_cid_variants.py raw|sha512|log|logswap
Exits 1 when the attack works (a copy paid, or verify passes a log it cannot have read or one
under a CID that is not its bytes' canonical CID), else 0.
"""

import hashlib
import json
import os
import sys

import requests

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

import fedtrail.aggregator.service as service
from fedtrail.storage.store import IpfsStore

MODE = sys.argv[1] if len(sys.argv) > 1 else "raw"
api = os.environ.get("FEDTRAIL_ATTACK_IPFS", "")
if not api:
    sys.exit("run through scripts/attacks/real.sh (needs an IPFS daemon)")
parts = api.split("/")
URL = f"http://{parts[2]}:{parts[4]}/api/v0"
honest_put, honest_put_many = IpfsStore.put, IpfsStore.put_many
seen: dict[str, int] = {}
used: list[str] = []


def block_put(data: bytes, mhtype: str) -> str:
    answer = requests.post(
        URL + "/block/put",
        params={"format": "raw", "mhtype": mhtype},
        files={"file": ("blob", data, "application/octet-stream")},
        timeout=60,
    )
    answer.raise_for_status()
    return str(answer.json()["Key"])


def put(self, data: bytes, **kw):
    cid = honest_put(self, data, **kw)
    sha = hashlib.sha256(data).hexdigest()
    seen[sha] = seen.get(sha, 0) + 1
    is_log = data.startswith(b"{") and b'"format":"fedtrail.explanation-log/1"' in data
    if MODE in ("raw", "sha512") and seen[sha] == 2 and not is_log:  # the sybil's copy
        other = block_put(data, "sha2-256" if MODE == "raw" else "sha2-512")
        used.append(other)
        return other
    if MODE == "log" and is_log:
        used.append(block_put(data, "sha2-256"))
        replaced[sha] = used[-1]
        return used[-1]
    if MODE == "logswap" and is_log:
        doc = json.loads(data)
        doc["sites"][0]["explanation"] = "clipped as a poisoner: its update was left out"
        other = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        used.append(block_put(other, "sha2-256"))
        replaced[sha] = used[-1]
        return used[-1]
    return cid


replaced: dict[str, str] = {}  # sha256 -> the CID the dishonest aggregator finalizes with
honest_cid = service.compute_cid


def dishonest_cid(data: bytes) -> str:  # its own check of the store's CIDs, bypassed
    return replaced.get(hashlib.sha256(data).hexdigest()) or honest_cid(data)


def leaked_copy(ctx):
    return ctx.now["h0"], 150


IpfsStore.put = put
service.compute_cid = dishonest_cid
IpfsStore.put_many = lambda self, blobs: [put(self, b) for b in blobs]
try:
    sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150)]
    if MODE in ("raw", "sha512"):
        sites.append(Site("sybil", 0, leaked_copy, cap=150))
    out = run(sites, 1, real=True)
finally:
    IpfsStore.put, IpfsStore.put_many = honest_put, honest_put_many
    service.compute_cid = honest_cid
fed = out["fed"]
info = fed.ledger.get_round(1)
print(f"CIDs put in another form: {used}")
if not used:
    print("setup failed: no CID was replaced")
    sys.exit(2)
row = out["results"][0]
if MODE in ("raw", "sha512"):
    cids = fed.ledger.update_cids(1)
    print(f"on-chain CIDs: {sorted(cids.values())}")
    paid = row["sybil"]["weight"] > 0
    print(f"sybil: {row['sybil']['reason']} {row['sybil']['weight']:.3f}; audit {out['audit_ok']}")
    if paid or not out["audit_ok"]:
        print("ATTACK WORKS" if paid else "verify fails an honest aggregator's verdict")
        sys.exit(1)
    print("defence holds: the copy under another CID is not paid, and verify agrees")
    sys.exit(0)
print(f"round 1's log CID on chain: {info.log_cid}")
if MODE == "log":
    if out["audit_ok"]:
        print("ATTACK WORKS: verify passes a log read under a CID that is not its canonical one")
        sys.exit(1)
    print("holds: the log under another CID of its bytes is not given, verify fails the round")
    sys.exit(0)
if out["audit_ok"]:
    print("ATTACK WORKS: verify passes a round whose log CID serves other bytes")
    sys.exit(1)
print("defence holds: verify fails the round whose log CID serves other bytes")
