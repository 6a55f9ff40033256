"""A52: **site**: an update blob that crashes ``audit verify``'s canonical-header shortcut.

Since stop 45 (h-142) verify decodes each update with ``decode_update_stored(...,
direct_if_canonical=True)``: it rebuilds the safetensors header the codec would write for the
blob's entries (``codec.safetensors_header``) and, when the bytes match, copies the tensors
straight from their ranges. The rebuild ran on the header's entries *before* they were checked
against the model (names, dtypes, shapes), so an extra entry reached the writer unchecked:

- ``surrogate``: an extra tensor named ``"\\ud800"`` (valid JSON; a lone surrogate no UTF-8
  encodes): ``UnicodeEncodeError`` from the header's ``.encode("utf-8")``;
- ``digits``: an extra ``F32`` tensor whose shape is 16 dimensions of 10**299 (each a float-safe
  JSON integer): its byte offsets have some 4,800 digits, past Python's 4,300-digit
  integer-to-string limit: ``ValueError``.

The aggregator decodes with ``decode_update`` (no shortcut): both are ``MALFORMED``, weight 0,
so one site pays nothing and every honest site keeps its weight; but ``audit verify`` of the
round raised out of ``verify_all`` (a traceback from the CLI), for every round the site sends
such a blob: no auditor could verify the federation. Three honest sites of 150 images and
``x``; round 1 ``x`` sends ``surrogate``, round 2 ``digits`` (``one`` of them both rounds with
an argument).

usage: python scripts/attacks/a52_header_writer_crash.py [surrogate|digits]
       scripts/attacks/real.sh scripts/attacks/a52_header_writer_crash.py   (Anvil + IPFS)
Exits 1 when verify crashes or fails (the attack works), 0 when it refuses the blobs and passes.
"""

import json
import struct
import sys
import traceback

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Ctx, Site, run

from fedtrail.auditor.verify import verify_all
from fedtrail.errors import FedtrailError
from fedtrail.protocol.codes import Reason
from fedtrail.storage.codec import decode_update, encode_update

KINDS = sys.argv[1:2] * 2 or ["surrogate", "digits"]


def hostile(blob: bytes, kind: str) -> bytes:
    """``blob`` with one extra header entry of ``kind``; the data section unchanged."""
    hl = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + hl])
    if kind == "surrogate":
        header["\ud800"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    else:
        header["zz"] = {"dtype": "F32", "shape": [10**299] * 16, "data_offsets": [0, 0]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + hl :]


def attacker(ctx: Ctx) -> tuple[bytes, int]:
    own = ctx.now["h0"]  # any tensors: the header is what matters
    blob = hostile(encode_update(own, spec=SPEC, round=ctx.round).blob, KINDS[ctx.round - 1])
    kind = KINDS[ctx.round - 1]
    try:
        decode_update(blob, spec=SPEC, expected_round=ctx.round)
        print(f"  round {ctx.round}: the aggregator's decoder ACCEPTS the {kind} blob")
    except FedtrailError as exc:
        print(f"  round {ctx.round}: x sends {kind}; the aggregator's decoder: {exc}")
    return blob, 150


sites = [Site("h0", 150), Site("h1", 150), Site("h2", 150), Site("x", 0, attacker, cap=150)]
out = run(sites, len(KINDS), verify=False, real=True)
problems = []
for r, row in enumerate(out["results"], 1):
    if row["x"]["reason"] != Reason.MALFORMED.name or row["x"]["weight"] != 0:
        problems.append(f"round {r}: x is {row['x']['reason']} weight {row['x']['weight']:.3f}")
try:
    audits = verify_all(out["fed"].ledger, out["store"])
except Exception as exc:  # the attack: anything but a verdict
    traceback.print_exc(limit=3)
    print(f"audit verify: CRASH {type(exc).__name__}: {str(exc)[:160]}")
    print("ATTACK WORKS: one site's blob stops every audit of the round")
    sys.exit(1)
for a in audits:
    update = next(c for c in a.checks if c.name.startswith("update.") and "malformed" in c.detail)
    verdict = "PASS" if a.passed else "FAIL"
    print(f"  round {a.round}: {verdict}; {update.name}: {update.detail[:110]}")
    failed = [c.name for c in a.checks if c.applicable and not c.passed]
    problems += [f"round {a.round}: {name} failed" for name in failed]
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: both blobs MALFORMED at the aggregator and refused, not crashed, by verify")
