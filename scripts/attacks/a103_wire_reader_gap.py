"""A103: **site**: a ``topk8`` update the README's wire format refuses, in bytes that are
canonical, that ``scripts/independent/reader.py`` read as valid.

README *Wire format of models and updates* fixes each part of a ``topk8`` tensor ``T``:
``T:idx`` ``U8``/``U16``/``U32`` of shape ``[k]``, ``T:q`` ``I8`` ``[k]``, ``T:scale`` ``F32``
``[]``, ``k = min(n, max(1, ceil(F * n)))``, and a dense entry named ``T`` only for running
statistics. The codec (``audit verify``, the aggregator) refuses any other dtype, shape or
entry (``MALFORMED``); the independent reader, written from that text, checked the bytes were
canonical (``safetensors.numpy.save`` writes whatever dtype it is given) and the gaps, the
positions, the scale's value and ``q`` against -128, but not the parts' dtypes, ``k`` (a note
only) nor which tensors may travel dense. So one site, alone, sends an update that an honest
aggregator rightly zeroes as ``MALFORMED`` and ``audit verify`` passes, while the reader reads
it as a good update and fails the honest round: the two audits the product says agree
disagree, chosen by any site. The other way round (``paid``), an aggregator allied with that
site pays the blob: verify fails and the reader replayed it as readable.

Site ``h2`` of three of 150 trains honestly, encodes its delta through ``topk8`` at fraction
0.5 and re-saves it canonically with one change (``MODE``):
``qwide`` every ``T:q`` as ``I16`` (same values), ``idxwide`` every ``T:idx`` as ``U64``,
``scalewide`` every ``T:scale`` as ``F64``, ``k`` the header's fraction written as 0.4 (the
parts keep ``ceil(0.5 n)`` entries), ``densetrain`` ``fc2.bias`` sent dense under its own name
(``F32``); ``honest``: the plain ``topk8`` blob (control). ``paid``: ``qwide``'s blob and an
aggregator allied with ``h2`` that reads its codes as the ``I8`` they hold and pays it (both
audits must fail).

usage: scripts/attacks/real.sh scripts/attacks/a103_wire_reader_gap.py MODE
``BEFORE=1``: the reader of 0d5b5d8 (before the fix), on the same chain and store.
Exits 1 when verify and the reader disagree on the round (or the malformed blob is paid, or the
honest control fails either), else 0.
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, audit_failures, read_independently, run

from fedtrail.storage.codec import Compression, encode_update

MODES = ("qwide", "idxwide", "scalewide", "k", "densetrain", "paid", "honest")
MODE = sys.argv[1] if len(sys.argv) > 1 else "qwide"
if MODE not in MODES:
    sys.exit(f"unknown mode {MODE!r}: one of {', '.join(MODES)}")


def reencode(blob: bytes) -> bytes:
    """``blob`` re-saved canonically with the mode's one change."""
    n = int.from_bytes(blob[:8], "little")
    text = json.loads(blob[8 : 8 + n])["__metadata__"]["fedtrail"]
    parts = dict(st_load(blob))
    if MODE in ("qwide", "paid"):
        parts = {k: v.astype(np.int16) if k.endswith(":q") else v for k, v in parts.items()}
    elif MODE == "idxwide":
        parts = {k: v.astype(np.uint64) if k.endswith(":idx") else v for k, v in parts.items()}
    elif MODE == "scalewide":
        parts = {k: v.astype(np.float64) if k.endswith(":scale") else v for k, v in parts.items()}
    elif MODE == "k":
        doc = json.loads(text)
        doc["compression"]["fraction"] = 0.4
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    elif MODE == "densetrain":
        name = "fc2.bias"
        idx, q, scale = parts.pop(name + ":idx"), parts.pop(name + ":q"), parts.pop(name + ":scale")
        dense = np.zeros(2, dtype=np.float32)
        dense[np.cumsum(idx.astype(np.int64))] = q.astype(np.float32) * np.float32(scale)
        parts[name] = dense
    return st_save(parts, metadata={"fedtrail": text})


def send(ctx):
    blob = encode_update(
        ctx.now["h2"],
        spec=SPEC,
        round=ctx.round,
        compression=Compression(method="topk8", fraction=0.5),
    ).blob
    return reencode(blob), 150


def ally(fed, acct):
    """``paid``: the aggregator reads h2's I16 codes as the I8 they hold (only while it values
    and finalizes; verify below runs the real codec)."""
    import fedtrail.valuation.candidates as cand
    from fedtrail.errors import InvalidUpdate

    real_decode, real_canonical = cand.decode_update, cand.check_canonical_update

    def lenient(blob, **kw):
        try:
            return real_decode(blob, **kw)
        except InvalidUpdate:
            n = int.from_bytes(blob[:8], "little")
            text = json.loads(blob[8 : 8 + n])["__metadata__"]["fedtrail"]
            parts = {
                k: v.astype(np.int8) if k.endswith(":q") else v for k, v in st_load(blob).items()
            }
            return real_decode(st_save(parts, metadata={"fedtrail": text}), **kw)

    step = fed.service.step

    def allied_step():
        cand.decode_update, cand.check_canonical_update = lenient, lambda *a, **k: None
        try:
            return step()
        finally:
            cand.decode_update, cand.check_canonical_update = real_decode, real_canonical

    fed.service.step = allied_step


out = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150, strategy=send)],
    1,
    real=True,
    verify=False,
    verbose=False,
    setup=ally if MODE == "paid" else None,
)
fed, store = out["fed"], out["store"]
row = out["results"][0]
print(
    f"round 1 ({MODE}): "
    + ", ".join(f"{n} {v['reason']} {v['weight']:.3f}" for n, v in row.items())
)
failed = audit_failures(fed, store)
results = read_independently(fed, "a103", before="0d5b5d8" if os.environ.get("BEFORE") else None)
reader_failed = [f"{x['check']}: {x['detail'][:160]}" for x in results if x["result"] == "FAIL"]
for x in results:  # h2's row: the only topk8 blob
    if x["check"].startswith("update.") and ("topk8" in x["detail"] or "decode" in x["detail"]):
        print(f"reader {x['check'][:17]}: {x['result']} {x['detail'][:150]}")
print("independent reader:", "PASS" if not reader_failed else f"FAIL {reader_failed}")
problems = []
if bool(failed) != bool(reader_failed):
    problems.append("verify and the reader disagree")
if MODE == "honest":
    if failed or reader_failed:
        problems.append("the honest round fails")
elif MODE == "paid":
    if not failed or not reader_failed:
        problems.append("the malformed blob is paid and an audit passes")
elif row["h2"]["weight"] > 0 or row["h2"]["reason"] != "MALFORMED":
    problems.append(f"h2's blob is {row['h2']['reason']}, weight {row['h2']['weight']:.3f}")
if problems:
    print(f"ATTACK WORKS ({MODE}): " + "; ".join(problems))
    sys.exit(1)
print("defence holds" if MODE != "honest" else "control: both pass the honest round")
