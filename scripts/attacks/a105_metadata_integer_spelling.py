"""A105: **site**: an update whose header metadata writes an integer field as ``true`` or
``1.0``, which ``scripts/independent/reader.py`` compared with ``==`` (Python: ``True == 1 ==
1.0``).

README *Wire format of models and updates*: the metadata is
``{"compression":C,"format_version":1,"kind":K,"round":R,"spec_hash":H}``; the codec
(``audit verify``, the aggregator) refuses a ``format_version`` or ``round`` that is not a JSON
integer (``unknown format version True``, ``round 1.0 is not a non-negative integer``:
``MALFORMED``); the reader's header test was ``doc.get("round") == r and
doc.get("format_version") == 1``, and the text re-dumps to itself. So one site sends its honest
dense delta with ``"format_version":true`` (any round) or ``"round":1.0``: an honest aggregator
zeroes it ``MALFORMED``, ``audit verify`` passes, the reader read a good update and failed the
honest round.

Modes: ``versiontrue``, ``roundfloat``, ``honest`` (control).
``BEFORE=1``: the reader of 0d5b5d8 (before the fix), on the same chain and store.

usage: scripts/attacks/real.sh scripts/attacks/a105_metadata_integer_spelling.py MODE
Exits 1 when verify and the reader disagree on the round (or the blob is paid, or the honest
control fails either), else 0.
"""

import json
import os
import sys

from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, audit_failures, read_independently, run

from fedtrail.storage.codec import encode_update

MODES = ("versiontrue", "roundfloat", "honest")
MODE = sys.argv[1] if len(sys.argv) > 1 else "versiontrue"
if MODE not in MODES:
    sys.exit(f"unknown mode {MODE!r}: one of {', '.join(MODES)}")
SPELL = {
    "versiontrue": ('"format_version":1,', '"format_version":true,'),
    "roundfloat": ('"round":1,', '"round":1.0,'),
}


def send(ctx):
    blob = encode_update(ctx.now["h2"], spec=SPEC, round=ctx.round).blob
    if MODE == "honest":
        return blob, 150
    n = int.from_bytes(blob[:8], "little")
    text = json.loads(blob[8 : 8 + n])["__metadata__"]["fedtrail"]
    spelled = text.replace(*SPELL[MODE])
    assert (
        spelled != text
        and json.dumps(json.loads(spelled), sort_keys=True, separators=(",", ":")) == spelled
    )
    return st_save(dict(st_load(blob)), metadata={"fedtrail": spelled}), 150


out = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150, strategy=send)],
    1,
    real=True,
    verify=False,
    verbose=False,
)
fed, store = out["fed"], out["store"]
row = out["results"][0]
print(
    f"round 1 ({MODE}): "
    + ", ".join(f"{n} {v['reason']} {v['weight']:.3f}" for n, v in row.items())
)
failed = audit_failures(fed, store)
results = read_independently(fed, "a105", before="0d5b5d8" if os.environ.get("BEFORE") else None)
reader_failed = [f"{x['check']}: {x['detail'][:160]}" for x in results if x["result"] == "FAIL"]
for x in results:  # h2's row
    if x["check"] == "update.h2":
        print(f"reader {x['check'][:17]}: {x['result']} {x['detail'][:150]}")
print("independent reader:", "PASS" if not reader_failed else f"FAIL {reader_failed}")
problems = []
if bool(failed) != bool(reader_failed):
    problems.append("verify and the reader disagree")
if MODE == "honest":
    if failed or reader_failed:
        problems.append("the honest round fails")
elif row["h2"]["weight"] > 0 or row["h2"]["reason"] != "MALFORMED":
    problems.append(f"h2's blob is {row['h2']['reason']}, weight {row['h2']['weight']:.3f}")
if problems:
    print(f"ATTACK WORKS ({MODE}): " + "; ".join(problems))
    sys.exit(1)
print("defence holds" if MODE != "honest" else "control: both pass the honest round")
