"""A121: **site**: its honest update revealed under a CID whose DAG the site shaped to be slow.

A revealed CID is the site's choice: any sha2-256 dag-pb or raw CID whose content matches the
committed sha256 is read (``check_cid``; a57 found two CIDs of one content harmless: the
duplicate screen reads bytes). The same bytes can also be added with a tiny chunker
(``ipfs add --chunker=size-N``): a 422 KB SmallCNN update in 32-byte leaves is a DAG of ~13,000
blocks, which every reader's daemon walks. ``IpfsStore.get`` waits ``probe_timeout`` (2 s) for
the answer's first bytes and reads a later answer as *not there* (``ContentNotFound``: the
aggregator scores the update MALFORMED "not retrievable", verify reads it as unavailable), and
js-ipfs answers a many-block file's ``cat`` only once it has walked much of it. So the site sets
how long every reader pays for its blob, and, near 2 s, whether a reader finds it at all.
Closed in session 55 (README *Content not given*): bytes are given only under their canonical
CID, so every reader, fast or timed out, reads the shaped update as MALFORMED.

``attack [CHUNK] [ROUNDS]``: site ``dag`` (150 images, trains honestly) reveals its update under
the CIDv0 of a ``size-CHUNK`` DAG (default 32) beside three honest sites of 150; ``honest``
(control): the same site under the store's own CID. Prints the time of every read of each
site's blob (the aggregator's prefetch and valuation, ``audit verify``'s, the reader's) and
each site's verdict, then ``audit verify`` and the independent reader.

usage: scripts/attacks/real.sh scripts/attacks/a121_dag_shaped_blob.py attack [32] [1]
Exits 1 when the reads of one update disagree (one found it, another did not) or verify or the
reader fails, 0 otherwise.
"""

import json
import os
import sys
import time
import urllib.request
import uuid
from collections import defaultdict

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, read_independently, run

from fedtrail.chain import dev_account
from fedtrail.errors import StoreError
from fedtrail.storage.codec import encode_update
from fedtrail.storage.store import IpfsStore

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
CHUNK = int(sys.argv[2]) if len(sys.argv) > 2 else 32
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
if MODE not in ("attack", "honest"):
    raise SystemExit(f"unknown mode {MODE!r}: attack or honest")
SHAPED: set[bytes] = set()
READS: dict[str, list[tuple[str, float]]] = defaultdict(list)  # cid -> (outcome, seconds)
NAMES: dict[str, str] = {}  # cid -> site


def _add_shaped(api_url: str, blob: bytes) -> str:
    """``ipfs add --chunker=size-CHUNK`` through the daemon's RPC API (CIDv0, dag-pb leaves)."""
    b = uuid.uuid4().hex
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="u"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + blob
        + f"\r\n--{b}--\r\n".encode()
    )
    req = urllib.request.Request(
        f"{api_url}/api/v0/add?chunker=size-{CHUNK}&pin=true&cid-version=0&raw-leaves=false",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={b}"},
        method="POST",
    )
    out = urllib.request.urlopen(req, timeout=600).read()
    return str(json.loads(out.splitlines()[-1])["Hash"])


_put, _get = IpfsStore.put, IpfsStore.get


def put(self, data):
    if bytes(data) not in SHAPED:
        return _put(self, data)
    port = os.environ["FEDTRAIL_IPFS_PORT"]
    t = time.monotonic()
    cid = _add_shaped(f"http://127.0.0.1:{port}", bytes(data))
    print(f"  dag: {len(data)} bytes added as {CHUNK}-byte leaves in {time.monotonic() - t:.1f} s")
    return cid


def get(self, cid, sha256, **kw):
    t = time.monotonic()
    try:
        out = _get(self, cid, sha256, **kw)
    except StoreError as exc:
        READS[cid].append((type(exc).__name__, time.monotonic() - t))
        raise
    READS[cid].append(("ok", time.monotonic() - t))
    return out


IpfsStore.put, IpfsStore.get = put, get


def shaped(ctx):
    blob = encode_update(ctx.now["dag"], spec=SPEC, round=ctx.round).blob
    if MODE == "attack":
        SHAPED.add(blob)
    return blob, 150


sites = [Site(nm, 150) for nm in ("h0", "h1", "h2")] + [Site("dag", 150, strategy=shaped)]
res = run(sites, rounds=ROUNDS, real=True)
fed = res["fed"]
# the harness registers sites[j] under development account 2 + j
by_address = {dev_account(2 + j).address: s.name for j, s in enumerate(sites)}
for r in range(1, ROUNDS + 1):
    for sub in fed.ledger.get_submissions(r):
        NAMES[sub.cid] = by_address[sub.site]
reader = read_independently(fed, "a121")
failed = [f"{x['check']}: {x['detail'][:120]}" for x in reader if x["result"] == "FAIL"]
print(f"independent reader: {'PASS' if not failed else 'FAIL'} {failed}")
missed = False
for cid, reads in READS.items():
    if cid not in NAMES:
        continue
    outcomes = ", ".join(f"{o} {t:.2f}s" for o, t in reads)
    # in order: the aggregator's valuation, the harness's own read after finalize, verify's
    print(f"reads of {NAMES[cid]}'s update {cid[:12]}: {outcomes}")
    # readers that disagree on whether the update is there at all
    missed |= len({o == "ok" for o, _ in reads}) > 1
for i, row in enumerate(res["results"], 1):
    print(
        f"round {i}: "
        + ", ".join(f"{nm} {r['reason']} {r['weight']:.3f}" for nm, r in sorted(row.items()))
    )
ok = bool(res["audit_ok"]) and not failed
shape = f"{CHUNK}-byte leaves" if MODE == "attack" else "the store's own CID"
print(
    f"mode {MODE}, {shape}: reads of one update disagreed: {missed}; "
    f"audit verify {res['audit_ok']}, reader {not failed}"
)
sys.exit(1 if missed or not ok else 0)
